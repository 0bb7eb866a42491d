"""Does ``alearn learn --guard`` act where a reuse costs an old task, and only there?

The product's path (``Learner.learn``, the defaults of ``alearn learn``): a library with one adapter, learned on
``--base``; then each case's task is learned into that adapter (``reuse=``, forced, so that the router's own choice
does not decide which cases are tried), once with the guard and once without, and (arm ``new``) into a new adapter
for what the task reaches on its own, each from a copy of the library:

* ``same-family``: another dataset of the base task's family (a reuse that should cost nothing);
* ``other-family``: a task of another family;
* ``conflict``: the same-family dataset with its labels swapped (the same label names, the opposite answers: a
  reuse that must cost the old task something, unless the adapter tells the two prompts apart);
* ``conflict-same-prompt``: the same, asked with the base task's own description and prompt, so that the adapter
  cannot tell the two tasks apart (a reuse that must cost the old task).

Per case and arm: the action taken, the adapter the task went to, the reuse's retention check of the base task
(then, now, the paired change and its verdict, as ``alearn learn`` prints it), the new task's accuracy on its
test examples, and the base task scored afterwards on its kept examples (``Learner.check``: what the library
holds at the end). The check is on the base task's kept *test* examples: the guard decides on them, so the
figures say whether it acts as specified, not how a user's untouched data would fare (give ``--data`` to
``alearn evaluate`` for that).

    OMP_NUM_THREADS=1 python benchmarks/guard_cases.py --out guard_cases        # results/guard_cases.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from adaptive_learner.learner import Learner
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import Example, TaskData, TaskSpec
from adaptive_learner.training import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def swapped(task: TaskData, name: str) -> TaskData:
    """``task`` with its two labels' answers swapped: each example keeps its text, the other label."""
    if len(task.spec.label_names) != 2:
        raise SystemExit(f"{task.name}: swapping labels needs two labels")
    spec = TaskSpec.from_dict({**task.spec.to_dict(), "name": name})
    flip = lambda rows: [Example(dict(e.fields), 1 - e.label) for e in rows]  # noqa: E731
    return TaskData(spec, flip(task.train), flip(task.test))


def same_prompt(task: TaskData, like: TaskData) -> TaskData:
    """``task`` asked exactly as ``like`` is: its description, and its template with ``task``'s field."""
    (field,), (mine,) = like.spec.input_fields, task.spec.input_fields
    template = like.spec.template.replace("{" + field + "}", "{" + mine + "}")
    spec = TaskSpec.from_dict({**task.spec.to_dict(), "description": like.spec.description, "template": template})
    return TaskData(spec, task.train, task.test)


def outcome(o: Any, learner: Learner, base: str) -> dict[str, Any]:
    (now,) = learner.check([base])
    return {"action": o.action, "adapter": o.adapter, "rejected": o.rejected, "init_from": o.init_from,
            "accuracy_after": o.accuracy_after, "retention": [r.to_json() for r in o.retention],
            "base_at_end": now.to_json() if not isinstance(now, str) else None,
            "train_steps": (o.train or {}).get("steps")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="sst2")
    ap.add_argument("--same-family", default="rotten_tomatoes")
    ap.add_argument("--other-family", default="trec")
    ap.add_argument("--cases", default="conflict,same-family,other-family")
    ap.add_argument("--arms", default="guard,plain,new", help="guard: reuse with --guard; plain: without; new: "
                                                                 "a new adapter (fresh), the task's own level")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--max-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/guard_cases"))
    ap.add_argument("--out", default="guard_cases")
    args = ap.parse_args()

    def catalog(name: str) -> TaskData:
        return load_catalog_task(name).subsample(args.max_train, args.max_test, args.seed)

    def learner(lib: Path, create: bool = False) -> Learner:
        return Learner(lib, backbone=args.backbone if create else None, create=create,
                       train=TrainConfig(seed=args.seed))

    tasks = {"same-family": lambda: catalog(args.same_family), "other-family": lambda: catalog(args.other_family),
             "conflict": lambda: swapped(catalog(args.same_family), f"{args.same_family}-swapped"),
             "conflict-same-prompt": lambda: same_prompt(
                 swapped(catalog(args.same_family), f"{args.same_family}-swapped-as-{args.base}"), catalog(args.base))}
    args.work.mkdir(parents=True, exist_ok=True)
    base_lib = args.work / "base"
    out: dict[str, Any] = {"config": vars(args) | {"work": str(args.work)}, "cases": {}}
    t0 = time.time()
    if not (base_lib / "manifest.json").exists():
        b = learner(base_lib, create=True).learn(catalog(args.base), force_new=True)
        print(f"base {args.base}: {b.adapter} {b.accuracy_after:.3f}", flush=True)
    lib0 = learner(base_lib)
    base_adapter = lib0.library.adapter_of(args.base)
    out["base"] = {"task": args.base, "adapter": base_adapter,
                   "accuracy": lib0.library.tasks[args.base].get("accuracy")}
    for case in [c for c in args.cases.split(",") if c]:
        task = tasks[case]()
        for arm in [a for a in args.arms.split(",") if a]:
            lib = args.work / f"{case}-{arm}"
            shutil.rmtree(lib, ignore_errors=True)
            shutil.copytree(base_lib, lib, ignore=shutil.ignore_patterns(".lock"))
            lrn = learner(lib)
            start = time.time()
            if arm == "new":
                o = lrn.learn(task, force_new=True)
            else:
                o = lrn.learn(task, reuse=base_adapter, guard=arm == "guard")
            rec = outcome(o, lrn, args.base) | {"seconds": round(time.time() - start, 1), "task": task.name}
            out["cases"][f"{case}/{arm}"] = rec
            ret = rec["retention"][0] if rec["retention"] else {}
            print(f"{case:13s} {arm:5s} {o.action:5s} -> {o.adapter:24s} new task {o.accuracy_after:.3f}; "
                  f"{args.base} then {ret.get('then', float('nan')):.3f} after the reuse {ret.get('now', float('nan')):.3f}"
                  f" ({ret.get('verdict')}); at the end {rec['base_at_end']['now']:.3f}", flush=True)
            (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=float))
    out["seconds"] = round(time.time() - t0, 1)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
