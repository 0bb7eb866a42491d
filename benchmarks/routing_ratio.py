"""Per-input routing with and without the field length ratio of pair inputs, on a router bank.

The library holds a random draw of catalog tasks (all of them at the largest size), one adapter per
family as in ``alearn router-eval``'s routing test; the bank's test inputs of those tasks are routed
by the input router (LDA on the backbone features, tempered) alone, and with each pair input's field
length ratio judged against every stored pair task's (``router/routing.py``, ``RatioModel``). The
bank needs the stored examples' ratios: a bank with the ``structure`` arrays has them (``alearn
router-eval`` writes them; older banks get them from ``add_structure``).

    python benchmarks/routing_ratio.py --bank runs/router-eval-v3/bank --sizes 3,6,11 --draws 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adaptive_learner.evaluation.router_bank import load_bank
from adaptive_learner.router.calibration import expected_calibration_error
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.routing import InputRouter
from common import library_draws, save


def one_library(bank, lib) -> dict:
    router = InputRouter([TaskProfile(t, f"lora-{bank[t].family}", bank[t].profile) for t in lib])
    if router.ratio_model is None and any(bank[t].profile.n_fields > 1 for t in lib):
        raise SystemExit("the bank keeps no field ratios for its pair tasks: build it again with alearn router-eval")
    out = {"library": list(lib)}
    for name, use in (("lda", False), ("lda+ratio", True)):
        exact, adapter, conf = [], [], []
        for t in lib:
            b = bank[t]
            routed = router.route(b.test, [b.profile.n_fields] * len(b.test), texts=b.test_texts if use else None)
            exact += [r is not None and r.task == t for r in routed]
            adapter += [r is not None and r.adapter == f"lora-{b.family}" for r in routed]
            conf += [r.confidence if r is not None else 0.0 for r in routed]
        pair = [bank[t].profile.n_fields > 1 for t in lib for _ in bank[t].test]
        out[name] = {"exact": float(np.mean(exact)), "adapter": float(np.mean(adapter)),
                     "ece": expected_calibration_error(conf, exact),
                     "pair_exact": float(np.mean([e for e, p in zip(exact, pair) if p])) if any(pair) else None,
                     "n_inputs": len(exact), "n_pair_inputs": int(sum(pair))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True)
    ap.add_argument("--sizes", default="3,6,11")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="routing_ratio")
    args = ap.parse_args()
    bank, _ = load_bank(Path(args.bank))
    rows = []
    draws = list(library_draws(sorted(bank), args.sizes, args.draws, args.seed))
    for size in dict.fromkeys(s for s, _ in draws):
        for lib in (lib for s, lib in draws if s == size):
            r = one_library(bank, lib)
            rows.append({"size": size, **r})
            a, b = r["lda"], r["lda+ratio"]
            print(f"{size:2d} exact {a['exact']:.3f}->{b['exact']:.3f} adapter {a['adapter']:.3f}->{b['adapter']:.3f} "
                  f"ECE {a['ece']:.3f}->{b['ece']:.3f}  {','.join(lib)}")
        mine = [x for x in rows if x["size"] == size]
        with_pairs = [x for x in mine if x["lda"]["pair_exact"] is not None]
        summary = {k: {m: float(np.mean([x[k][m] for x in mine])) for m in ("exact", "adapter", "ece")}
                   for k in ("lda", "lda+ratio")}
        for k in summary:
            summary[k]["pair_exact"] = (float(np.mean([x[k]["pair_exact"] for x in with_pairs]))
                                        if with_pairs else None)
        rows.append({"size": size, "summary": summary, "draws": len(mine)})
        print(f"size {size} mean: " + "; ".join(f"{k}: exact {v['exact']:.3f} adapter {v['adapter']:.3f} "
                                                  f"ECE {v['ece']:.3f}" for k, v in summary.items()))
    save(args.out, {"bank": args.bank, "rows": rows})


if __name__ == "__main__":
    main()
