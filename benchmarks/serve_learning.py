"""`alearn serve` keeps answering while it learns (issue 12): the same load without and with a learn job.

One server (dynamic batching on) over a copy of ``--library``; ``--clients`` concurrent httpx clients
send short requests of the library's task (half with the task given, half routed) for ``--seconds``
(the baseline); then a learn job of the built-in task ``--learn`` is posted and the same load runs
until the job has committed, plus ``--after`` seconds. Meanwhile a probe sends one *routed* input of
the new task (from its test split) after every answer, so the first answer routed to the new task
after the commit is seen. Reported: failed requests, p50/p95/p99 without and with the job (and
their ratio), the job's time, the requests between the commit and the first correct routed answer
of the new task. Nothing leaves loopback.

    cd benchmarks && python serve_learning.py --library /tmp/LS --learn sms_spam --clients 8 --seconds 20 \\
        --out results/serve_learning.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from serve_harness import Server
from serve_load import TEXTS, latency_quantiles


async def load(url: str, task: str, clients: int, until: Any, stats: dict[str, Any]) -> None:
    """``clients`` loops of one request each until ``until()`` is true; latencies and failures into ``stats``."""
    async with httpx.AsyncClient(base_url=url, timeout=300,
                                 limits=httpx.Limits(max_connections=clients + 2)) as client:
        async def one(c: int) -> None:
            k = c
            while not until():
                body = {"inputs": [TEXTS[k % len(TEXTS)]], **({} if k % 2 else {"task": task})}
                t0 = time.perf_counter()
                try:
                    ok = (await client.post("/v1/predict", json=body)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                stats["ms"].append((time.perf_counter() - t0) * 1000)
                stats["ok" if ok else "failed"] += 1
                k += clients
        await asyncio.gather(*(one(c) for c in range(clients)))


async def with_job(server: Server, task: str, learn: dict[str, Any], probes: list[tuple[str, str]],
                   clients: int, after: float) -> dict[str, Any]:
    stats: dict[str, Any] = {"ms": [], "ok": 0, "failed": 0}
    probe_log: list[dict[str, Any]] = []
    state: dict[str, Any] = {"done_at": None, "job": None}
    async with httpx.AsyncClient(base_url=server.url, timeout=300, headers=server.auth) as client:
        r = await client.post("/v1/learn", json=learn)
        r.raise_for_status()
        job_url, t_start = r.json()["url"], time.perf_counter()

        def until() -> bool:
            return state["done_at"] is not None and time.perf_counter() > state["done_at"] + after

        async def watch() -> None:
            while state["done_at"] is None:
                j = (await client.get(job_url)).json()
                if j["state"] in ("succeeded", "failed"):
                    state["done_at"], state["job"] = time.perf_counter(), j
                    return
                await asyncio.sleep(0.5)

        async def probe() -> None:
            k = 0
            while not until():
                text, gold = probes[k % len(probes)]
                sent = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", json={"inputs": [text]})
                    p = r.json()["predictions"][0] if r.status_code == 200 else {}
                except httpx.HTTPError:
                    p = {}
                probe_log.append({"sent": sent, "after_commit": state["done_at"] is not None and sent > state["done_at"],
                                  "task": p.get("task"), "label": p.get("label"), "gold": gold})
                k += 1
        await asyncio.gather(load(server.url, task, clients, until, stats), watch(), probe())
    after_commit = [p for p in probe_log if p["after_commit"]]
    first = next((i for i, p in enumerate(after_commit) if p["task"] == learn["task"]), None)
    first_right = next((i for i, p in enumerate(after_commit)
                        if p["task"] == learn["task"] and p["label"] == p["gold"]), None)
    return {"job": state["job"], "job_s": round(state["done_at"] - t_start, 1), "stats": stats,
            "probes_after_commit": len(after_commit), "first_routed_to_new_task": first,
            "first_right_after_commit": first_right,
            "routed_to_new_task_after_commit": sum(p["task"] == learn["task"] for p in after_commit),
            "routed_to_new_task_before_commit": sum(p["task"] == learn["task"] for p in probe_log
                                                    if not p["after_commit"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, required=True, help="an adapter library (copied; left as it is)")
    ap.add_argument("--learn", default="sms_spam", help="built-in task the job learns")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="baseline load time")
    ap.add_argument("--after", type=float, default=5.0, help="load time after the job has committed")
    ap.add_argument("--steps", type=int, default=300, help="the job's step cap (early stopping as by default)")
    ap.add_argument("--max-train", type=int, default=256)
    ap.add_argument("--job-nice", type=int, default=None, help="the server's --job-nice (its default when not given)")
    ap.add_argument("--job-threads", type=int, default=None, help="the server's --job-threads")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    from adaptive_learner.tasks import load_catalog_task

    task = sorted(json.loads((a.library / "manifest.json").read_text())["tasks"])[0]
    new = load_catalog_task(a.learn).subsample(a.max_train, 40, 0)
    probes = [(" ||| ".join(str(ex.fields[f]) for f in new.spec.input_fields), new.spec.label_names[ex.label])
              for ex in new.test]
    work = Path(tempfile.mkdtemp(prefix="serve-learning-"))
    lib = work / "lib"
    shutil.copytree(a.library, lib)
    extra = [f"--{k}={v}" for k, v in (("job-nice", a.job_nice), ("job-threads", a.job_threads)) if v is not None]
    server = Server(lib, work, None, "--batching", *extra).start()
    try:
        base: dict[str, Any] = {"ms": [], "ok": 0, "failed": 0}
        end = time.perf_counter() + a.seconds
        asyncio.run(load(server.url, task, a.clients, lambda: time.perf_counter() > end, base))
        learn = {"task": a.learn, "steps": a.steps, "max_train": a.max_train}
        res = asyncio.run(with_job(server, task, learn, probes, a.clients, a.after))
    finally:
        server.stop()
    without, during = latency_quantiles(base["ms"]), latency_quantiles(res["stats"]["ms"])
    doc = {"args": {k: str(v) for k, v in vars(a).items()}, "served_task": task,
           "without_job": {"requests": base["ok"], "failed": base["failed"], **without},
           "with_job": {"requests": res["stats"]["ok"], "failed": res["stats"]["failed"], **during},
           "p99_ratio": round(during["p99_ms"] / without["p99_ms"], 2) if without["p99_ms"] else None,
           "job_state": (res["job"] or {}).get("state"), "job_s": res["job_s"],
           "job_accuracy_after": (res["job"] or {}).get("accuracy_after"),
           **{k: res[k] for k in ("probes_after_commit", "first_routed_to_new_task", "first_right_after_commit",
                                  "routed_to_new_task_after_commit", "routed_to_new_task_before_commit")}}
    print(json.dumps(doc, indent=2))
    if a.out:
        a.out.write_text(json.dumps(doc, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
