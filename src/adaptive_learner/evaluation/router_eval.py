"""The router's own benchmark: a gauntlet of reuse-or-create questions with the family as the truth.

What "right" means for each kind of case (the library holds one adapter per stored task):

* ``repeat`` - the probe task is stored, same description, fresh examples: reuse an adapter of its
  family (its own adapter, ideally; the report gives that rate too).
* ``reworded`` - the same, with the description said differently: the same answer.
* ``family`` - the probe is not stored but a task of its family is (sst2 / imdb / rotten_tomatoes;
  mrpc / stsb; rte / cb): reuse an adapter of that family.
* ``new-family`` - no task of the probe's family is stored: create a new adapter.

Libraries are random subsets of the catalog of sizes 3, 6, 10 and 11; each task of the catalog is a
probe against each library, with its original description and each rewording. Fast mode: the
library is made of profiles (features) only, no adapter is trained, so the trial signal is absent.

The calibrated router is fitted leave-one-task-out: the combiner that decides for probe task T was
fitted on rows in which T is neither the probe nor in the library, so no decision is judged by a
model that saw its task (each catalog task is its own dataset: this is leave-one-dataset-out). The
report adds the same cases decided leave-one-*family*-out: the combiner for T never saw any task of
T's family, which is what a family outside the catalog meets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..router.baseline import SoftmaxThresholdRouter
from ..router.calibration import Combiner, expected_calibration_error, fit_combiner
from ..router.decision import RouteDecision, Router, RouterConfig
from ..router.evidence import TaskProfile, evidence_for_all
from .router_bank import TaskBank


@dataclass
class GauntletConfig:
    """The shape of the gauntlet."""

    library_sizes: list[int] = field(default_factory=lambda: [3, 6, 10, 11],
                                      metadata={"help": "stored tasks per library"})
    draws: int = field(default=10, metadata={"help": "random libraries per size (fewer if fewer exist)"})
    k: int = field(default=32, metadata={"help": "examples a request brings"})
    rewordings: bool = field(default=True, metadata={"help": "also ask with each reworded description"})
    # "content" (what the inputs are about, sentence encoder) is measured but not used by default: it
    # added wrong reuses in the ablation (BENCHMARKS "Router v2")
    signals: list[str] = field(default_factory=lambda: ["description", "examples", "label_names", "labels"],
                               metadata={"help": "signals the calibrated router uses"})
    permutations: int = field(default=200, metadata={"help": "permutations of the two-sample test"})
    cost_false_reuse: float = field(default=3.0, metadata={"help": "cost of a wrong reuse vs a missed one"})
    seed: int = field(default=0, metadata={"help": "seed of libraries and example draws"})
    holdout: str = field(default="task", metadata={"help": "what the combiner deciding a probe never saw: its "
                                                          "task (dataset) or its whole family"})


def gauntlet_config(sizes: str, draws: int, k: int, rewordings: bool, signals: str) -> GauntletConfig:
    """A ``GauntletConfig`` from command-line strings, with one clear error for a bad value."""
    from ..errors import UserError

    try:
        size_list = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    sig = [x.strip() for x in signals.split(",") if x.strip()]
    known = ("content", "description", "examples", "label_names", "labels", "structure", "relation")
    if not sig or any(x not in known for x in sig):
        raise UserError(f"--signals takes {', '.join(known)}; got {signals!r}")
    if k < 1 or draws < 1 or not size_list or min(size_list) < 1:
        raise UserError("--k, --draws and --sizes must be positive")
    return GauntletConfig(library_sizes=size_list, draws=draws, k=k, rewordings=rewordings, signals=sig)


@dataclass
class Case:
    """One question: a library, a probe task with one description variant and k examples."""

    id: int
    library: tuple[str, ...]
    probe: str
    variant: int
    kind: str
    rows: np.ndarray


def adapter_of(task: str) -> str:
    """In the gauntlet every stored task has its own adapter."""
    return f"lora-{task}"


def libraries(names: Sequence[str], sizes: Sequence[int], draws: int, seed: int) -> list[tuple[str, ...]]:
    """Random distinct libraries of each size (all of them when there are few)."""
    from itertools import combinations
    from math import comb

    rng = np.random.RandomState(seed)
    out = []
    for size in sizes:
        size = min(size, len(names))
        if comb(len(names), size) <= draws:
            out.extend(tuple(c) for c in combinations(sorted(names), size))
            continue
        seen: set[tuple[str, ...]] = set()
        while len(seen) < draws:
            seen.add(tuple(sorted(rng.choice(names, size, replace=False))))
        out.extend(sorted(seen))
    return out


def make_cases(bank: dict[str, TaskBank], cfg: GauntletConfig) -> list[Case]:
    """Every probe task (and rewording) against every library."""
    rng = np.random.RandomState(cfg.seed + 1)
    cases = []
    for lib in libraries(sorted(bank), cfg.library_sizes, cfg.draws, cfg.seed):
        families = {bank[t].family for t in lib}
        for probe in sorted(bank):
            b = bank[probe]
            variants = range(len(b.descriptions)) if cfg.rewordings else range(1)
            for v in variants:
                if probe in lib:
                    kind = "repeat" if v == 0 else "reworded"
                else:
                    kind = "family" if b.family in families else "new-family"
                rows = rng.permutation(len(b.pool))[: cfg.k]
                cases.append(Case(len(cases), lib, probe, v, kind, rows))
    return cases


def expected(case: Case, bank: dict[str, TaskBank]) -> set[str]:
    """Adapters whose reuse is right (empty: a new adapter is right)."""
    fam = bank[case.probe].family
    return {adapter_of(t) for t in case.library if bank[t].family == fam}


def profiles_of(library: Sequence[str], bank: dict[str, TaskBank]) -> list[TaskProfile]:
    return [TaskProfile(t, adapter_of(t), bank[t].profile) for t in library]


def case_evidence(cases: Sequence[Case], bank: dict[str, TaskBank], cfg: GauntletConfig) -> list[list[dict]]:
    """Evidence rows (one per stored task) of every case, with signals outside ``cfg.signals`` removed."""
    from ..router.calibration import SIGNALS

    keep = {f for s in cfg.signals for f in SIGNALS[s]}
    cache: dict = {}
    out = []
    for c in tqdm(cases, desc="evidence", leave=False):
        probe = bank[c.probe].request(c.rows, c.variant)
        ev = evidence_for_all(probe, profiles_of(c.library, bank), cfg.permutations, cfg.seed + c.id, cache=cache)
        out.append([{k: v for k, v in e.items() if k in keep} for e in ev])
    return out


def training_rows(cases: Sequence[Case], evidence: Sequence[list[dict]], bank: dict[str, TaskBank],
                  held_out: str | Sequence[str] | None = None, transform: Callable[[dict], dict] | None = None
                  ) -> tuple[list[dict], list[int], list[str]]:
    """Rows (evidence per candidate), labels (same family = reuse) and groups (the probe) to fit a combiner on;
    cases that involve ``held_out`` (as probe or in the library) are left out."""
    out_set = set() if held_out is None else {held_out} if isinstance(held_out, str) else set(held_out)
    rows, labels, groups = [], [], []
    for c, ev in zip(cases, evidence):
        if out_set and (c.probe in out_set or out_set & set(c.library)):
            continue
        for t, e in zip(c.library, ev):
            rows.append(transform(e) if transform is not None else e)
            labels.append(int(bank[t].family == bank[c.probe].family))
            groups.append(c.probe)
    return rows, labels, groups


def held_out_tasks(task: str, bank: dict[str, TaskBank], unit: str = "task") -> list[str]:
    """What a fold leaves out for probes of ``task``: the task (its dataset), or its whole family."""
    return [task] if unit == "task" else sorted(t for t, b in bank.items() if b.family == bank[task].family)


def fit_fold(held_out: str | Sequence[str], cases: Sequence[Case], evidence: Sequence[list[dict]],
             bank: dict[str, TaskBank], cfg: GauntletConfig) -> Combiner:
    """The combiner for probes of ``held_out`` (a task or tasks): fitted on cases that involve none of them."""
    from ..router.calibration import PARTIAL_SIGNALS, present_signals

    rows, labels, groups = training_rows(cases, evidence, bank, held_out)
    # every signal the bank has; and without those a request with too few examples lacks
    present = present_signals(rows)
    mine = [s for s in sorted(cfg.signals) if s in present]
    sets = [tuple(mine), tuple(s for s in mine if s != "examples"),
            tuple(s for s in mine if s not in ("examples", "content"))]
    # a signal only some pairs of tasks have (structure: two pair tasks) needs heads without it too
    sets += [tuple(s for s in st if s not in PARTIAL_SIGNALS) for st in sets]
    return fit_combiner(rows, labels, groups, list(dict.fromkeys(s for s in sets if s)), cfg.cost_false_reuse,
                        {"held_out": held_out if isinstance(held_out, str) else list(held_out)})


@dataclass
class Outcome:
    """One decision and how it was judged."""

    case: Case
    router: str
    action: str
    adapter: str | None
    confidence: float
    correct: bool
    wrong_family_reuse: bool
    false_new_family_reuse: bool
    own_adapter: bool


def judge(case: Case, d: RouteDecision, bank: dict[str, TaskBank], router: str) -> Outcome:
    """Score a decision against the family truth."""
    right = expected(case, bank)
    reuse = d.action == "reuse"
    correct = (reuse and d.adapter in right) or (not reuse and not right)
    return Outcome(case, router, d.action, d.adapter, d.confidence, correct,
                   reuse and bool(right) and d.adapter not in right, reuse and not right,
                   reuse and d.adapter == adapter_of(case.probe))


def run_gauntlet(bank: dict[str, TaskBank], cfg: GauntletConfig, router_config: RouterConfig | None = None,
                 cases: list[Case] | None = None,
                 evidence: list[list[dict]] | None = None) -> tuple[list[Outcome], dict[str, Combiner]]:
    """Every case decided by the calibrated router (leave-one-task-out) and by the softmax baseline."""
    cases = cases if cases is not None else make_cases(bank, cfg)
    evidence = evidence if evidence is not None else case_evidence(cases, bank, cfg)
    folds = {t: fit_fold(held_out_tasks(t, bank, cfg.holdout), cases, evidence, bank, cfg)
             for t in tqdm(sorted(bank), desc="folds", leave=False)}
    out = decide_all(cases, evidence, folds, bank, router_config, "calibrated")
    baseline = SoftmaxThresholdRouter()
    for c in cases:
        d = baseline.decide(bank[c.probe].request(c.rows, c.variant), profiles_of(c.library, bank))
        out.append(judge(c, d, bank, "softmax-threshold"))
    return out, folds


def decide_all(cases: Sequence[Case], evidence: Sequence[list[dict]], folds: dict[str, Combiner],
               bank: dict[str, TaskBank], router_config: RouterConfig | None, label: str) -> list[Outcome]:
    """Every case decided by the calibrated router with its probe's leave-one-task-out combiner."""
    return [judge(c, Router(folds[c.probe], router_config).decide_from_evidence(c.probe, profiles_of(c.library, bank),
                                                                                ev), bank, label)
            for c, ev in zip(cases, evidence)]


def ablation(cases: Sequence[Case], evidence: Sequence[list[dict]], bank: dict[str, TaskBank],
             cfg: GauntletConfig) -> dict[str, dict[str, Any]]:
    """Decision metrics with each non-empty subset of the configured signals (evidence reused)."""
    from itertools import combinations

    from ..router.calibration import SIGNALS

    from ..router.calibration import present_signals

    present = present_signals([e for rows in evidence for e in rows])
    mine = [s for s in sorted(cfg.signals) if s in present]  # a bank without a signal: no subsets with it
    out = {}
    for n in range(1, len(mine) + 1):
        for subset in combinations(mine, n):
            keep = {f for s in subset for f in SIGNALS[s]}
            ev = [[{k: v for k, v in e.items() if k in keep} for e in rows] for rows in evidence]
            sub = GauntletConfig(**{**cfg.__dict__, "signals": list(subset)})
            folds = {t: fit_fold(t, cases, ev, bank, sub) for t in sorted(bank)}
            out["+".join(subset)] = decision_metrics(decide_all(cases, ev, folds, bank, None, "+".join(subset)))
    return out


def decision_metrics(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Accuracy, reuse precision/recall, the two kinds of wrong reuse, ECE, and accuracy by size and kind."""
    if not outcomes:
        return {}
    reuse = [o for o in outcomes if o.action == "reuse"]
    should = [o for o in outcomes if o.case.kind in ("repeat", "reworded", "family")]
    repeats = [o for o in outcomes if o.case.kind in ("repeat", "reworded")]
    sizes = sorted({len(o.case.library) for o in outcomes})
    kinds = ["repeat", "reworded", "family", "new-family"]
    acc = lambda xs: float(np.mean([o.correct for o in xs])) if xs else None  # noqa: E731
    return {
        "n": len(outcomes), "decision_accuracy": acc(outcomes),
        "reuse_precision": float(np.mean([o.correct for o in reuse])) if reuse else None,
        "reuse_recall": float(np.mean([o.action == "reuse" and o.correct for o in should])) if should else None,
        "wrong_adapter_reuses": int(sum(o.wrong_family_reuse or o.false_new_family_reuse for o in outcomes)),
        "reuses_of_another_family": int(sum(o.wrong_family_reuse for o in outcomes)),
        "false_reuses_of_new_family": int(sum(o.false_new_family_reuse for o in outcomes)),
        "own_adapter_rate_on_repeats": float(np.mean([o.own_adapter for o in repeats])) if repeats else None,
        "ece": expected_calibration_error([o.confidence for o in outcomes], [o.correct for o in outcomes]),
        "mean_confidence": float(np.mean([o.confidence for o in outcomes])),
        "accuracy_by_size": {s: acc([o for o in outcomes if len(o.case.library) == s]) for s in sizes},
        "accuracy_by_kind": {k: acc([o for o in outcomes if o.case.kind == k]) for k in kinds},
        "cases_by_kind": {k: sum(o.case.kind == k for o in outcomes) for k in kinds},
    }


def routing_eval(bank: dict[str, TaskBank], kind: str = "calibrated", text_view: bool = True,
                 decide: str = "task") -> dict[str, Any]:
    """Per-input routing over a library of every bank task, one adapter per family.

    An input is routed right when it reaches its task's adapter and answer space (the verbalizers):
    sst2 and rotten_tomatoes, or mrpc and stsb, share both, so either is right for the other. The
    strict task-level rate and the adapter-only rate are reported beside it. ``decide``: ``InputRouter.route``'s.
    """
    from ..router.service import make_input_router

    adapter = {t: f"lora-{b.family}" for t, b in bank.items()}
    profiles = [TaskProfile(t, adapter[t], bank[t].profile) for t in sorted(bank)]
    router = make_input_router(kind, profiles, text_view)
    answers = {t: b.profile.verbalizers or b.profile.label_names for t, b in bank.items()}
    per_task, conf, hits, strict, same_adapter = {}, [], [], [], []
    for t, b in sorted(bank.items()):
        texts = b.test_texts if kind != "softmax-threshold" and len(b.test_texts) == len(b.test) else None
        routed = (router.route(b.test, [b.profile.n_fields] * len(b.test), b.test_inputs, texts=texts,
                               open_set=False, decide=decide) if texts is not None
                  else router.route(b.test, [b.profile.n_fields] * len(b.test)))
        ok = [r is not None and r.adapter == adapter[t] and answers[r.task] == answers[t] for r in routed]
        per_task[t] = float(np.mean(ok))
        hits += ok
        strict += [r is not None and r.task == t for r in routed]
        same_adapter += [r is not None and r.adapter == adapter[t] for r in routed]
        conf += [r.confidence if r is not None else 0.0 for r in routed]
    return {"router": kind, "n_tasks": len(bank), "n_inputs": len(hits), "routing_accuracy": float(np.mean(hits)),
            "routing_task_accuracy": float(np.mean(strict)), "routing_adapter_accuracy": float(np.mean(same_adapter)),
            "ece": expected_calibration_error(conf, strict), "per_task": per_task}


def fit_default(bank: dict[str, TaskBank], cfg: GauntletConfig, cases: list[Case] | None = None,
                evidence: list[list[dict]] | None = None) -> Combiner:
    """A combiner fitted on every gauntlet case (what ships as the package default), all signal subsets."""
    cases = cases if cases is not None else make_cases(bank, cfg)
    evidence = evidence if evidence is not None else case_evidence(cases, bank, cfg)
    rows, labels, groups = training_rows(cases, evidence, bank)
    return fit_combiner(rows, labels, groups, None, cfg.cost_false_reuse,
                        {"fitted_on": "router-eval gauntlet over the built-in catalog", "tasks": sorted(bank),
                         "n_cases": len(cases), "signals": list(cfg.signals)})


def summary_table(metrics: dict[str, dict[str, Any]], routing: dict[str, dict[str, Any]]) -> str:
    """The targets of the issue beside each router's figures, as markdown."""
    def f(x: Any, pct: bool = False) -> str:
        if x is None:
            return "n/a"
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    names = list(metrics)
    lines = ["| measure | target | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    rows = [("decision accuracy", ">= 0.95", lambda m, r: f(m["decision_accuracy"])),
            ("wrong-adapter reuses", "0", lambda m, r: f(m["wrong_adapter_reuses"])),
            ("  of another family / of a new family", "", lambda m, r: f"{m['reuses_of_another_family']} / "
                                                                         f"{m['false_reuses_of_new_family']}"),
            ("reuse precision", "", lambda m, r: f(m["reuse_precision"])),
            ("reuse recall", "", lambda m, r: f(m["reuse_recall"])),
            ("ECE of the decision confidence", "<= 0.05", lambda m, r: f(m["ece"])),
            ("per-input routing accuracy", ">= 0.95", lambda m, r: f(r.get("routing_accuracy"))),
            ("  strict (exact task)", "", lambda m, r: f(r.get("routing_task_accuracy"))),
            ("  adapter only", "", lambda m, r: f(r.get("routing_adapter_accuracy"))),
            ("  ECE of the routing posterior (vs exact task)", "", lambda m, r: f(r.get("ece")))]
    for label, target, get in rows:
        lines.append(f"| {label} | {target} | " + " | ".join(get(metrics[n], routing.get(n, {})) for n in names) + " |")
    sizes = sorted({s for m in metrics.values() for s in m["accuracy_by_size"]}, key=int)
    for s in sizes:
        lines.append(f"| accuracy, {s} adapters | | " + " | ".join(f(metrics[n]["accuracy_by_size"].get(s))
                                                                  for n in names) + " |")
    for k in ["repeat", "reworded", "family", "new-family"]:
        lines.append(f"| accuracy on {k} ({metrics[names[0]]['cases_by_kind'][k]} cases) | | "
                     + " | ".join(f(metrics[n]["accuracy_by_kind"][k]) for n in names) + " |")
    return "\n".join(lines)


def run_router_eval(backbone: str, out: Any, cfg: GauntletConfig, layer: int | None = None,
                    bank_path: Any = None, tasks: Sequence[str] | None = None,
                    fit_default_to: Any = None, ablations: bool = False) -> dict[str, Any]:
    """Build (or read) the feature bank, run the gauntlet and the routing test, write results and a report."""
    import json
    import time
    from pathlib import Path

    from ..fileio import atomic_write_json, atomic_write_text
    from .router_bank import load_bank, save_bank

    out = Path(out)
    t0 = time.perf_counter()
    bank_file = Path(bank_path) if bank_path else out / "bank"
    if bank_file.with_suffix(".json").exists():
        bank, meta = load_bank(bank_file)
        if {"structure", "relation"} & set(cfg.signals):  # a bank from before them: its arrays added (encoder only)
            from ..features import text_encoder
            from ..tasks import load_catalog_task
            from .router_bank import add_structure

            enc = text_encoder(meta.get("encoder", "minilm"))
            if add_structure(bank, [load_catalog_task(t) for t in sorted(bank)], enc, seed=cfg.seed):
                save_bank(bank, bank_file, meta)
        if any(b.test_inputs is None and b.profile.inputs is not None for b in bank.values()):
            # a bank from before routing's text view: its test inputs embedded (the encoder only)
            from ..features import FeatureConfig, text_encoder
            from .router_bank import add_test_inputs

            tokens = FeatureConfig.from_dict(meta.get("features", {})).input_embedding_tokens
            if add_test_inputs(bank, text_encoder(meta.get("encoder", "minilm")), tokens):
                save_bank(bank, bank_file, meta)
    else:
        bank, meta = _build(backbone, cfg, layer, tasks)
        save_bank(bank, bank_file, meta)
    t_bank = time.perf_counter() - t0
    cases = make_cases(bank, cfg)
    evidence = case_evidence(cases, bank, cfg)
    outcomes, folds = run_gauntlet(bank, cfg, None, cases, evidence)
    metrics = {r: decision_metrics([o for o in outcomes if o.router == r]) for r in ("calibrated", "softmax-threshold")}
    if cfg.cost_false_reuse != 2.0:  # the same probabilities cut at c = 2, for comparison
        metrics["calibrated, c=2"] = decision_metrics(decide_all(cases, evidence, folds, bank,
                                                                 RouterConfig(threshold=2 / 3), "c=2"))
    if cfg.holdout == "task":  # the same cases, each decided by a combiner that never saw its family
        lofo = GauntletConfig(**{**cfg.__dict__, "holdout": "family"})
        fam_folds = {t: fit_fold(held_out_tasks(t, bank, "family"), cases, evidence, bank, lofo) for t in sorted(bank)}
        metrics["calibrated, leave-one-family-out"] = decision_metrics(decide_all(cases, evidence, fam_folds, bank,
                                                                                  None, "lofo"))
    # the combiner the package ships (fitted on every catalog case, so in-sample there): how it decides probes
    # of tasks it was never fitted on, such as a bank built with tasks from outside the catalog
    shipped = Combiner.load()
    shipped_outcomes = decide_all(cases, evidence, {t: shipped for t in bank}, bank, None, "shipped")
    metrics["shipped combiner"] = decision_metrics(shipped_outcomes)
    routing = {r: routing_eval(bank, r) for r in ("calibrated", "softmax-threshold")}
    doc = {"config": {**cfg.__dict__, "backbone": backbone}, "bank": meta, "metrics": metrics, "routing": routing,
           "thresholds": {t: {k: [h.threshold, h.threshold_oof] for k, h in c.heads.items()}
                          for t, c in folds.items()},
           "seconds": {"bank": round(t_bank, 1), "total": round(time.perf_counter() - t0, 1)},
           "decisions": [{"library": list(o.case.library), "probe": o.case.probe, "variant": o.case.variant,
                          "kind": o.case.kind, "router": o.router, "action": o.action, "adapter": o.adapter,
                          "confidence": round(o.confidence, 4), "correct": o.correct}
                         for o in [*outcomes, *shipped_outcomes]]}
    if fit_default_to:
        combiner = fit_default(bank, cfg, cases, evidence)
        combiner.info.update({"backbone": backbone, "features": meta.get("features")})
        atomic_write_json(Path(fit_default_to), combiner.to_dict())
    summary = summary_table(metrics, routing) + "\n"
    if ablations:
        doc["ablation"] = ablation(cases, evidence, bank, cfg)
        summary += "\n" + ablation_table(doc["ablation"]) + "\n"
    atomic_write_json(out / "router_eval.json", json.loads(json.dumps(doc, default=str)))
    atomic_write_text(out / "summary.md", summary)
    doc["summary"] = summary
    return doc


def ablation_table(abl: dict[str, dict[str, Any]]) -> str:
    """One row per signal subset: accuracy, wrong reuses, ECE, accuracy by kind and by size."""
    kinds = ["repeat", "reworded", "family", "new-family"]
    sizes = sorted({s for m in abl.values() for s in m["accuracy_by_size"]}, key=int)
    head = ["signals", "accuracy", "wrong reuses", "ECE", *kinds, *(f"{s} adapters" for s in sizes)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, m in abl.items():
        cells = [name, f"{m['decision_accuracy']:.3f}", str(m["wrong_adapter_reuses"]), f"{m['ece']:.3f}",
                 *(f"{m['accuracy_by_kind'][k]:.3f}" for k in kinds),
                 *(f"{m['accuracy_by_size'][s]:.3f}" for s in sizes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _build(backbone: str, cfg: GauntletConfig, layer: int | None, tasks: Sequence[str] | None,
           extra: Sequence[tuple[Any, str]] = ()):
    """The bank of the catalog ``tasks`` (default: all), and of ``extra`` (task data, family) pairs: tasks from
    elsewhere, whose family their files do not carry (benchmarks/routing_models.py's outside tasks)."""
    from ..adapters import AdapterHost
    from ..backbone import load_backbone
    from ..features import FeatureConfig, FeatureExtractor
    from ..tasks import catalog_names, load_catalog_task
    from .router_bank import build_bank

    fc = FeatureConfig(k=cfg.k, seed=cfg.seed, **({"layer": layer} if layer is not None else {}))
    host = AdapterHost(load_backbone(backbone))
    extractor = FeatureExtractor(host, fc)
    data = [load_catalog_task(t) for t in (tasks or catalog_names())] + [t for t, _ in extra]
    bank = build_bank(extractor, data, seed=cfg.seed)
    for t, family in extra:
        bank[t.name].family = family
    return bank, {"backbone": backbone, "features": fc.to_dict(), "encoder": extractor.encoder_name}
