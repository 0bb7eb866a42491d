"""Scoring, training and adapter saving on the tiny random backbone."""

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import BASE, AdapterHost
from adaptive_learner.prompting import encode_examples, left_pad
from adaptive_learner.scoring import score
from adaptive_learner.training import Regulariser, TrainConfig, train_adapter


def reference_scores(model, items):
    """One example and one label at a time, full logits: the straightforward way."""
    out = []
    with torch.no_grad():
        for it in items:
            row = []
            for choice in it.choices:
                ids = torch.tensor([it.prompt + choice])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                row.append(sum(logp[len(it.prompt) - 1 + k, t].item() for k, t in enumerate(choice)))
            out.append(np.array(row))
    return out


@pytest.mark.parametrize("verbalizers", [["N", "P"], [" negative", " positive"]], ids=["single-token", "multi-token"])
def test_batched_scoring_matches_one_at_a_time(tiny_backbone, toy_task, verbalizers):
    # summed scoring: every token of a multi-token verbalizer is scored
    spec = toy_task.spec.__class__.from_dict({**toy_task.spec.to_dict(), "verbalizers": verbalizers,
                                              "label_scoring": "sum"})
    items = encode_examples(tiny_backbone.tokenizer, spec, toy_task.test[:6], 64)
    got = score(tiny_backbone.model, items, tiny_backbone.tokenizer.pad_token_id, batch_size=4)
    want = reference_scores(tiny_backbone.model, items)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_left_pad_positions_start_at_zero():
    b = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_training_lowers_the_label_loss_and_only_touches_the_adapter(fresh_backbone, toy_task, fast_train):
    host = AdapterHost(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64)
    base_before = {n: p.clone() for n, p in fresh_backbone.model.named_parameters() if "lora_" not in n}
    host.create("toy")
    rep = train_adapter(host, "toy", items, fast_train)
    assert rep.steps == fast_train.steps and np.mean(rep.losses[-5:]) < np.mean(rep.losses[:5]) - 0.05
    for n, p in host.peft.named_parameters():
        if "lora_" not in n:
            key = n.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base_before[key]), f"backbone weight {n} changed"
            assert not p.requires_grad


def test_training_is_reproducible_under_a_seed(toy_task, fast_train):
    from adaptive_learner.backbone import load_backbone

    states = []
    for _ in range(2):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=3)
        train_adapter(host, "toy", encode_examples(bb.tokenizer, toy_task.spec, toy_task.train, 64), fast_train)
        states.append(host.state("toy"))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


class CountingRegulariser(Regulariser):
    """Records hook calls and adds a penalty pulling LoRA weights to zero."""

    def __init__(self, strength):
        self.calls = {"begin": 0, "mix": 0, "penalty": 0, "end": 0}
        self.strength = strength

    def begin(self, host, adapter):
        self.calls["begin"] += 1

    def mix(self, batch, rng):
        self.calls["mix"] += 1
        return batch

    def penalty(self, params):
        self.calls["penalty"] += 1
        return self.strength * sum((p ** 2).sum() for p in params.values())

    def end(self, host, adapter, items):
        self.calls["end"] += 1


def test_regulariser_hooks_are_called_and_change_training(toy_task, fast_train):
    from adaptive_learner.backbone import load_backbone

    norms = []
    for strength in (0.0, 10.0):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=1)
        reg = CountingRegulariser(strength)
        train_adapter(host, "toy", encode_examples(bb.tokenizer, toy_task.spec, toy_task.train, 64), fast_train, [reg])
        assert reg.calls == {"begin": 1, "mix": fast_train.steps, "penalty": fast_train.steps, "end": 1}
        norms.append(sum(float((p ** 2).sum()) for p in host.trainable("toy").values()))
    assert norms[1] < norms[0]


def test_saved_adapter_loads_in_plain_peft(fresh_backbone, toy_task, fast_train, tmp_path):
    from peft import PeftModel

    from adaptive_learner.backbone import load_backbone

    host = AdapterHost(fresh_backbone)
    host.create("toy")
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:5], 64)
    train_adapter(host, "toy", encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64), fast_train)
    host.save("toy", tmp_path / "toy")
    with host.using("toy") as m:
        ours = score(m, items, 0)
    plain = PeftModel.from_pretrained(load_backbone("tiny-random").model, str(tmp_path / "toy"))
    theirs = score(plain, items, 0)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_mixed_adapter_batch_matches_per_adapter_scoring(fresh_backbone, toy_task, fast_train):
    host = AdapterHost(fresh_backbone)
    tok = fresh_backbone.tokenizer
    train = encode_examples(tok, toy_task.spec, toy_task.train, 64)
    for name, seed in (("a", 0), ("b", 1)):
        host.create(name, seed=seed)
        train_adapter(host, name, train, TrainConfig(**{**fast_train.to_dict(), "seed": seed, "steps": 5}))
    items = encode_examples(tok, toy_task.spec, toy_task.test[:6], 64)
    names = ["a", "b", BASE, "a", "b", BASE]
    mixed = score(host.model, items, 0, adapter_names=names)
    for it, name, got in zip(items, names, mixed):
        with host.using(name) as m:
            np.testing.assert_allclose(got, score(m, [it], 0)[0], rtol=1e-4, atol=1e-4)


def test_lora_on_the_top_layers_only_trains_those_and_loads_in_plain_peft(fresh_backbone, toy_task, fast_train,
                                                                          tmp_path):
    from peft import PeftModel

    from adaptive_learner.adapters import LoraSettings
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.errors import UserError

    n = fresh_backbone.model.config.num_hidden_layers
    assert n >= 2
    host = AdapterHost(fresh_backbone, LoraSettings(layers=1))
    host.create("top")
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in host.trainable("top")}
    assert layers == {n - 1}
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train, 64)
    before = {k: v.clone() for k, v in host.trainable("top").items()}
    rep = train_adapter(host, "top", items, fast_train)
    assert np.mean(rep.losses[-5:]) < np.mean(rep.losses[:5]) - 0.05
    assert any(not torch.equal(v, before[k]) for k, v in host.trainable("top").items() if "lora_B" in k)
    host.save("top", tmp_path / "top")
    test = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:5], 64)
    with host.using("top") as m:
        ours = score(m, test, 0)
    plain = PeftModel.from_pretrained(load_backbone("tiny-random").model, str(tmp_path / "top"))
    for a, b in zip(ours, score(plain, test, 0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for bad in (0, n + 1):
        with pytest.raises(UserError, match="between 1 and"):
            AdapterHost(load_backbone("tiny-random"), LoraSettings(layers=bad)).create("bad")


def test_run_identity_of_stored_runs_is_unchanged_by_the_lora_layers_setting():
    from dataclasses import asdict

    from adaptive_learner.adapters import LoraSettings
    from adaptive_learner.evaluation.config import RunConfig, run_identity

    stored = RunConfig().to_json()
    stored["lora"].pop("layers")  # a run stored before the setting existed
    assert run_identity(stored) == RunConfig().identity()
    assert RunConfig(lora=LoraSettings(layers=4)).identity() != RunConfig().identity()
    assert "layers" in asdict(LoraSettings())


def test_lora_plus_trains_the_b_matrices_at_the_ratio_times_the_rate(toy_task, fast_train):
    """lora_plus_ratio r: one AdamW step from peft's init (B = 0, so only B has a gradient) moves every B
    matrix r times as far as plain LoRA's step does; at r = 1 the optimizer is today's, one group."""
    from dataclasses import replace

    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.training.trainer import param_groups

    moved = {}
    for ratio in (1.0, 16.0):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=2)
        cfg = replace(fast_train, steps=1, warmup_steps=0, lora_plus_ratio=ratio)
        groups = param_groups(host.trainable("toy"), cfg)
        assert len(groups) == (1 if ratio == 1.0 else 2)
        train_adapter(host, "toy", encode_examples(bb.tokenizer, toy_task.spec, toy_task.train, 64), cfg)
        moved[ratio] = {n: p.detach().abs().max().item() for n, p in host.trainable("toy").items() if "lora_B" in n}
    assert moved[1.0] and all(moved[1.0][n] > 0 for n in moved[1.0])
    assert all(moved[16.0][n] == pytest.approx(16 * moved[1.0][n], rel=1e-3) for n in moved[1.0])
    with pytest.raises(ValueError, match="lora_plus_ratio"):
        TrainConfig(lora_plus_ratio=0)
