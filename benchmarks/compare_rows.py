"""Two ``per_task_quality.py`` results side by side, task by task (rows paired in order): B minus A for the
adapter alone and for the adapter + head, with the paired bootstrap 95% interval over each task's test
examples (both runs must have scored the same examples: same ``--n-train``, ``--max-test`` and ``--seed``), and
the same pooled over the tasks. A side may be several result files joined by ``,``; ``--by-task`` pairs rows by
task name and seed (the tasks both sides have, in B's order) instead of by position, so the files of several
seeds pool into one interval.

    python benchmarks/compare_rows.py results/per_task_quality_160_as_csv_names.json \
        results/per_task_quality_160_as_csv_codes.json --out compare_as_csv_names_codes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adaptive_learner.evaluation.stats import paired_bootstrap
from common import save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--by-task", action="store_true", help="pair rows by task name, not by position")
    ap.add_argument("--b-suffix", default="", help="with --by-task: a suffix B's task names carry (-names for an "
                    "--as-csv run), dropped before pairing")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ra, rb = ([{**r, "seed": doc.get("seed", 0)} for f in side.split(",")
               for doc in [json.loads(Path(f).read_text())] for r in doc["rows"]] for side in (args.a, args.b))
    if args.by_task:
        named = {(r["task"], r["seed"]): r for r in ra}
        rb = [r for r in rb if (r["task"].removesuffix(args.b_suffix), r["seed"]) in named]
        ra = [named[(r["task"].removesuffix(args.b_suffix), r["seed"])] for r in rb]
    if len(ra) != len(rb):
        raise SystemExit(f"error: {len(ra)} rows against {len(rb)}")
    rows = []
    pooled: dict[str, tuple[dict, dict]] = {"adapter": ({}, {}), "head": ({}, {})}
    print("| A | B | test | adapter A -> B | B - A [95% CI] | adapter + head A -> B | B - A [95% CI] | steps (kept) A / B |")
    print("|---|---|---|---|---|---|---|---|")
    seeds = len({r["seed"] for r in ra}) > 1
    for x, y in zip(ra, rb):
        if (x["n_test"], x["majority"], x["seed"]) != (y["n_test"], y["majority"], y["seed"]):
            raise SystemExit(f"error: {x['task']} and {y['task']} were not scored on the same test examples")
        ox, oy = x["ours"], y["ours"]
        name = f"{x['task']} (seed {x['seed']})" if seeds else x["task"]
        row = {"a": x["task"], "b": y["task"], "seed": x["seed"], "n_test": x["n_test"]}
        cells = []
        for key, get in (("adapter", lambda o: o["correct"]), ("head", lambda o: o["head"]["correct"])):
            d = paired_bootstrap([{name: get(oy)}], [{name: get(ox)}], [0]).to_dict()
            acc = (sum(get(ox)) / len(get(ox)), sum(get(oy)) / len(get(oy)))
            pooled[key][0][name], pooled[key][1][name] = get(ox), get(oy)
            row[key] = {"a": acc[0], "b": acc[1], "b_minus_a": d}
            cells += [f"{acc[0]:.3f} -> {acc[1]:.3f}", f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"]
        rows.append(row)
        print(f"| {name} | {y['task']} | {x['n_test']} | " + " | ".join(cells)
              + f" | {ox['steps']} ({ox['best_step']}) / {oy['steps']} ({oy['best_step']}) |")
    total = {k: paired_bootstrap([b], [a], [0]).to_dict() for k, (a, b) in pooled.items()}
    print("| pooled | | | | " + " | | ".join(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                                           for d in total.values()) + " | |")
    if args.out:
        save(args.out, {"a": args.a, "b": args.b, "rows": rows, "pooled": total})


if __name__ == "__main__":
    main()
