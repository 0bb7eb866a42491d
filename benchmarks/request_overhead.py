"""Per-request overhead of the server's HTTP path (no model work): one client, sequential GET /v1/jobs, which passes
the same middleware and access dependency as predict.

    python benchmarks/request_overhead.py LABEL --library LIB
"""
import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import serve_load as sl  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("label")
ap.add_argument("--library", type=Path, required=True)
args = ap.parse_args()
port = sl.free_port()
proc, _ = sl.start_server(args.library, True, port)
try:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        for _ in range(50): c.get("/v1/jobs")
        rates = []
        for r in range(3):
            t = time.perf_counter()
            for _ in range(400): c.get("/v1/jobs")
            rates.append(400 / (time.perf_counter() - t))
        print(args.label, "GET /v1/jobs req/s (1 client, 3 x 400):", [round(x) for x in rates])
finally:
    proc.terminate(); proc.wait()
