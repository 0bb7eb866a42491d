"""The router on real datasets outside the catalog (``outside_catalog.py``), met as a user meets it: a library of
adapters learned from catalog tasks with ``alearn learn``, then each outside task given to ``alearn learn --dry-run``
(the router's decision alone; nothing trained). Two libraries: without a sentiment adapter (stsb, trec, sms_spam:
every outside task should get a new adapter) and the same plus sst2 (the three sentiment tasks should reuse
lora-sst2; disaster-tweets, a family the catalog lacks, should not reuse anything).

    python benchmarks/outside_router.py --out runs/outside --save outside_router     # results/outside_router.json
    python benchmarks/outside_router.py --out runs/outside --outcome --save outside_router_outcome
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from common import machine, save
from outside_catalog import OUTSIDE_TASKS, write_task

ROOT = Path(__file__).resolve().parent.parent


def alearn(*args: str, log: Path | None = None) -> str:
    """Run the command line as a user would (the same interpreter's package), failing loudly."""
    cmd = [sys.executable, "-m", "adaptive_learner.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args[:4])}... exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout


def learn_catalog(lib: Path, task: str, max_train: int, out: Path) -> None:
    if lib.exists() and task in alearn("library", "ls", str(lib)).split():  # learned already (a rerun)
        return
    alearn("learn", "--library", str(lib), "--task", task, "--max-train", str(max_train), "--force-new",
           log=out / f"learn-{lib.name}-{task}.log")


def decide(lib: Path, data: Path, max_train: int) -> list[dict]:
    rows = []
    for name, (_, column, description, labels, family) in OUTSIDE_TASKS.items():
        doc = json.loads(alearn("learn", "--library", str(lib), "--data", str(data / f"{name}-train.csv"),
                                "--name", name, "--text-column", column, "--labels", ",".join(labels),
                                "--description", description, "--max-train", str(max_train), "--dry-run"))
        rows.append({"task": name, "family": family, **{k: doc.get(k) for k in
                                                          ("action", "adapter", "confidence", "explanation")}})
        print(f"{lib.name:18s} {name:16s} {doc.get('action')} {doc.get('adapter')} "
              f"({doc.get('confidence', float('nan')):.3f})", flush=True)
    return rows


def outcome(with_: Path, data: Path, out: Path, max_train: int, n_test: int) -> list[dict]:
    """Issue 13's ground truth by outcome on the outside sentiment tasks: each learned into a copy of the library with
    sst2 as the router decides (reuse) and with ``--force-new``; the task scored on the first ``n_test`` rows of its
    test file, sst2 on the examples kept when it was learned. Reuse is right when sst2 stays within 1 point and the
    task within 1 point of its new adapter."""
    rows = []
    for name, (_, column, description, labels, family) in OUTSIDE_TASKS.items():
        if family != "sentiment":
            continue
        lines = (data / f"{name}-test.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        test = data / f"{name}-test{n_test}.csv"
        test.write_text("".join(lines[: n_test + 1]), encoding="utf-8")
        row: dict = {"task": name}
        for arm, extra in (("router", []), ("new", ["--force-new"])):
            lib = out / f"lib-{arm}-{name}"
            if not lib.exists():
                shutil.copytree(with_, lib)
            if name not in alearn("library", "ls", str(lib)).split():
                alearn("learn", "--library", str(lib), "--data", str(data / f"{name}-train.csv"), "--name", name,
                       "--text-column", column, "--labels", ",".join(labels), "--description", description,
                       "--max-train", str(max_train), *extra, log=out / f"learn-{arm}-{name}.log")
            task = json.loads(alearn("evaluate", str(lib), "--task", name, "--data", str(test), "--json"))
            sst2 = json.loads(alearn("evaluate", str(lib), "--task", "sst2", "--json"))
            row[arm] = {"adapter": task.get("adapter"), "accuracy": task.get("accuracy"), "task_eval": task,
                        "sst2": sst2}
        r, n = row["router"], row["new"]
        row["reused"] = r["adapter"] == "lora-sst2"
        row["right_by_outcome"] = (not row["reused"]) or (
            r["sst2"]["now"] >= r["sst2"]["then"] - 0.01 and r["accuracy"] >= n["accuracy"] - 0.01)
        print(f"{name:16s} router {r['adapter']} {r['accuracy']:.3f} (sst2 {r['sst2']['then']:.3f} -> "
              f"{r['sst2']['now']:.3f}); new adapter {n['accuracy']:.3f}; right by outcome: {row['right_by_outcome']}",
              flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "outside")
    ap.add_argument("--max-train", type=int, default=160)
    ap.add_argument("--save", default=None, help="results/<name>.json")
    ap.add_argument("--outcome", action="store_true",
                    help="also learn each sentiment task both ways (reuse as decided, and new) and score both")
    ap.add_argument("--n-test", type=int, default=300, help="with --outcome: test rows scored per task")
    a = ap.parse_args()
    data = a.out / "data"
    for name in OUTSIDE_TASKS:
        write_task(name, data)
    without, with_ = a.out / "lib-without-sst2", a.out / "lib-with-sst2"
    for task in ("stsb", "trec", "sms_spam"):
        learn_catalog(without, task, a.max_train, a.out)
    result = {"machine": machine(), "max_train": a.max_train, "without_sst2": decide(without, data, a.max_train)}
    if not with_.exists():
        shutil.copytree(without, with_)
    learn_catalog(with_, "sst2", a.max_train, a.out)
    result["with_sst2"] = decide(with_, data, a.max_train)
    right = 0
    for key, sentiment_adapter in (("without_sst2", None), ("with_sst2", "lora-sst2")):
        for r in result[key]:
            expected = sentiment_adapter if r["family"] == "sentiment" and sentiment_adapter else None
            r["right_by_family"] = (r["action"] == "reuse" and r["adapter"] == expected) if expected else \
                r["action"] != "reuse"
            right += r["right_by_family"]
    result["right_by_family"] = f"{right} of {2 * len(OUTSIDE_TASKS)}"
    print("right by family:", result["right_by_family"])
    if a.outcome:
        result["outcome"] = outcome(with_, data, a.out, a.max_train, a.n_test)
    if a.save:
        save(a.save, result)


if __name__ == "__main__":
    main()
