"""Several processes writing one adapter library at once: nobody's update may be lost.

    python tests/concurrency_driver.py --work DIR [--rounds 1] [--report FILE]

Scenarios (each round), every writer a forked child running ``alearn``'s ``main()``:

* ``two-new``: two ``alearn learn`` of different tasks into one library, started together;
* ``two-reuse``: two ``alearn learn --reuse`` of the same adapter, started together: the final
  adapter must be byte-identical to running the two one after the other, in one order or the other;
* ``create-race``: two ``alearn learn`` into a library that does not exist yet;
* ``lock-timeout``: a writer that finds the library locked for longer than
  ``ADAPTIVE_LEARNER_LOCK_TIMEOUT`` stops with one clear line and changes nothing;
* ``reader``: a process opening and reading the library over and over while another commits
  changes: it never sees a damaged or half-written library;
* ``stress`` (``--stress-writers W --stress-learns K``, off by default): W processes each learning
  K tasks into one library at once: all W*K tasks and decisions must be there.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_common import (EXTRA_COMMANDS, data_txn, fresh_copy, learn_args, run_argv,  # noqa: E402
                                run_child, snapshot, spawn, wait)


def _lib_state(lib: Path) -> dict[str, Any]:
    m = json.loads((lib / "manifest.json").read_text())
    from adaptive_learner.library import AdapterLibrary

    return {"tasks": {t: e["adapter"] for t, e in m["tasks"].items()}, "history": len(m["history"]),
            "problems": AdapterLibrary.open(lib, verify=False).verify()}


def together(argvs: list[list[str]], log: Path, env: dict[str, str] | None = None) -> list[int]:
    """Start writers at the same moment; their exit codes."""
    pids = [spawn(a, env or {}, log) for a in argvs]
    return [wait(p) for p in pids]


def two_new(base: Path, work: Path) -> dict[str, Any]:
    lib, log = fresh_copy(base, work / "two-new"), work / "two-new.log"
    # slower writes keep the first writer's lock long enough that the second surely meets it
    codes = together([learn_args(lib, "t1"), learn_args(lib, "t2")], log, {"ADAPTIVE_LEARNER_TEST_SLOW_WRITES": "0.1"})
    st = _lib_state(lib)
    ok = codes == [0, 0] and set(st["tasks"]) == {"t0", "t1", "t2"} and st["history"] == 3 and not st["problems"]
    return {"ok": ok, "writers": 2, "codes": codes, "state": st, "waited": "waiting for the lock" in log.read_text(),
            "lost_updates": sum(t not in st["tasks"] for t in ("t1", "t2"))}


def _adapter_digest(lib: Path) -> str:
    return snapshot(lib)["files"]["adapters/lora-t0/adapter_model.safetensors"]


def two_reuse(base: Path, work: Path) -> dict[str, Any]:
    refs = {}
    for order in (("t1", "t2"), ("t2", "t1")):  # the two serial histories
        ref = fresh_copy(base, work / f"reuse-{''.join(order)}")
        for task in order:
            assert run_child(learn_args(ref, task, reuse="lora-t0"), work / "refs.log") == 0
        refs[order] = _adapter_digest(ref)
    lib, log = fresh_copy(base, work / "two-reuse"), work / "two-reuse.log"
    codes = together([learn_args(lib, "t1", reuse="lora-t0"), learn_args(lib, "t2", reuse="lora-t0")], log)
    st, final = _lib_state(lib), _adapter_digest(lib)
    serial = [o for o, d in refs.items() if d == final]
    ok = codes == [0, 0] and st["history"] == 3 and not st["problems"] and len(serial) == 1 and \
        st["tasks"] == {"t0": "lora-t0", "t1": "lora-t0", "t2": "lora-t0"}
    # the adapter is the product of both trainings (one of the serial orders), and both tasks are recorded
    lost = sum(t not in st["tasks"] for t in ("t1", "t2")) + (0 if serial else 1)
    return {"ok": ok, "writers": 2, "codes": codes, "state": st, "equals_serial_order": ["->".join(o) for o in serial],
            "orders_differ": refs[("t1", "t2")] != refs[("t2", "t1")], "lost_updates": lost}


def create_race(work: Path) -> dict[str, Any]:
    lib, log = work / "create-race" / "lib", work / "create-race.log"
    codes = together([learn_args(lib, "t1"), learn_args(lib, "t2")], log)
    st = _lib_state(lib)
    ok = codes == [0, 0] and set(st["tasks"]) == {"t1", "t2"} and st["history"] == 2 and not st["problems"]
    return {"ok": ok, "writers": 2, "codes": codes, "state": st,
            "lost_updates": sum(t not in st["tasks"] for t in ("t1", "t2"))}


def lock_timeout(base: Path, work: Path) -> dict[str, Any]:
    lib, log = fresh_copy(base, work / "locked"), work / "locked.log"
    before = snapshot(lib)
    with open(lib / ".lock", "a+") as fh:  # another writer holds the library
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write("pid 1: alearn learn\n")
        fh.flush()
        pid = spawn(learn_args(lib, "t1"), {"ADAPTIVE_LEARNER_LOCK_TIMEOUT": "1"}, log)
        code = wait(pid)
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
    ok = code == 2 and len(errors) == 1 and "locked by another process" in errors[0] and snapshot(lib) == before \
        and "Traceback" not in log.read_text()
    return {"ok": ok, "code": code, "message": errors, "unchanged": snapshot(lib) == before}


def reader(base: Path, work: Path, commits: int = 8) -> dict[str, Any]:
    lib, log, out = fresh_copy(base, work / "reader"), work / "reader.log", work / "reader.json"
    writer = spawn(["write-many", str(lib), str(commits)], {"ADAPTIVE_LEARNER_TEST_SLOW_WRITES": "0.01"}, log)
    rd = spawn(["read-loop", str(lib), str(out)], {}, log)
    wcode = wait(writer)
    (work / "reader.stop").write_text("")
    rcode = wait(rd)
    res = json.loads(out.read_text()) if out.exists() else {"reads": 0, "errors": ["no report"], "n_errors": 1}
    ok = wcode == 0 and rcode == 0 and res["n_errors"] == 0 and res["reads"] > 0
    return {"ok": ok, "writer_code": wcode, "reader_code": rcode, "commits": commits, **res}


def learn_many(argv: list[str]) -> int:
    """``alearn learn`` of ``k`` tasks named ``<prefix>-<j>``, one after another, in this process."""
    lib, prefix, k = Path(argv[0]), argv[1], int(argv[2])
    return max(run_argv(learn_args(lib, f"{prefix}-{j}")) for j in range(k))


def stress(base: Path, work: Path, writers: int, learns: int) -> dict[str, Any]:
    lib, log = fresh_copy(base, work / "stress"), work / "stress.log"
    codes = together([["learn-many", str(lib), f"w{i}", str(learns)] for i in range(writers)], log)
    st = _lib_state(lib)
    want = {f"w{i}-{j}" for i in range(writers) for j in range(learns)}
    lost = len(want - set(st["tasks"]))
    ok = codes == [0] * writers and lost == 0 and st["history"] == 1 + len(want) and not st["problems"]
    return {"ok": ok, "writers": writers, "learns": writers * learns, "codes": codes, "lost_updates": lost,
            "history": st["history"], "problems": st["problems"]}


def write_many(argv: list[str]) -> int:
    """``n`` committed changes of one adapter and its data, one after another."""
    for i in range(int(argv[1])):
        data_txn(Path(argv[0]), "lora-data")
    return 0


def read_loop(argv: list[str]) -> int:
    """Open, verify and read the library until told to stop; record what failed."""
    from safetensors.torch import load_file

    from adaptive_learner.library import AdapterLibrary

    lib, out = Path(argv[0]), Path(argv[1])
    reads, errors = 0, []
    stop = out.parent / "reader.stop"
    while not stop.exists() or reads == 0:
        try:
            lib_ = AdapterLibrary.open(lib)
            for name, info in lib_.adapters.items():
                for rel in info["files"]:
                    if rel.endswith(".safetensors"):
                        load_file(str(lib / rel))
            reads += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            errors.append(f"{type(exc).__name__}: {exc}")
    out.write_text(json.dumps({"reads": reads, "errors": errors[:20], "n_errors": len(errors)}))
    return 0


EXTRA_COMMANDS.update({"write-many": write_many, "read-loop": read_loop, "learn-many": learn_many})


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("data-txn", "check-loadable", "open-library", *EXTRA_COMMANDS):
        return run_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--stress-writers", type=int, default=0)
    ap.add_argument("--stress-learns", type=int, default=3)
    args = ap.parse_args(argv)
    import adaptive_learner.cli  # noqa: F401 - import once, before forking
    import adaptive_learner.learner  # noqa: F401

    t0 = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    base = args.work / "base"
    assert run_child(learn_args(base, "t0"), args.work / "base.log") == 0, (args.work / "base.log").read_text()
    rounds = []
    for r in range(args.rounds):
        w = args.work / f"round{r}"
        w.mkdir(parents=True, exist_ok=True)
        rounds.append({"two-new": two_new(base, w), "two-reuse": two_reuse(base, w), "create-race": create_race(w),
                       "lock-timeout": lock_timeout(base, w), "reader": reader(base, w)})
        if args.stress_writers:
            rounds[-1]["stress"] = stress(base, w, args.stress_writers, args.stress_learns)
    writers = sum(s["writers"] for rd in rounds for k, s in rd.items() if "writers" in s)
    lost = sum(s["lost_updates"] for rd in rounds for k, s in rd.items() if "lost_updates" in s)
    failed = [f"round {i}: {k}" for i, rd in enumerate(rounds) for k, s in rd.items() if not s["ok"]]
    report = {"rounds": args.rounds, "concurrent_writers": writers, "lost_updates": lost, "failed": failed,
              "reader_errors": sum(rd["reader"]["n_errors"] for rd in rounds),
              "reads": sum(rd["reader"]["reads"] for rd in rounds),
              "seconds": round(time.monotonic() - t0, 1), "details": rounds}
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "details"}, indent=2))
    return 0 if not failed and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
