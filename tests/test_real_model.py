"""Real-model paths (smollm2-135m from its PyPI wheel): run by hand with `pytest -m slow`; figures in BENCHMARKS.md."""

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_backbone():
    os.environ.pop("ADAPTIVE_LEARNER_CACHE", None)
    from adaptive_learner.backbone import load_backbone

    return load_backbone("smollm2-135m")


@pytest.fixture(autouse=True)
def _isolated_cache():
    """Override conftest's isolation: these tests use the real cache (and may download into it)."""
    yield


def test_smollm2_is_a_real_pretrained_model(real_backbone):
    import torch

    tok, model = real_backbone.tokenizer, real_backbone.model
    assert real_backbone.identity["num_hidden_layers"] == 30 and real_backbone.identity["hidden_size"] == 576

    def ppl(text):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return float(torch.exp(model(input_ids=ids, labels=ids).loss))

    sentence = "The cat sat on the mat and looked out of the window at the birds in the garden."
    shuffled = "window mat the garden at birds cat the of on sat looked the and out in The the."
    assert ppl(sentence) < 200 < ppl(shuffled)


def test_short_training_beats_zero_shot_on_sst2(real_backbone):
    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.prompting import encode_examples
    from adaptive_learner.scoring import accuracy, score
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.training import TrainConfig, train_adapter

    task = load_catalog_task("sst2").subsample(160, 100, 0)
    tok = real_backbone.tokenizer
    train = encode_examples(tok, task.spec, task.train, 128)
    test = encode_examples(tok, task.spec, task.test, 128)
    host = AdapterHost(real_backbone)
    with host.base() as m:
        zero = accuracy(score(m, test, tok.pad_token_id), test)
    host.create("sst2")
    train_adapter(host, "sst2", train, TrainConfig(steps=20, batch_size=8, lr=1e-3, early_stop=False))
    with host.using("sst2") as m:
        trained = accuracy(score(m, test, tok.pad_token_id), test)
    assert trained > zero + 0.05, (zero, trained)


def test_smollm2_in_bfloat16_is_the_same_backbone_and_answers_as_float32(real_backbone):
    import numpy as np

    from adaptive_learner.backbone import load_backbone, same_backbone
    from adaptive_learner.prompting import encode_examples
    from adaptive_learner.scoring import score
    from adaptive_learner.tasks import load_catalog_task

    half = load_backbone("smollm2-135m", dtype="bfloat16")
    assert same_backbone(real_backbone.identity, half.identity)
    task = load_catalog_task("sst2").subsample(None, 32, 0)
    items = encode_examples(real_backbone.tokenizer, task.spec, task.test, 256)
    full, low = (score(b.model, items, b.tokenizer.pad_token_id) for b in (real_backbone, half))
    same = np.mean([np.argmax(x) == np.argmax(y) for x, y in zip(full, low)])
    assert same >= 0.9 and max(float(np.abs(x - y).max()) for x, y in zip(full, low)) < 0.5


def test_a_reuse_reports_what_it_cost_the_adapters_first_task(real_backbone, tmp_path):
    """sst2 learned, rotten_tomatoes learned into its adapter: the retention check scores sst2 on the 100 examples kept
    when it was learned, starting from exactly what it scored then, and `check` later agrees with it."""
    from adaptive_learner.learner import Learner
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.training import TrainConfig

    cfg = TrainConfig(steps=20, batch_size=8, lr=1e-3, early_stop=False, max_length=128, head=False)
    learner = Learner(tmp_path / "lib", backbone=real_backbone, train=cfg)
    first = learner.learn(load_catalog_task("sst2").subsample(160, 100, 0), force_new=True)
    again = learner.check()[0]
    assert again.task == "sst2" and again.examples == 100
    assert again.then == again.now == first.accuracy_after and again.change.mean == 0  # nothing changed yet
    second = learner.learn(load_catalog_task("rotten_tomatoes").subsample(160, 100, 0), reuse=first.adapter)
    (r,) = second.retention
    assert r.task == "sst2" and r.then == first.accuracy_after and r.examples == 100
    assert r.change.low <= r.now - r.then <= r.change.high
    now = {c.task: c for c in learner.check()}
    assert now["sst2"].now == r.now and now["rotten_tomatoes"].change.mean == 0
