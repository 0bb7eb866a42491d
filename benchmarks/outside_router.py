"""The router on real datasets outside the catalog (``outside_catalog.py``), met as a user meets it: a library of
adapters learned from catalog tasks with ``alearn learn``, then each outside task given to ``alearn learn --dry-run``
(the router's decision alone; nothing trained). Two libraries: without a sentiment adapter (stsb, trec, sms_spam:
every outside task should get a new adapter) and the same plus sst2 (the three sentiment tasks should reuse
lora-sst2; disaster-tweets, a family the catalog lacks, should not reuse anything).

    python benchmarks/outside_router.py --out runs/outside --save outside_router     # results/outside_router.json
    python benchmarks/outside_router.py --out runs/outside --outcome --save outside_router_outcome
    python benchmarks/outside_router.py --out runs/outside --outcome --routing --save outside_router_routing
    python benchmarks/outside_router.py --out runs/outside --routing-only --save outside_router_routing  # after --outcome
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


def head_rows(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` rows of a CSV file (by records, not lines: a quoted field may span lines) as ``dst``."""
    import csv

    with src.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with dst.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[: n + 1])
    return dst


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
        test = head_rows(data / f"{name}-test.csv", data / f"{name}-test{n_test}.csv", n_test)
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


def routing(out: Path, data: Path, n_test: int) -> dict:
    """Per input, without a task id, in the libraries the outcome step left (each with one outside task reused into
    lora-sst2 beside sst2, stsb, trec and sms_spam): ``alearn evaluate --routed`` on the task's test rows (how many
    reach the task, its adapter, and the accuracy so answered); then the open set, ``alearn predict`` in the
    product-reviews library on its own test rows (in the library) and on disaster tweets' (a task it never learned):
    how many are answered ``unknown``, and the AUROC of the novelty score between the two."""
    rows = []
    for name, (_, column, _, _, family) in OUTSIDE_TASKS.items():
        lib = out / f"lib-router-{name}"
        if family != "sentiment" or not lib.exists():
            continue
        ev = json.loads(alearn("evaluate", str(lib), "--task", name, "--data", str(data / f"{name}-test{n_test}.csv"),
                               "--routed", "--json"))
        same_adapter = sum(v for k, v in ev["routes"].items() if k in (name, "sst2"))  # both live in lora-sst2
        rows.append({"task": name, **{k: ev.get(k) for k in ("accuracy", "routed_to_task", "unknown", "routes")},
                     "adapter_level": same_adapter / ev["examples"]})
        print(f"routed {name:16s} accuracy {ev['accuracy']:.3f} to the task {ev['routed_to_task']:.3f} to its adapter "
              f"{rows[-1]['adapter_level']:.3f} unknown {ev['unknown']:.3f} routes {ev['routes']}", flush=True)
    lib = out / "lib-router-product-reviews"
    disaster = head_rows(data / "disaster-tweets-test.csv", data / f"disaster-tweets-test{n_test}.csv", n_test)
    sets = {}
    for label, file, column in (("in", data / f"product-reviews-test{n_test}.csv", "review"),
                                ("out", disaster, "tweet")):
        preds = [json.loads(line) for line in alearn("predict", "--library", str(lib), "--data", str(file),
                                                      "--text-column", column, "--json").splitlines() if line.strip()]
        sets[label] = {"n": len(preds), "unknown": sum(p["nearest_label"] is not None for p in preds) / len(preds),
                       "novelty": [p.get("novelty") for p in preds],
                       "routes": {t: sum(p["task"] == t for p in preds) for t in sorted({p["task"] for p in preds})}}
    ins, outs = sets["in"]["novelty"], sets["out"]["novelty"]
    from sklearn.metrics import roc_auc_score  # as open_set.py scores the catalog's open set

    auroc = float(roc_auc_score([0] * len(ins) + [1] * len(outs), ins + outs))
    print(f"open set: unknown {sets['in']['unknown']:.3f} of in-library inputs, {sets['out']['unknown']:.3f} of "
          f"disaster tweets (routes {sets['out']['routes']}); novelty AUROC {auroc:.3f}", flush=True)
    return {"routed": rows, "open_set": {**sets, "auroc": auroc}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "outside")
    ap.add_argument("--max-train", type=int, default=160)
    ap.add_argument("--save", default=None, help="results/<name>.json")
    ap.add_argument("--outcome", action="store_true",
                    help="also learn each sentiment task both ways (reuse as decided, and new) and score both")
    ap.add_argument("--n-test", type=int, default=300, help="with --outcome: test rows scored per task")
    ap.add_argument("--routing", action="store_true",
                    help="after --outcome (its libraries): per-input routing without a task id and the open set")
    ap.add_argument("--routing-only", action="store_true", help="--routing alone, on the libraries a run left")
    a = ap.parse_args()
    data = a.out / "data"
    for name in OUTSIDE_TASKS:
        write_task(name, data)
    if a.routing_only:
        result = {"machine": machine(), "routing": routing(a.out, data, a.n_test)}
        if a.save:
            save(a.save, result)
        return
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
    if a.routing:
        result["routing"] = routing(a.out, data, a.n_test)
    if a.save:
        save(a.save, result)


if __name__ == "__main__":
    main()
