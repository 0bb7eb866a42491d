"""A new adapter may start as a copy of the router's best candidate (warm start) instead of fresh."""

import json

import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.errors import UserError
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.decision import CandidateScore, RouteDecision
from adaptive_learner.router.warm_start import check_init, warm_start_source
from adaptive_learner.training import train_adapter


def test_a_warm_started_adapter_copies_the_source_and_training_it_leaves_the_source_alone(
        fresh_backbone, toy_task, fast_train):
    host = AdapterHost(fresh_backbone)
    host.create("first", seed=0)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64)
    train_adapter(host, "first", items, fast_train)
    first_before = host.state("first")
    host.create("second", seed=1, init_from="first")
    b = host.state("second")
    assert set(k.replace(".second.", ".first.") for k in b) == set(first_before)
    for k, v in b.items():
        assert torch.equal(v, first_before[k.replace(".second.", ".first.")])
    # a fresh one is not a copy: peft starts B at zero
    host.create("third", seed=1)
    assert all(not v.any() for k, v in host.state("third").items() if "lora_B" in k)
    train_adapter(host, "second", items, fast_train)
    assert any(not torch.equal(v, first_before[k.replace(".second.", ".first.")]) for k, v in host.state("second").items())
    for k, v in host.state("first").items():
        assert torch.equal(v, first_before[k])


def test_warm_start_from_an_unknown_adapter_is_refused(fresh_backbone):
    host = AdapterHost(fresh_backbone)
    host.create("first")
    with pytest.raises(KeyError, match="no such adapter"):
        host.create("second", init_from="zzz")


def _decision(*cands):
    return RouteDecision("t", "new", None, 0.9, [CandidateScore(a, a, p) for a, p in cands], "")


def test_the_source_is_the_best_scored_candidate_that_exists():
    d = _decision(("x", 0.1), ("y", 0.3), ("gone", 0.4))
    assert warm_start_source("nearest", d, {"x", "y"}) == "y"
    assert warm_start_source("fresh", d, {"x", "y"}) is None
    assert warm_start_source("nearest", _decision(), {"x"}) is None


def test_unknown_init_is_a_user_error():
    assert check_init("fresh") == "fresh"
    with pytest.raises(UserError, match="router_init 'warm': use one of fresh, nearest"):
        check_init("warm")


def test_router_strategy_starts_new_adapters_fresh_unless_told_nearest(tmp_path):
    from conftest import FIXTURES
    from test_router_strategy import run

    seq = tmp_path / "seq.yaml"
    seq.write_text(f"name: two\ntasks:\n  - name: toy\n    data: {FIXTURES / 'toy_sentiment.csv'}\n"
                   f"    description: Is the review positive or negative?\n    family: sentiment\n"
                   f"  - name: pairs\n    data: {FIXTURES / 'toy_pairs.jsonl'}\n"
                   f"    description: Do the two phrases mean the same?\n"
                   f"    text_columns: [first, second]\n    label_column: same\n    family: paraphrase\n")
    warm = run(str(seq), tmp_path / "warm", router_init="nearest")
    d = warm.info["router"]["decisions"]
    assert [x["action"] for x in d] == ["new", "new"]
    assert d[0]["init_from"] is None and d[1]["init_from"] == "lora-toy"
    fresh = run(str(seq), tmp_path / "fresh")  # the default
    assert [x["init_from"] for x in fresh.info["router"]["decisions"]] == [None, None]
    # same data and seed: the first task (fresh in both) is learned the same way
    assert warm.matrix[0].tolist() == fresh.matrix[0].tolist()


def test_learner_records_where_a_new_adapter_started(tmp_path, fresh_backbone, toy_task):
    from adaptive_learner.learner import Learner
    from adaptive_learner.tasks import load_file_task
    from adaptive_learner.training import TrainConfig
    from conftest import FIXTURES

    pairs = load_file_task(FIXTURES / "toy_pairs.jsonl", "pairs", "Do the two phrases mean the same?",
                           ["first", "second"], "same", family="paraphrase")
    learner = Learner(tmp_path / "lib", backbone=fresh_backbone,
                      train=TrainConfig(steps=2, batch_size=4, lr=1e-2, max_length=64, early_stop=False), init="nearest")
    assert Learner(tmp_path / "other", backbone=fresh_backbone).init == "fresh"  # the default
    learner.learn(toy_task, eval_limit=4)
    toy_file = (tmp_path / "lib" / "adapters" / "lora-toy" / "adapter_model.safetensors").read_bytes()
    out = learner.learn(pairs, eval_limit=4)
    assert out.action == "new" and out.init_from == "lora-toy"
    hist = json.loads((tmp_path / "lib" / "manifest.json").read_text())["history"]
    assert hist[0]["init_from"] is None and hist[1]["init_from"] == "lora-toy"
    assert (tmp_path / "lib" / "adapters" / "lora-toy" / "adapter_model.safetensors").read_bytes() == toy_file
    with pytest.raises(UserError):
        Learner(tmp_path / "lib2", backbone=fresh_backbone, init="warm")
