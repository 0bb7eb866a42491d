"""Two sets of ``per_task_quality.py`` results, task by task on the same test examples: our answer after
against before, each against the peer, with paired bootstrap 95% intervals (per task and pooled).

Rows pair up by task, training-set size and seed (files of several seeds pool over all of them); a task
only one side has is listed and left out of the pooled figures. The adapter's own per-example outcomes are compared too: when they are identical the two runs
trained the same adapter and only what follows it (the head) differs.

    python compare_quality_runs.py --before results/a.json results/b.json --after results/c.json --out cmp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_learner.evaluation.stats import paired_bootstrap
from common import save


def rows(paths: list[str]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """(task, n_train, seed) -> row, later files overriding earlier ones."""
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        for r in doc["rows"]:
            out[(r["task"], r["n_train"], int(doc.get("seed", 0)))] = {**r, "file": Path(p).name}
    return out


def answer(r: dict[str, Any], adapter_only: bool = False) -> list[int]:
    """A row's per-example outcomes: with the head where it has one (``adapter_only``: the adapter's own)."""
    o = r["ours"]
    return o["correct"] if adapter_only else (o.get("head") or {}).get("correct", o["correct"])


def diff(a: list[int], b: list[int]) -> dict[str, Any]:
    return paired_bootstrap([{"t": a}], [{"t": b}], [0]).to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", nargs="+", required=True)
    ap.add_argument("--after", nargs="+", required=True)
    ap.add_argument("--adapter", action="store_true", help="the adapters' own answers (default: with the head)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    before, after = rows(a.before), rows(a.after)
    table, pooled_after, pooled_before, pooled_peer = [], {}, {}, {}
    for key in sorted(set(before) & set(after)):
        b, n = before[key], after[key]
        ans_b, ans_n = (answer(r, a.adapter) if "correct" in r["ours"] else None for r in (b, n))
        if ans_b is None or len(ans_b) != len(ans_n):
            row = {"task": key[0], "n_train": key[1], "seed": key[2],
                   "before": round(float(b["ours"].get("head", b["ours"])["accuracy"]), 4),
                   "after": round(float(np.mean(ans_n)), 4), "unpaired": "no per-example outcomes before",
                   "files": [b["file"], n["file"]]}
            table.append(row)
            print(f"{key[0]}@{key[1]} s{key[2]:<10} before {row['before']:.3f} after {row['after']:.3f} "
                  f"{row['after'] - row['before']:+.3f} (same test examples, no per-example outcomes before)")
            continue
        row = {"task": key[0], "n_train": key[1], "seed": key[2], "before": round(float(np.mean(ans_b)), 4),
               "after": round(float(np.mean(ans_n)), 4), "after_minus_before": diff(ans_n, ans_b),
               "same_adapter": b["ours"]["correct"] == n["ours"]["correct"],
               "views_before": ((b["ours"].get("head") or {}).get("views") or {}).get("chosen", []),
               "views_after": ((n["ours"].get("head") or {}).get("views") or {}).get("chosen", []),
               "mix_before": (b["ours"].get("head") or {}).get("mix"), "mix_after": (n["ours"].get("head") or {}).get("mix"),
               "files": [b["file"], n["file"]]}
        name = f"{key[0]}@{key[1]} s{key[2]}"
        pooled_after[name], pooled_before[name] = ans_n, ans_b
        if "correct" in n.get("peer", {}):
            row["peer"] = round(float(n["peer"]["accuracy"]), 4)
            row["after_minus_peer"] = diff(ans_n, n["peer"]["correct"])
            pooled_peer[name] = n["peer"]["correct"]
        table.append(row)
        d = row["after_minus_before"]
        print(f"{name:22s} before {row['before']:.3f} (mix {row['mix_before']}) after {row['after']:.3f} "
              f"(mix {row['mix_after']}, views {'+'.join(row['views_after']) or '-'}) "
              f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] same adapter: {row['same_adapter']}")
    summary: dict[str, Any] = {}
    if pooled_after:
        summary["after_minus_before"] = paired_bootstrap([pooled_after], [pooled_before], [0]).to_dict()
        summary["tasks"] = len(pooled_after)
        print("pooled after - before:", json.dumps(summary["after_minus_before"]))
    if pooled_peer and len(pooled_peer) == len(pooled_after):
        summary["after_minus_peer"] = paired_bootstrap([pooled_after], [pooled_peer], [0]).to_dict()
        summary["before_minus_peer"] = paired_bootstrap([pooled_before], [pooled_peer], [0]).to_dict()
        print("pooled after - peer:", json.dumps(summary["after_minus_peer"]))
    only = sorted(f"{t}@{n} s{sd}" for t, n, sd in set(before) ^ set(after))
    if a.out:
        save(a.out, {"before": a.before, "after": a.after, "rows": table, "summary": summary, "unpaired": only})


if __name__ == "__main__":
    main()
