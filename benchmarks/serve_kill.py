"""SIGKILL of `alearn serve` or of its learn worker at random moments, then the library checked and the
server restarted.

Each trial takes a fresh copy of a small library (``toy`` and ``pairs`` on the tiny-random backbone;
``--backbone smollm2-135m`` for the real one), starts `alearn serve` on it (a subprocess on a free
loopback port), records its answers to fixed inputs (task given and routed), and submits a learn
job (POST /v1/learn, an uploaded CSV): a new adapter (``force_new``) or a reuse of ``lora-toy``.
Then it SIGKILLs the server process or the job's worker process (in turn), at a seeded random moment:
a random time after the job was accepted, or when the worker reaches a random one of its library
write points (the test hooks of src/adaptive_learner/testhooks.py record them and pause 50 ms at
each, as tests/crash_driver.py does, so kills land inside the commit too).

After the kill: a killed worker must be reported by the still running server as a failed job with one
line, which says so when the worker died after its change was committed (the change is then in the
library); a killed server's worker must not outlive it, nor keep the library's lock. The server is
stopped, the library checked with `alearn library verify` (which first finishes or drops an
interrupted change, as any later process does) and classified as the state before the job or after
it; a new server is started and must answer the fixed inputs exactly as before the kill (the state
before) or as an uninterrupted run of the same job does (the state after; one reference run per kind
at the start), and the new task, if committed, must answer too.

    python benchmarks/serve_kill.py                     # 24 trials, tiny-random, seed 1
    python benchmarks/serve_kill.py --trials 4          # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_harness import TOY, Server, build_library, copy_library, manifest, pid_alive, verify  # noqa: E402

TOKEN = "kill-token"
SLOW_WRITES = "0.05"
INPUTS = {  # fixed inputs, answered before the kill and after the restart
    "toy": ["superb wonderful lovely", "bad dull terrible boring", "a film", "lovely but dull"],
    "pairs": ["the word fine ||| the word superb", "the word a ||| the word a"],
    None: ["superb lovely", "the word fine ||| the word superb", "dull boring"],
}
KINDS = {"new": {"force_new": "true"}, "reuse": {"reuse": "lora-toy"}}
LANDED = ("after the job ended", "before the worker started", "loading, training or evaluating (no write yet)",
          "during the library's writes", "after its last write (reporting, exiting)")


def learn_form(kind: str, steps: int) -> dict[str, str]:
    return {"description": "Is this review glowing?", "name": f"kill{kind}", "steps": str(steps), "max_length": "64",
            "batch_size": "4", "eval_every": "5", **KINDS[kind]}


def answers(client: httpx.Client, tasks: list[str | None]) -> dict[str, Any]:
    """The server's answers to the fixed inputs, per task (None: routed), and to the new task if asked."""
    out = {}
    for task in tasks:
        inputs = INPUTS.get(task, INPUTS["toy"])
        r = client.post("/v1/predict", json={"inputs": inputs, **({"task": task} if task else {})})
        assert r.status_code == 200, (task, r.status_code, r.text[:300])
        out[str(task)] = [(p["task"], p["adapter"], p["label"], round(p["confidence"], 6))
                          for p in r.json()["predictions"]]
    return out


def same(a: list, b: list, tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(x[:3] == y[:3] and abs(x[3] - y[3]) <= tol for x, y in zip(a, b))


def worker_pids(srv: Server) -> list[int]:
    """The server's learn workers (spawned children running multiprocessing's spawn_main)."""
    if srv.proc is None:
        return []
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(srv.proc.pid)], capture_output=True, text=True).stdout
    return [int(ln.split()[0]) for ln in out.splitlines() if "spawn_main" in ln and "resource_tracker" not in ln]


def wait_job(client: httpx.Client, job_id: str, give_up_s: float = 900) -> dict[str, Any]:
    end = time.monotonic() + give_up_s
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not end")


def lock_free(lib: Path) -> bool:
    """Whether no process holds the library's writer lock."""
    with open(lib / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def wait_lock_free(lib: Path, give_up_s: float = 30) -> float | None:
    """Seconds until the writer lock is free (a dying process lets go of it as its last thread ends), or None."""
    t0 = time.monotonic()
    while not lock_free(lib):
        if time.monotonic() - t0 > give_up_s:
            return None
        time.sleep(0.05)
    return round(time.monotonic() - t0, 2)


def trace_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def reference(base: Path, work: Path, kind: str, steps: int) -> dict[str, Any]:
    """The same job uninterrupted: its duration, its write points, and the answers of the state after it."""
    lib = copy_library(base, work / "lib")
    trace = work / "trace.txt"
    trace.unlink(missing_ok=True)
    env = {"ADAPTIVE_LEARNER_TEST_TRACE": str(trace), "ADAPTIVE_LEARNER_TEST_SLOW_WRITES": SLOW_WRITES}
    srv = _start(lib, work, env)
    try:
        with srv.client() as c:
            before = answers(c, ["toy", "pairs", None])
            t0 = time.monotonic()
            r = c.post("/v1/learn", data=learn_form(kind, steps), files={"file": ("glowing.csv", TOY.read_bytes())},
                       headers=srv.auth)
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["id"])
            seconds = time.monotonic() - t0
            assert job["state"] == "succeeded", job
    finally:
        srv.stop()
    srv = _start(lib, work, {})
    try:
        with srv.client() as c:
            after = answers(c, ["toy", "pairs", None, f"kill{kind}"])
    finally:
        srv.stop()
    points = trace_lines(trace)
    return {"kind": kind, "seconds": round(seconds, 1), "write_points": len(points), "points": points,
            "before": before, "after": after, "library_after": sorted(manifest(lib)["tasks"])}


def _start(lib: Path, work: Path, env: dict[str, str]) -> Server:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the server passes its environment on to its spawned workers
    try:
        return Server(lib, work, TOKEN).start()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def trial(i: int, base: Path, work: Path, rng: random.Random, refs: dict[str, dict[str, Any]], steps: int,
          target: str, kind: str) -> dict[str, Any]:
    ref = refs[kind]
    shutil.rmtree(work, ignore_errors=True)
    lib = copy_library(base, work / "lib")
    trace = work / "trace.txt"
    env = {"ADAPTIVE_LEARNER_TEST_TRACE": str(trace), "ADAPTIVE_LEARNER_TEST_SLOW_WRITES": SLOW_WRITES}
    at_point = rng.random() < 0.5
    point = rng.randint(1, ref["write_points"]) if at_point else None
    delay = None if at_point else rng.uniform(0, ref["seconds"])
    rec: dict[str, Any] = {"trial": i, "kind": kind, "target": target,
                           "how": f"at write point {point}" if at_point else f"at {delay:.2f} s"}
    srv = _start(lib, work, env)
    orphans: list[int] = []
    try:
        with srv.client() as c:
            before = answers(c, ["toy", "pairs", None])
            rec["before_matches_reference"] = before == ref["before"]
            t0 = time.monotonic()
            r = c.post("/v1/learn", data=learn_form(kind, steps), files={"file": ("glowing.csv", TOY.read_bytes())},
                       headers=srv.auth)
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            end = time.monotonic() + 900
            while time.monotonic() < end:  # wait for the moment (or the job's end, if it comes first)
                if at_point and len(trace_lines(trace)) >= point:
                    break
                if not at_point and time.monotonic() - t0 >= delay:
                    break
                if c.get(f"/v1/jobs/{job_id}").json()["state"] in ("succeeded", "failed"):
                    break
                time.sleep(0.01)
            pids = worker_pids(srv)
            ended = c.get(f"/v1/jobs/{job_id}").json()["state"] in ("succeeded", "failed")
            while target == "worker" and not pids and not ended:  # not spawned yet: kill it once it is
                time.sleep(0.01)
                pids = worker_pids(srv)
                ended = c.get(f"/v1/jobs/{job_id}").json()["state"] in ("succeeded", "failed")
            lines = trace_lines(trace)
            rec["job_ended_before_kill"] = ended
            rec["at_s"] = round(time.monotonic() - t0, 2)
            rec["last_write_point"] = lines[-1] if lines else None
            rec["write_points_reached"] = len(lines)
            rec["worker_alive_at_kill"] = bool(pids)
            if target == "server":
                srv.kill()
                orphans = pids
            else:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                job = wait_job(c, job_id)
                rec["job"] = {"state": job["state"], "error": job["error"]}
                rec["server_answered_after_worker_kill"] = c.get("/healthz").status_code == 200
                rec["answers_while_up"] = same_all(answers(c, ["toy", "pairs"]), before, ["toy", "pairs"]) \
                    if job["state"] == "failed" else None
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()
    # a killed server's worker must not go on: it holds the library's lock and would commit behind the restart
    t_kill = time.monotonic()
    while any(pid_alive(p) for p in orphans) and time.monotonic() - t_kill < 120:
        time.sleep(0.1)
    rec["orphan_worker_lived_s"] = round(time.monotonic() - t_kill, 2) if orphans else None
    rec["orphan_worker_still_alive"] = any(pid_alive(p) for p in orphans)
    for p in orphans:  # never leave one behind (it would be a finding above)
        if pid_alive(p):
            os.kill(p, signal.SIGKILL)
    rec["lock_free_after_s"] = wait_lock_free(lib)
    rec["lock_free"] = rec["lock_free_after_s"] is not None
    if not rec["lock_free"]:
        rec["lock_holder"] = (lib / ".lock").read_text(errors="replace").strip()[:200]
    rec["verify"] = verify(lib)
    tasks = sorted(manifest(lib)["tasks"])
    new_task = f"kill{kind}"
    rec["outcome"] = "after" if new_task in tasks else "before"
    if rec["outcome"] == "after" and tasks != ref["library_after"]:
        rec["outcome"] = "other"
    srv = _start(lib, work, {})
    try:
        with srv.client() as c:
            want = ref["after"] if rec["outcome"] == "after" else before
            names = ["toy", "pairs", None] + ([new_task] if rec["outcome"] == "after" else [])
            got = answers(c, names)
            rec["restarted_answers_as_expected"] = same_all(got, want, names)
            if not rec["restarted_answers_as_expected"]:
                rec["answers"] = {"got": got, "want": {str(n): want.get(str(n)) for n in names}}
            rec["restarted_healthz"] = c.get("/healthz").json()["status"]
    finally:
        srv.stop()
    rec["landed"] = LANDED[0] if rec["job_ended_before_kill"] else LANDED[1] if not rec["worker_alive_at_kill"] \
        else LANDED[2] if not rec["write_points_reached"] else LANDED[3] \
        if rec["write_points_reached"] < ref["write_points"] else LANDED[4]
    rec["ok"] = bool(rec["verify"]["ok"] and rec["outcome"] != "other" and rec["restarted_answers_as_expected"]
                     and rec["lock_free"] and not rec["orphan_worker_still_alive"]
                     and rec.get("server_answered_after_worker_kill", True)
                     # a killed worker's job reads failed (succeeded if the kill came after its report); killed
                     # after its commit point, its error must say that the change is in
                     and (target != "worker" or (rec["job"]["state"] == "failed" and (rec["outcome"] == "before") !=
                                                 ("after its change was committed" in (rec["job"]["error"] or "")))
                          or rec["job"]["state"] == "succeeded" and rec["outcome"] == "after"))
    return rec


def same_all(got: dict[str, Any], want: dict[str, Any], names: list[str | None]) -> bool:
    return all(same(got[str(n)], want[str(n)]) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="tiny-random", help="backbone of the library (tiny-random, smollm2-135m)")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20, help="training steps of each learn job")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/alearn-serve-kill"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve_kill.json")
    args = ap.parse_args()

    t_start = time.monotonic()
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    base = build_library(args.work / f"base-{args.backbone}", args.backbone)
    refs = {}
    for kind in KINDS:
        refs[kind] = reference(base, args.work / f"ref-{kind}", kind, args.steps)
        print(f"reference {kind}: {refs[kind]['seconds']} s, {refs[kind]['write_points']} write points", flush=True)
    trials = []
    for i in range(args.trials):
        target = ("server", "worker")[i % 2]
        kind = tuple(KINDS)[(i // 2) % 2]
        rec = trial(i, base, args.work / "trial", rng, refs, args.steps, target, kind)
        trials.append(rec)
        print(json.dumps({k: rec.get(k) for k in ("trial", "kind", "target", "how", "at_s", "last_write_point",
                                                   "outcome", "ok", "orphan_worker_lived_s")}), flush=True)
        if not rec["ok"]:
            print(f"  NOT OK: {json.dumps(rec)[:1500]}", flush=True)
    summary = {
        "trials": len(trials),
        "ok": sum(t["ok"] for t in trials),
        "verify_clean": sum(t["verify"]["ok"] for t in trials),
        "restarted_answers_as_expected": sum(t["restarted_answers_as_expected"] for t in trials),
        "outcomes": {o: sum(t["outcome"] == o for t in trials) for o in ("before", "after", "other")},
        "by_target": {tg: sum(t["target"] == tg for t in trials) for tg in ("server", "worker")},
        "by_kind": {k: sum(t["kind"] == k for t in trials) for k in KINDS},
        "kill_landed": {w: sum(t["landed"] == w for t in trials) for w in LANDED},
        "orphan_workers_left": sum(t["orphan_worker_still_alive"] for t in trials),
        "orphan_worker_lived_s_max": max((t["orphan_worker_lived_s"] or 0 for t in trials), default=None),
        "lock_free_after_s_max": max((t["lock_free_after_s"] or 0 for t in trials), default=None),
        "worker_kills_reported_failed": sum(t.get("job", {}).get("state") == "failed" for t in trials),
        "worker_kills_failed_after_commit": sum(t.get("job", {}).get("state") == "failed" and t["outcome"] == "after"
                                                for t in trials),
        "worker_kills_after_commit_said_so": sum("after its change was committed" in (t.get("job", {}).get("error")
                                                                                      or "") for t in trials),
    }
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/serve_kill.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "backbone": args.backbone, "seed": args.seed, "steps": args.steps, "slow_writes_s": float(SLOW_WRITES),
        "seconds": round(time.monotonic() - t_start, 1), **summary,
        "references": {k: {kk: v for kk, v in r.items() if kk not in ("before", "after")} for k, r in refs.items()},
        "details": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))
    print(f"written to {args.out}")
    sys.exit(0 if summary["ok"] == len(trials) else 1)


if __name__ == "__main__":
    main()
