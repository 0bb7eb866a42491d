"""The learn worker: a separate process (multiprocessing ``spawn``) that runs ``Learner.learn``.

It receives plain data only (the library path, the task's source and the options as a dict) and
reports plain dicts on a queue: state, phase, progress (step / steps), and at the end the outcome
or one line of error. The library's lock keeps it the one writer; its transaction makes the new
adapter appear in the library all at once, where the server's next request picks it up.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, Callable

from ..errors import UserError

Emit = Callable[..., None]


def build_task(source: dict[str, Any], opts: dict[str, Any]) -> Any:
    """The task to learn, as ``alearn learn`` builds it: a built-in task or a user's file, subsampled."""
    from ..prompting import DEFAULT_LABEL_SCORING
    from ..tasks import load_catalog_task, load_file_task

    if source["kind"] == "file":
        scoring = opts.get("label_scoring") or DEFAULT_LABEL_SCORING
        t = load_file_task(source["path"], source["name"], opts["description"], opts.get("text_column") or None,
                           opts.get("label_column", "label"), opts.get("labels") or None,
                           family=opts.get("family", "unknown"), template=opts.get("template"),
                           label_scoring=scoring)
    else:
        t = load_catalog_task(source["name"])
        if opts.get("label_scoring"):
            t = t.with_label_scoring(opts["label_scoring"])
        if opts.get("name") or opts.get("description"):
            t = t.renamed(opts.get("name") or t.name, opts.get("description"))
    return t.subsample(opts["max_train"], 200, opts["seed"])


def run_job(job: dict[str, Any], events: Any) -> None:
    """The worker process's entry point: learn one task and report on ``events`` (a multiprocessing queue)."""

    def emit(**kw: Any) -> None:
        events.put({"id": job["id"], **kw})

    try:
        emit(state="running", phase="loading")
        emit(state="succeeded", phase="done", result=_learn(job, emit))
    except UserError as exc:
        emit(state="failed", phase="done", error=_one_line(str(exc), job))
    except Exception as exc:  # reported as one line; the full traceback goes to the server's log only
        traceback.print_exc(file=sys.stderr)
        emit(state="failed", phase="done", error=_one_line(f"{type(exc).__name__}: {exc}", job))


def _learn(job: dict[str, Any], emit: Emit) -> dict[str, Any]:
    from ..learner import Learner
    from ..training import TrainConfig

    opts = job["options"]
    task = build_task(job["source"], opts)
    cfg = TrainConfig(steps=opts["steps"], batch_size=opts["batch_size"], lr=opts["lr"],
                      max_length=opts["max_length"], seed=opts["seed"], early_stop=opts["early_stop"],
                      patience=opts["patience"], eval_every=opts["eval_every"],
                      monitor=opts.get("monitor", "accuracy"), lr_retries=opts.get("lr_retries", 0))
    cfg.head = opts.get("head", True)  # as `alearn learn --head/--no-head` sets it
    cfg.head_mix = str(opts.get("head_mix", "gated"))  # and --head-mix
    cfg.head_views = str(opts.get("head_views", cfg.head_views))  # and the head's views and temperatures
    cfg.head_view_rule = str(opts.get("head_view_rule", cfg.head_view_rule))
    cfg.head_calibrate = str(opts.get("head_calibrate", cfg.head_calibrate))
    learner = Learner(job["library"], train=cfg, router=opts["router"], init=opts["init"], create=False,
                      dtype=job.get("dtype", "float32"), device=job.get("device", "auto"))
    _report_training(emit)
    emit(phase="deciding")
    o = learner.learn(task, force_new=opts["force_new"], reuse=opts.get("reuse"), dry_run=opts["dry_run"],
                      guard=bool(opts.get("guard", False)))
    out = {"task": o.task, "action": o.action, "adapter": o.adapter, "confidence": o.confidence,
           "explanation": o.explanation, "decision": o.decision, "init_from": o.init_from, "rejected": o.rejected,
           "accuracy_before": o.accuracy_before, "accuracy_after": o.accuracy_after,
           "retention": [r.to_json() for r in o.retention] or None, "train": o.train or None}
    return json.loads(json.dumps(out, default=float))  # plain JSON types only cross back


def _report_training(emit: Emit) -> None:
    """Report each optimizer step: the trainer's progress bar (its one per-step hook) reports as it advances.

    Done in this worker process only, where nothing else uses the trainer's bar."""
    from ..training import trainer

    base = trainer.tqdm

    class _ReportingBar(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # no bar on the server's terminal
            super().__init__(*args, **kwargs)

        def __iter__(self):  # type: ignore[override]
            steps = int(self.total or 0)
            handed = 0  # batches handed to the trainer; each one it asks past is a finished step
            emit(phase="training", progress={"step": 0, "steps": steps})
            try:
                for item in super().__iter__():
                    if handed:
                        emit(progress={"step": handed, "steps": steps})
                    handed += 1
                    yield item
            finally:  # also when early stopping leaves the loop after its step
                emit(phase="evaluating", progress={"step": handed, "steps": steps})

    trainer.tqdm = _ReportingBar


def _one_line(text: str, job: dict[str, Any], width: int = 400) -> str:
    """One line, with the server's temporary upload path replaced by the file's own name."""
    src = job.get("source", {})
    if src.get("kind") == "file":
        text = text.replace(src["path"], src.get("filename", "upload"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
