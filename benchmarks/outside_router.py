"""The router on real datasets outside the catalog (``outside_catalog.py``), met as a user meets it: a library of
adapters learned from catalog tasks with ``alearn learn``, then each outside task given to ``alearn learn --dry-run``
(the router's decision alone; nothing trained). Two libraries: without a sentiment adapter (stsb, trec, sms_spam:
every outside task should get a new adapter) and the same plus sst2 (the three sentiment tasks should reuse
lora-sst2; disaster-tweets, a family the catalog lacks, should not reuse anything).

    python benchmarks/outside_router.py --out runs/outside --save outside_router     # results/outside_router.json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "outside")
    ap.add_argument("--max-train", type=int, default=160)
    ap.add_argument("--save", default=None, help="results/<name>.json")
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
    if a.save:
        save(a.save, result)


if __name__ == "__main__":
    main()
