"""An answer trial without adapters: does a head fitted on a stored task's examples answer a new task?

The answer trial (``router/trial.py``) asks a stored task's *adapter*; the gauntlet has none. Here a
linear head (``training.head.fit_head``) is fitted on each stored task's 128 profile examples of the
router bank - on the backbone's input features (``examples``) or on the sentence encoder's
(``inputs``) - and applied to k = 32 pool examples of another task; its answers are mapped onto that
task's labels and tested against shuffled labels (``mapping_test``, 1000 permutations), four draws
per pair. Same-family pairs should come out significant and other-family pairs not. The labels of the
bank's rows are recovered from the catalog (``bank_rows``: the same rows the bank was built from), so
no backbone is run.

    python benchmarks/feature_trial.py --bank runs/router-eval-v3/bank --out feature_trial
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adaptive_learner.evaluation.router_bank import bank_rows, load_bank
from adaptive_learner.router.trial import mapping_test
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training.head import fit_head
from common import machine, save


def pair_pvalues(bank, labels, which: str, k: int, draws: int, l2: float) -> list[dict]:
    names = sorted(bank)
    feats = lambda b, part: (b.profile.examples if part == "profile" else b.pool) if which == "examples" \
        else (b.profile.inputs if part == "profile" else b.pool_inputs)  # noqa: E731
    heads = {a: fit_head(feats(bank[a], "profile").astype(np.float32), labels[a][0], bank[a].profile.n_labels, 0, l2=l2)
             for a in names}
    rng, rows = np.random.RandomState(0), []
    for b in names:
        pool = feats(bank[b], "pool")
        for draw in range(draws):
            idx = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
            for a in names:
                if a == b or bank[a].profile.n_fields != bank[b].profile.n_fields:
                    continue
                pred = heads[a].log_probs(pool[idx].astype(np.float32)).argmax(1)
                r = mapping_test(pred, labels[b][1][idx], bank[a].profile.n_labels, bank[b].profile.n_labels, 1000, draw)
                rows.append({"new": b, "stored": a, "same_family": bank[a].family == bank[b].family, "draw": draw,
                             "acc": r["acc"], "null": r["null"], "p": r["p"]})
    return rows


def summarise(rows: list[dict], alpha: float) -> dict:
    same = [r for r in rows if r["same_family"]]
    other = [r for r in rows if not r["same_family"]]
    return {"same_family_significant": sum(r["p"] <= alpha for r in same), "same_family_trials": len(same),
            "other_family_significant": sum(r["p"] <= alpha for r in other), "other_family_trials": len(other),
            "other_family_pairs_significant": sorted({f"{r['new']}<-{r['stored']}" for r in other if r["p"] <= alpha})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--out", default="feature_trial")
    args = ap.parse_args()
    bank, _ = load_bank(args.bank)
    labels = {}
    for n in bank:
        prof, pool = bank_rows(load_catalog_task(n), bank[n].profile.n_examples, len(bank[n].pool), 0)
        if len(prof) != bank[n].profile.n_examples or len(pool) != len(bank[n].pool):
            raise SystemExit(f"{n}: the bank was built from other rows")
        labels[n] = (np.array([e.label for e in prof]), np.array([e.label for e in pool]))
    doc = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    for which in ("examples", "inputs"):
        rows = pair_pvalues(bank, labels, which, args.k, args.draws, args.l2)
        doc[which] = {"summary": summarise(rows, args.alpha), "trials": rows}
        print(which, doc[which]["summary"])
    save(args.out, doc)


if __name__ == "__main__":
    main()
