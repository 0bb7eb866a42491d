"""Load on `alearn serve`: dynamic batching against one request at a time, side by side in one run.

Starts `alearn serve LIBRARY` in turn (batching on, then `--no-batching`; `--servers` may add
`model-process`: batching with the model in its own process, `--model-process`), each on a free
loopback port, and drives it with a bounded number of concurrent httpx clients (1, 8, 32) for a
fixed time per level; short sentiment inputs, with the task given, routed, or half and half.
Prints p50/p95/p99 latency and requests/s per server and level, and the speed-up at the largest
level. Nothing leaves loopback.

    python benchmarks/serve_load.py --library lib --task sst2 --mode mixed --seconds 20
    python benchmarks/serve_load.py --library lib --clients 1,8 --seconds 3       # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TEXTS = ["a gorgeous, witty film", "a tedious mess", "superb and moving", "dull, dull, dull", "I loved every minute",
         "a waste of two hours", "charming and smart", "the plot makes no sense", "beautifully acted", "boring"]


@dataclass
class Level:
    server: str
    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, float | int | str]:
        return {"server": self.server, "clients": self.clients, "requests": self.requests, "errors": self.errors,
                "req_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
                **latency_quantiles(self.latencies_ms)}


def latency_quantiles(ms: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 of request latencies in milliseconds."""
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [float("nan")] * 99
    return {"p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1), "p99_ms": round(q[98], 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(library: Path, batching: bool, port: int, device: str = "auto",
                 score_batch: int = 0, switch_ms: float | None = None,
                 batch_wait_ms: float | None = None, model_process: bool = False) -> tuple[subprocess.Popen, dict]:
    """Start `alearn serve` and wait for /healthz; returns the process and its health (device included)."""
    cmd = [sys.executable, "-m", "adaptive_learner.cli", "serve", str(library), "--port", str(port),
           "--log-level", "warning", "--batching" if batching else "--no-batching", "--device", device,
           "--score-batch", str(score_batch), *(["--switch-ms", str(switch_ms)] if switch_ms else []),
           *(["--batch-wait-ms", str(batch_wait_ms)] if batch_wait_ms is not None else []),
           *(["--model-process"] if model_process else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server did not start: {proc.stderr.read()[-2000:]}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if r.status_code == 200:
                return proc, r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not answer /healthz within 600 s")


def body(k: int, mode: str, task: str) -> dict:
    routed = mode == "routed" or (mode == "mixed" and k % 2 == 1)
    return {"inputs": [TEXTS[k % len(TEXTS)]], **({} if routed else {"task": task})}


async def drive(url: str, level: Level, seconds: float, mode: str, task: str) -> None:
    limits = httpx.Limits(max_connections=level.clients, max_keepalive_connections=level.clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for k in range(3):  # warm-up, not counted; a server that fails here would only measure its errors
            r = await client.post("/v1/predict", json=body(k, mode, task))
            if r.status_code != 200:
                raise SystemExit(f"warm-up request {k} got {r.status_code}: {r.text[:500]}")
        end = time.perf_counter() + seconds

        async def one_client(c: int) -> None:
            k = c
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", json=body(k, mode, task))
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                level.latencies_ms.append((time.perf_counter() - t0) * 1000)
                level.requests += ok
                level.errors += not ok
                k += level.clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(level.clients)))
        level.seconds = time.perf_counter() - t0


def table(rows: list[dict]) -> str:
    head = ["server", "clients", "req_per_s", "p50_ms", "p95_ms", "p99_ms", "requests", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, required=True, help="an adapter library holding --task")
    ap.add_argument("--task", default=None, help="task given in requests (default: the library's first task)")
    ap.add_argument("--mode", choices=["task", "routed", "mixed"], default="mixed")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time per level")
    ap.add_argument("--device", default="auto", help="the servers' --device (auto: a CUDA GPU when there is one)")
    ap.add_argument("--score-batch", type=int, default=0, help="the batching server's --score-batch (0: by device)")
    ap.add_argument("--switch-ms", type=float, default=None,
                    help="the servers' --switch-ms (default: the server's own default)")
    ap.add_argument("--batch-wait-ms", type=float, default=None,
                    help="the batching server's --batch-wait-ms (default: the server's own default)")
    ap.add_argument("--servers", default="batching,one-at-a-time", help="which servers to run, in this order: batching, "
                    "model-process (batching, the model in its own process), one-at-a-time")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    task = args.task or sorted(json.loads((args.library / "manifest.json").read_text())["tasks"])[0]
    levels = [int(x) for x in args.clients.split(",")]
    rows, health = [], {}
    for name in args.servers.split(","):
        batching = name in ("batching", "model-process")
        if name not in ("batching", "model-process", "one-at-a-time"):
            raise SystemExit(f"--servers: batching, model-process or one-at-a-time, not {name!r}")
        port = free_port()
        proc, health[name] = start_server(args.library, batching, port, args.device, args.score_batch if batching else 0,
                                          args.switch_ms, args.batch_wait_ms if batching else None,
                                          model_process=name == "model-process")
        print(f"{name}: serving on {health[name].get('device', '?')}", flush=True)
        try:
            for n in levels:
                level = Level(name, n)
                asyncio.run(drive(f"http://127.0.0.1:{port}", level, args.seconds, args.mode, task))
                rows.append(level.row())
                print(json.dumps(rows[-1]), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\nmachine: {os.cpu_count()} CPUs; mode {args.mode}; task {task}; {args.seconds:g} s per level\n")
    print(table(rows))
    top = max(levels)
    rate = {r["server"]: r["req_per_s"] for r in rows if r["clients"] == top}
    for name in ("batching", "model-process"):
        if rate.get("one-at-a-time") and rate.get(name):
            print(f"\nat {top} clients: {name} {rate[name] / rate['one-at-a-time']:.2f}x the requests/s of one at a time")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "servers": health,
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
