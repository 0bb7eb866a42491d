"""Inputs routed to different tasks are scored by task (prompt prefix shared), with the same scores as
one stream of peft mixed-adapter batches."""

import numpy as np
import torch

from adaptive_learner import scoring
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.inference import score_routed


def _two_adapters(backbone):
    """A host with adapters "a" and "b", their LoRA B matrices moved off zero: each changes the answers,
    differently."""
    host = AdapterHost(backbone)
    for name, seed in (("a", 1), ("b", 2)):
        host.create(name, seed=seed)
        with torch.no_grad():
            for n, p in host.trainable(name).items():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    return host


def test_grouped_by_task_equals_mixed_adapter_batches_and_shares_the_prefix(fresh_backbone, toy_task, monkeypatch):
    host = _two_adapters(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:10], 64)
    adapters = ["a", "b"] * 5
    tasks = ["ta", "tb"] * 5
    shared = []
    real = scoring._run_tail

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        shared.append(out[2])
        return out

    monkeypatch.setattr(scoring, "_run_tail", spy)
    grouped = score_routed(host, items, adapters, tasks, batch_size=8)
    assert any(n > 0 for n in shared)  # the task's prompt ran once per batch
    shared.clear()
    mixed = score_routed(host, items, adapters, tasks, batch_size=8, group=False)
    assert not any(shared)  # mixed-adapter batches share nothing
    for g, m in zip(grouped, mixed):
        np.testing.assert_allclose(g, m, rtol=1e-4, atol=1e-4)
    # and each answer is its own adapter's
    with host.using("a") as model:
        alone = scoring.score(model, items[:1], fresh_backbone.tokenizer.pad_token_id)
    np.testing.assert_allclose(grouped[0], alone[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(grouped[0], score_routed(host, items[:1], ["b"], ["tb"])[0], atol=1e-4)


def test_using_the_active_adapter_switches_nothing_and_changes_no_answer(fresh_backbone, toy_task, monkeypatch):
    host = _two_adapters(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:4], 64)
    pad = fresh_backbone.tokenizer.pad_token_id
    host.activate("a")
    with host.using("b") as model:
        b = scoring.score(model, items, pad)
    assert host.peft.active_adapter == "a", "the adapter active before is active again"
    switches = []
    real = type(host.peft).set_adapter
    monkeypatch.setattr(type(host.peft), "set_adapter", lambda self, *a, **k: switches.append(a) or real(self, *a, **k))
    with host.using("a") as model:
        a = scoring.score(model, items, pad)
    assert switches == [], "already active: peft's switch is not called"
    with host.using("b") as model:
        assert model.active_adapter == "b"
        b2 = scoring.score(model, items, pad)
    assert switches and host.peft.active_adapter == "a"
    for x, y in zip(b, b2):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    assert not all(np.allclose(x, y, atol=1e-4) for x, y in zip(a, b))
