"""What the trial adds: the gauntlet with trained adapters for a few tasks, decided with and without it.

Adapters are trained (briefly) for one task of four families; every catalog task then arrives as a
probe with k examples against every library drawn from those four, and each stored adapter's
classification loss on the probe's examples is compared with the base model's (the trial). The
combiner is fitted leave-one-task-out as in ``alearn router-eval``, once with the trial's two
features and once without, and both decide the same cases.

    python benchmarks/router_trial.py --bank runs/router-eval-smollm2/bank --steps 24 \
        --merge-into src/adaptive_learner/router/default_combiner.json

Needs the feature bank written by ``alearn router-eval`` (same backbone). ``--merge-into`` adds
heads with the trial (fitted on all these cases) to a combiner file, so the router weighs the
trial wherever a candidate adapter exists.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation import router_eval as E
from adaptive_learner.evaluation.router_bank import load_bank
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.calibration import fit_combiner
from adaptive_learner.router.decision import Router
from adaptive_learner.router.trial import run_trial
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from adaptive_learner.training import TrainConfig, train_adapter
from common import machine, save

TRAINED = ["sst2", "mrpc", "rte", "trec"]


def trials(args, bank) -> tuple[dict, dict]:
    """Train the adapters and run every trial once: {(probe, adapter): {trial_gain, trial_acc_gain}}."""
    host = AdapterHost(load_backbone(args.backbone))
    cfg = TrainConfig(steps=args.steps, batch_size=8, lr=args.lr, max_length=args.max_length, seed=0, early_stop=False)
    timing = {}
    for name in TRAINED:
        t = load_catalog_task(name)
        items = encode_examples(host.backbone.tokenizer, t.spec, stratified_take(t.train, 256, 0), args.max_length)
        host.create(E.adapter_of(name), seed=0)
        t0 = time.perf_counter()
        train_adapter(host, E.adapter_of(name), items, cfg)
        timing[f"train {name}"] = round(time.perf_counter() - t0, 1)
    out = {}
    t0 = time.perf_counter()
    for probe in sorted(bank):
        t = load_catalog_task(probe)
        rows = stratified_take(t.train, 128 + 64, 1)  # the bank's profile + pool draw (build_bank, seed 0)
        pool = rows[min(128, len(rows) // 2):]
        res = run_trial(host, t.spec, pool[: args.k], [E.adapter_of(n) for n in TRAINED], args.max_length)
        for adapter, r in res.items():
            out[(probe, adapter)] = r
    timing["trials"] = round(time.perf_counter() - t0, 1)
    return out, timing


def trial_cases(bank, trial_table, k: int):
    """Every library drawn from the trained tasks against every probe; evidence includes the trial."""
    libs = [c for n in range(1, len(TRAINED) + 1) for c in itertools.combinations(TRAINED, n)]
    cfg = E.GauntletConfig(k=k, signals=["description", "examples", "labels"])
    cases = []
    for lib in libs:
        fams = {bank[t].family for t in lib}
        for probe in sorted(bank):
            for v in range(len(bank[probe].descriptions)):
                kind = ("repeat" if v == 0 else "reworded") if probe in lib else \
                    ("family" if bank[probe].family in fams else "new-family")
                cases.append(E.Case(len(cases), lib, probe, v, kind, np.arange(min(k, len(bank[probe].pool)))))
    evidence = E.case_evidence(cases, bank, cfg)
    for c, ev in zip(cases, evidence):
        for t, e in zip(c.library, ev):
            e.update(trial_table[(c.probe, E.adapter_of(t))])
    return cases, evidence


def evaluate(bank, cases, evidence) -> dict:
    """Decisions with and without the trial, each combiner fitted leave-one-task-out."""
    results = {}
    for label, sets in (("with trial", [("description", "examples", "labels", "trial")]),
                        ("without trial", [("description", "examples", "labels")])):
        keep = {"trial_gain", "trial_acc_gain"} if label == "with trial" else set()
        outs = []
        for held in sorted(bank):
            rows, labels, groups = E.training_rows(cases, evidence, bank, held, lambda e: _only(e, keep))
            comb = fit_combiner(rows, labels, groups, sets)
            for c, ev in zip(cases, evidence):
                if c.probe == held:
                    d = Router(comb).decide_from_evidence(c.probe, E.profiles_of(c.library, bank),
                                                          [_only(e, keep) for e in ev])
                    outs.append(E.judge(c, d, bank, label))
        results[label] = E.decision_metrics(outs)
    return results


def merge_trial_heads(bank, cases, evidence, path: Path, args: dict) -> None:
    """Fit every head that includes the trial on all cases and add them to the combiner at ``path``."""
    import json

    from adaptive_learner.fileio import atomic_write_json
    from adaptive_learner.router.calibration import Combiner

    rows, labels, groups = E.training_rows(cases, evidence, bank)
    base = ["description", "examples", "labels"]
    sets = [tuple(x) + ("trial",) for n in range(0, 4) for x in itertools.combinations(base, n)]
    fitted = fit_combiner(rows, labels, groups, sets)
    target = Combiner.load(path)
    target.heads.update({k: h for k, h in fitted.heads.items() if "trial" in h.signals})
    target.info["trial_heads"] = {"fitted_on": "benchmarks/router_trial.py", "trained": TRAINED,
                                  "n_rows": len(rows), "args": {k: str(v) for k, v in args.items()}}
    atomic_write_json(path, json.loads(json.dumps(target.to_dict())))


def _only(e: dict, keep: set) -> dict:
    return {k: v for k, v in e.items() if not k.startswith("trial") or k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=Path, default=Path("runs/router-eval-smollm2/bank"))
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--k", type=int, default=16, help="examples per probe (and per trial)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--merge-into", type=Path, default=None, help="combiner JSON to add the trial heads to")
    args = ap.parse_args()
    torch.set_num_threads(2)
    bank, meta = load_bank(args.bank)
    table, timing = trials(args, bank)
    cases, evidence = trial_cases(bank, table, args.k)
    results = evaluate(bank, cases, evidence)
    if args.merge_into:
        merge_trial_heads(bank, cases, evidence, args.merge_into, vars(args))
    for label, m in results.items():
        print(label, {k: m[k] for k in ("decision_accuracy", "wrong_adapter_reuses", "reuse_recall", "ece")},
              m["accuracy_by_kind"])
    save("router_trial", {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                          "trained": TRAINED, "timing_s": timing, "results": results,
                          "trials": {f"{p} <- {a}": v for (p, a), v in table.items()}})


if __name__ == "__main__":
    main()
