"""What a table of `alearn bench` runs cost this machine (issue 11, item 6: record the CPU time the whole table cost).

Reads every run's ``results.json`` (or the ``results-<strategy>.json`` copies kept under ``benchmarks/results``)
below the given folders, each run counted once (links followed), and sums per group of folders:
- the wall hours of the runs (``timings_s.total``: every process's share of a resumed run);
- the core hours they held, wall times the run's torch threads (an upper bound on their CPU time: a run that
  shared the cores with others is slower in wall time);
- the CPU hours where the run recorded them (``timings_s.cpu``, since session 41: the process's CPU time over
  every thread, whatever ran beside it).

    python table_cost.py --group "2e-3 table" results/bench-headline-acc results/bench-headline-acc-seed1 \\
        results/bench-headline-acc-seed2 --group "searched rates" results/headline-chosen-lr --out table_cost
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def run_files(folder: Path) -> list[Path]:
    """The results files of the runs below ``folder`` (not a bench's partial checkpoints or summaries)."""
    found = [p for p in folder.rglob("results*.json") if "checkpoint" not in p.name and "pooled" not in p.name]
    return sorted(p for p in found if p.name == "results.json" or p.name.startswith("results-"))


def run_cost(doc: dict[str, Any]) -> dict[str, Any] | None:
    """One run's strategy, seed, rate, wall and core seconds, CPU seconds (None: not recorded); None for a file
    that is not a finished run."""
    t = doc.get("timings_s")
    if not isinstance(t, dict) or "total" not in t or "config" not in doc:
        return None
    threads = int((doc.get("environment") or {}).get("torch_threads") or 1)
    cfg = doc["config"]
    head = bool((cfg.get("options") or {}).get("head"))
    return {"strategy": doc.get("strategy", cfg.get("strategy")) + ("+head" if head else ""),
            "seed": cfg.get("seed"), "lr": (cfg.get("train") or {}).get("lr"), "wall_s": float(t["total"]),
            "core_s": float(t["total"]) * threads, "cpu_s": t.get("cpu"), "threads": threads}


def group_cost(folders: list[Path], seen: set[str]) -> dict[str, Any]:
    """The runs below ``folders`` not counted in an earlier group, and their sums."""
    runs = []
    for folder in folders:
        for f in run_files(folder):
            real = os.path.realpath(f)
            cost = run_cost(json.loads(Path(real).read_text()))
            if cost is None or real in seen:
                continue
            seen.add(real)
            runs.append({**cost, "file": str(f)})
    timed = [r["cpu_s"] for r in runs if r["cpu_s"] is not None]
    return {"runs": runs, "n": len(runs), "wall_h": sum(r["wall_s"] for r in runs) / 3600,
            "core_h": sum(r["core_s"] for r in runs) / 3600,
            "cpu_h": sum(timed) / 3600 if timed else None, "cpu_runs": len(timed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", nargs="+", action="append", metavar=("NAME", "FOLDER"), required=True,
                    help="a name, then the folders whose runs it sums (repeat for several groups)")
    ap.add_argument("--out", default="table_cost")
    a = ap.parse_args()
    seen: set[str] = set()
    groups = {}
    for name, *folders in a.group:
        if not folders:
            raise SystemExit(f"error: --group {name!r} names no folder")
        missing = [f for f in folders if not Path(f).is_dir()]
        if missing:
            raise SystemExit(f"error: no such folder: {', '.join(missing)}")
        groups[name] = group_cost([Path(f) for f in folders], seen)
    lines = ["| group | runs | wall hours | core hours held (wall x threads) | CPU hours recorded |",
             "|---|---|---|---|---|"]
    for name, g in groups.items():
        cpu = "not recorded" if g["cpu_h"] is None else f"{g['cpu_h']:.1f} ({g['cpu_runs']} of {g['n']} runs)"
        lines.append(f"| {name} | {g['n']} | {g['wall_h']:.1f} | {g['core_h']:.1f} | {cpu} |")
    total = [sum(g[k] for g in groups.values()) for k in ("n", "wall_h", "core_h")]
    lines.append(f"| all | {total[0]} | {total[1]:.1f} | {total[2]:.1f} | |")
    table = "\n".join(lines)
    from common import save  # torch and the package: imported only once the arguments are good

    path = save(a.out, {"groups": groups, "table": table})
    print(table)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
