"""Why a same-family pair is not reused: the router's evidence for chosen (new task, stored task) pairs.

Reads a gauntlet bank (``alearn router-eval --out DIR`` writes ``DIR/bank``), and for each pair prints
the evidence signals the combiner sees (``router.evidence.evidence_for_all``, one library holding the
stored task and two fillers), the cosine matrix of the two label sets' name embeddings, and, for two
binary tasks, how the directions from one label to the other align (``|cos|`` of the differences):

    python benchmarks/family_pairs.py --bank ../runs/router-eval-s23/bank \\
        --pairs mrpc:stsb,stsb:mrpc,mrpc:rte,stsb:rte,rte:cb,cb:rte,imdb:sst2 --out family_pairs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adaptive_learner.evaluation.router_bank import load_bank
from adaptive_learner.evaluation.router_eval import profiles_of
from adaptive_learner.router.evidence import _unit_rows, evidence_for_all
from common import save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True, help="the bank a router-eval wrote (DIR/bank)")
    ap.add_argument("--pairs", required=True, help="probe:stored pairs, comma-separated")
    ap.add_argument("--fillers", default="trec,bbc_news", help="other stored tasks in the library (whitening)")
    ap.add_argument("--k", type=int, default=16, help="the probe's examples")
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    bank, _ = load_bank(Path(a.bank))
    rng = np.random.RandomState(0)
    rows = []
    for pair in a.pairs.split(","):
        probe, cand = pair.split(":")
        fillers = [t for t in a.fillers.split(",") if t not in (probe, cand)]
        req = bank[probe].request(rng.permutation(len(bank[probe].pool))[: a.k], 0)
        ev = evidence_for_all(req, profiles_of([cand, *fillers], bank), a.permutations, 0)[0]
        pa, pc = bank[probe].profile, bank[cand].profile
        ua, uc = _unit_rows(pa.label_vecs), _unit_rows(pc.label_vecs)  # as label_match normalises them
        sims = (ua @ uc.T).astype(float)
        row = {"probe": probe, "stored": cand, "same_family": bank[probe].family == bank[cand].family,
               "evidence": ev, "labels": [pa.label_names, pc.label_names], "label_cos": sims.round(3).tolist()}
        if len(pa.label_names) == 2 and len(pc.label_names) == 2:
            da, dc = ua[1] - ua[0], uc[1] - uc[0]
            row["contrast_cos"] = round(float(abs(da @ dc) / np.linalg.norm(da) / np.linalg.norm(dc)), 3)
        rows.append(row)
        print(f"{probe:>16s} -> {cand:16s} same family {row['same_family']!s:5s} "
              + " ".join(f"{k}={v:.2f}" for k, v in sorted(ev.items()))
              + (f" contrast={row['contrast_cos']:.2f}" if "contrast_cos" in row else ""))
        print(f"{'':19s}{pa.label_names} x {pc.label_names}: {np.round(sims, 2).tolist()}")
    if a.out:
        save(a.out, {"bank": a.bank, "k": a.k, "permutations": a.permutations, "rows": rows})


if __name__ == "__main__":
    main()
