"""Run a strategy over a task sequence and measure it: the accuracy matrix, metrics and artefacts.

``results.json`` holds the resolved config, package versions, git commit, timings, the matrix and
the metrics, and ``final_correct``: per task, 1/0 for each test example of the final row (right or
wrong), so that two strategies scored on the same examples can be compared example by example
(``evaluation/stats.py``), and ``learned_correct``: per stage, the same for that stage's task right after
it was trained (the matrix's diagonal; None where a strategy is scored only at the end), so that BWT gets a
paired interval (``stats.bwt_paired``); ``matrix.png`` the heatmap; ``summary.md`` a short table;
``config.yaml`` the config.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ..adapters import AdapterHost
from ..backbone import Backbone, device_name, load_backbone, resolve_device
from ..fileio import atomic_write_json, atomic_write_text, read_json
from ..prompting import Encoded, encode_examples
from ..scoring import accuracy, score
from ..strategies import Context, make
from ..tasks import load_sequence
from ..tasks.spec import TaskData
from ..training import resume as step_state
from . import checkpoint
from .config import RunConfig, run_identity
from .distributed import is_main_process, maybe_accelerator
from .metrics import all_metrics
from .plots import plot_matrix


@dataclass
class RunResult:
    """The measured outcome of one run."""

    tasks: list[str]
    matrix: np.ndarray
    zero_shot: np.ndarray
    metrics: dict[str, float]
    info: dict[str, Any]


def prepare_tasks(cfg: RunConfig) -> list[TaskData]:
    """Load the sequence and take the deterministic, stratified subsample of each task."""
    seq = load_sequence(cfg.sequence)
    return [t.subsample(cfg.max_train, cfg.max_test, cfg.seed + 17 * i) for i, t in enumerate(seq.tasks)]


STEP_CHECKPOINT_S = 120.0  # seconds of training between two saves of a task's progress


def run_sequence(cfg: RunConfig, out: Path | None = None, backbone: Backbone | None = None,
                 tasks: list[TaskData] | None = None, resume: bool = False,
                 zero_shot_cache: Path | None = None, step_checkpoint_s: float = STEP_CHECKPOINT_S) -> RunResult:
    """Train ``cfg.strategy`` on each task in turn; after each, evaluate every task of the sequence.

    A checkpoint is written to ``out`` after each task, and the training of the task under way saves its
    progress every ``step_checkpoint_s`` seconds (``training/resume.py``); ``resume`` continues from
    them after an interruption, from the last saved step.
    ``zero_shot_cache``: a JSON file shared by the runs of a bench, holding the backbone's accuracy per
    task keyed by the backbone and the encoded test examples, so that each strategy does not score it again.
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    device = resolve_device(cfg.device)  # a bad or missing device: one line before anything is loaded or written
    tasks = tasks if tasks is not None else prepare_tasks(cfg)
    backbone = backbone or load_backbone(cfg.backbone, device=device, dtype=cfg.dtype, seed=cfg.seed)
    host = AdapterHost(backbone, cfg.lora)
    workdir = Path(out) if out else Path("runs") / f"{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True, exist_ok=True)
    cfg.train.seed = cfg.seed
    ctx = Context(host=host, train=cfg.train, n_tasks=len(tasks), workdir=workdir,
                  eval_batch_size=cfg.eval_batch_size, options=dict(cfg.options))
    accelerator = maybe_accelerator()  # several processes under `accelerate launch`: data-parallel training
    if accelerator is not None:
        ctx.options["accelerator"] = accelerator
    main = is_main_process(accelerator)
    strategy = make(cfg.strategy, ctx)
    tok, L = backbone.tokenizer, cfg.train.max_length
    train_items = [encode_examples(tok, t.spec, t.train, L) for t in tasks]
    test_items = [encode_examples(tok, t.spec, t.test, L) for t in tasks]
    T = len(tasks)
    R = np.full((T, T), np.nan)
    learned: list[list[int] | None] = [None] * T  # stage i's task's outcomes right after stage i (the diagonal)
    config_json = cfg.to_json()
    if not resume:
        step_state.clear(workdir)
    if resume and checkpoint.exists(workdir):  # the zero-shot row, finished rows, adapters and strategy's state
        b, start, t_train, t_eval, t_before, cpu_before = checkpoint.resume(workdir, cfg, [t.name for t in tasks],
                                                                            host, strategy, R, learned)
    else:
        start, t_train, t_eval, t_before, cpu_before = 0, 0.0, 0.0, 0.0, 0.0
        t0 = time.perf_counter()
        b = zero_shot_row(host, cfg, test_items, zero_shot_cache)
        t_eval += time.perf_counter() - t0
    cache: dict[Any, np.ndarray] = {}  # per-example outcomes (1 right, 0 wrong) of weights already scored
    final: dict[str, list[int]] = {}  # the final row's outcomes, for paired comparisons between strategies
    for i, task in enumerate(tqdm(tasks[start:], desc=f"{cfg.strategy} over {T} tasks", initial=start, total=T),
                             start=start):
        t0 = time.perf_counter()
        ctx.step_checkpoint = (step_state.StepCheckpoint(workdir, run_identity(config_json), i, step_checkpoint_s,
                                                         config_json) if main else None)
        strategy.learn(task, train_items[i])
        ctx.step_checkpoint = None
        if strategy.uses_head:  # option head: the product's head beside the task's adapter (strategies/base.py)
            strategy.fit_head(task, train_items[i])
        t_train += time.perf_counter() - t0
        if strategy.evaluates_each_step or i == T - 1:
            t0 = time.perf_counter()
            for j, other in enumerate(tasks):
                key = (other.name, strategy.eval_key(other.name))
                if key not in cache:
                    cache[key] = correct(strategy.score(other.name, test_items[j]), test_items[j])
                R[i, j] = float(cache[key].mean()) if cache[key].size else float("nan")
                if j == i:
                    learned[i] = cache[key].tolist()
                if i == T - 1:
                    final[other.name] = cache[key].tolist()
            t_eval += time.perf_counter() - t0
        if main:
            checkpoint.save(workdir, cfg, [t.name for t in tasks], i + 1, R, b,
                            (t_train, t_eval, t_before + time.perf_counter() - t_start,
                             cpu_before + time.process_time() - cpu_start), host, strategy, learned)
            step_state.clear(workdir)  # the task's progress is in the checkpoint now
    metrics = all_metrics(R, b)
    t0 = time.perf_counter()  # the router's task-inferred row is scored here: its cost, apart from the eval above
    extra = strategy.finish_info() if hasattr(strategy, "finish_info") else {}
    t_finish = time.perf_counter() - t0
    info = {
        "strategy": cfg.strategy, "n_adapters": len(strategy.adapters), "adapters": strategy.adapters,
        "trainable_params": strategy.trainable_params(), "train_reports": strategy.reports,
        "timings_s": {"train": round(t_train, 1), "eval": round(t_eval, 1), "finish": round(t_finish, 1),
                      "total": round(t_before + time.perf_counter() - t_start, 1),  # every process's share
                      # CPU seconds of this process, every thread (a run's cost whatever else ran beside it)
                      "cpu": round(cpu_before + time.process_time() - cpu_start, 1)},
        "n_train": [len(x) for x in train_items], "n_test": [len(x) for x in test_items],
        "world_size": accelerator.num_processes if accelerator is not None else 1,
        "device": device_name(backbone.device),
        "final_correct": final, "learned_correct": learned, **extra,
        **({"heads": strategy.head_reports} if strategy.head_reports else {}),
    }
    result = RunResult([t.name for t in tasks], R, b, metrics, info)
    if not main:
        return result
    write_results(result, cfg, workdir, tasks)
    checkpoint.remove(workdir)  # the run is complete: results.json replaces it
    return result


def zero_shot_row(host: AdapterHost, cfg: RunConfig, test_items: list[list[Encoded]],
                  cache_file: Path | None = None) -> np.ndarray:
    """The backbone's accuracy on each task's test examples, with no adapter; known ones read from
    ``cache_file`` (keyed by the backbone and a hash of the encoded examples), new ones added to it."""
    keys = [_zero_shot_key(cfg, its) for its in test_items]
    known = _read_cache(cache_file)
    new: dict[str, float] = {}
    with host.base() as m:
        for key, its in zip(keys, tqdm(test_items, desc="zero-shot row", leave=False)):
            if key not in known:
                new[key] = known[key] = accuracy(score(m, its, host.backbone.tokenizer.pad_token_id,
                                                       cfg.eval_batch_size), its)
    if cache_file is not None and new:  # read again: another run of the bench may have added entries meanwhile
        atomic_write_json(cache_file, {**_read_cache(cache_file), **new})
    return np.array([known[k] for k in keys], dtype=float)


def _read_cache(path: Path | None) -> dict[str, float]:
    """The zero-shot cache's entries; a missing or damaged file is only recomputed."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        return {k: float(v) for k, v in read_json(path).items()}
    except (ValueError, TypeError, AttributeError, OSError):
        return {}


def _zero_shot_key(cfg: RunConfig, items: list[Encoded]) -> str:
    # the scoring rule is in the encoded items; a float32 key is the one written before bfloat16
    h = hashlib.sha256(json.dumps(cfg.backbone if cfg.dtype == "float32" else [cfg.backbone, cfg.dtype]).encode())
    for it in items:
        h.update(json.dumps([it.prompt, it.choices, it.label, it.normalise]).encode())
    return h.hexdigest()


def correct(scores: Sequence[np.ndarray], items: Sequence[Encoded]) -> np.ndarray:
    """Per item, 1 when its highest-scoring choice is the label, else 0 (its mean is the accuracy)."""
    return np.array([int(np.argmax(s)) == it.label for s, it in zip(scores, items)], dtype=np.int8)


def environment() -> dict[str, Any]:
    """Package versions, git commit and machine, for results.json."""
    import peft
    import transformers

    from .. import __version__
    from ..allocator import loaded_allocator

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"adaptive_learner": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "torch_threads": torch.get_num_threads(),
            "allocator": loaded_allocator(), "git_commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _clean(x: Any) -> Any:
    if isinstance(x, float) and np.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_results(res: RunResult, cfg: RunConfig, out: Path, tasks: list[TaskData]) -> None:
    """results.json, config.yaml, matrix.png and summary.md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": cfg.to_dict(), "environment": environment(), "tasks": res.tasks,
           "task_specs": [t.spec.to_dict() for t in tasks], "zero_shot": res.zero_shot.tolist(),
           "matrix": res.matrix.tolist(), "metrics": res.metrics, **res.info}
    atomic_write_json(out / "results.json", _clean(json.loads(json.dumps(doc, default=str))))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(_clean(cfg.to_dict()), sort_keys=False))
    plot_matrix(res.matrix, res.zero_shot, res.tasks, f"{cfg.strategy} on {cfg.sequence} ({cfg.backbone})",
                out / "matrix.png")
    atomic_write_text(out / "summary.md", summary_markdown(res, cfg))


def summary_markdown(res: RunResult, cfg: RunConfig) -> str:
    """The matrix and metrics as a markdown table."""
    lines = [f"# {cfg.strategy} on {cfg.sequence} ({cfg.backbone}" + ("" if cfg.dtype == "float32" else f", {cfg.dtype}")
             + ")", "",
             f"Budget: {cfg.train.steps} steps x batch {cfg.train.batch_size} per task, lr {cfg.train.lr}, "
             f"max_train {cfg.max_train}, max_test {cfg.max_test}, seed {cfg.seed}.", "",
             "| after \\ on | " + " | ".join(res.tasks) + " |", "|---" * (len(res.tasks) + 1) + "|",
             "| zero-shot | " + " | ".join(f"{v:.3f}" for v in res.zero_shot) + " |"]
    for i, t in enumerate(res.tasks):
        lines.append(f"| {t} | " + " | ".join("" if np.isnan(v) else f"{v:.3f}" for v in res.matrix[i]) + " |")
    m = res.metrics
    lines += ["", "| AvgAcc | LA | BWT | FWT | Forgetting | adapters | wall s |", "|---|---|---|---|---|---|---|",
              f"| {m['avg_acc']:.4f} | {_f(m['learning_acc'], sign=False)} | {_f(m['bwt'])} | {_f(m['fwt'])} | "
              f"{_f(m['forgetting'])} | {res.info['n_adapters']} | {res.info['timings_s']['total']} |", ""]
    return "\n".join(lines)


def _f(x: float, sign: bool = True) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{x:+.4f}" if sign else f"{x:.4f}"
