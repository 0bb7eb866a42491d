"""``alearn bench``: every strategy on the same data, seed, steps and budget, in one comparison.

For each seed and each task order, every strategy runs the sequence through the harness on the
same subsampled tasks (same examples, same steps and batch size per task). The comparison table
gives mean and spread (sample standard deviation over seeds x orders) of average accuracy, BWT,
FWT and forgetting, with trainable parameters, adapters in the library and wall time; every run's
matrix follows, and ``bars.png`` charts the means with error bars.

Every strategy is scored on the same test examples for a given seed, and each run records which
examples its final row got right. Beside the mean ± sd, the table gives each strategy's AvgAcc
minus the reference strategy's (``reference``, the router by default) with a paired bootstrap 95%
interval (``evaluation/stats.py``: test examples resampled within each task and seed, the same
resample for both strategies, ``resamples`` draws, seed 0); a ``*`` marks an interval that
excludes 0. Where the reference also scored its final row with the task inferred per input (the
router does), that row is compared too, and so is every task-id-free strategy against it. Runs
written before outcomes were recorded are still read; they take no part in the intervals.

Order 0 is the sequence as written; order k >= 1 is a permutation drawn with seed k (the same for
every seed and strategy). With ``lr_search`` each strategy's learning rate is chosen first, once:
each task's training data is split (stratified, seeded) into a search-train part and a held-out
part, the strategy runs the sequence for every learning rate of the grid on the search-train
parts, and the rate with the best final average accuracy on the held-out parts is used for the
real runs (test data never takes part); ``search_repeats`` runs each rate that many times, each on its own
held-out split and training seed, and compares the rates by the mean. The search is reported beside the results. ``search_tasks``
runs the search on part of the sequence (its rates are used on the whole of it); ``search_only``
stops after the search, writing its table and no run.

Every run writes its own directory (results.json, matrix.png, summary.md) plus ``bench-key.json``;
a later bench with the same settings reuses finished runs instead of repeating them, so a long
comparison can be run in pieces.

The runs are independent: with ``workers`` > 1 (or a Ray address) the unfinished ones run as Ray
tasks, at most ``workers`` at once (``ray_engine.RunPool``); their results are gathered in the
order written above, so bench.json and bench.md are those of the sequential path.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import LoraSettings
from ..backbone import DEFAULT_BACKBONE, resolve_device, resolve_dtype
from ..errors import UserError
from ..fileio import atomic_write_json, atomic_write_text, read_json
from ..scoring import BATCH
from ..strategies import check_requirements
from ..tasks.spec import TaskData, stratified_split
from ..training import TrainConfig
from . import checkpoint
from .config import run_identity
from .harness import RunConfig, RunResult, environment, prepare_tasks, run_sequence
from .metrics import learning_accuracy
from .plots import plot_bars
from .stats import Correct, RunKey, bwt_paired, compare

DEFAULT_STRATEGIES = ["zero-shot", "naive", "per-task", "per-task-warm", "ewc", "replay", "ewc-replay", "o-lora",
                      "osf", "arrow", "mtl", "router"]
TASK_INFERRED = " (task inferred)"  # suffix of a strategy's final row scored with the task inferred per input
METRICS = [("avg_acc", "AvgAcc"), ("learning_acc", "LA"), ("bwt", "BWT"), ("fwt", "FWT"), ("forgetting", "Forgetting")]
NO_TRAINING = {"zero-shot"}  # nothing to tune
TAKES_NO_OPTIONS = {"zero-shot", "naive", "per-task", "mtl"}  # the plain baselines read no strategy options


@dataclass
class BenchConfig:
    """What to compare, on what, how often; the per-task budget is shared by every strategy."""

    sequence: str = field(default="seed", metadata={"help": "built-in sequence name or YAML file"})
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES),
                                  metadata={"help": "strategies to compare"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds (data sample, init, order)"})
    orders: int = field(default=1, metadata={"help": "task orders: the written one plus N-1 seeded permutations"})
    backbone: str = field(default=DEFAULT_BACKBONE, metadata={"help": "backbone alias, path or id"})
    max_train: int | None = field(default=256, metadata={"help": "training examples per task"})
    max_test: int | None = field(default=100, metadata={"help": "test examples per task"})
    eval_batch_size: int = field(default=BATCH, metadata={"help": "examples per scoring batch"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "per-task budget and default lr"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA settings"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "strategy options (ewc_*, replay_*, ...)"})
    lr_search: bool = field(default=False, metadata={"help": "choose each strategy's lr on held-out training data"})
    lr_grid: list[float] = field(default_factory=lambda: [1e-3, 2e-3, 4e-3], metadata={"help": "lrs searched"})
    holdout: float = field(default=0.2, metadata={"help": "fraction of each task's training data held out"})
    holdout_max: int = field(default=50, metadata={"help": "held-out examples per task used to score the search"})
    search_tasks: list[str] | None = field(default=None, metadata={"help": "the sequence's tasks the lr search runs "
                                                                            "on, in the sequence's order (None: all)"})
    search_only: bool = field(default=False, metadata={"help": "stop after the lr search: its table, no runs"})
    search_repeats: int = field(default=1, metadata={
        "help": "runs of the lr search per rate, each on its own held-out split and training seed; the rates are "
                "compared by the mean of their runs (one run follows one training draw: BENCHMARKS.md, session 39)"})
    reference: str = field(default="router", metadata={"help": "the strategy every other one is compared with "
                                                                "(paired bootstrap interval of the AvgAcc difference)"})
    resamples: int = field(default=2000, metadata={"help": "bootstrap resamples of the test examples"})
    device: str = field(default="auto", metadata={"help": "where the runs train and score (auto: a CUDA GPU when "
                                                           "there is one); not part of a run's identity"})
    dtype: str = field(default="float32", metadata={"help": "the backbone's precision: float32 or bfloat16"})
    zero_shot_cache: Path | None = field(default=None, metadata={
        "help": "a JSON file of the backbone's zero-shot accuracies, keyed by the backbone, its precision and each "
                "task's encoded test examples, that several benches share (None: one file per seed and order in "
                "the bench's directory)"})

    def validate(self) -> None:
        from ..strategies import REGISTRY

        unknown = [s for s in self.strategies if s not in REGISTRY]
        if unknown or not self.strategies:
            raise UserError(f"unknown strategies {unknown or '(none given)'}; available: {', '.join(sorted(REGISTRY))}")
        if len(set(self.strategies)) != len(self.strategies):
            raise UserError("a strategy is listed twice")
        if not self.seeds or self.orders < 1:
            raise UserError("give at least one seed and --orders >= 1")
        if self.lr_search and (not self.lr_grid or min(self.lr_grid) <= 0 or not 0 < self.holdout < 1):
            raise UserError("the lr grid needs positive rates and the held-out fraction must be in (0, 1)")
        if (self.search_tasks is not None or self.search_only) and not self.lr_search:
            raise UserError("--search-tasks and --search-only need --lr-search")
        if self.search_repeats < 1:
            raise UserError(f"--search-repeats must be at least 1, got {self.search_repeats}")
        if self.search_repeats > 1 and not self.lr_search:
            raise UserError("--search-repeats needs --lr-search")
        if self.search_tasks is not None and not self.search_tasks:
            raise UserError("--search-tasks names no task")
        if self.reference not in REGISTRY:
            raise UserError(f"--reference {self.reference!r} is not a strategy; available: "
                            f"{', '.join(sorted(REGISTRY))}")
        if self.resamples < 100:
            raise UserError(f"--resamples must be at least 100, got {self.resamples}")
        if self.zero_shot_cache is not None and Path(self.zero_shot_cache).exists() and \
                not Path(self.zero_shot_cache).is_file():
            raise UserError(f"--zero-shot-cache {self.zero_shot_cache} is not a file")
        for s in self.strategies:
            check_requirements(s)
        resolve_device(self.device)
        resolve_dtype(self.dtype)


@dataclass
class BenchResult:
    """Every run, the learning rates used and the search behind them, the aggregated table, and the
    paired comparisons (one dict per pair: strategy, against, mean, low, high, excludes_zero, ...)."""

    runs: list[dict[str, Any]]
    lrs: dict[str, float]
    search_runs: dict[str, dict[str, list[float]]]  # the lr search: each repeat's held-out score, by strategy and lr
    table: list[dict[str, Any]]
    paired: list[dict[str, Any]] = field(default_factory=list)

    @property
    def search(self) -> dict[str, dict[str, float]]:
        """The lr search's score of each rate: the mean over its repeats."""
        return {s: {lr: float(np.mean(v)) for lr, v in each.items()} for s, each in self.search_runs.items()}


def task_orders(n: int, count: int) -> list[list[int]]:
    """``count`` distinct orders of ``n`` tasks: the written one, then permutations seeded 1, 2, ..."""
    orders = [list(range(n))]
    k = 0
    while len(orders) < count:
        k += 1
        perm = [int(i) for i in np.random.RandomState(k).permutation(n)]
        if perm not in orders or k > 50 * count:  # few tasks: fewer distinct orders than asked
            orders.append(perm)
    return orders


def strategy_options(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``strategy`` reads: those under its ``option_prefixes`` (all when it declares none), and
    ``head`` where it answers with a task adapter (``Strategy.answers_with_head``).

    A run records (and is reused by) only these, so tuning one strategy does not repeat the others."""
    from ..strategies import REGISTRY

    cls = REGISTRY[strategy]
    prefixes = () if strategy in TAKES_NO_OPTIONS else getattr(cls, "option_prefixes", None)
    picked = dict(options) if prefixes is None else {k: v for k, v in options.items() if k.startswith(tuple(prefixes))}
    picked.pop("head", None)
    if cls.answers_with_head and "head" in options:  # the head option: every strategy that can answer with one
        picked["head"] = options["head"]
    return picked


def _run_config(cfg: BenchConfig, strategy: str, seed: int, lr: float) -> RunConfig:
    return RunConfig(sequence=cfg.sequence, strategy=strategy, backbone=cfg.backbone, max_train=cfg.max_train,
                     max_test=cfg.max_test, eval_batch_size=cfg.eval_batch_size, seed=seed,
                     train=replace(cfg.train, lr=lr, seed=seed), lora=cfg.lora,
                     options=strategy_options(strategy, cfg.options), device=cfg.device,
                     dtype=cfg.dtype)


def run_key(rc: RunConfig, tasks: list[TaskData]) -> dict[str, Any]:
    """What a finished run is recognised by: its settings and its tasks."""
    config = run_identity(json.loads(json.dumps(rc.to_dict(), default=str)))
    return {"config": config, "tasks": [t.name for t in tasks],
            "n_train": [len(t.train) for t in tasks], "n_test": [len(t.test) for t in tasks]}


def finished_run(rc: RunConfig, tasks: list[TaskData], out: Path) -> RunResult | None:
    """The run in ``out`` made with exactly these settings and tasks, or None."""
    key_file, res_file = out / "bench-key.json", out / "results.json"
    if not (key_file.is_file() and res_file.is_file()):
        return None
    stored = read_json(key_file)
    if {**stored, "config": run_identity(stored.get("config", {}))} != run_key(rc, tasks):
        return None
    doc = read_json(res_file)
    info = {k: doc[k] for k in ("n_adapters", "trainable_params", "timings_s", "final_correct", "learned_correct",
                                "router", "device") if k in doc}
    matrix = _array(doc["matrix"])
    metrics = {"learning_acc": learning_accuracy(matrix),  # runs written before LA was a metric
               **{k: (np.nan if v is None else v) for k, v in doc["metrics"].items()}}
    return RunResult(doc["tasks"], matrix, _array([doc["zero_shot"]])[0], metrics, info)


def cached_run(rc: RunConfig, tasks: list[TaskData], out: Path, zero_shot_cache: Path | None = None) -> RunResult:
    """Run, or reuse the finished run in ``out`` made with exactly these settings and tasks. The backbone's
    zero-shot row is read from and added to ``zero_shot_cache`` (default: ``zero-shot.json`` beside ``out``,
    which the strategies of one seed and order share: they are scored on the same test examples)."""
    done = finished_run(rc, tasks, out)
    if done is not None:
        return done
    # an interrupted run of exactly these settings continues from its last finished task
    resume = checkpoint.resumable(out, rc, [t.name for t in tasks])
    res = run_sequence(rc, out, tasks=tasks, zero_shot_cache=zero_shot_cache or out.parent / "zero-shot.json",
                       resume=resume)
    atomic_write_json(out / "bench-key.json", run_key(rc, tasks))
    return res


Call = tuple[RunConfig, list[TaskData], Path, "Path | None"]


def run_all(calls: list[Call], pool: Any = None) -> list[RunResult]:
    """Every ``(config, tasks, out, zero_shot_cache)`` run or reused, results in the order given: one after
    another in this process, or (``pool``, a ``ray_engine.RunPool``) the unfinished ones as Ray tasks, each
    writing its progress bars and warnings to ``out/ray-worker.log``."""
    if pool is None:
        return [cached_run(*c) for c in calls]
    results = [finished_run(*c[:3]) for c in calls]
    todo = [i for i, r in enumerate(results) if r is None]
    done = pool.map(cached_run, [calls[i] for i in todo], [str(calls[i][2]) for i in todo],
                    [str(calls[i][2] / "ray-worker.log") for i in todo])
    for i, res in zip(todo, done):
        results[i] = res
    return results


def _array(rows: list[list[float | None]]) -> np.ndarray:
    """A matrix from results.json, where JSON null stands for a value not measured."""
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)


def _nulls(x: Any) -> Any:
    """NaN -> None throughout, for strict JSON."""
    if isinstance(x, float) and np.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nulls(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nulls(v) for v in x]
    return x


def holdout_tasks(tasks: list[TaskData], cfg: BenchConfig, seed: int) -> list[TaskData]:
    """Each task's training data split into search-train and held-out parts (the test split is unused)."""
    out = []
    for i, t in enumerate(tasks):
        train, held = stratified_split(t.train, cfg.holdout, seed + 101 * i)
        if not train or not held:
            raise UserError(f"task {t.name}: too few training examples to hold some out for the lr search")
        out.append(TaskData(t.spec, train, held[: cfg.holdout_max]))
    return out


def search_subset(tasks: list[TaskData], names: list[str] | None) -> list[TaskData]:
    """The tasks the lr search runs on: ``names`` (any order given) kept in the sequence's order; all when None.

    A search on part of the sequence is cheaper (a long-input task can cost more than the rest together);
    the rates it picks are used for the runs on the whole sequence, and the report names the tasks."""
    if names is None:
        return tasks
    unknown = sorted(set(names) - {t.name for t in tasks})
    if unknown:
        raise UserError(f"--search-tasks: {', '.join(unknown)} not in this sequence "
                        f"({', '.join(t.name for t in tasks)})")
    wanted = set(names)
    return [t for t in tasks if t.name in wanted]


SEARCH_REPEAT_SEED = 1000  # repeat r of the lr search splits and trains with seed + r * this (r = 0: the seed itself)


def search_lrs(cfg: BenchConfig, strategies: list[str], tasks: list[TaskData], out: Path,
               pool: Any = None) -> dict[str, tuple[float, dict[str, list[float]]]]:
    """For each strategy, the grid's learning rate with the best final average accuracy on the held-out parts
    (mean over the repeats) and each repeat's score by rate; every (strategy, lr, repeat) run is given to
    ``run_all`` at once.

    Repeat r >= 1 draws its own held-out split and training seed (``SEARCH_REPEAT_SEED``) from the same
    training examples and runs in ``<strategy>-lr<rate>-r<r>``; repeat 0 is the single search's run, so a
    search repeated later reuses the runs of one made before."""
    seed = cfg.seeds[0]
    seeds = [seed + r * SEARCH_REPEAT_SEED for r in range(cfg.search_repeats)]
    splits = [holdout_tasks(tasks, cfg, sd) for sd in seeds]
    calls = [(_run_config(cfg, s, sd, lr), split, out / "lr-search" / (f"{s}-lr{lr:g}" + (f"-r{r}" if r else "")),
              cfg.zero_shot_cache)
             for s in strategies for lr in cfg.lr_grid for r, (sd, split) in enumerate(zip(seeds, splits))]
    results = iter(run_all(calls, pool))
    found = {}
    for s in strategies:
        each = {f"{lr:g}": [float(next(results).metrics["avg_acc"]) for _ in seeds] for lr in cfg.lr_grid}
        scores = {k: float(np.mean(v)) for k, v in each.items()}
        best = max(cfg.lr_grid, key=lambda lr: (scores[f"{lr:g}"], -abs(np.log(lr / cfg.train.lr))))
        found[s] = (best, each)
    return found


def run_bench(cfg: BenchConfig, out: Path, workers: int = 1, ray_address: str | None = None) -> BenchResult:
    """Run the comparison and write bench.json, bench.md and bars.png to ``out``.

    ``workers`` > 1 or a ``ray_address``: the unfinished runs as Ray tasks, at most ``workers`` at once
    (a local Ray with ``workers`` CPUs, or the cluster at ``ray_address``); the same results and files."""
    cfg.validate()
    pool = None
    if workers != 1 or ray_address is not None:
        from ..ray_engine import RunPool

        pool = RunPool(workers, ray_address, cfg.device)
    try:
        return _run_bench(cfg, Path(out), pool)
    finally:
        if pool is not None:
            pool.close()


def _run_bench(cfg: BenchConfig, out: Path, pool: Any) -> BenchResult:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    first = prepare_tasks(_run_config(cfg, cfg.strategies[0], cfg.seeds[0], cfg.train.lr))
    lrs: dict[str, float] = {s: cfg.train.lr for s in cfg.strategies}
    search_runs: dict[str, dict[str, list[float]]] = {}
    if cfg.lr_search:
        for s, (lr, each) in search_lrs(cfg, [s for s in cfg.strategies if s not in NO_TRAINING],
                                        search_subset(first, cfg.search_tasks), out, pool).items():
            lrs[s], search_runs[s] = lr, each
        if cfg.search_only:
            result = BenchResult([], lrs, search_runs, [])
            write_bench(result, cfg, out, [t.name for t in first], time.perf_counter() - t0)
            return result
    orders = task_orders(len(first), cfg.orders)
    calls: list[Call] = []
    keys: list[tuple[str, int, int]] = []
    for seed in cfg.seeds:
        tasks = first if seed == cfg.seeds[0] else prepare_tasks(_run_config(cfg, cfg.strategies[0], seed, 1.0))
        for k, order in enumerate(orders):
            ordered = [tasks[i] for i in order]
            for s in cfg.strategies:
                calls.append((_run_config(cfg, s, seed, lrs[s]), ordered, out / f"seed{seed}-order{k}" / s,
                              cfg.zero_shot_cache))
                keys.append((s, seed, k))
    runs: list[dict[str, Any]] = []
    correct: dict[RunKey, Correct] = {}
    stages: dict[str, list[tuple[int, dict[str, Any]]]] = {}  # per strategy: (seed, outcomes) for BWT's interval
    for (s, seed, k), res in zip(keys, run_all(calls, pool)):
        runs.append({"strategy": s, "seed": seed, "order": k, "lr": lrs[s], "tasks": res.tasks,
                     "matrix": res.matrix.tolist(), "zero_shot": res.zero_shot.tolist(),
                     "metrics": res.metrics, "n_adapters": res.info.get("n_adapters"),
                     "trainable_params": res.info.get("trainable_params"),
                     "wall_s": res.info.get("timings_s", {}).get("total"),
                     "cpu_s": res.info.get("timings_s", {}).get("cpu"), "device": res.info.get("device")})
        correct.update(run_outcomes(s, seed, k, res.info))
        stages.setdefault(s, []).append((seed, {"tasks": res.tasks, **res.info}))
    table = aggregate(runs, cfg.strategies)
    for row in table:
        mine = stages.get(row["strategy"], [])
        d = bwt_paired([r for _, r in mine], [sd for sd, _ in mine], cfg.resamples) if mine else None
        row["bwt_interval"] = None if d is None else [d.low, d.high]
    result = BenchResult(runs, lrs, search_runs, table, paired_comparisons(correct, cfg))
    write_bench(result, cfg, out, [t.name for t in first], time.perf_counter() - t0)
    return result


def run_outcomes(strategy: str, seed: int, order: int, info: dict[str, Any]) -> dict[RunKey, Correct]:
    """The per-example outcomes of a run's final row (and of its task-inferred row, where it has one);
    nothing for a run written before they were recorded."""
    out: dict[RunKey, Correct] = {}
    final = {t: v for t, v in (info.get("final_correct") or {}).items() if len(v)}  # a task with no test: no part
    if final:
        out[(strategy, seed, order)] = final
    inferred = ((info.get("router") or {}).get("task_inferred") or {}).get("per_task") or {}
    if inferred and all("correct" in v for v in inferred.values()):
        out[(strategy + TASK_INFERRED, seed, order)] = {t: v["correct"] for t, v in inferred.items() if v["correct"]}
    return out


def paired_comparisons(correct: dict[RunKey, Correct], cfg: BenchConfig) -> list[dict[str, Any]]:
    """Every strategy (and task-inferred row) against the reference; every task-id-free strategy
    against the reference's task-inferred row. Pairs with no recorded outcomes are left out."""
    from ..strategies import REGISTRY

    ref, ref_inferred = cfg.reference, cfg.reference + TASK_INFERRED
    names = [s for s in cfg.strategies if s != ref] + sorted({k[0] for k in correct if k[0].endswith(TASK_INFERRED)})
    pairs = [(s, ref) for s in names]
    pairs += [(s, ref_inferred) for s in cfg.strategies if getattr(REGISTRY[s], "task_id_free", False)]
    rows = []
    for a, b in pairs:
        d = compare(correct, a, b, cfg.resamples)
        if d is not None:
            rows.append({"strategy": a, "against": b, **d.to_dict()})
    return rows


def aggregate(runs: list[dict[str, Any]], strategies: list[str]) -> list[dict[str, Any]]:
    """One row per strategy: mean and spread of each metric over its runs."""
    table = []
    for s in strategies:
        mine = [r for r in runs if r["strategy"] == s]
        row: dict[str, Any] = {"strategy": s, "n": len(mine), "lr": mine[0]["lr"] if mine else None}
        for key, _ in METRICS:
            row[key] = _mean_sd([r["metrics"][key] for r in mine])
        for key in ("trainable_params", "n_adapters", "wall_s", "cpu_s"):
            row[key] = _mean_sd([r[key] for r in mine if r.get(key) is not None])
        table.append(row)
    return table


def _mean_sd(vals: list[float]) -> tuple[float, float]:
    arr = np.array([np.nan if v is None else v for v in vals], dtype=float)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return (float("nan"), float("nan"))
    return (float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def _fmt(ms: tuple[float, float], signed: bool = False, digits: int = 3, spread: bool = True) -> str:
    m, sd = ms
    if np.isnan(m):
        return "n/a"
    body = f"{m:+.{digits}f}" if signed else f"{m:.{digits}f}"
    return f"{body} ± {sd:.{digits}f}" if spread else body


def _fmt_interval(iv: Any) -> str:
    """`` [low, high]`` (a paired 95% interval, ``*`` when it excludes 0), or nothing."""
    if not iv:
        return ""
    return f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" + (" *" if iv[0] > 0 or iv[1] < 0 else "")


def bench_markdown(res: BenchResult, cfg: BenchConfig, orders: list[list[int]], task_names: list[str]) -> str:
    """The comparison table, the lr search, and every run's matrix."""
    many = len(cfg.seeds) * cfg.orders > 1
    t = cfg.train
    lines = [f"# Benchmark: {cfg.sequence} on {cfg.backbone}" + ("" if cfg.dtype == "float32" else f" ({cfg.dtype})"), "",
             f"Same budget for every strategy: {t.steps} steps x batch {t.batch_size} per task, max_length "
             f"{t.max_length}, max_train {cfg.max_train}, max_test {cfg.max_test}; seeds {cfg.seeds}; "
             f"{cfg.orders} task order(s): " + "; ".join(" -> ".join(task_names[i] for i in o) for o in orders)
             + "." + (f" Options: {cfg.options}." if cfg.options else ""), "",
             ("Mean ± sample std over " + f"{len(cfg.seeds) * cfg.orders} runs (seeds x orders)." if many
              else "One run per strategy.") + _devices_line(res.runs), "",
             f"| strategy | lr | AvgAcc | AvgAcc - {cfg.reference} [95% CI] | LA | BWT | FWT | Forgetting | "
             "trainable params | adapters | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    against = {r["strategy"]: r for r in res.paired if r["against"] == cfg.reference}
    for row in res.table:
        lr = f"{row['lr']:g}" + (" (searched)" if row["strategy"] in res.search_runs else "")
        diff = "(reference)" if row["strategy"] == cfg.reference else _fmt_diff(against.get(row["strategy"]))
        lines.append(f"| {row['strategy']} | {lr} | {_fmt(row['avg_acc'], spread=many)} | {diff} | "
                     f"{_fmt(row['learning_acc'], spread=many)} | "
                     f"{_fmt(row['bwt'], True, spread=many)}{_fmt_interval(row.get('bwt_interval'))} | "
                     f"{_fmt(row['fwt'], True, spread=many)} | "
                     f"{_fmt(row['forgetting'], True, spread=many)} | {row['trainable_params'][0]:,.0f} | "
                     f"{row['n_adapters'][0]:g} | {row['wall_s'][0]:.0f} |")
    lines += ["", "LA (learning accuracy): the mean of each task's accuracy right after its own training; with T tasks "
                  "AvgAcc = LA + (T-1)/T x BWT, so a gap in AvgAcc is either learning (LA) or forgetting (BWT). n/a "
                  "where tasks are scored only at the end (mtl)."]
    if any(row.get("bwt_interval") for row in res.table):
        lines += ["", "BWT's [95% interval]: a paired bootstrap of each task's final outcomes against its outcomes right "
                      "after it was trained, resampling each task's test examples within each seed (* = it excludes "
                      "0); none where a run scored its tasks only at the end or was written before the outcomes were "
                      "kept."]
    lines += cost_markdown(res.runs)
    lines += paired_markdown(res.paired, cfg)
    if cfg.search_only:  # no runs: the budget line, then the search
        return "\n".join(lines[:3] + ["The learning-rate search alone (--search-only): no runs on the test data."]
                         + search_markdown(res, cfg, task_names)) + "\n"
    lines += search_markdown(res, cfg, task_names)
    lines += ["", "## Accuracy matrices (row: after training that task; zero-shot: the untouched backbone)"]
    for r in res.runs:
        lines += ["", f"### {r['strategy']} (seed {r['seed']}, order {r['order']}, lr {r['lr']:g})", "",
                  "| after \\ on | " + " | ".join(r["tasks"]) + " |", "|---" * (len(r["tasks"]) + 1) + "|",
                  "| zero-shot | " + " | ".join(f"{v:.3f}" for v in r["zero_shot"]) + " |"]
        for name, row in zip(r["tasks"], r["matrix"]):
            lines.append(f"| {name} | " + " | ".join("" if v is None or np.isnan(v) else f"{v:.3f}" for v in row)
                         + " |")
    return "\n".join(lines) + "\n"


def search_markdown(res: BenchResult, cfg: BenchConfig, task_names: list[str]) -> list[str]:
    """The lr search's table (nothing without a search)."""
    if not res.search_runs:
        return []
    on = "" if cfg.search_tasks is None else f"on {', '.join(t for t in task_names if t in cfg.search_tasks)} only; "
    runs = (f"seed {cfg.seeds[0]}" if cfg.search_repeats == 1 else
            f"{cfg.search_repeats} runs per rate, each its own held-out split and seed: the mean, each run's in brackets")
    lines = ["", f"## Learning-rate search ({on}held out {cfg.holdout:.0%} of each task's training data, at most "
                 f"{cfg.holdout_max} per task; {runs}; final average accuracy on the held-out parts)",
             "", "| strategy | " + " | ".join(f"lr {lr:g}" for lr in cfg.lr_grid) + " | chosen |",
             "|---" * (len(cfg.lr_grid) + 2) + "|"]

    def cell(s: str, lr: float) -> str:
        each = res.search_runs[s][f"{lr:g}"]
        return f"{np.mean(each):.3f}" + (f" ({' / '.join(f'{v:.3f}' for v in each)})" if len(each) > 1 else "")

    for s in res.search_runs:
        lines.append(f"| {s} | " + " | ".join(cell(s, lr) for lr in cfg.lr_grid) + f" | {res.lrs[s]:g} |")
    return lines


def cost_markdown(runs: list[dict[str, Any]]) -> list[str]:
    """What the runs of the table cost: their wall hours, and the CPU hours of those that recorded them (the
    process's CPU time over every thread, whatever else ran beside it; runs made before it was recorded
    count in the wall hours only)."""
    if not runs:
        return []
    wall = sum(r.get("wall_s") or 0.0 for r in runs)
    timed = [r["cpu_s"] for r in runs if r.get("cpu_s") is not None]
    cpu = (f"{sum(timed) / 3600:.2f} CPU hours" + ("" if len(timed) == len(runs) else
                                                   f" (the {len(timed)} of {len(runs)} runs that recorded it)")
           if timed else "CPU time not recorded")
    return ["", f"Cost of the {len(runs)} runs on the test data: {wall / 3600:.2f} hours of wall time, {cpu}."]


def _devices_line(runs: list[dict[str, Any]]) -> str:
    """Where the runs were made, when that was recorded (a bench may gather runs made on several devices)."""
    made = Counter(r.get("device") or "not recorded" for r in runs)
    if set(made) == {"not recorded"}:
        return ""
    return " Runs made on: " + ", ".join(f"{d} ({n})" for d, n in sorted(made.items())) + "."


def _fmt_diff(d: dict[str, Any] | None) -> str:
    """``+0.032 [+0.011, +0.054] *``: the difference, its interval, and * when the interval excludes 0."""
    if d is None:
        return "n/a"
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + (" *" if d["excludes_zero"] else "")


def paired_markdown(paired: list[dict[str, Any]], cfg: BenchConfig) -> list[str]:
    """The paired comparisons as a table, with how the intervals were made."""
    if not any(r["against"] == cfg.reference for r in paired):
        return ["", f"No paired intervals: the reference strategy {cfg.reference!r} is not in this bench, or its "
                    "runs hold no per-example outcomes (results written by an earlier version)."]
    lines = ["", f"## Paired differences of AvgAcc (95% bootstrap interval, {cfg.resamples} resamples of each "
                 "task's test examples within each seed, the same resample for both strategies; * = the interval "
                 "excludes 0)", "", "| strategy | against | difference | 95% interval | runs |",
             "|---|---|---|---|---|"]
    for r in paired:
        lines.append(f"| {r['strategy']} | {r['against']} | {r['mean']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}]"
                     + (" *" if r["excludes_zero"] else "") + f" | {r['runs']} |")
    return lines


def write_bench(res: BenchResult, cfg: BenchConfig, out: Path, names: list[str], seconds: float) -> None:
    """bench.json (everything), bench.md (tables and matrices) and bars.png (means with spread)."""
    orders = task_orders(len(names), cfg.orders)
    doc = {"config": asdict(cfg), "environment": environment(), "seconds": round(seconds, 1),
           "orders": [[names[i] for i in o] for o in orders], "lrs": res.lrs, "lr_search": res.search,
           "lr_search_runs": res.search_runs,
           "table": res.table, "paired": res.paired, "runs": res.runs}
    atomic_write_json(out / "bench.json", _nulls(json.loads(json.dumps(doc, default=str))))
    atomic_write_text(out / "bench.md", bench_markdown(res, cfg, orders, names))
    if not res.runs:  # the lr search alone: nothing to chart
        return
    keys = [("avg_acc", "AvgAcc"), ("bwt", "BWT"), ("fwt", "FWT")]
    title = f"{Path(cfg.sequence).stem} on {cfg.backbone}: mean over {len(cfg.seeds) * cfg.orders} run(s) each"
    plot_bars([r["strategy"] for r in res.table], {label: [r[k][0] for r in res.table] for k, label in keys},
              out / "bars.png", title,
              errors={label: [r[k][1] for r in res.table] for k, label in keys})
