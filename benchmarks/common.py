"""Shared helpers for the benchmark scripts: machine info, peak RSS, the matmul peak, summaries."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch


def machine() -> str:
    """A one-line description of this machine (and its GPU, when torch sees one)."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{platform.machine()} {platform.processor() or ''} CPU, {torch.get_num_threads()} torch threads{gpu}, "
            f"torch {torch.__version__}, Python {platform.python_version()}").replace("  ", " ")


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1e6 if sys.platform != "darwin" else kb / 1e9


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n matmul on this machine, measured now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def fmt(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} (min {s['min']:.{digits}f}, max {s['max']:.{digits}f}, n={s['n']})"


def save(name: str, doc: dict) -> Path:
    """Write a benchmark's raw results as JSON under benchmarks/results/."""
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return out


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def library_draws(names: Sequence[str], sizes: str, draws: int, seed: int):
    """(size, library) pairs: for each comma-separated size, ``draws`` random libraries of that many of
    ``names`` (one, all of them, at or above their number), from one seeded generator."""
    import numpy as np

    rng = np.random.RandomState(seed)
    for size in (int(x) for x in sizes.split(",")):
        for _ in range(1 if size >= len(names) else draws):
            yield size, sorted(str(t) for t in rng.choice(list(names), min(size, len(names)), replace=False))


def moved_adapter(host, name: str, seed: int = 0) -> None:
    """Create LoRA adapter ``name`` on ``host`` with B moved off zero (seeded), so that it changes the
    outputs as a trained one does: what speed benchmarks time in place of a trained adapter."""
    host.create(name, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, w in sorted(host.trainable(name).items()):
            if "lora_B" in key:
                w.copy_(torch.randn(w.shape, generator=gen) * 0.02)
