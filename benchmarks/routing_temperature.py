"""The routing posterior with and without its temperature, on random sub-libraries of a router bank.

For each library size, draws libraries of catalog tasks from a bank written by ``alearn router-eval``
(the bank's profile examples are what a library stores, its test inputs are routed), builds the
input router (which fits its temperature on the stored examples only) and reports the ECE of the
exact-task posterior with the fitted temperature and with none (T = 1). Routing decisions are the
same either way.

    python benchmarks/routing_temperature.py --bank runs/router-eval-v2/bank --sizes 3,6,11 --draws 5
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


def one_library(bank, lib):
    router = InputRouter([TaskProfile(t, t, bank[t].profile) for t in lib])
    hits, tempered, raw = [], [], []
    for t in lib:
        feats, fields = bank[t].test, [bank[t].profile.n_fields] * len(bank[t].test)
        temp = router.route(feats, fields)
        T, router.temperature = router.temperature, 1.0
        plain = router.route(feats, fields)
        router.temperature = T
        assert [a.task for a in temp] == [b.task for b in plain]
        hits += [a.task == t for a in temp]
        tempered += [a.confidence for a in temp]
        raw += [b.confidence for b in plain]
    return {"library": list(lib), "temperature": T, "accuracy": float(np.mean(hits)),
            "ece_raw": expected_calibration_error(raw, hits), "ece_tempered": expected_calibration_error(tempered, hits)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True)
    ap.add_argument("--sizes", default="3,6,11")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="routing_temperature")
    args = ap.parse_args()
    bank, _ = load_bank(Path(args.bank))
    rows = []
    draws = list(library_draws(sorted(bank), args.sizes, args.draws, args.seed))
    for size in dict.fromkeys(s for s, _ in draws):
        for lib in (lib for s, lib in draws if s == size):
            r = one_library(bank, lib)
            rows.append({"size": size, **r})
            print(f"{size:2d} T={r['temperature']:5.2f} acc {r['accuracy']:.3f} ECE raw {r['ece_raw']:.3f} "
                  f"tempered {r['ece_tempered']:.3f}  {','.join(lib)}")
        mine = [x for x in rows if x["size"] == size]
        print(f"size {size}: mean ECE raw {np.mean([x['ece_raw'] for x in mine]):.3f} "
              f"tempered {np.mean([x['ece_tempered'] for x in mine]):.3f}")
    save(args.out, {"bank": args.bank, "rows": rows})


if __name__ == "__main__":
    main()
