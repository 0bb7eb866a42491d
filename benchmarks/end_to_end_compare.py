"""End to end: `alearn bench` of today's code against an earlier commit's, at the earlier commit's rules.

Issue 14's end-to-end target: `alearn bench seed --strategies naive,per-task,ewc-replay,router` at the demo
budget, today's code against commit ``--ref`` (default f00ae2b), wall time, per-step losses and accuracies.
Since that commit the training rules changed on purpose (early stopping, the choices objective, a classifier
head, warm-up steps, lr 2e-3), so today's code runs here with the reference's rules: a fixed number of steps
(no early stopping), the language-model objective over the gold verbalizer, no head, the reference's lr and
its learning-rate schedule (transformers' linear schedule with 10 % warm-up, patched into today's trainer for
this comparison only: today's warm-up starts at 1/(w+1) of the rate where the reference's starts at 0).

Each arm is a fresh process (model and data loaded, every run trained and scored, nothing reused from an
earlier repeat), timed whole, alternated A-B, B-A, ...; each logs every training call's per-step losses.
The reference's source is a ``git worktree`` of ``--ref`` (removed afterwards); both arms use this
environment's packages.

    python benchmarks/end_to_end_compare.py --repeats 1       # results/end_to_end_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fmt, machine, save, spread

ROOT = Path(__file__).resolve().parents[1]

# run inside each arm's process: log every training call's per-step losses, then run the arm's bench
PRELUDE = """
import json, math, os, sys
import adaptive_learner.strategies.base as base
_log, _orig = open(os.environ["E2E_LOSSES"], "a"), base.train_adapter
def _logged(*a, **k):
    rep = _orig(*a, **k)
    _log.write(json.dumps({"desc": k.get("desc"), "losses": [float(x) for x in rep.losses]}) + "\\n")
    _log.flush()
    return rep
base.train_adapter = _logged
"""
REFERENCE = PRELUDE + """
from adaptive_learner.cli import app
sys.argv = ["alearn"] + json.loads(os.environ["E2E_ARGS"])
app()
"""
TODAY = PRELUDE + """
from pathlib import Path
from transformers import get_linear_schedule_with_warmup
import adaptive_learner.training.trainer as trainer
from adaptive_learner.evaluation.bench import BenchConfig, run_bench
from adaptive_learner.training import TrainConfig
trainer._schedule = lambda opt, cfg: get_linear_schedule_with_warmup(opt, math.ceil(0.1 * cfg.steps), cfg.steps)
b = json.loads(os.environ["E2E_BUDGET"])
cfg = BenchConfig(sequence=b["sequence"], strategies=b["strategies"], seeds=[0], max_train=b["max_train"],
                  max_test=b["max_test"],
                  train=TrainConfig(steps=b["steps"], batch_size=8, lr=b["lr"], max_length=b["max_length"],
                                    early_stop=False, head=False, objective="lm",
                                    warmup_steps=math.ceil(0.1 * b["steps"]), schedule="linear"))
run_bench(cfg, Path(b["out"]))
"""


def run_arm(name: str, src: Path, budget: dict, out: Path) -> dict:
    """One arm in a fresh process: wall seconds, the losses it logged, each strategy's results."""
    out.mkdir(parents=True)
    losses = out / "losses.jsonl"
    env = dict(os.environ, PYTHONPATH=str(src), E2E_LOSSES=str(losses),
               E2E_BUDGET=json.dumps({**budget, "out": str(out)}),
               E2E_ARGS=json.dumps(["bench", budget["sequence"], "--strategies", ",".join(budget["strategies"]),
                                    "--steps", str(budget["steps"]), "--max-train", str(budget["max_train"]),
                                    "--max-test", str(budget["max_test"]), "--max-length", str(budget["max_length"]),
                                    "--lr", str(budget["lr"]), "--out", str(out)]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", REFERENCE if name == "reference" else TODAY], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} arm failed:\n{proc.stderr[-3000:]}")
    calls = [json.loads(line) for line in losses.read_text().splitlines()]
    runs = {}
    for path in out.rglob("results.json"):
        r = json.loads(path.read_text())
        runs[r["strategy"]] = {"matrix": r["matrix"], "n_test": r["n_test"], "adapters": r.get("n_adapters")}
    return {"wall_s": round(wall, 1), "calls": calls, "runs": runs}


def compare(a: dict, b: dict) -> dict:
    """Largest per-step loss difference over the training calls both made, and accuracy differences in test
    examples (every cell of every strategy's matrix)."""
    steps = [abs(x - y) for ca, cb in zip(a["calls"], b["calls"]) for x, y in zip(ca["losses"], cb["losses"])]
    first = [abs(ca["losses"][0] - cb["losses"][0]) for ca, cb in zip(a["calls"], b["calls"])]
    cells = {}
    for s in sorted(set(a["runs"]) & set(b["runs"])):
        ra, rb = a["runs"][s], b["runs"][s]
        worst = 0.0
        for row_a, row_b in zip(ra["matrix"], rb["matrix"]):
            for x, y, k in zip(row_a, row_b, ra["n_test"]):
                if x is not None and y is not None:
                    worst = max(worst, abs(x - y) * k)
        cells[s] = {"largest_difference_in_test_examples": round(worst, 2),
                    "adapters": [ra["adapters"], rb["adapters"]]}
    return {"calls": [len(a["calls"]), len(b["calls"])],
            "descs_equal": [c["desc"] for c in a["calls"]] == [c["desc"] for c in b["calls"]],
            "largest_step_loss_difference": max(steps) if steps else None,
            "largest_first_step_loss_difference": max(first) if first else None, "accuracy": cells}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="f00ae2b")
    ap.add_argument("--sequence", default="seed")
    ap.add_argument("--strategies", default="naive,per-task,ewc-replay,router")
    ap.add_argument("--steps", type=int, default=24, help="the reference's demo budget: 24 steps")
    ap.add_argument("--max-train", type=int, default=192)
    ap.add_argument("--max-test", type=int, default=80)
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first", choices=("today", "reference"), default="today",
                    help="the arm that runs first in even repeats (the other runs first in odd ones)")
    ap.add_argument("--out", default="end_to_end_compare")
    a = ap.parse_args()
    budget = {"sequence": a.sequence, "strategies": a.strategies.split(","), "steps": a.steps, "max_train": a.max_train,
              "max_test": a.max_test, "max_length": a.max_length, "lr": a.lr}
    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    ref_tree = work / "ref"
    subprocess.run(["git", "worktree", "add", "--detach", str(ref_tree), a.ref], cwd=ROOT, check=True,
                   capture_output=True)
    arms = {"today": ROOT / "src", "reference": ref_tree / "src"}
    rows: dict[str, list[dict]] = {"today": [], "reference": []}
    try:
        for rep in range(a.repeats):
            order = ["today", "reference"] if (rep % 2 == 0) == (a.first == "today") else ["reference", "today"]
            for name in order:
                res = run_arm(name, arms[name], budget, work / f"{name}-{rep}")
                rows[name].append(res)
                print(f"repeat {rep} {name}: {res['wall_s']} s", flush=True)
            report(a, budget, rows, rep + 1)  # after every repeat, so an interrupted comparison keeps its pairs
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, capture_output=True)


def report(a: argparse.Namespace, budget: dict, rows: dict[str, list[dict]], done: int) -> None:
    """Write (and print) the comparison of the first ``done`` repeats."""
    walls = {k: [r["wall_s"] for r in v[:done]] for k, v in rows.items()}
    ratios = [r / t for r, t in zip(walls["reference"], walls["today"])]
    doc = {"machine": machine(), "ref": a.ref, "budget": budget, "repeats_done": done, "wall_s": walls,
           "speedup_reference_over_today": spread(ratios),
           "per_repeat": [compare(rows["today"][i], rows["reference"][i]) for i in range(done)],
           "today_repeats_agree": [compare(rows["today"][0], rows["today"][i]) for i in range(1, done)],
           "calls": {k: [{"desc": c["desc"], "losses": c["losses"]} for c in v[0]["calls"]] for k, v in rows.items()}}
    path = save(a.out, doc)
    print(f"wall: today {fmt(spread(walls['today']))} s, {a.ref} {fmt(spread(walls['reference']))} s; "
          f"speed-up {fmt(spread(ratios))}x; {json.dumps(doc['per_repeat'][0], indent=1)}\n-> {path}")


if __name__ == "__main__":
    main()
