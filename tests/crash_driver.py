"""Kill writers of an adapter library with SIGKILL at random moments, reopen it, and classify the result.

    python tests/crash_driver.py --work DIR --trials 26 --seed 0 [--mode fork|exec] [--slow 0.05]

Writers (``scenario_argv``): ``alearn learn`` into a new adapter, ``alearn learn --reuse`` (replaces an
adapter's folder; both write the adapter with whatever state the learner keeps beside it: EWC's
Fisher, the replay buffer, the router's profile), a transaction writing an adapter with a profile,
Fisher and buffer (so every kind is covered whatever the learner writes), and ``alearn library rm``. Each is first run uninterrupted from the same starting library, which gives
the "after" state and the list of write points it passes (test hooks, see ``adaptive_learner.testhooks``).
Two thirds of the trials kill at a write point chosen from a category in turn (adapter, profile,
Fisher, buffer, manifest, commit, install, remove): in the first round exactly there (the writer
stops at that point), later a random 0-1.5x the hook's pause after it is reached; the rest kill at
a uniformly random time over the writer's whole run. When a kill leaves a committed change, half the time the process that finishes it is
killed too. Then the library is opened as any later process would open it, and must be
byte-for-byte the state before the change or the state after it (time stamps aside); both of those
states are checked to load through peft and to answer a prediction. An after-state whose bytes
differ from the reference's (which only an order-of-keys difference between processes could cause)
counts as "after (equivalent)" only if it is complete and self-consistent (``equivalent``); anything
else is "mixed". Prints and writes (``--report``) a JSON summary.
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

from reliability_common import (diff, equivalent, fresh_copy, learn_args, run_argv, run_child,  # noqa: E402
                                scenario_argv, snapshot, spawn, wait)

TRACE, SLOW, STOP = "ADAPTIVE_LEARNER_TEST_TRACE", "ADAPTIVE_LEARNER_TEST_SLOW_WRITES", "ADAPTIVE_LEARNER_TEST_STOP_AT"
KINDS = ("new", "reuse", "data", "rm")
CATEGORIES = {
    "adapter": lambda p: p.startswith(("stage adapters/", "staged adapters/")),
    "profile": lambda p: "profile" in p, "fisher": lambda p: "fisher" in p or "ewc." in p,
    "buffer": lambda p: "buffer" in p or "replay." in p,
    "manifest": lambda p: "manifest" in p, "commit": lambda p: p == "committed" or "plan.json" in p,
    "install": lambda p: p.startswith(("installed", "moved aside")), "remove": lambda p: p.startswith("removed"),
}


def categories(point: str | None) -> list[str]:
    """The write categories a trace line belongs to (installing a Fisher file is both), or "training"
    before the first write point."""
    if not point:
        return ["training"]
    return [c for c, f in CATEGORIES.items() if f(point)] or ["other"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def setup(work: Path, mode: str, slow: float) -> dict[str, Any]:
    """The starting library, and each writer's uninterrupted run from it: after-state, write points, time."""
    base = work / "base"
    log = work / "children.log"
    assert run_child(learn_args(base, "t0"), log, mode=mode) == 0, log.read_text()[-3000:]
    assert run_child(["data-txn", str(base), "lora-data"], log, mode=mode) == 0, log.read_text()[-3000:]
    refs: dict[str, Any] = {"base": base, "before": snapshot(base), "after": {}, "points": {}, "seconds": {}}
    for kind in KINDS:
        ref, trace = fresh_copy(base, work / f"ref-{kind}"), work / f"trace-{kind}.txt"
        t0 = time.monotonic()
        assert run_child(scenario_argv(kind, ref), log, {TRACE: str(trace)}, mode) == 0, log.read_text()[-3000:]
        refs["seconds"][kind] = time.monotonic() - t0 + slow * len(lines(trace))
        refs["after"][kind], refs["points"][kind] = snapshot(ref), lines(trace)
        assert refs["after"][kind] != refs["before"], f"{kind} changed nothing"
        assert run_child(["check-loadable", str(ref)], log, mode=mode) == 0, log.read_text()[-3000:]
    assert run_child(["check-loadable", str(base)], log, mode=mode) == 0, log.read_text()[-3000:]
    return refs


def choose(i: int, rng: random.Random, refs: dict[str, Any], slow: float) -> dict[str, Any]:
    """Trial ``i``: which writer, and when to kill it."""
    if i % 3 == 2:
        kind = rng.choice(KINDS)
        return {"kind": kind, "how": "random time", "at_s": rng.uniform(0, 0.9 * refs["seconds"][kind])}
    n = i - i // 3  # targeted trials so far: the categories in turn; the first round stops exactly there
    cat = list(CATEGORIES)[n % len(CATEGORIES)]
    kind = rng.choice([k for k in KINDS if any(CATEGORIES[cat](p) for p in refs["points"][k])])
    idx = rng.choice([j for j, p in enumerate(refs["points"][kind]) if CATEGORIES[cat](p)])
    plan = {"kind": kind, "how": f"at write point ({cat})", "point": idx, "target": refs["points"][kind][idx]}
    if n < len(CATEGORIES):
        return {**plan, "stop_at": idx, "delay_s": 0.0}
    return {**plan, "delay_s": rng.uniform(0, 1.5 * slow)}


def kill_when(pid: int, trace: Path, point: int | None, delay: float) -> int:
    """SIGKILL ``pid`` ``delay`` s after it passes write point ``point`` (or after it starts); its exit code."""
    while point is not None and len(lines(trace)) <= point:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return 0  # finished before reaching it (cannot happen for a point of its own reference run)
        time.sleep(0.002)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    return wait(pid)


def trial(i: int, rng: random.Random, refs: dict[str, Any], work: Path, mode: str, slow: float) -> dict[str, Any]:
    """One kill (and maybe a second one during recovery), then reopen and classify."""
    from adaptive_learner.library import AdapterLibrary, committed

    plan = choose(i, rng, refs, slow)
    lib, trace, log = fresh_copy(refs["base"], work / "trial"), work / "trace-trial.txt", work / "children.log"
    trace.unlink(missing_ok=True)
    env = {TRACE: str(trace), SLOW: str(slow), **({STOP: str(plan["stop_at"])} if "stop_at" in plan else {})}
    pid = spawn(scenario_argv(plan["kind"], lib), env, log, mode)
    code = kill_when(pid, trace, plan.get("point"), plan.get("delay_s", plan.get("at_s", 0.0)))
    reached = lines(trace)
    plan.update(exit=code, killed=code == -signal.SIGKILL, killed_at=reached[-1] if reached else None)
    plan["categories"] = categories(plan["killed_at"]) if plan["killed"] else ["completed"]
    if plan["killed"] and committed(lib) and rng.random() < 0.5:
        trace2 = work / "trace-recovery.txt"
        trace2.unlink(missing_ok=True)
        pid2 = spawn(["open-library", str(lib)], {TRACE: str(trace2), SLOW: str(slow)}, log, mode)
        code2 = kill_when(pid2, trace2, rng.randrange(2), rng.uniform(0, 1.5 * slow))
        plan["recovery_killed_at"] = (lines(trace2) or [None])[-1] if code2 == -signal.SIGKILL else "completed"
    try:
        AdapterLibrary.open(lib)
    except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
        plan.update(outcome="unloadable", detail=str(exc))
        return plan
    leftovers = [p.name for p in (lib / ".txn").iterdir()] if (lib / ".txn").is_dir() else []
    snap = snapshot(lib)
    after = refs["after"][plan["kind"]]
    plan["outcome"] = ("before" if snap == refs["before"] else "after" if snap == after else
                       "after (equivalent)" if equivalent(lib, snap, refs["before"], after) else "mixed")
    if plan["outcome"] == "mixed" or leftovers:
        plan.update(outcome="mixed", detail=f"leftovers {leftovers}; vs before: {diff(snap, refs['before'])}; "
                                            f"vs after: {diff(snap, after)}")
    return plan


def summarise(trials: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """Counts for RELIABILITY.md."""
    def count(key: str, value: Any) -> int:
        return sum(1 for t in trials if t.get(key) == value)

    cats: dict[str, int] = {}  # a kill counts in every category its write point belongs to
    for t in trials:
        for c in t["categories"]:
            cats[c] = cats.get(c, 0) + 1
    return {"trials": len(trials), "killed": count("killed", True), "finished_before_kill": count("killed", False),
            "recovery_killed": sum(1 for t in trials if t.get("recovery_killed_at") not in (None, "completed")),
            "outcomes": {o: count("outcome", o) for o in ("before", "after", "after (equivalent)", "mixed",
                                                          "unloadable")},
            "corrupted": count("outcome", "mixed") + count("outcome", "unloadable"),
            "killed_in": cats, "mode": args.mode, "seed": args.seed, "slow_s": args.slow,
            "seconds": round(seconds, 1), "details": trials}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("data-txn", "check-loadable", "open-library"):
        return run_argv(argv)  # a child in --mode exec
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=("fork", "exec"), default="fork")
    ap.add_argument("--slow", type=float, default=0.05, help="pause at each write point (s)")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args(argv)
    import adaptive_learner.cli  # noqa: F401 - import everything once, before forking
    import adaptive_learner.learner  # noqa: F401

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    refs = setup(args.work, args.mode, args.slow)
    rng = random.Random(args.seed)
    trials = [trial(i, rng, refs, args.work, args.mode, args.slow) for i in range(args.trials)]
    report = summarise(trials, args, time.monotonic() - t0)
    text = json.dumps(report, indent=2)
    if args.report:
        args.report.write_text(text)
    print(json.dumps({k: v for k, v in report.items() if k != "details"}, indent=2))
    return 0 if report["corrupted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
