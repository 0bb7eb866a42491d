"""The linear head on the frozen backbone's features: fitted, mixed by held-out examples, stored, used."""

from dataclasses import replace

import numpy as np
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.learner import Learner
from adaptive_learner.prompting import encode_examples
from adaptive_learner.training import TrainConfig, fit_task_head, load_head
from adaptive_learner.training.head import FeatureHead, choose_mix, fit_head, head_files, prompt_features


def _blobs(n: int = 60, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.RandomState(seed)
    y = [i % 3 for i in range(n)]
    centres = rng.normal(0, 4, (3, dim))
    return (centres[y] + rng.normal(0, 0.5, (n, dim))).astype(np.float32), y


def test_fit_head_separates_separable_features():
    x, y = _blobs()
    head = fit_head(x, y, 3, layer=1)
    lp = head.log_probs(x)
    assert np.allclose(np.exp(lp).sum(1), 1, atol=1e-5)
    assert (lp.argmax(1) == np.asarray(y)).mean() == 1.0


def test_choose_mix_follows_the_better_classifier():
    x, y = _blobs()
    head_lp = fit_head(x, y, 3, layer=1).log_probs(x)
    right = [np.eye(3)[k] * 5.0 for k in y]  # adapter scores that are always right
    wrong = [np.eye(3)[(k + 1) % 3] * 5.0 for k in y]  # always wrong
    assert choose_mix(right, np.log(np.full((len(y), 3), 1 / 3)), y)[0] == 1.0  # useless head: adapter alone
    mix, table = choose_mix(wrong, head_lp, y)
    assert mix == 0.0 and table["0"]["accuracy"] == 1.0 and table["1"]["accuracy"] == 0.0


def test_the_gate_mixes_equally_unless_the_held_out_examples_tell_the_two_apart():
    y = [i % 2 for i in range(40)]
    sure = lambda k: np.log(np.eye(2)[k] * 0.98 + 0.01)  # noqa: E731
    # each right on a different 30 of 40: no clear winner -> an equal mix
    adapter = [sure(k if i < 30 else 1 - k) for i, k in enumerate(y)]
    head = np.stack([sure(k if i >= 10 else 1 - k) for i, k in enumerate(y)])
    mix, table = choose_mix(adapter, head, y)
    assert mix == 0.5 and table["gate"]["adapter_only"] == 10 and table["gate"]["head_only"] == 10
    # the head right on 10 more: 20 against 0 is clear -> the head alone
    head = np.stack([sure(k) for k in y])
    assert choose_mix(adapter, head, y)[0] == 0.0
    # the held-out rule takes the best held-out accuracy; a number fixes the mix
    assert choose_mix(adapter, head, y, "held-out")[0] == 0.0
    assert choose_mix(adapter, head, y, "0.25")[0] == 0.25


def test_the_loss_rules_weigh_by_held_out_log_loss():
    y = [i % 2 for i in range(40)]
    prob = lambda k, p: np.log(np.where(np.eye(2)[k] > 0, p, 1 - p))  # noqa: E731
    # both right on every example, the adapter surely (0.95), the head barely (0.55): same accuracy, so the
    # accuracy gate mixes equally; the log losses tell them apart, every example the same way
    adapter = [prob(k, 0.95) for k in y]
    head = np.stack([prob(k, 0.55) for k in y])
    assert choose_mix(adapter, head, y)[0] == 0.5
    mix, table = choose_mix(adapter, head, y, "gated-loss")
    assert mix == 1.0 and table["loss_gate"]["alone"] == 1.0 and table["loss_gate"]["z"] == "inf"
    assert choose_mix(adapter, head, y, "loss")[0] == 1.0
    # the roles swapped: the head alone
    assert choose_mix([prob(k, 0.55) for k in y], np.stack([prob(k, 0.95) for k in y]), y, "gated-loss")[0] == 0.0
    # each surely right on a different half, surely wrong on the other: the equal mix hedges, and no one alone
    # beats it
    adapter = [prob(k, 0.95 if i < 20 else 0.05) for i, k in enumerate(y)]
    head = np.stack([prob(k, 0.05 if i < 20 else 0.95) for i, k in enumerate(y)])
    assert choose_mix(adapter, head, y, "gated-loss")[0] == 0.5
    assert choose_mix(adapter, head, y, "loss")[0] == 0.5


def test_a_bad_head_mix_is_refused(toy_task):
    import pytest

    from conftest import run_alearn

    with pytest.raises(ValueError, match="head mix"):
        TrainConfig(head_mix="sometimes")
    code, _, err = run_alearn("learn", "--library", "/nonexistent/lib", "--task", "sst2", "--head-mix", "1.5")
    assert code == 2 and "--head-mix" in err and "Traceback" not in err


def test_combine_is_the_stated_mixture():
    x, y = _blobs(n=9)
    head = fit_head(x, y, 3, layer=1)
    head.mix = 0.25
    scores = [np.array([0.0, -1.0, -2.0])] * 9
    mixed = head.combine(scores, x)
    pa = np.exp(scores[0]) / np.exp(scores[0]).sum()
    expect = 0.25 * pa + 0.75 * np.exp(head.log_probs(x))
    assert np.allclose(np.exp(np.stack(mixed)), expect, atol=1e-6)


def test_prompt_features_are_the_layer_mean_over_the_prompt(tiny_backbone, toy_task, monkeypatch):
    """The same means whether the task's shared prompt prefix runs once (as it does) or in every row."""
    from adaptive_learner.scoring import MIN_SHARED_PREFIX
    from adaptive_learner.training.head import views as head_module

    items = encode_examples(tiny_backbone.tokenizer, toy_task.spec, toy_task.train[:5], 64)
    model = tiny_backbone.model
    shared = []
    real = head_module._shared_prefix
    monkeypatch.setattr(head_module, "_shared_prefix", lambda *a: shared.append(real(*a)) or shared[-1])
    feats = prompt_features(model, items, 1, tiny_backbone.tokenizer.pad_token_id, batch_size=3)  # batches pad
    assert shared[0][0] >= MIN_SHARED_PREFIX, "the prompts share the task's description: it must run once"
    with torch.no_grad():
        for it, f in zip(items, feats):
            hs = model(input_ids=torch.tensor([it.prompt]), output_hidden_states=True).hidden_states[1]
            np.testing.assert_allclose(f, hs[0].mean(0).numpy(), rtol=1e-4, atol=1e-4)


def test_fit_task_head_uses_the_early_stopping_split(fresh_backbone, toy_task):
    host = AdapterHost(fresh_backbone)
    host.create("toy-a", seed=0)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64)
    head, report = fit_task_head(host, "toy-a", items, TrainConfig(max_length=64))
    assert set(report["held_out"]) == {"0", "0.25", "0.5", "0.75", "1", "gate"} and report["rule"] == "gated"
    assert (head is None) == (report["mix"] == 1.0)


def test_with_nothing_held_out_the_head_is_fitted_on_every_example_and_mixed_equally(fresh_backbone, toy_task):
    # a task too small to hold out examples (or no early stopping): no evidence for the gate, so its answer
    # without evidence, the equal mix, with the head fitted on every example
    host = AdapterHost(fresh_backbone)
    host.create("toy-a", seed=0)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64)
    head, why = fit_task_head(host, "toy-a", items, TrainConfig(max_length=64, early_stop=False))
    assert head is not None and head.mix == why["mix"] == 0.5 and "held_out" not in why and "no held-out" in why["reason"]
    with host.base() as m:
        feats = prompt_features(m, items, head.layer, fresh_backbone.tokenizer.pad_token_id)
    alone = fit_head(feats, [it.label for it in items], 2, head.layer)  # every example, as the head was fitted
    np.testing.assert_allclose(head.weight, alone.weight, rtol=1e-5, atol=1e-6)
    small = items[:6]  # fewer than MIN_VALIDATION could be held out
    head6, _ = fit_task_head(host, "toy-a", small, TrainConfig(max_length=64, head_mix="0.75"))
    assert head6 is not None and head6.mix == 0.75  # a fixed mix is kept as given
    one_label = [it for it in items if it.label == items[0].label]
    none, why = fit_task_head(host, "toy-a", one_label, TrainConfig(max_length=64, early_stop=False))
    assert none is None and why["mix"] == 1.0


def test_a_stored_head_answers_with_the_adapter(tmp_path, fresh_backbone, toy_task):
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-2, max_length=64, eval_every=2, patience=1)
    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=cfg)
    learner.learn(toy_task, force_new=True)
    adapter = learner.library.adapter_of("toy")
    # store a head that decides alone and always says the second label, as if the held-out examples chose it
    hidden = fresh_backbone.model.config.hidden_size
    forced = FeatureHead(1, np.zeros(hidden, np.float32), np.ones(hidden, np.float32),
                         np.zeros((hidden, 2), np.float32), np.array([-9.0, 9.0], np.float32), mix=0.0)
    from adaptive_learner.training import stage_head

    with learner.library.transaction() as tx:
        stage_head(tx, adapter, "toy", forced)
        tx.set_task(toy_task.spec, adapter)
    assert learner.library.verify() == []
    assert load_head(learner.library, "toy").mix == 0.0
    second = toy_task.spec.label_names[1]
    assert {p.label for p in learner.predict(["a fine film", "awful"], task="toy")} == {second}
    assert {p.label for p in learner.predict(["a fine film", "awful"], abstain=False)} == {second}  # routed too
    # learned again without a head: the stored one is dropped with its files
    learner.train_cfg = replace(cfg, head=False)
    learner.learn(toy_task, reuse=adapter)
    assert load_head(learner.library, "toy") is None
    assert not any(name in rel for rel in learner.library.adapters[adapter]["files"] for name in head_files("toy"))
    assert learner.library.verify() == []


def test_choose_l2_penalises_noise_and_spares_signal():
    """Cross-validated log loss picks the strongest penalty for labels the features cannot predict
    and a weak one for separable classes."""
    from adaptive_learner.training.head import L2_GRID, choose_l2

    rng = np.random.RandomState(0)
    noise = rng.normal(size=(120, 50)).astype(np.float32)
    l2, losses = choose_l2(noise, [i % 2 for i in range(120)], 2)
    assert l2 == max(L2_GRID) and set(losses) == {f"{v:g}" for v in L2_GRID}
    x, y = _blobs(n=120, dim=50)
    assert choose_l2(x, y, 3)[0] <= 1e-1


def test_encoded_items_carry_their_raw_fields(tiny_backbone, pair_task):
    items = encode_examples(tiny_backbone.tokenizer, pair_task.spec, pair_task.train[:3], 64)
    assert [it.fields for it in items] == [(e.fields["first"], e.fields["second"]) for e in pair_task.train[:3]]


def test_the_pair_view_is_how_two_fields_relate(tiny_backbone, pair_task):
    from adaptive_learner.features import text_encoder
    from adaptive_learner.training.head import pair_view

    enc = text_encoder("hashing")
    items = encode_examples(tiny_backbone.tokenizer, pair_task.spec, pair_task.train[:4], 64)
    x = pair_view(enc, items)
    u, v = enc.encode([it.fields[0] for it in items]), enc.encode([it.fields[1] for it in items])
    np.testing.assert_allclose(x, np.concatenate([u, v, np.abs(u - v), u * v], 1))
    import pytest

    one_field = [replace(it, fields=it.fields[:1]) for it in items]
    with pytest.raises(ValueError, match="two fields"):
        pair_view(enc, one_field)


def test_choose_views_adds_a_view_only_where_it_predicts_the_label():
    from adaptive_learner.training.head import choose_views

    rng = np.random.RandomState(0)
    y = [i % 2 for i in range(120)]
    backbone = rng.normal(size=(120, 20)).astype(np.float32)  # says nothing about the label
    signal = (np.asarray(y)[:, None] * 3.0 + rng.normal(size=(120, 8))).astype(np.float32)
    views, losses = choose_views(backbone, {"pair": signal}, y, 2)
    assert views == ("pair",) and losses["backbone+pair"] < losses["backbone"]
    noise = rng.normal(size=(120, 8)).astype(np.float32)
    assert choose_views(backbone + signal[:, :1] * 2, {"pair": noise}, y, 2)[0] == ()
    # two views: every subset is a candidate, in the views' order; the informative one alone wins
    views, losses = choose_views(backbone, {"text": noise, "pair": signal}, y, 2)
    assert list(losses) == ["backbone", "backbone+text", "backbone+pair", "backbone+text+pair"]
    assert views == ("pair",)


def test_a_view_that_helps_by_less_than_a_standard_error_is_left_out():
    """One-standard-error rule: a weakly informative view lowers the mean cross-validated loss a little;
    ``min`` (the default) adds it, ``one-se`` leaves it out; a strong one is added by both; unknown rules
    are refused."""
    import pytest

    from adaptive_learner.training.head import choose_views, cv_log_loss, cv_losses

    rng = np.random.RandomState(0)
    y = np.array([i % 2 for i in range(120)])
    backbone = (y[:, None] * 1.0 + rng.normal(size=(120, 5))).astype(np.float32)
    noise = rng.normal(size=(120, 3))
    weak, strong = (y[:, None] * 0.1 + noise).astype(np.float32), (y[:, None] * 1.0 + noise).astype(np.float32)
    views, losses = choose_views(backbone, {"text": weak}, y.tolist(), 2, rule="one-se")
    assert losses["backbone+text"] < losses["backbone"] and views == ()
    assert choose_views(backbone, {"text": weak}, y.tolist(), 2)[0] == ("text",)
    assert choose_views(backbone, {"text": strong}, y.tolist(), 2, rule="one-se")[0] == ("text",)
    per = cv_losses(backbone, y.tolist(), 2)
    assert per.shape == (120,) and (per > 0).all() and per.mean() == pytest.approx(cv_log_loss(backbone, y.tolist(), 2))
    with pytest.raises(ValueError, match="view rule"):
        choose_views(backbone, {"text": weak}, y.tolist(), 2, rule="best")


def _more_pairs(pair_task, n_train: int = 80, n_test: int = 24):
    """The toy pair task with more examples (as many "same" as not): enough to hold some out."""
    from adaptive_learner.tasks.spec import Example, TaskData

    words = ["fine", "superb", "boring", "wonderful", "lovely", "great", "dull", "awful", "grand", "bleak"]
    rng = np.random.RandomState(0)

    def make(n: int) -> list:
        out = []
        for i in range(n):
            a = words[rng.randint(len(words))]
            b = a if i % 2 else words[(words.index(a) + 1 + rng.randint(len(words) - 1)) % len(words)]
            out.append(Example({"first": f"the word {a}", "second": f"the word {b}"}, i % 2))
        return out
    return TaskData(pair_task.spec, make(n_train), make(n_test))


def test_a_pair_task_head_sees_its_fields_and_is_stored_with_its_views(tmp_path, fresh_backbone, pair_task):
    """On pairs labelled 'the same' iff both fields are equal, the tiny backbone's features say nothing;
    the head adds encoder views (the hashing encoder of the tiny backbone's router) that lower its
    cross-validated log loss, stores them, and answers through them after a reload."""
    host = AdapterHost(fresh_backbone)
    host.create("p", seed=0)
    items = encode_examples(fresh_backbone.tokenizer, pair_task.spec, _more_pairs(pair_task).train, 64)
    # the default: both views considered, the pair view by its loss, the text view through the gate
    default = fit_task_head(host, "p", items, TrainConfig(max_length=64, head_mix="0"), encoder="hashing")[1]["views"]
    assert default["rule"] == "gated" and default["gate"]["free"] == "backbone+pair"
    passed = [k for k, g in default["gate"].items() if k != "free" and g["z"] >= 1.96]
    assert default["chosen"] == (max(passed, key=lambda k: default["cv_accuracy"][k]).split("+")[1:] if passed
                                 else ["pair"])
    assert fit_task_head(host, "p", items, TrainConfig(max_length=64, head_mix="0"), encoder="hashing",
                         views=("pair",), view_rule="min")[1]["views"]["chosen"] == ["pair"]  # the default before
    head, report = fit_task_head(host, "p", items, TrainConfig(max_length=64, head_mix="0"), encoder="hashing",
                                 views=("text", "pair"), view_rule="one-se")
    losses = report["views"]["cv_log_loss"]
    assert set(losses) == {"backbone", "backbone+text", "backbone+pair", "backbone+text+pair"}
    chosen = tuple(report["views"]["chosen"])
    assert chosen and losses["+".join(("backbone", *chosen))] < losses["backbone"]
    assert report["views"]["encoder"] == "hashing" and report["views"]["rule"] == "one-se"
    assert head.views == chosen and head.encoder == "hashing"
    with host.base() as m:
        feats = head.features(m, items, fresh_backbone.tokenizer.pad_token_id)
    widths = {"text": 512, "pair": 4 * 512}
    assert feats.shape[1] == fresh_backbone.model.config.hidden_size + sum(widths[v] for v in chosen) \
        == head.weight.shape[0]
    assert (head.log_probs(feats).argmax(1) == np.array([it.label for it in items])).mean() >= 0.9
    stored = FeatureHead.from_stored(head.meta(), head.tensors())
    assert stored.views == chosen and stored.encoder == "hashing"
    # without an encoder the head sees the backbone alone, as before
    plain, rep = fit_task_head(host, "p", items, TrainConfig(max_length=64, head_mix="0"))
    assert plain.views == () and "views" not in rep
    old = {k: v for k, v in plain.meta().items() if k in ("layer", "mix")}  # a head stored before the views
    assert FeatureHead.from_stored(old, plain.tensors()).views == ()


def test_a_one_field_head_may_add_the_text_view_and_never_the_pair_view(fresh_backbone, toy_task):
    """The text view is an option: asked for, a task of one field has the backbone alone and with the text
    view (the sentence embedding of the input) as candidates; on toy sentiment, whose words carry the
    label, the text view lowers the log loss."""
    from adaptive_learner.features import text_encoder
    import pytest

    from adaptive_learner.training.head import text_view, views_for

    host = AdapterHost(fresh_backbone)
    host.create("t", seed=0)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64)
    assert views_for(items) == ("text",) and views_for([replace(it, fields=()) for it in items]) == ()
    assert views_for(items, ("pair",)) == ()
    with pytest.raises(ValueError, match="unknown head views"):
        views_for(items, ("words",))
    enc = text_encoder("hashing")
    np.testing.assert_allclose(text_view(enc, items[:3]), enc.encode([it.fields[0] for it in items[:3]]))
    cfg = TrainConfig(max_length=64, head_mix="0")
    assert "views" not in fit_task_head(host, "t", items, cfg, encoder="hashing", views=("pair",))[1]  # no view
    assert fit_task_head(host, "t", items, cfg, encoder="hashing")[1]["views"]["rule"] == "gated"  # the default
    head, report = fit_task_head(host, "t", items, cfg, encoder="hashing", views=("text", "pair"), view_rule="min")
    losses = report["views"]["cv_log_loss"]
    assert set(losses) == {"backbone", "backbone+text"}
    assert report["views"]["chosen"] == ["text"] and losses["backbone+text"] < losses["backbone"]
    assert head.views == ("text",)
    # the same options from the config (alearn learn --head-views/--head-view-rule/--head-calibrate)
    cfg2 = TrainConfig(max_length=64, head_mix="0", head_views="text,pair", head_view_rule="gated",
                       head_calibrate="both")
    head2, report2 = fit_task_head(host, "t", items, cfg2, encoder="hashing")
    assert report2["views"]["rule"] == "gated" and set(report2["views"]["cv_log_loss"]) == {"backbone", "backbone+text"}
    assert report2["temperature"] > 0 and report2["adapter_temperature"] > 0
    assert head2.adapter_temperature == report2["adapter_temperature"]
    with pytest.raises(ValueError, match="head views"):
        TrainConfig(head_views="words")
    with pytest.raises(ValueError, match="calibration"):
        TrainConfig(head_calibrate="yes")


def test_learn_on_a_pair_task_stores_a_head_that_predict_uses(tmp_path, fresh_backbone, pair_task):
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-2, max_length=64, eval_every=2, patience=1, head_mix="0")
    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=cfg)
    task = _more_pairs(pair_task)
    out = learner.learn(task, force_new=True)
    head = load_head(learner.library, "pairs")
    assert head is not None and head.views and list(head.views) == out.train["head"]["views"]["chosen"]
    assert learner.library.verify() == []
    texts = [f"{e.fields['first']} ||| {e.fields['second']}" for e in task.test]
    preds = learner.predict(texts, task="pairs")
    hits = np.mean([p.label == task.spec.label_names[e.label] for p, e in zip(preds, task.test)])
    assert hits == out.accuracy_after and hits >= 0.8
    routed = learner.predict(texts, abstain=False)  # the one task, routed: the same head answers
    assert [p.label for p in routed] == [p.label for p in preds]


def test_the_gated_view_rule_adds_a_view_only_where_its_answers_are_clearly_better():
    """``gated``: the free views (the pair view) chosen by the lowest loss; a set with another view (text)
    replaces that choice only when its cross-validated answers beat it by a McNemar test at 5%."""
    from adaptive_learner.training.head import choose_views

    rng = np.random.RandomState(0)
    y = np.array([i % 2 for i in range(160)])
    backbone = (y[:, None] * 0.3 + rng.normal(size=(160, 5))).astype(np.float32)  # weakly informative
    noise = rng.normal(size=(160, 3))
    strong = (y[:, None] * 2.0 + noise).astype(np.float32)
    weak = (y[:, None] * 0.15 + noise).astype(np.float32)
    details: dict = {}
    views, _ = choose_views(backbone, {"text": strong}, y.tolist(), 2, rule="gated", details=details)
    assert views == ("text",)
    gate = details["gate"]["backbone+text"]
    assert details["gate"]["free"] == "backbone" and gate["z"] >= 1.96 and gate["only_this"] > gate["only_free"]
    assert details["cv_accuracy"]["backbone+text"] > details["cv_accuracy"]["backbone"]
    # a view that lowers the loss a little is added by ``min`` but not by the gate
    views, losses = choose_views(backbone, {"text": weak}, y.tolist(), 2, rule="gated")
    assert views == ()
    # the free view is chosen as ``min`` chooses it, with no gate
    assert choose_views(backbone, {"pair": strong}, y.tolist(), 2, rule="gated")[0] == ("pair",)


def test_the_head_temperature_is_fitted_to_its_out_of_fold_answers():
    """An overconfident head's answers (logits three times too large) get a temperature near 3; the decided
    head's logits are divided by it, with the same answers."""
    from adaptive_learner.training.head import decide_head, fit_head, fit_temperature

    rng = np.random.RandomState(0)
    logits = rng.normal(size=(4000, 3)) * 2.0
    p = np.exp(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))
    y = np.array([rng.choice(3, p=row) for row in p])
    lp = 3.0 * logits
    lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    assert abs(fit_temperature(lp, y) - 3.0) < 0.3
    # decide_head: the same head as without calibration, its logits divided by the temperature
    x = (y[:600, None] * 0.8 + rng.normal(size=(600, 6))).astype(np.float32)
    yy = y[:600].tolist()
    s_val = [np.zeros(3) for _ in range(100)]  # an adapter that knows nothing: the head decides
    args = (x[:500], x[500:], yy[:500], yy[500:], s_val, 3, 0)
    plain, _ = decide_head(*args)
    calibrated, report = decide_head(*args, calibrate="head")
    t = report["temperature"]
    assert t > 0 and calibrated is not None and plain is not None
    np.testing.assert_allclose(calibrated.weight * t, plain.weight, rtol=1e-3, atol=1e-4)  # t: rounded in the report
    full = fit_head(x, yy, 3, 0)
    np.testing.assert_allclose(plain.weight, full.weight, rtol=1e-5, atol=1e-6)
    assert (calibrated.log_probs(x).argmax(1) == plain.log_probs(x).argmax(1)).all()


def test_the_adapter_temperature_is_stored_with_the_head_and_divides_its_scores():
    """calibrate="both": the adapter's temperature (fitted on its held-out answers) is kept in the head's meta
    and divides the adapter's scores in the mix; an unknown calibration is refused."""
    import pytest

    from adaptive_learner.training.head import FeatureHead, decide_head
    from adaptive_learner.training.head.model import _mixed, _softmax

    rng = np.random.RandomState(1)
    y = np.array([i % 2 for i in range(200)])
    x = (y[:, None] * 0.8 + rng.normal(size=(200, 4))).astype(np.float32)
    # an overconfident adapter: right 70 % of the time, always at log-odds 8
    right = rng.rand(40) < 0.7
    s_val = [np.array([0.0, 8.0]) if (lab == 1) == r else np.array([8.0, 0.0]) for lab, r in zip(y[160:], right)]
    head, report = decide_head(x[:160], x[160:], y[:160].tolist(), y[160:].tolist(), s_val, 2, 0, rule="0.5",
                               calibrate="both")
    t = report["adapter_temperature"]
    assert t > 2 and head.adapter_temperature == t
    stored = FeatureHead.from_stored(head.meta(), head.tensors())
    assert stored.adapter_temperature == pytest.approx(t)
    scores = [np.array([0.0, 8.0]), np.array([8.0, 0.0])]
    got = stored.combine(scores, x[:2])
    want = np.log(_mixed(np.stack([_softmax(s / t) for s in scores]), np.exp(stored.log_probs(x[:2])), 0.5))
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-5)
    assert "adapter_temperature" not in decide_head(x[:160], x[160:], y[:160].tolist(), y[160:].tolist(), s_val, 2, 0,
                                                    rule="0.5")[0].meta()
    with pytest.raises(ValueError, match="calibrate"):
        decide_head(x[:160], x[160:], y[:160].tolist(), y[160:].tolist(), s_val, 2, 0, calibrate="yes")
