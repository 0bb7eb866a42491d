"""SIGKILL ``alearn run`` part-way through a sequence, ``alearn run --resume`` it, compare with an uninterrupted run.

    python tests/resume_driver.py --work DIR --trials 6 [--strategies per-task,naive,ewc-replay] [--seed 0]

Each run is a forked child running ``alearn``'s ``main()`` (see reliability_common). The kill lands
after a random number of finished tasks plus a random delay, with the test hooks pausing at every
file write, so it can fall inside the checkpoint's own writes. The resumed run must give the same
matrix, zero-shot row and metrics as the uninterrupted one, and byte-identical final weights.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_common import EXTRA_COMMANDS, TOY, run_argv, run_child, spawn, wait  # noqa: E402

TRACE, SLOW = "ADAPTIVE_LEARNER_TEST_TRACE", "ADAPTIVE_LEARNER_TEST_SLOW_WRITES"
TASKS = 3


def run_keeping_checkpoint(argv: list[str]) -> int:
    """``alearn run`` that keeps its last checkpoint (normally deleted at the end) so weights can be compared."""
    from adaptive_learner.evaluation import checkpoint

    checkpoint.remove = lambda out: None
    return run_argv(argv)


EXTRA_COMMANDS["run-keep"] = run_keeping_checkpoint


def sequence(work: Path) -> Path:
    (work / "toy.csv").write_text(TOY.read_text())
    seq = work / "seq.yaml"
    seq.write_text("name: resume\ntasks:\n" + "".join(f"  - name: t{i}\n    data: toy.csv\n    description: Is "
                                                      f"review {i} positive?\n" for i in range(TASKS)))
    return seq


def run_args(seq: Path, strategy: str, out: Path) -> list[str]:
    return ["run-keep", "run", str(seq), "--strategy", strategy, "--backbone", "tiny-random", "--out", str(out),
            "--steps", "2", "--max-train", "12", "--max-test", "6", "--max-length", "48", "--batch-size", "4"]


def outcome(out: Path) -> dict[str, Any]:
    res = json.loads((out / "results.json").read_text())
    ck = json.loads((out / "checkpoint.json").read_text())
    return {"matrix": res["matrix"], "zero_shot": res["zero_shot"], "metrics": res["metrics"],
            "weights": (out / ck["weights"]["file"]).read_bytes()}


def done_tasks(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoint.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def trial(i: int, rng: random.Random, work: Path, seq: Path, strategy: str, ref: dict[str, Any]) -> dict[str, Any]:
    out, log, trace = work / f"run{i}", work / "children.log", work / f"trace{i}.txt"
    target, delay = rng.randint(1, TASKS - 1), rng.uniform(0, 0.5)
    pid = spawn(run_args(seq, strategy, out), {TRACE: str(trace), SLOW: "0.02"}, log)
    while done_tasks(out) < target and not os.waitpid(pid, os.WNOHANG)[0]:
        time.sleep(0.005)
    time.sleep(delay)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    code = wait(pid)
    points = trace.read_text().splitlines() if trace.exists() else []
    done = done_tasks(out)
    info = {"strategy": strategy, "killed": code == -signal.SIGKILL, "checkpointed_tasks": done,
            "killed_at": points[-1] if points else None}
    rc = run_child(["run-keep", "run", "--resume", str(out)], log) if done < TASKS or code != 0 else 0
    info["resume_exit"] = rc
    info["same"] = rc == 0 and outcome(out) == ref
    return info


def main(argv: list[str]) -> int:
    if argv and argv[0] in EXTRA_COMMANDS:
        return run_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--strategies", default="per-task,naive,ewc-replay")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", type=Path)
    args = ap.parse_args(argv)
    import adaptive_learner.cli  # noqa: F401 - import once, before forking
    import adaptive_learner.evaluation.harness  # noqa: F401

    args.work.mkdir(parents=True, exist_ok=True)
    t0, rng = time.monotonic(), random.Random(args.seed)
    seq, strategies = sequence(args.work), args.strategies.split(",")
    refs = {}
    for s in strategies:
        assert run_child(run_args(seq, s, args.work / f"ref-{s}"), args.work / "children.log") == 0
        refs[s] = outcome(args.work / f"ref-{s}")
    trials = [trial(i, rng, args.work, seq, strategies[i % len(strategies)], refs[strategies[i % len(strategies)]])
              for i in range(args.trials)]
    report = {"trials": len(trials), "killed": sum(t["killed"] for t in trials),
              "resumed_same": sum(t["same"] for t in trials), "different": sum(not t["same"] for t in trials),
              "seconds": round(time.monotonic() - t0, 1), "details": trials}
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "details"}, indent=2))
    return 0 if report["different"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
