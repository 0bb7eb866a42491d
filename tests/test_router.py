"""The router's parts on synthetic features: evidence, calibration, the decision, the baseline, routing."""

import json

import numpy as np
import pytest

from adaptive_learner.features import TaskFeatures, label_names_informative
from adaptive_learner.router import calibration as C
from adaptive_learner.router.baseline import SoftmaxThresholdRouter
from adaptive_learner.router.decision import Router, RouterConfig
from adaptive_learner.router.evidence import (TaskProfile, conformal_p, content_evidence, evidence_for_all, label_match,
                                              two_sample)
from adaptive_learner.router.routing import InputRouter, count_fields

D = 24


def cluster(center: int, n: int, seed: int, d: int = D) -> np.ndarray:
    """n points around one of several well-separated centres."""
    rng = np.random.RandomState(seed)
    mu = np.zeros(d)
    mu[center % d] = 4.0
    return (mu + rng.randn(n, d)).astype(np.float32)


def unit(i: int, d: int = 16, tilt: float = 0.0) -> np.ndarray:
    v = np.zeros(d, dtype=np.float32)
    v[i] = 1.0
    v[(i + 1) % d] = tilt
    return v / np.linalg.norm(v)


NAMES = ["apple", "river", "stone", "cloud", "flame", "grass", "metal"]  # label names that name their classes


def feats(name: str, center: int, seed: int, n: int = 32, desc: int | None = None, labels: int = 0,
          n_labels: int = 2, n_fields: int = 1) -> TaskFeatures:
    return TaskFeatures(name, cluster(center, n, seed), unit(center if desc is None else desc), unit(labels),
                        None, n_labels, n_fields, NAMES[:n_labels])


# ------------------------------------------------------------------ evidence on its own scale
def test_conformal_p_is_about_a_half_for_the_same_distribution_and_small_otherwise():
    cand = cluster(0, 64, 1)
    assert 0.3 < conformal_p(cluster(0, 32, 2), cand) < 0.7
    assert conformal_p(cluster(5, 32, 3), cand) < 0.05


def test_two_sample_test_separates_same_from_different():
    cand = cluster(0, 64, 1)
    p_same, eff_same = two_sample(cluster(0, 32, 2), cand, 200, 0)
    p_diff, eff_diff = two_sample(cluster(3, 32, 3), cand, 200, 0)
    assert p_same > 0.05 and p_diff < 0.01 and eff_diff > eff_same + 1.0


def test_evidence_of_a_candidate_does_not_depend_on_unrelated_candidates_scale():
    probe = feats("p", 0, 10)
    match = TaskProfile("m", "lora-m", feats("m", 0, 11, n=64))
    small = evidence_for_all(probe, [match, TaskProfile("x", "lora-x", feats("x", 3, 12, n=64))])[0]
    others = [TaskProfile(f"o{i}", f"lora-o{i}", feats(f"o{i}", 3 + i, 20 + i, n=64)) for i in range(8)]
    big = evidence_for_all(probe, [match, *others])[0]
    assert small["desc_cos"] == big["desc_cos"] == pytest.approx(1.0)
    assert small["two_sample_p"] > 0.05 and big["two_sample_p"] > 0.05


def test_a_single_stored_task_is_tested_with_a_split_half_covariance():
    probe = feats("p", 0, 10)
    ev = evidence_for_all(probe, [TaskProfile("m", "lora-m", feats("m", 0, 11, n=64))])[0]
    assert ev["two_sample_p"] > 0.05
    ev = evidence_for_all(feats("q", 4, 10), [TaskProfile("m", "lora-m", feats("m", 0, 11, n=64))])[0]
    assert ev["two_sample_p"] < 0.01


def test_too_few_examples_leave_only_description_and_labels():
    probe = feats("p", 0, 10, n=2)
    ev = evidence_for_all(probe, [TaskProfile("m", "lora-m", feats("m", 0, 11))])[0]
    assert C.signals_of(ev) == frozenset({"description", "labels"})


def test_content_signals_follow_what_the_inputs_are_about():
    stored = cluster(0, 64, 1)
    same = content_evidence(cluster(0, 32, 2), stored)
    other = content_evidence(cluster(5, 32, 3), stored)
    assert same["content_cos"] > 0.8 > other["content_cos"] + 0.5
    assert abs(same["content_nn"]) < 0.15 and other["content_nn"] < same["content_nn"] - 0.3
    # scaled by the stored task's own spread: a tight and a loose stored task of the same kind read alike
    loose = content_evidence(cluster(0, 32, 2), cluster(0, 64, 1) * np.r_[1.0, np.full(D - 1, 3.0)])
    assert abs(loose["content_nn"]) < 0.3


def test_label_sets_match_by_meaning_with_each_labels_best_counterpart():
    a = np.stack([unit(0), unit(1)])
    assert label_match(a, a[::-1]) == pytest.approx(1.0)  # order does not matter
    assert label_match(a, np.stack([unit(0), unit(1), unit(2)])) == pytest.approx(5 / 6)  # an extra label costs
    assert label_match(a, np.stack([unit(3), unit(4)])) == pytest.approx(0.0)


def test_content_and_label_names_enter_the_evidence_when_both_tasks_have_them():
    probe, cand = feats("p", 0, 10), feats("m", 0, 11, n=64)
    assert not {"content", "label_names"} & C.signals_of(evidence_for_all(probe, [TaskProfile("m", "l", cand)])[0])
    for f, n in ((probe, 32), (cand, 64)):
        f.inputs, f.label_vecs = cluster(2, n, n), np.stack([unit(0), unit(1)])
    ev = evidence_for_all(probe, [TaskProfile("m", "l", cand)])[0]
    assert {"content", "label_names"} <= C.signals_of(ev) and ev["label_match"] == pytest.approx(1.0)
    probe.inputs = probe.inputs[:2]  # too few examples: no content signal, like the example statistics
    assert "content" not in C.signals_of(evidence_for_all(probe, [TaskProfile("m", "l", cand)])[0])


@pytest.mark.parametrize("names,informative", [
    (["0", "1"], False), (["-1", "1"], False), (["LABEL_0", "LABEL_1"], False), (["class 3", "class_4"], False),
    (["A", "B", "C"], False), (["0.5", "2"], False), (["", "1"], False), (["yes", "no"], True), (["True", "False"], True),
    (["negative", "positive"], True), (["ham", "spam"], True), (["not_equivalent", "equivalent"], True),
    (["0", "sports"], True), ([], True)])
def test_label_names_that_only_code_an_answer_are_told_from_names_of_classes(names, informative):
    assert label_names_informative(names) is informative


def test_two_tasks_labelled_0_1_are_not_matched_by_their_label_names():
    """Label names equal only because both are 0/1 (or LABEL_0/LABEL_1) must not read as a perfect label match: the
    label signals are left out and the decision rests on the description and the examples."""
    names = np.stack([unit(5), unit(6)])
    probe, cand = feats("movies", 0, 10, desc=0, labels=3), feats("sms", 4, 11, n=64, desc=9, labels=3)
    probe.label_vecs, cand.label_vecs = names, names.copy()
    label_head = C.Head(["label_names", "labels"], ["label_match", "label_cos", "same_n_labels", "same_fields"],
                        [0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.5, 0.5], [6.0, 3.0, 0.0, 0.0], -2.0, threshold=0.75)
    desc_head = C.Head(["description"], ["desc_cos"], [0.3], [0.2], [4.0], -4.0, threshold=0.75)
    router = Router(C.Combiner({"label_names+labels": label_head, "description": desc_head}))
    library = [TaskProfile("sms", "lora-sms", cand)]
    d = router.decide(probe, library)
    assert d.action == "reuse"  # names that name classes ("apple", "river") and match: the label head reuses
    for coded in (["0", "1"], ["LABEL_0", "LABEL_1"]):
        probe.label_names, cand.label_names = coded, list(coded)
        ev = evidence_for_all(probe, library)[0]
        assert not {"label_match", "label_cos", "same_n_labels", "same_fields"} & set(ev)
        assert ev["label_names_uninformative"] == 1.0 and C.signals_of(ev) == frozenset({"description", "examples"})
        d = router.decide(probe, library)
        assert d.action == "new" and "label names left out" in d.explanation
    cand.label_names = ["ham", "spam"]  # one side coded is enough: its names say nothing to match against
    assert "label_match" not in evidence_for_all(probe, library)[0]


# ------------------------------------------------------------------ calibration
def synthetic_rows(n: int, seed: int):
    """Pairs where 'same' rows have high p-values and similar descriptions, others not (with noise)."""
    rng = np.random.RandomState(seed)
    rows, labels, groups = [], [], []
    for i in range(n):
        same = int(rng.rand() < 0.4)
        rows.append({"conformal_p": rng.beta(5, 5) if same else rng.beta(1, 8),
                     "two_sample_p": rng.beta(2, 2) if same else rng.beta(1, 30),
                     "log_effect": rng.normal(0.2 if same else 1.5, 0.4),
                     "desc_cos": rng.normal(0.7 if same else 0.3, 0.15),
                     "label_cos": rng.normal(0.8 if same else 0.5, 0.15),
                     "same_n_labels": float(rng.rand() < (0.9 if same else 0.5)),
                     "same_fields": float(rng.rand() < (0.95 if same else 0.5))})
        labels.append(same)
        groups.append(f"t{i % 6}")
    return rows, labels, groups


@pytest.fixture(scope="module")
def combiner():
    rows, labels, groups = synthetic_rows(600, 0)
    return C.fit_combiner(rows, labels, groups)


def test_combiner_is_calibrated_on_held_out_pairs(combiner):
    rows, labels, _ = synthetic_rows(2000, 1)
    head = combiner.head_for(frozenset({"examples", "description", "labels"}))
    probs = [head.probability(r) for r in rows]
    assert C.expected_calibration_error(probs, labels) < 0.05


def test_combiner_has_a_head_per_signal_subset_and_falls_back(combiner):
    assert len(combiner.heads) == 7  # every non-empty subset of examples, description, labels
    head = combiner.head_for(frozenset({"description", "labels", "trial"}))
    assert head.signals == ["description", "labels"]
    assert combiner.head_for(frozenset({"gradient"})) is None


def test_threshold_is_the_cost_optimal_cut_and_the_held_out_cut_is_recorded():
    rows, labels, groups = synthetic_rows(600, 0)
    cheap = C.fit_combiner(rows, labels, groups, [("description",)], cost_false_reuse=1.0)
    dear = C.fit_combiner(rows, labels, groups, [("description",)], cost_false_reuse=5.0)
    assert cheap.heads["description"].threshold == pytest.approx(0.5)
    assert dear.heads["description"].threshold == pytest.approx(5 / 6)
    assert dear.heads["description"].threshold_oof > cheap.heads["description"].threshold_oof


def test_choose_threshold_minimises_the_cost_on_held_out_pairs():
    probs = np.array([0.1, 0.2, 0.45, 0.55, 0.7, 0.9])
    truth = np.array([0, 0, 1, 0, 1, 1])
    assert 0.2 < C.choose_threshold(probs, truth, 1.0) <= 0.45  # one false reuse costs 1, one miss 1
    assert 0.55 < C.choose_threshold(probs, truth, 3.0) <= 0.7  # a false reuse now costs more than a miss


def test_combiner_round_trips_through_json(combiner, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(combiner.to_dict()))
    back = C.Combiner.load(path)
    r = synthetic_rows(1, 5)[0][0]
    key = "description+examples+labels"
    assert back.heads[key].probability(r) == pytest.approx(combiner.heads[key].probability(r))


@pytest.mark.parametrize("conf,correct,ece", [
    ([1.0, 1.0], [True, True], 0.0),
    ([0.9] * 10, [True] * 9 + [False], 0.0),
    ([0.9] * 10, [True] * 5 + [False] * 5, 0.4),
    ([0.2, 0.8], [False, True], 0.2),
])
def test_expected_calibration_error(conf, correct, ece):
    assert C.expected_calibration_error(conf, correct) == pytest.approx(ece)


def test_the_shipped_combiner_loads_with_the_heads_the_router_needs():
    c = C.Combiner.load()
    for signals in ({"description", "examples", "labels"}, {"description", "labels"}):
        head = c.head_for(frozenset(signals))
        assert head is not None and sorted(head.signals) == sorted(signals) and 0.0 < head.threshold < 1.0


# ------------------------------------------------------------------ the decision
def library(n_unrelated: int):
    profs = [TaskProfile("sent", "lora-sent", feats("sent", 0, 1, n=64, desc=0, labels=0))]
    for i in range(n_unrelated):
        profs.append(TaskProfile(f"t{i}", f"lora-t{i}", feats(f"t{i}", 3 + i, 50 + i, n=64, desc=3 + i,
                                                                labels=5 + i, n_labels=3, n_fields=2)))
    return profs


def test_empty_library_always_creates_with_full_confidence(combiner):
    d = Router(combiner).decide(feats("p", 0, 2), [])
    assert d.action == "new" and d.confidence == 1.0 and "empty" in d.explanation


@pytest.mark.parametrize("k", [1, 3, 9])
def test_repeat_is_reused_and_unrelated_is_new_at_any_library_size(combiner, k):
    router = Router(combiner)
    again = router.decide(feats("sent2", 0, 7, desc=0, labels=0), library(k - 1))
    assert again.action == "reuse" and again.adapter == "lora-sent" and again.confidence > 0.5
    other = router.decide(feats("topic", 14, 8, desc=14, labels=14, n_labels=5), library(k - 1))
    assert other.action == "new" and other.adapter is None and other.confidence > 0.5


def test_an_adapter_that_never_learned_its_tasks_is_not_offered_for_reuse(combiner):
    from dataclasses import replace

    router, probe = Router(combiner), feats("sent2", 0, 7, desc=0, labels=0)
    unlearned = [replace(p, learned=False) if p.adapter == "lora-sent" else p for p in library(2)]
    d = router.decide(probe, unlearned)
    assert d.action == "new" and "lora-sent" in d.explanation and "never learned" in d.explanation
    assert [c.learned for c in d.candidates if c.adapter == "lora-sent"] == [False]
    # a second task of the same adapter that was learned keeps the adapter on offer
    twin = TaskProfile("sent-b", "lora-sent", feats("sent-b", 0, 3, n=64, desc=0, labels=0), learned=True)
    assert router.decide(probe, unlearned + [twin]).adapter == "lora-sent"
    # unknown (no held-out verdict) counts as learned; the option turns the rule off
    assert router.decide(probe, library(2)).action == "reuse"
    assert Router(combiner, RouterConfig(reuse_unlearned=True)).decide(probe, unlearned).action == "reuse"
    # nothing in the library was learned: a new adapter, as sure as with an empty library
    none = [replace(p, learned=False) for p in library(2)]
    assert router.decide(probe, none).confidence == 1.0


def test_decision_json_has_the_documented_keys_and_reads_as_a_sentence(combiner):
    d = Router(combiner).decide(feats("sent2", 0, 7), library(2))
    j = d.to_json()
    assert {"action", "adapter", "confidence", "candidates", "explanation"} <= set(j)
    assert [c["adapter"] for c in j["candidates"]][0] == "lora-sent" and "\n" not in j["explanation"]
    json.dumps(j)


def test_trial_runs_only_on_the_short_list_and_enters_the_probability():
    rows, labels, groups = synthetic_rows(600, 0)
    rng = np.random.RandomState(0)
    for r, y in zip(rows, labels):
        r["trial_gain"] = rng.normal(0.5 if y else 0.0, 0.1)
        r["trial_acc_gain"] = rng.normal(0.2 if y else 0.0, 0.05)
    comb = C.fit_combiner(rows, labels, groups, [("description", "examples", "labels"),
                                                 ("description", "examples", "labels", "trial")])
    asked = []

    def trial(adapters):
        asked.append(list(adapters))
        return {a: {"trial_gain": 0.6 if a == "lora-sent" else 0.0, "trial_acc_gain": 0.2} for a in adapters}

    d = Router(comb, RouterConfig(trial_shortlist=2)).decide(feats("sent2", 0, 7), library(5), trial)
    assert len(asked) == 1 and len(asked[0]) == 2 and asked[0][0] == "lora-sent"
    assert d.candidates[0].head == "description+examples+labels+trial" and "trial_gain" in d.candidates[0].evidence


def test_trial_is_not_run_when_no_head_weighs_it(combiner):
    asked = []
    Router(combiner).decide(feats("sent2", 0, 7), library(3), lambda a: asked.append(a) or {})
    assert asked == []


# ------------------------------------------------------------------ the original design, as a baseline
def test_softmax_threshold_reuses_whatever_with_two_adapters_and_never_with_many():
    base = SoftmaxThresholdRouter()
    unrelated = feats("topic", 14, 8, desc=14)
    assert base.decide(unrelated, library(1)).action == "reuse"  # softmax of 2 is always >= 0.5
    d = base.decide(feats("sent2", 0, 7, desc=0), library(9))
    assert d.action == "new" and d.candidates[0].probability < 0.4  # flattened although it matches


# ------------------------------------------------------------------ routing single inputs
def test_input_router_sends_inputs_to_their_task_with_calibrated_posteriors():
    profs = [TaskProfile(f"t{i}", f"lora-{i}", feats(f"t{i}", i * 2, i, n=64, n_fields=1 + i % 2))
             for i in range(6)]
    router = InputRouter(profs)
    x = np.vstack([cluster(i * 2, 20, 100 + i) for i in range(6)])
    truth = np.repeat(np.arange(6), 20)
    routed = router.route(x, [1 + i % 2 for i in truth])
    assert np.mean([r.task == f"t{t}" for r, t in zip(routed, truth)]) > 0.95
    assert all(0.0 < r.confidence <= 1.0 for r in routed)


def test_routing_decides_the_adapter_by_the_posterior_mass_of_its_tasks():
    """Two tasks of one adapter at 0.3 each against a task of another adapter at 0.4: the input is scored with
    the first adapter (0.6 of the mass), as its most probable task; by task alone it would go to the other. Where
    every task has its own adapter the two rules are one."""
    profs = [TaskProfile(f"t{i}", a, feats(f"t{i}", i * 2, i, n=64))
             for i, a in enumerate(["lora-a", "lora-a", "lora-b"])]
    router = InputRouter(profs)
    assert router._decide(np.array([0.3, 0.3, 0.4]), "adapter") == 0
    assert router._decide(np.array([0.25, 0.35, 0.4]), "adapter") == 1
    assert router._decide(np.array([0.3, 0.3, 0.4]), "task") == 2
    assert router._decide(np.array([0.1, 0.2, 0.7]), "adapter") == 2
    with pytest.raises(ValueError, match="decide"):
        router._decide(np.array([0.3, 0.3, 0.4]), "family")
    x = np.vstack([cluster(i * 2, 20, 100 + i) for i in range(3)])
    own = InputRouter([TaskProfile(f"t{i}", f"lora-{i}", feats(f"t{i}", i * 2, i, n=64)) for i in range(3)])
    assert [r.task for r in own.route(x)] == [r.task for r in own.route(x, decide="task")]


def test_routing_posterior_is_tempered_by_a_temperature_fitted_on_held_out_stored_examples():
    """LDA in many dimensions from few examples is over-sure: the temperature that maximises the
    likelihood of stored examples scored by folds that did not see them is above 1 there, 1 for
    tasks it separates well about 1; tempering changes the confidence, never the task."""
    from adaptive_learner.router.routing import fit_temperature

    rng = np.random.RandomState(0)
    d, n = 400, 40
    centres = rng.randn(5, d) * 0.2

    def draw(i, m, seed):
        return (centres[i] + np.random.RandomState(seed).randn(m, d)).astype(np.float32)

    profs = [TaskProfile(f"t{i}", f"lora-{i}", TaskFeatures(f"t{i}", draw(i, n, i), None, None, None, 2, 1))
             for i in range(5)]
    router = InputRouter(profs)
    assert router.temperature > 1.5
    x = np.vstack([draw(i, 50, 100 + i) for i in range(5)])
    tempered = router.route(x)
    router.temperature = 1.0
    raw = router.route(x)
    assert [r.task for r in tempered] == [r.task for r in raw]
    assert np.mean([r.confidence for r in tempered]) < np.mean([r.confidence for r in raw]) - 0.05
    separated = np.vstack([cluster(i * 4, 30, i) for i in range(4)]).astype(np.float64)
    assert fit_temperature(separated, np.repeat(np.arange(4), 30), np.ones(4, dtype=int)) < 1.5
    # too few examples of a task for the folds: untempered
    assert fit_temperature(separated[:31], np.r_[np.zeros(30, int), 1], np.ones(2, dtype=int)) == 1.0


def test_input_router_only_considers_tasks_with_as_many_fields():
    profs = [TaskProfile("single", "a", feats("single", 0, 1, n_fields=1)),
             TaskProfile("pair", "b", feats("pair", 6, 2, n_fields=2))]
    router = InputRouter(profs)
    r_pair, r_none = router.route(cluster(0, 2, 3), [2, 3])
    assert r_pair.task == "pair" and r_none is None
    assert count_fields("a ||| b") == 2 and count_fields("plain") == 1


def test_single_texts_are_routed_by_their_sentence_embeddings_too_and_pairs_are_not():
    """Two single-field tasks whose backbone features are one distribution but whose sentence embeddings
    differ: the text view (both views in one LDA) routes their inputs; without embeddings, or with the view
    off, the backbone alone cannot. A pair task, whose inputs the encoder would see joined, keeps the
    backbone view: its inputs route the same with and without embeddings."""
    def task(name: str, emb_center: int, seed: int, n_fields: int = 1, center: int = 0) -> TaskFeatures:
        f = feats(name, center, seed, n=48, n_fields=n_fields)
        f.inputs = cluster(emb_center, 48, seed + 50, d=12)
        return f

    profs = [TaskProfile("spam", "a", task("spam", 1, 1)), TaskProfile("news", "b", task("news", 7, 2)),
             TaskProfile("para", "c", task("para", 3, 3, n_fields=2, center=9)),
             TaskProfile("nli", "d", task("nli", 3, 4, n_fields=2, center=13))]
    router = InputRouter(profs)
    assert router.wants_embeddings and not InputRouter(profs, text_view=False).wants_embeddings
    x = cluster(0, 80, 20)  # the backbone cannot tell spam from news
    emb = np.vstack([cluster(1, 40, 21, d=12), cluster(7, 40, 22, d=12)])
    truth = ["spam"] * 40 + ["news"] * 40
    both = router.route(x, [1] * 80, emb, open_set=False)
    assert np.mean([r.task == t for r, t in zip(both, truth)]) > 0.95
    assert all(r.novelty is None for r in both)  # open_set=False: routed, not judged
    alone = router.route(x, [1] * 80)
    assert np.mean([r.task == t for r, t in zip(alone, truth)]) < 0.8
    off = InputRouter(profs, text_view=False).route(x, [1] * 80, emb, open_set=False)
    assert [r.task for r in off] == [r.task for r in alone]
    pairs = np.vstack([cluster(9, 20, 23), cluster(13, 20, 24)])
    pair_emb = cluster(3, 40, 25, d=12)
    with_emb = router.route(pairs, [2] * 40, pair_emb, open_set=False)
    assert [r.task for r in with_emb] == [r.task for r in router.route(pairs, [2] * 40)]
    assert np.mean([r.task == t for r, t in zip(with_emb, ["para"] * 20 + ["nli"] * 20)]) > 0.95
    # a single-field task stored without embeddings (an older profile): no text view at all
    profs[1].features.inputs = None
    assert not InputRouter(profs).wants_embeddings


def _pair_texts(ratio_words: tuple[int, int], n: int, seed: int) -> list[str]:
    """Pair inputs whose fields have about the given word counts."""
    rng = np.random.RandomState(seed)
    a, b = ratio_words
    return [" ".join(["w"] * max(1, a + rng.randint(-2, 3))) + " ||| " + " ".join(["w"] * max(1, b + rng.randint(-1, 2)))
            for _ in range(n)]


def test_pair_inputs_that_look_alike_are_routed_by_how_their_fields_relate():
    """Two pair tasks whose features are drawn from one distribution (news sentences, to a pooled
    early layer) differ in how long the second field is against the first: the ratio model tells them
    apart, the features alone cannot; a single-field task is untouched."""
    from adaptive_learner.features import field_ratio
    from adaptive_learner.router.routing import RatioModel

    shapes = {"para": (20, 20), "entail": (30, 8)}

    def task(name, seed, n_fields=2):
        texts = _pair_texts(shapes[name], 64, seed) if n_fields == 2 else None
        f = TaskFeatures(name, cluster(0, 64, seed), None, None, None, 2, n_fields)
        f.field_ratios = None if texts is None else np.array([field_ratio(t) for t in texts], dtype=np.float32)
        return f

    profs = [TaskProfile("para", "a", task("para", 1)), TaskProfile("entail", "b", task("entail", 2)),
             TaskProfile("single", "c", feats("single", 6, 3))]
    router = InputRouter(profs)
    assert isinstance(router.ratio_model, RatioModel)
    texts = _pair_texts(shapes["para"], 40, 10) + _pair_texts(shapes["entail"], 40, 11)
    truth = ["para"] * 40 + ["entail"] * 40
    x = cluster(0, 80, 12)
    with_ratio = router.route(x, [2] * 80, texts=texts)
    without = router.route(x, [2] * 80)
    assert np.mean([r.task == t for r, t in zip(with_ratio, truth)]) > 0.95
    assert np.mean([r.task == t for r, t in zip(without, truth)]) < 0.75
    single = router.route(cluster(6, 5, 13), [1] * 5, texts=["one field"] * 5)
    assert all(r.task == "single" for r in single)
    # one stored pair task without ratios (an old library): no task is weighed by them
    old = task("entail", 2)
    old.field_ratios = None
    assert InputRouter([profs[0], TaskProfile("entail", "b", old)]).ratio_model is None


def test_field_ratios_are_stored_with_a_profile_and_read_from_older_structure_arrays():
    from adaptive_learner.features import field_ratio, length_ratio

    assert field_ratio("one two three ||| one") == pytest.approx(np.log(2 / 4))
    assert field_ratio("no pair here") is None
    assert length_ratio("a b c", "a") == field_ratio("a b c ||| a")
    f = TaskFeatures("p", cluster(0, 4, 0), None, None, None, 2, 2, ["a", "b"])
    f.field_ratios = np.array([0.1, -1.0, 0.0, 0.5], dtype=np.float32)
    back = TaskFeatures.from_stored(f.meta(), f.tensors())
    assert np.allclose(back.field_ratios, f.field_ratios)
    tensors = f.tensors()
    del tensors["field_ratios"]
    tensors["structure"] = torch_tensor(np.array([[0.3, 0.9], [-1.2, 0.5]], dtype=np.float32))
    assert np.allclose(TaskFeatures.from_stored(f.meta(), tensors).field_ratios, [0.3, -1.2])


def torch_tensor(a: np.ndarray):
    import torch

    return torch.from_numpy(a)


# ------------------------------------------------------------------ the answer trial
def test_answers_mapped_onto_new_labels_are_tested_against_shuffled_labels():
    from adaptive_learner.router.trial import answer_mapping, mapping_test

    labels = np.array([0, 1] * 16)
    renamed = 1 - labels  # the same decision, the labels called the other way round
    acc, mapping = answer_mapping(renamed, labels, 2, 2)
    assert acc == 1.0 and mapping == [1, 0]
    sure = mapping_test(renamed, labels, 2, 2, permutations=500)
    assert sure["p"] < 0.01 and 0.5 <= sure["null"] < 0.7
    noise = mapping_test(np.random.RandomState(1).randint(0, 2, 32), labels, 2, 2, permutations=500)
    assert noise["p"] > 0.05
    # many candidate labels onto two: chance is high, and so is the bar
    five = np.random.RandomState(2).randint(0, 5, 32)
    assert mapping_test(five, labels, 5, 2, permutations=500)["null"] > 0.6
    assert answer_mapping(np.zeros(32, int), labels, 5, 2)[0] == 0.5  # one answer for all: the majority


def _answers(p: float, acc: float, base: float):
    asked = []

    def answer_trial(cands):
        asked.append(list(cands))
        return {a: {"answer_acc": acc, "answer_null": 0.55, "answer_p": p, "answer_base_acc": base,
                    "answer_mapping": [1, 0]} for a, _ in cands}
    return answer_trial, asked


def test_an_adapter_that_already_answers_the_task_is_reused_before_creating(combiner):
    """The signals say new (a task whose labels the combiner has never seen named so); the likeliest
    candidates are asked the examples in their own words, and one that answers them through a label
    mapping, beyond chance and beyond the bare backbone, is reused with confidence 1 - p."""
    probe = feats("topic", 14, 8, desc=14, labels=14, n_labels=5)
    router = Router(combiner, RouterConfig(trial_shortlist=2))
    trial, asked = _answers(p=0.002, acc=0.84, base=0.70)
    d = router.decide(probe, library(3), answer_trial=trial)
    assert len(asked) == 1 and len(asked[0]) == 2  # the short list, as (adapter, task) pairs
    assert d.action == "reuse" and d.adapter == asked[0][0][0] and d.confidence == pytest.approx(0.998)
    assert "answers this task" in d.explanation and "p = 0.002" in d.explanation
    # not beyond chance, or no better than the backbone alone: new, as the signals said
    for p, base in ((0.2, 0.70), (0.002, 0.84)):
        trial, _ = _answers(p=p, acc=0.84, base=base)
        assert router.decide(probe, library(3), answer_trial=trial).action == "new"
    # switched off, or a task the signals already place: the trial is not run
    trial, asked = _answers(p=0.002, acc=0.84, base=0.70)
    assert Router(combiner, RouterConfig(answer_alpha=0)).decide(probe, library(3), answer_trial=trial).action == "new"
    assert router.decide(feats("sent2", 0, 7, desc=0, labels=0), library(2), answer_trial=trial).action == "reuse"
    assert asked == []


def test_answer_trial_asks_a_stored_adapter_in_its_own_tasks_words(fresh_backbone, toy_task):
    """Fields matched by position, the candidate's prompt and answers, the backbone beside it; a
    candidate taking another number of fields is skipped."""
    from dataclasses import replace as dc_replace

    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.router.trial import run_answer_trial

    host = AdapterHost(fresh_backbone)
    host.create("lora-a", seed=0)
    spec = toy_task.spec
    other = dc_replace(spec, name="other", input_fields=["body"], template="Body: {body}\nVerdict:",
                       label_names=["bad", "good", "meh"], verbalizers=[" bad", " good", " meh"])
    pair = dc_replace(spec, name="pair", input_fields=["a", "b"], template="{a} {b}")
    out = run_answer_trial(host, spec, toy_task.train[:12], [("lora-a", other), ("lora-b", pair)], 64,
                           permutations=50)
    assert set(out) == {"lora-a"}
    r = out["lora-a"]
    assert 0.0 <= r["answer_base_acc"] <= 1.0 and 0.0 <= r["answer_acc"] <= 1.0 and 0.0 < r["answer_p"] <= 1.0
    assert len(r["answer_mapping"]) == 3


@pytest.mark.parametrize("k", [2, 5])
def test_the_routers_shrunk_lda_and_folds_are_scikit_learns(k):
    """The input router's LDA (``router.lda``) is scikit-learn's lsqr + Ledoit-Wolf model, computed from the
    examples' Gram matrices: same posteriors and the same cross-validation folds, on more dimensions than
    examples, with a constant column and classes of unequal size."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold

    from adaptive_learner.router.lda import ShrunkLDA, stratified_folds

    rng = np.random.default_rng(k)
    sizes = rng.integers(8, 30, size=k)
    y = np.concatenate([[c] * n for c, n in enumerate(sizes)])
    x = rng.normal(size=(len(y), 60)) * rng.uniform(0.1, 5, size=60) + rng.normal(size=(k, 60))[y]
    x[:, 7] = 3.0
    priors = np.full(k, 1.0 / k)
    ours = ShrunkLDA(priors).fit(x, y)
    theirs = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=priors).fit(x, y)
    test = rng.normal(size=(40, 60)) + rng.normal(size=(k, 60))[rng.integers(0, k, 40)]
    np.testing.assert_allclose(np.exp(ours.predict_log_proba(test)), theirs.predict_proba(test), atol=1e-9)
    expected = np.empty(len(y), dtype=int)
    for fold, (_, held) in enumerate(StratifiedKFold(3, shuffle=True, random_state=4).split(x, y)):
        expected[held] = fold
    np.testing.assert_array_equal(stratified_folds(y, 3, 4), expected)
    # every example of a class repeated (nothing to estimate a covariance from): a posterior, not an error
    flat = ShrunkLDA(priors).fit(np.repeat(rng.normal(size=(k, 60)), 3, axis=0), np.repeat(np.arange(k), 3))
    assert np.isfinite(flat.predict_log_proba(test)).all()
