"""The router's benchmark on a synthetic feature bank: cases, judging, metrics, the CLI command."""

import json
import sys

import numpy as np
import pytest
from conftest import run_alearn

from adaptive_learner.evaluation import router_eval as E
from adaptive_learner.evaluation.router_bank import TaskBank, load_bank, save_bank
from adaptive_learner.features import TaskFeatures
from adaptive_learner.router.decision import RouteDecision

# name -> (family, centre, description direction, label direction, number of fields)
TASKS = {"s1": ("sent", 0, 0, 0, 1), "s2": ("sent", 1, 0, 0, 1), "p1": ("para", 4, 4, 4, 2),
         "p2": ("para", 5, 4, 4, 2), "q": ("qa", 8, 8, 8, 2), "t": ("topic", 12, 12, 12, 1),
         "m": ("spam", 16, 16, 16, 1)}
D, E_DIM = 24, 20


def _unit(i, rng, noise=0.15):
    v = np.zeros(E_DIM)
    v[i % E_DIM] = 1.0
    v += noise * rng.randn(E_DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def synthetic_bank(seed=0):
    rng = np.random.RandomState(seed)
    bank = {}
    for name, (fam, c, d, lab, nf) in TASKS.items():
        mu = np.zeros(D)
        mu[c] = 3.0
        draw = lambda n: (mu + rng.randn(n, D)).astype(np.float32)  # noqa: E731
        descs = np.stack([_unit(d, rng) for _ in range(3)])
        prof = TaskFeatures(name, draw(48), descs[0], _unit(lab, rng, 0.05), None, 2, nf, ["low", "high"])
        bank[name] = TaskBank(name, fam, prof, draw(48), draw(30), descs, [f"{name} input {i}" for i in range(30)])
    return bank


@pytest.fixture(scope="module")
def bank():
    return synthetic_bank()


@pytest.fixture(scope="module")
def gauntlet(bank):
    cfg = E.GauntletConfig(library_sizes=[2, 4, 6], draws=3, k=16, permutations=100)
    return E.run_gauntlet(bank, cfg)


def test_cases_cover_every_kind_and_truth_follows_the_family(bank):
    cases = E.make_cases(bank, E.GauntletConfig(library_sizes=[3], draws=4, k=8))
    kinds = {c.kind for c in cases}
    assert kinds == {"repeat", "reworded", "family", "new-family"}
    for c in cases:
        right = E.expected(c, bank)
        if c.kind in ("repeat", "reworded"):
            assert E.adapter_of(c.probe) in right
        elif c.kind == "family":
            assert right and E.adapter_of(c.probe) not in right
        else:
            assert right == set()
        assert len(c.rows) == 8


def test_libraries_are_distinct_and_of_the_asked_sizes():
    libs = E.libraries([f"t{i}" for i in range(6)], [2, 6], draws=5, seed=0)
    assert len(libs) == len(set(libs)) == 6 and [len(x) for x in libs] == [2] * 5 + [6]


@pytest.mark.parametrize("action,adapter,kind,correct,wrong", [
    ("reuse", "lora-s1", "family", True, False),
    ("reuse", "lora-p1", "family", False, True),
    ("new", None, "family", False, False),
    ("new", None, "new-family", True, False),
    ("reuse", "lora-p1", "new-family", False, True),
])
def test_judging_a_decision(bank, action, adapter, kind, correct, wrong):
    lib = ("s1", "p1") if kind == "family" else ("p1",)
    case = E.Case(0, lib, "s2", 0, kind, np.arange(4))
    o = E.judge(case, RouteDecision("s2", action, adapter, 0.9, [], ""), bank, "calibrated")
    assert o.correct is correct and (o.wrong_family_reuse or o.false_new_family_reuse) is wrong


def test_calibrated_router_beats_the_softmax_baseline_on_the_synthetic_gauntlet(gauntlet):
    outcomes, folds = gauntlet
    cal = E.decision_metrics([o for o in outcomes if o.router == "calibrated"])
    base = E.decision_metrics([o for o in outcomes if o.router == "softmax-threshold"])
    assert cal["decision_accuracy"] > 0.9 and cal["decision_accuracy"] > base["decision_accuracy"]
    assert cal["wrong_adapter_reuses"] <= 2
    assert set(cal["accuracy_by_size"]) == {2, 4, 6} and 0.0 <= cal["ece"] <= 1.0
    assert set(folds) == set(TASKS)  # one leave-one-task-out combiner per probe task


def test_leave_one_family_out_folds_never_saw_the_family(bank, gauntlet):
    outcomes, _ = gauntlet
    cases = sorted({o.case.id: o.case for o in outcomes}.values(), key=lambda c: c.id)
    cfg = E.GauntletConfig(library_sizes=[2, 4, 6], draws=3, k=16, permutations=100)
    evidence = E.case_evidence(cases, bank, cfg)
    held = E.held_out_tasks("s1", bank, "family")
    assert held == ["s1", "s2"] and E.held_out_tasks("s1", bank, "task") == ["s1"]
    rows, _, groups = E.training_rows(cases, evidence, bank, held)
    assert rows and not {"s1", "s2"} & set(groups)
    n_task = len(E.training_rows(cases, evidence, bank, "s1")[0])
    assert len(rows) < n_task  # leaving the family out drops the cases with s2 as well


def test_each_fold_never_saw_its_task(bank, gauntlet):
    outcomes, folds = gauntlet
    for task, comb in folds.items():
        assert comb.info["held_out"] == [task]


def test_routing_eval_counts_same_adapter_and_labels_as_right(bank):
    r = E.routing_eval(bank)
    assert r["routing_accuracy"] >= r["routing_task_accuracy"] and r["routing_accuracy"] > 0.9
    assert r["n_inputs"] == 30 * len(TASKS) and set(r["per_task"]) == set(TASKS)


def test_bank_round_trips(bank, tmp_path):
    save_bank(bank, tmp_path / "bank", {"backbone": "synthetic"})
    back, meta = load_bank(tmp_path / "bank")
    assert meta == {"backbone": "synthetic"} and set(back) == set(bank)
    for name in bank:
        assert np.allclose(back[name].pool, bank[name].pool) and back[name].family == bank[name].family
        assert back[name].profile.n_fields == bank[name].profile.n_fields


def test_router_eval_command_on_a_saved_bank(tmp_path, capsys, bank):
    from adaptive_learner import cli

    save_bank(bank, tmp_path / "bank", {"backbone": "synthetic"})
    default = tmp_path / "combiner.json"
    old = sys.argv
    sys.argv = ["alearn", "router-eval", "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "out"),
                "--sizes", "2,5", "--draws", "2", "--k", "12", "--fit-default", str(default), "--ablations"]
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    assert "decision accuracy" in out and "softmax-threshold" in out
    doc = json.loads((tmp_path / "out" / "router_eval.json").read_text())
    routers = [d["router"] for d in doc["decisions"]]  # every case decided by each: the shipped combiner's too
    assert {r: routers.count(r) for r in set(routers)} == {
        r: doc["metrics"]["calibrated"]["n"] for r in ("calibrated", "softmax-threshold", "shipped")}
    assert doc["metrics"]["shipped combiner"]["n"] == doc["metrics"]["calibrated"]["n"]
    assert "description+examples+labels" in json.loads(default.read_text())["heads"]
    assert set(doc["ablation"]) == {"description", "examples", "labels", "description+examples",
                                    "description+labels", "examples+labels", "description+examples+labels"}
    assert "calibrated, c=2" in doc["metrics"] and "| signals |" in out
    assert doc["metrics"]["calibrated, leave-one-family-out"]["n"] == doc["metrics"]["calibrated"]["n"]


def test_router_eval_bad_options_are_one_line(tmp_path):
    for args, msg in ((["--sizes", "3,x"], "--sizes"), (["--signals", "magic"], "--signals")):
        code, _, err = run_alearn("router-eval", "--out", tmp_path, *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_structure_arrays_round_trip_and_reach_the_evidence(tmp_path):
    rng = np.random.RandomState(3)
    bank = synthetic_bank(1)
    for b in bank.values():  # pair tasks: paraphrase pairs alike in length, QA a passage and a short question
        if b.profile.n_fields == 2:
            centre = [0.0, 0.8] if b.family == "para" else [-2.0, 0.6]
            b.profile.structure = (np.array(centre) + 0.1 * rng.randn(len(b.profile.examples), 2)).astype(np.float32)
            b.pool_structure = (np.array(centre) + 0.1 * rng.randn(len(b.pool), 2)).astype(np.float32)
    save_bank(bank, tmp_path / "bank", {"backbone": "synthetic"})
    back, _ = load_bank(tmp_path / "bank")
    assert np.allclose(back["p1"].pool_structure, bank["p1"].pool_structure)
    assert np.allclose(back["p1"].profile.structure, bank["p1"].profile.structure) and back["s1"].pool_structure is None
    req = back["p2"].request(np.arange(8), 0)
    assert req.structure.shape == (8, 2)
    from adaptive_learner.router.evidence import pair_evidence
    same, other = pair_evidence(req, back["p1"].profile), pair_evidence(req, back["q"].profile)
    assert same["len_ratio_gap"] < 0.5 < other["len_ratio_gap"]
    cfg = E.GauntletConfig(library_sizes=[2, 4], draws=2, k=8, permutations=50,
                           signals=["description", "examples", "labels", "structure"])
    outcomes, _ = E.run_gauntlet(back, cfg)
    assert outcomes and all(o.action in ("reuse", "new") for o in outcomes)
    # a signal only pair tasks have must leave the other decisions as they were (heads without it exist)
    plain, _ = E.run_gauntlet(back, E.GauntletConfig(**{**cfg.__dict__, "signals": ["description", "examples",
                                                                                   "labels"]}))
    single = lambda outs: [(o.case.probe, o.router, o.action, o.adapter) for o in outs  # noqa: E731
                           if back[o.case.probe].profile.n_fields == 1 and o.router == "calibrated"]
    assert single(outcomes) == single(plain) and single(plain)


def test_a_task_with_coded_label_names_is_still_recognised_by_the_gauntlets_folds():
    """Label names 0/1 leave the label signals out of that task's pairs: its held-out fold must have a head
    without them (before, it had none, and every repeat of such a task was called new at confidence 1)."""
    bank = synthetic_bank()
    bank["m"].profile.label_names = ["0", "1"]
    cfg = E.GauntletConfig(library_sizes=[2, 4], draws=3, k=16, permutations=100)
    outcomes, _ = E.run_gauntlet(bank, cfg)
    mine = [o for o in outcomes if o.case.probe == "m" and o.router == "calibrated"
            and o.case.kind in ("repeat", "reworded")]
    assert mine and all(o.action == "reuse" and o.correct for o in mine)
