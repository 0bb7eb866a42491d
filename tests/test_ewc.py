"""EWC scoped to one adapter: Fisher coverage, the penalty's shape, its effect on training, stored state."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.errors import LibraryError, UserError
from adaptive_learner.prompting import encode_examples
from adaptive_learner.training import TrainConfig, train_adapter
from adaptive_learner.training.ewc import EWC, EWCConfig, estimate_fisher, local_name, portable_name


def items_of(backbone, task, rows):
    return encode_examples(backbone.tokenizer, task.spec, rows, 64)


@pytest.fixture()
def trained(toy_task, fast_train):
    """A host with two adapters; 'a' trained on the toy task and holding a Fisher after it."""
    bb = load_backbone("tiny-random")
    host = AdapterHost(bb)
    host.create("other", seed=5)
    host.create("first", seed=1)
    items = items_of(bb, toy_task, toy_task.train)
    ewc = EWC(EWCConfig(strength=1.0, samples=16))
    train_adapter(host, "first", items, fast_train, [ewc])
    return host, items, ewc


def test_fisher_covers_the_trained_adapters_lora_parameters_only(trained):
    host, items, ewc = trained
    fisher = estimate_fisher(host, "first", items[:8])
    assert set(fisher) == set(host.trainable("first"))
    assert all(".lora_" in n and ".first." in n for n in fisher)
    assert not any(".other." in n for n in fisher)  # the other adapter is outside it
    n_model = sum(1 for _ in host.peft.named_parameters())
    assert len(fisher) < n_model  # and so is the backbone
    assert all(torch.all(f >= 0) for f in fisher.values())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    assert all(host.peft.get_parameter(n).grad is None for n in fisher)  # gradients were cleared
    # the stored state carries the same parameters under adapter-independent names
    stored = [k for k in ewc.to_tensors() if not k.startswith("__")]
    assert sorted(stored) == sorted(portable_name(n, "first") for n in fisher)
    assert all(".first." not in k for k in stored)


def test_portable_names_round_trip():
    n = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.my-adapter.weight"
    p = portable_name(n, "my-adapter")
    assert p == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert local_name(p, "my-adapter") == n


def test_penalty_is_zero_at_the_anchor_and_grows_quadratically_with_drift(trained):
    host, _, ewc = trained
    ewc.begin(host, "first")
    params = host.trainable("first")
    assert float(ewc.penalty(params).detach()) == 0.0
    anchor = host.state("first")
    direction = {n: torch.randn_like(p) for n, p in params.items()}
    values = []
    for eps in (0.01, 0.02, 0.04):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(anchor[n] + eps * direction[n])
        values.append(float(ewc.penalty(params).detach()))
    assert 0 < values[0] < values[1] < values[2]
    np.testing.assert_allclose(values[1] / values[0], 4.0, rtol=1e-3)
    # the gain scales the strength for one task, linearly
    host.load_state("first", anchor)
    boosted = EWC(EWCConfig(strength=1.0, gain=3.0), ewc.fisher, ewc.tasks)
    boosted.begin(host, "first")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(anchor[n] + 0.04 * direction[n])
    np.testing.assert_allclose(float(boosted.penalty(params).detach()), 3 * values[2], rtol=1e-5)


def test_no_penalty_before_the_adapters_first_task(fresh_backbone):
    host = AdapterHost(fresh_backbone)
    host.create("first")
    ewc = EWC()
    ewc.begin(host, "first")
    assert ewc.penalty(host.trainable("first")) is None and ewc.to_tensors() == {}


def test_ewc_changes_the_trained_weights_and_holds_them_near_the_anchor(trained, fast_train):
    """Second task from the same start, with and without EWC: different weights, less Fisher-weighted drift."""
    host, items, ewc = trained
    start = host.state("first")
    flipped = [type(it)(it.prompt, it.choices, 1 - it.label, "flipped") for it in items]  # a conflicting task
    finals = {}
    for strength in (0.0, 1000.0):
        host.load_state("first", start)
        reg = EWC(EWCConfig(strength=strength), ewc.fisher, ewc.tasks)
        train_adapter(host, "first", flipped, TrainConfig(**{**fast_train.to_dict(), "steps": 15}), [reg])
        finals[strength] = host.state("first")
    assert any(not torch.equal(finals[0.0][n], finals[1000.0][n]) for n in start)

    def drift(state):
        return sum(float((ewc.fisher[portable_name(n, "first")] * (state[n] - start[n]) ** 2).sum()) for n in start)

    assert drift(finals[1000.0]) < 0.5 * drift(finals[0.0])


def test_online_accumulation_decays_the_old_fisher(trained, toy_task):
    host, items, ewc = trained
    cfg = EWCConfig(decay=0.5, samples=8, normalise=False)
    acc = EWC(cfg)
    acc.end(host, "first", items)
    first = {k: v.clone() for k, v in acc.fisher.items()}
    acc.end(host, "first", items[::-1])
    second = EWC(EWCConfig(decay=0.5, samples=8, normalise=False, seed=1))  # the sample the 2nd task drew
    second.end(host, "first", items[::-1])
    assert acc.tasks == 2
    for k in first:
        torch.testing.assert_close(acc.fisher[k], 0.5 * first[k] + second.fisher[k])


def test_sampled_labels_give_a_different_deterministic_fisher(trained):
    host, items, _ = trained
    true = estimate_fisher(host, "first", items[:12], labels="true", seed=0)
    s1 = estimate_fisher(host, "first", items[:12], labels="sampled", seed=0)
    s2 = estimate_fisher(host, "first", items[:12], labels="sampled", seed=0)
    assert set(s1) == set(true)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.allclose(s1[k], true[k]) for k in s1)


def test_state_round_trips_through_safetensors(trained, tmp_path):
    host, _, ewc = trained
    save_file(ewc.to_tensors(), str(tmp_path / "ewc.safetensors"))
    back = EWC.from_tensors(EWCConfig(), load_file(str(tmp_path / "ewc.safetensors")))
    assert back.tasks == ewc.tasks == 1
    assert all(torch.equal(back.fisher[k], ewc.fisher[k]) for k in ewc.fisher)


def test_a_fisher_of_another_adapter_shape_is_refused(trained):
    host, _, ewc = trained
    broken = dict(ewc.fisher)
    broken.pop(next(iter(broken)))
    with pytest.raises(LibraryError, match="does not match"):
        EWC(EWCConfig(), broken, 1).begin(host, "first")


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        EWCConfig(labels="guess")
    with pytest.raises(UserError):
        EWCConfig(decay=1.5)
