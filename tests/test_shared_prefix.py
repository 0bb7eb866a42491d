"""The prompt prefix shared by a batch runs once: same logits, same loss, same gradients as running it per row."""

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import MIN_SHARED_PREFIX, choice_logits, common_prefix_len, tail_logits
from adaptive_learner.training.trainer import label_loss


def _moved_adapter(backbone):
    """A host with adapter "toy" active, its LoRA B matrices moved off zero so the adapter changes
    the prefix's keys and values too; returns it and the adapter's parameters."""
    host = AdapterHost(backbone)
    host.create("toy", seed=1)
    host.activate("toy")
    params = host.trainable("toy")
    with torch.no_grad():
        for name, p in params.items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return host, params


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[1, 2], [3, 2]]) == 0
    assert common_prefix_len([[7, 8, 9]]) == 3


def test_shared_prefix_gives_the_same_logits(tiny_backbone, toy_task):
    items = encode_examples(tiny_backbone.tokenizer, toy_task.spec, toy_task.test[:6], 64)
    seqs = [it.prompt + it.choices[it.label] for it in items]
    pad = tiny_backbone.tokenizer.pad_token_id
    with torch.no_grad():
        shared = tail_logits(tiny_backbone.model, seqs, pad, torch.device("cpu"), 3)
        whole = tail_logits(tiny_backbone.model, seqs, pad, torch.device("cpu"), 3, share_prefix=False)
    assert shared.shared >= MIN_SHARED_PREFIX, "the task's prompts share their description: the prefix must be used"
    assert whole.shared == 0
    assert shared.positions < whole.positions
    torch.testing.assert_close(shared.logits, whole.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(shared.input_ids[:, -3:], whole.input_ids[:, -3:])


def test_shared_prefix_gives_the_same_loss_and_gradients(fresh_backbone, toy_task):
    host, params = _moved_adapter(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train[:8], 64)
    grads = []
    losses = []
    for share in (True, False):
        for p in params.values():
            p.grad = None
        loss, tokens, positions = label_loss(host.model, items, fresh_backbone.tokenizer.pad_token_id,
                                             torch.device("cpu"), share_prefix=share)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in params.items()})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5, msg=f"gradient of {n}")
    assert any(g.abs().sum() > 0 for n, g in grads[0].items() if "lora_A" in n)


def test_mixed_adapter_batches_are_not_shared(fresh_backbone, toy_task):
    host = AdapterHost(fresh_backbone)
    host.create("toy", seed=1)
    host.model.eval()
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:4], 64)
    seqs = [it.prompt for it in items]
    with torch.no_grad():
        tail = tail_logits(host.model, seqs, fresh_backbone.tokenizer.pad_token_id, torch.device("cpu"), 1,
                           adapter_names=["toy", "__base__", "toy", "__base__"])
    assert tail.shared == 0


def test_sliding_window_models_share_only_within_the_window():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    seqs = [[1] + list(range(10, 22)) + [30 + i] * (i + 2) for i in range(4)]
    for window, expect_shared in ((64, True), (6, False)):
        cfg = Gemma3TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                               layer_types=["sliding_attention"] * 3 + ["full_attention"])
        model = Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():
            tail = tail_logits(model, seqs, 0, torch.device("cpu"), 2)
            for i, s in enumerate(seqs):
                want = model(input_ids=torch.tensor([s])).logits[0, -2:]
                torch.testing.assert_close(tail.logits[i], want, rtol=1e-4, atol=1e-4)
        assert (tail.shared > 0) == expect_shared


def test_micro_batches_give_the_same_update(toy_task):
    """A batch split into micro-batches (to bound activation memory) trains the same weights."""
    from dataclasses import replace

    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.training import TrainConfig, train_adapter
    from adaptive_learner.training.trainer import micro_batches

    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-2, max_length=64, seed=0, early_stop=False)
    states = []
    for budget in (100_000, 1):  # one forward per batch; one forward per example
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=0)
        items = encode_examples(bb.tokenizer, toy_task.spec, toy_task.train, 64)
        if budget == 1:
            assert len(micro_batches(items[:8], budget)) == 8
        rep = train_adapter(host, "toy", items, replace(cfg, max_batch_tokens=budget))
        states.append(({n: p.detach().clone() for n, p in host.trainable("toy").items()}, rep.losses))
    np_losses = [s[1] for s in states]
    torch.testing.assert_close(torch.tensor(np_losses[0]), torch.tensor(np_losses[1]), rtol=1e-4, atol=1e-5)
    for n in states[0][0]:
        torch.testing.assert_close(states[0][0][n], states[1][0][n], rtol=1e-3, atol=1e-5, msg=n)


def test_a_model_that_makes_no_cache_in_training_mode_still_shares_its_prefix():
    """Gemma 3 creates no key/value cache by itself while training; the shared prefix brings its own."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    seqs = [[1] + list(range(10, 22)) + [30 + i] * (i + 2) for i in range(4)]
    cfg = Gemma3TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=64,
                           layer_types=["sliding_attention", "full_attention"], attention_dropout=0.0)
    model = Gemma3ForCausalLM(cfg).train()
    tail = tail_logits(model, seqs, 0, torch.device("cpu"), 2)
    tail.logits.sum().backward()
    assert tail.shared > 0
    for i, s in enumerate(seqs):
        torch.testing.assert_close(tail.logits[i], model(input_ids=torch.tensor([s])).logits[0, -2:],
                                   rtol=1e-4, atol=1e-4)


def test_choice_logits_equal_the_full_output_layer(fresh_backbone, toy_task):
    """The training loss applies the output layer to the choice tokens' rows only: the same logits and
    gradients as taking those entries of the full-vocabulary logits."""
    host, params = _moved_adapter(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train[:8], 64)
    seqs = [it.prompt for it in items]
    rows = [[c[0] for c in it.choices] for it in items]
    pad = fresh_backbone.tokenizer.pad_token_id
    outs, grads = [], []
    for fast in (True, False):
        for p in params.values():
            p.grad = None
        if fast:
            logits, _ = choice_logits(host.model, seqs, rows, pad, torch.device("cpu"))
        else:
            full = tail_logits(host.model, seqs, pad, torch.device("cpu"), 1).logits[:, -1, :]
            logits = full.gather(1, torch.as_tensor(rows))
        logits.logsumexp(-1).sum().backward()
        outs.append(logits.detach())
        grads.append({n: p.grad.clone() for n, p in params.items()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=f"gradient of {n}")


@pytest.mark.parametrize("verbalizers", [["N", "P"], [" negative", " positive"]], ids=["single-token", "multi-token"])
def test_one_prefix_run_serves_every_batch_of_a_score_call(fresh_backbone, toy_task, monkeypatch, verbalizers):
    """score() runs the prefix all its items share once, not once per batch, with the same scores as
    running every (prompt, label) whole."""
    from adaptive_learner import scoring
    from adaptive_learner.tasks.spec import TaskSpec

    host, _ = _moved_adapter(fresh_backbone)
    host.model.eval()
    spec = TaskSpec.from_dict({**toy_task.spec.to_dict(), "verbalizers": verbalizers, "label_scoring": "sum"})
    items = encode_examples(fresh_backbone.tokenizer, spec, toy_task.test[:10], 64)
    runs = []
    real = scoring._prefix_cache
    monkeypatch.setattr(scoring, "_prefix_cache", lambda *a, **k: runs.append(a[1]) or real(*a, **k))
    got = scoring.score(host.model, items, fresh_backbone.tokenizer.pad_token_id, batch_size=3)  # 4 batches
    assert len(runs) == 1 and len(runs[0]) >= MIN_SHARED_PREFIX
    with torch.no_grad():
        for it, g in zip(items, got):
            want = []
            for c in it.choices:
                logp = torch.log_softmax(host.model(input_ids=torch.tensor([it.prompt + c])).logits[0].float(), -1)
                want.append(sum(logp[len(it.prompt) - 1 + k, t].item() for k, t in enumerate(c)))
            torch.testing.assert_close(torch.tensor(g, dtype=torch.float64), torch.tensor(want, dtype=torch.float64),
                                       rtol=1e-4, atol=1e-4)


def test_a_shared_prefix_is_used_only_where_every_sequence_starts_with_it(tiny_backbone):
    from adaptive_learner.scoring import shared_prefix

    seqs = [list(range(1, 12)) + [20 + i] * (i + 1) for i in range(3)]
    prefix = shared_prefix(tiny_backbone.model, seqs, torch.device("cpu"))
    assert prefix is not None and prefix.ids == tuple(range(1, 12))
    assert prefix.fits(seqs, 1)
    assert not prefix.fits([list(range(2, 14))], 1)  # does not start with it
    assert not prefix.fits([list(range(1, 12))], 1)  # nothing left after it
    assert shared_prefix(tiny_backbone.model, [[1, 2, 3, 4], [1, 2, 3, 5]], torch.device("cpu")) is None  # too short


def test_the_scoring_batch_follows_the_device(tiny_backbone, toy_task, monkeypatch):
    from adaptive_learner import scoring

    assert scoring.batch_for("cpu") == scoring.BATCH and scoring.batch_for(torch.device("cpu")) == scoring.BATCH
    assert scoring.batch_for("cuda") == scoring.batch_for("cuda:1") == scoring.GPU_BATCH
    seen = []
    real = scoring.length_batches
    monkeypatch.setattr(scoring, "length_batches", lambda lengths, size: seen.append(size) or real(lengths, size))
    items = encode_examples(tiny_backbone.tokenizer, toy_task.spec, toy_task.test[:7], 64)
    pad = tiny_backbone.tokenizer.pad_token_id
    default = scoring.score(tiny_backbone.model, items, pad)
    by_three = scoring.score(tiny_backbone.model, items, pad, 3)
    assert seen == [scoring.BATCH, 3]  # the model is on the CPU
    for a, b in zip(default, by_three):  # the batch changes padding only, never a score
        assert abs(a - b).max() < 1e-4


def test_a_kept_prefix_serves_later_calls_with_the_same_scores(fresh_backbone, toy_task, monkeypatch):
    """score(prefixes=store): the prefix runs in the first call only, later calls (a single batch, one item)
    use it, and every score equals a call without the store."""
    from adaptive_learner import scoring

    host, _ = _moved_adapter(fresh_backbone)
    host.model.eval()
    pad = fresh_backbone.tokenizer.pad_token_id
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:9], 64)
    runs = []
    real = scoring._prefix_cache
    monkeypatch.setattr(scoring, "_prefix_cache", lambda *a, **k: runs.append(1) or real(*a, **k))
    store: list = []
    first = scoring.score(host.model, items[:4], pad, prefixes=store)
    assert len(runs) == 1 and len(store) == 1
    later = scoring.score(host.model, items[4:8], pad, prefixes=store) + scoring.score(host.model, items[8:], pad,
                                                                                       prefixes=store)
    assert len(runs) == 1, "the kept prefix ran again"
    runs.clear()
    plain = scoring.score(host.model, items, pad)
    for got, want in zip(first + later, plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    spec = toy_task.spec.__class__.from_dict(
        {**toy_task.spec.to_dict(), "description": "Something else entirely: is this review glowing?"})
    other = encode_examples(fresh_backbone.tokenizer, spec, toy_task.test[:4], 64)
    scoring.score(host.model, other, pad, prefixes=store)
    assert runs and len(store) == 2, "prompts that do not start with a kept prefix get their own"


def test_predict_keeps_prefixes_until_the_adapter_changes(tmp_path, fresh_backbone, toy_task, fast_train, monkeypatch):
    from dataclasses import replace

    from adaptive_learner import scoring
    from adaptive_learner.learner import Learner

    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=replace(fast_train, head=False))
    learner.learn(toy_task, force_new=True, eval_limit=8)
    texts = [e.fields["text"] for e in toy_task.test[:6]]
    runs = []
    real = scoring._prefix_cache
    monkeypatch.setattr(scoring, "_prefix_cache", lambda *a, **k: runs.append(1) or real(*a, **k))
    a = learner.predict(texts, toy_task.name)
    n = len(runs)
    assert n >= 1
    assert [p.label for p in learner.predict(texts, toy_task.name)] == [p.label for p in a]
    routed = learner.predict(texts, abstain=False)
    assert len(runs) == n, "the task's prefix, given or routed, ran again"
    assert [p.label for p in routed] == [p.label for p in a]
    # learning again changes the adapter: its kept prefixes go with the old weights
    learner.learn(toy_task, reuse=learner.library.adapter_of(toy_task.name), eval_limit=8)
    runs.clear()
    b = learner.predict(texts, toy_task.name)
    assert runs, "a prefix of the old weights served the new ones"
    learner._prefixes.clear()
    want = learner.predict(texts, toy_task.name)
    np.testing.assert_allclose([p.confidence for p in b], [p.confidence for p in want], rtol=1e-4, atol=1e-5)


def test_predict_keeps_the_prefixes_of_the_adapters_used_last():
    from adaptive_learner.learner import PREFIX_ADAPTERS, Learner

    learner = Learner.__new__(Learner)  # the store alone, no model
    learner._prefixes = {}
    for k in range(PREFIX_ADAPTERS + 4):
        learner._prefix_store(f"a{k}").append(k)
    learner._prefix_store("a5")  # used again: kept
    assert len(learner._prefixes) == PREFIX_ADAPTERS
    assert "a0" not in learner._prefixes and learner._prefixes["a5"] == [5]
    assert list(learner._prefixes)[-1] == "a5"
