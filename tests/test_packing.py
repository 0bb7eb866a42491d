"""Packing (``pack=True``): a batch's rows after the shared prefix run as one padding-free sequence under a
block-diagonal causal mask: the same logits, loss, gradients and training run as the padded batch.

Most tests pack every batch (``PACK_MIN_SAVING`` set to 0): the toy task's rows are padded only a little."""

from dataclasses import replace

import pytest
import torch

from adaptive_learner import scoring
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import choice_logits, tail_logits
from adaptive_learner.training.trainer import label_loss

CPU = torch.device("cpu")


@pytest.fixture()
def always_pack(monkeypatch):
    monkeypatch.setattr(scoring, "PACK_MIN_SAVING", 0.0)


def _moved_adapter(backbone, attn="sdpa"):
    """test_shared_prefix's moved adapter, under the attention implementation ``attn``."""
    from test_shared_prefix import _moved_adapter as moved

    backbone.model.config._attn_implementation = attn
    return moved(backbone)


def padded_rows(backbone, task):
    """Eight training examples of ``task`` encoded: items, prompts (of different lengths: a padded batch has
    padding), each item's first choice tokens, the pad id."""
    items = encode_examples(backbone.tokenizer, task.spec, task.train[:8], 128)
    seqs = [it.prompt for it in items]
    assert len({len(s) for s in seqs}) > 2, "rows of different lengths: the padded batch has padding"
    return items, seqs, [[c[0] for c in it.choices] for it in items], backbone.tokenizer.pad_token_id


def _both(params, run):
    """run(pack) for pack in (False, True): its outputs (detached) and the adapter's gradients."""
    outs, grads = [], []
    for pack in (False, True):
        for p in params.values():
            p.grad = None
        out, extra = run(pack)
        out.float().sum().backward() if out.dim() == 0 else out.logsumexp(-1).sum().backward()
        outs.append((out.detach(), extra))
        grads.append({n: p.grad.clone() for n, p in params.items()})
    return outs, grads


def _assert_same(outs, grads):
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=f"gradient of {n}")
    assert any(g.abs().sum() > 0 for n, g in grads[1].items() if "lora_A" in n)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("share", [True, False])
def test_packed_choice_logits_and_gradients(always_pack, fresh_backbone, toy_task, attn, share):
    host, params = _moved_adapter(fresh_backbone, attn)
    items, seqs, rows, pad = padded_rows(fresh_backbone, toy_task)
    outs, grads = _both(params, lambda pack: choice_logits(host.model, seqs, rows, pad, CPU, share_prefix=share,
                                                           pack=pack))
    _assert_same(outs, grads)
    assert outs[1][1] < outs[0][1], "packing computes no padding"


@pytest.mark.parametrize("share", [True, False])
def test_packed_tail_logits_at_several_positions(always_pack, fresh_backbone, toy_task, share):
    """The ``lm`` objective's path: logits at the last ``keep`` positions of every row."""
    host, params = _moved_adapter(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train[:8], 128)
    seqs = [it.prompt + it.choices[it.label] for it in items]
    pad = fresh_backbone.tokenizer.pad_token_id

    def run(pack):
        tail = tail_logits(host.model, seqs, pad, CPU, 3, share_prefix=share, pack=pack)
        return tail.logits, tail.positions

    outs, grads = _both(params, run)
    _assert_same(outs, grads)


@pytest.mark.parametrize("objective", ["choices", "lm"])
@pytest.mark.parametrize("share", [True, False])
def test_packed_loss_and_gradients(always_pack, fresh_backbone, toy_task, objective, share):
    host, params = _moved_adapter(fresh_backbone)
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.train[:8], 128)
    pad = fresh_backbone.tokenizer.pad_token_id

    def run(pack):
        loss, tokens, positions = label_loss(host.model, items, pad, CPU, share_prefix=share, objective=objective,
                                             pack=pack)
        return loss, (tokens, positions)

    outs, grads = _both(params, run)
    _assert_same(outs, grads)
    assert outs[0][1][0] == outs[1][1][0]  # the same example tokens


def test_mixed_adapter_batches_are_not_packed(always_pack, fresh_backbone, toy_task):
    host = AdapterHost(fresh_backbone)
    host.create("toy", seed=1)
    host.model.eval()
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:4], 128)
    seqs = [it.prompt for it in items]
    names = ["toy", "__base__", "toy", "__base__"]
    pad = fresh_backbone.tokenizer.pad_token_id
    with torch.no_grad():
        packed = tail_logits(host.model, seqs, pad, CPU, 1, adapter_names=names, pack=True)
        padded = tail_logits(host.model, seqs, pad, CPU, 1, adapter_names=names)
    assert packed.positions == padded.positions
    torch.testing.assert_close(packed.logits, padded.logits)


def test_sliding_window_models_pack_only_within_the_window(always_pack):
    """A custom mask replaces the sliding window's: rows longer than the window run padded instead."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    seqs = [[1] + list(range(10, 22)) + [30 + i] * (i + 2) for i in range(4)]
    for window in (64, 6):
        cfg = Gemma3TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                               layer_types=["sliding_attention"] * 3 + ["full_attention"])
        model = Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():
            tail = tail_logits(model, seqs, 0, CPU, 2, pack=True)
            padded = tail_logits(model, seqs, 0, CPU, 2)
            for i, s in enumerate(seqs):
                want = model(input_ids=torch.tensor([s])).logits[0, -2:]
                torch.testing.assert_close(tail.logits[i], want, rtol=1e-4, atol=1e-4)
        assert (tail.positions < padded.positions) == (window == 64)


def test_packed_training_gives_the_same_run(always_pack, toy_task):
    """A short train_adapter run: the same loss at every step and the same weights."""
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.training import TrainConfig, train_adapter

    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-2, max_length=128, seed=0, early_stop=False)
    runs = []
    for pack in (False, True):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=0)
        items = encode_examples(bb.tokenizer, toy_task.spec, toy_task.train, 128)
        rep = train_adapter(host, "toy", items, replace(cfg, pack=pack))
        runs.append(({n: p.detach().clone() for n, p in host.trainable("toy").items()}, rep))
    (w0, r0), (w1, r1) = runs
    torch.testing.assert_close(torch.tensor(r1.losses), torch.tensor(r0.losses), rtol=1e-5, atol=1e-5)
    assert r1.tokens == r0.tokens and r1.positions < r0.positions
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], rtol=1e-4, atol=1e-5, msg=n)


def test_rows_are_packed_only_when_that_saves_enough_padding(tiny_backbone):
    """By default a batch is packed only where its padding is at least ``PACK_MIN_SAVING`` of the positions."""
    pad = tiny_backbone.tokenizer.pad_token_id
    head = list(range(10, 30))  # a shared prefix
    even = [head + [40 + i] * 10 for i in range(4)]  # no padding after the prefix
    uneven = [head + [40 + i] * (2 + 8 * i) for i in range(4)]  # padding: 48 of 104 positions
    with torch.no_grad():
        for seqs, packed in ((even, False), (uneven, True)):
            a = tail_logits(tiny_backbone.model, seqs, pad, CPU, 2, pack=True)
            b = tail_logits(tiny_backbone.model, seqs, pad, CPU, 2)
            assert (a.positions < b.positions) == packed
            torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
