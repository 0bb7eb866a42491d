"""Where the time of one served batch goes: ``Learner.predict`` (what the server's model thread runs) timed
alone, outside HTTP, with the task given and routed, at 1 and 32 inputs, then profiled (cProfile, the
functions with the most own time) on the batch the server gathers at 32 clients (half given, half routed).

    python benchmarks/profile_predict.py --library lib --task sst2 --device cuda --out profile.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from pathlib import Path

from serve_load import TEXTS  # the inputs the load test sends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", type=Path, required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cases", default="given x1,routed x1,given x32,routed x32,mixed x32",
                    help="which cases to time, comma-separated")
    ap.add_argument("--no-profile", action="store_true", help="time the cases only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from adaptive_learner.learner import Learner

    learner = Learner(args.library, create=False, device=args.device)
    cuda = learner.backbone.device.type == "cuda" if hasattr(learner.backbone, "device") else False

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def batch(n: int, routed: bool) -> None:
        texts = [TEXTS[k % len(TEXTS)] for k in range(n)]
        learner.predict(texts, None if routed else args.task)

    def mixed(n: int) -> None:  # what the server runs for n one-input requests, half of them routed
        batch(n // 2, routed=False)
        batch(n - n // 2, routed=True)

    cases = {"given x1": lambda: batch(1, False), "routed x1": lambda: batch(1, True),
             "given x32": lambda: batch(32, False), "routed x32": lambda: batch(32, True),
             "mixed x32": lambda: mixed(32)}
    rows = []
    wanted = [c.strip() for c in args.cases.split(",")]
    if unknown := [c for c in wanted if c not in cases]:
        raise SystemExit(f"--cases: unknown {unknown}; known: {list(cases)}")
    for name, fn in ((c, cases[c]) for c in wanted):
        fn(); fn(); sync()  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t)
        row = {"case": name, "min_ms": 1000 * min(times), "median_ms": 1000 * statistics.median(times),
               "max_ms": 1000 * max(times)}
        rows.append(row)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if args.no_profile:
        if args.out:
            args.out.write_text(json.dumps({"device": str(getattr(learner.backbone, "device", "?")), "rows": rows},
                                           indent=1))
        return
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.repeats):
        mixed(32)
    sync()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
    top = s.getvalue()
    s2 = io.StringIO()
    pstats.Stats(prof, stream=s2).sort_stats("cumulative").print_stats(40)
    print(top)
    print(s2.getvalue())
    if args.out:
        args.out.write_text(json.dumps({"device": str(getattr(learner.backbone, "device", "?")), "rows": rows,
                                        "profile_tottime": top, "profile_cumulative": s2.getvalue()}, indent=1))


if __name__ == "__main__":
    main()
