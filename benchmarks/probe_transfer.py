"""Does a stored task's decision transfer to a new task through frozen features? (issue 13, item 1: "the
mapping from inputs to answers", without a trained adapter.)

For every ordered pair (stored task, new task) of a gauntlet bank with the same number of input fields, a
logistic probe is fitted on the stored task's profile examples and their labels, in one frozen view (the
backbone's features, MiniLM's input embeddings, the pair tasks' field relation, or backbone + relation),
optionally each task centred on its own mean; it answers k of the new task's pool examples, and its
answers are mapped onto the new task's labels by the best many-to-one mapping, tested against the labels
shuffled (``router.trial.mapping_test``, as the answer trial does with a real adapter). A signal that a
family shares its decision would pass (p <= 0.01) within families and not across them. The bank does not
store example labels; they are read again from the catalog rows the bank was built from
(``router_bank.bank_rows``, the same seed), so no backbone is loaded.

    python benchmarks/probe_transfer.py --bank ../runs/router-eval-s23/bank --out probe_transfer
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from adaptive_learner.evaluation.router_bank import bank_rows, load_bank
from adaptive_learner.router.trial import mapping_test
from adaptive_learner.tasks import load_catalog_task
from common import machine, save

VIEWS = {"backbone": ("examples", "pool"), "minilm": ("inputs", "pool_inputs"),
         "relation": ("structure", "pool_structure")}


def view(b, names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(profile rows, pool rows) of one task in the named views, side by side; None if one is missing."""
    prof, pool = [], []
    for n in names:
        p, q = getattr(b.profile, VIEWS[n][0]), getattr(b, VIEWS[n][1])
        if p is None or q is None:
            return None
        prof.append(p)
        pool.append(q)
    return np.hstack(prof), np.hstack(pool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True, help="the bank a router-eval wrote (DIR/bank)")
    ap.add_argument("--views", default="backbone,minilm,relation,backbone+relation")
    ap.add_argument("--k", type=int, default=32, help="the new task's examples per draw")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.01, help="the answer trial's bar")
    ap.add_argument("--C", type=float, default=0.05, help="the probe's inverse l2 penalty")
    ap.add_argument("--permutations", type=int, default=300)
    ap.add_argument("--out", default="probe_transfer")
    a = ap.parse_args()

    bank, meta = load_bank(Path(a.bank))
    seed, n_prof, n_pool = meta["features"]["seed"], meta["features"]["profile_examples"], 64
    labels = {}
    for t in sorted(bank):
        prof, pool = bank_rows(load_catalog_task(t), n_prof, n_pool, seed)
        if len(prof) != bank[t].profile.n_examples or len(pool) != len(bank[t].pool):
            raise SystemExit(f"{t}: the bank was built from other rows")
        labels[t] = (np.array([e.label for e in prof]), np.array([e.label for e in pool]))

    rng = np.random.RandomState(0)
    out = {}
    for names in a.views.split(","):
        for centre in (False, True):
            key = names + (", centred" if centre else "")
            rows = []
            for c, p in itertools.permutations(sorted(bank), 2):
                bc, bp = bank[c], bank[p]
                vc, vp = view(bc, names.split("+")), view(bp, names.split("+"))
                if bc.profile.n_fields != bp.profile.n_fields or vc is None or vp is None:
                    continue
                x = vc[0] - (vc[0].mean(0) if centre else 0)
                sc = StandardScaler().fit(x)
                probe = LogisticRegression(C=a.C, max_iter=2000).fit(sc.transform(x), labels[c][0])
                ps = []
                for d in range(a.draws):
                    idx = rng.choice(len(vp[1]), min(a.k, len(vp[1])), replace=False)
                    q = vp[1][idx] - (vp[1][idx].mean(0) if centre else 0)
                    r = mapping_test(probe.predict(sc.transform(q)), labels[p][1][idx], bc.profile.n_labels,
                                     bp.profile.n_labels, a.permutations, d)
                    ps.append(r["p"])
                rows.append({"stored": c, "new": p, "same_family": bc.family == bp.family,
                             "median_p": float(np.median(ps)), "passed": float(np.mean(np.array(ps) <= a.alpha))})
            same = [r["passed"] for r in rows if r["same_family"]]
            other = [r["passed"] for r in rows if not r["same_family"]]
            out[key] = {"same_family_passed": float(np.mean(same)) if same else None,
                        "other_family_passed": float(np.mean(other)) if other else None,
                        "pairs": rows}
            print(f"{key:28s} same family passed {out[key]['same_family_passed']:.2f} ({len(same)} pairs), "
                  f"other family {out[key]['other_family_passed']:.2f} ({len(other)} pairs)", flush=True)
    save(a.out, {"machine": machine(), "bank": str(a.bank), "k": a.k, "draws": a.draws, "alpha": a.alpha,
                 "C": a.C, "views": out})


if __name__ == "__main__":
    main()
