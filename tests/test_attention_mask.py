"""The 4D attention mask built once per batch (``scoring.attention_mask``) instead of transformers building
it on every forward: the same logits, loss, gradients, features and head views as with transformers' own
mask, and transformers' mask builder not run where the prepared mask is given."""

import pytest
import torch
import transformers.masking_utils as masking

from adaptive_learner import scoring
from adaptive_learner.features import hidden_features
from adaptive_learner.prompting import encode_examples, left_pad
from adaptive_learner.scoring import attention_mask, choice_logits, tail_logits
from adaptive_learner.training.trainer import label_loss
from test_packing import _assert_same, _moved_adapter, padded_rows

CPU = torch.device("cpu")


@pytest.fixture()
def builder_calls(monkeypatch):
    """How often transformers built a mask through its vmap path."""
    calls = []
    real = masking._vmap_for_bhqkv

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(masking, "_vmap_for_bhqkv", spy)
    return calls


def _both(monkeypatch, params, run):
    """run() with transformers' own mask (the reference), then with the prepared one: outputs, gradients."""
    outs, grads = [], []
    real = scoring._takes_mask
    for own in (False, True):
        monkeypatch.setattr(scoring, "_takes_mask", real if own else (lambda *a: False))
        for p in params.values():
            p.grad = None
        out = run()
        (out if out.dim() == 0 else out.logsumexp(-1).sum()).backward()
        outs.append((out.detach(), None))  # test_packing's shape: (output, extra)
        grads.append({n: p.grad.clone() for n, p in params.items()})
    return outs, grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("share", [True, False])
def test_same_logits_loss_and_gradients_as_transformers_mask(monkeypatch, fresh_backbone, toy_task, attn, share):
    host, params = _moved_adapter(fresh_backbone, attn)
    items, seqs, rows, pad = padded_rows(fresh_backbone, toy_task)
    outs, grads = _both(monkeypatch, params,
                        lambda: choice_logits(host.model, seqs, rows, pad, CPU, share_prefix=share)[0])
    _assert_same(outs, grads)
    outs, grads = _both(monkeypatch, params,
                        lambda: tail_logits(host.model, [s + [5, 6] for s in seqs], pad, CPU, 3,
                                            share_prefix=share).logits)
    _assert_same(outs, grads)
    outs, grads = _both(monkeypatch, params,
                        lambda: label_loss(host.model, items, pad, CPU, share_prefix=share)[0])
    _assert_same(outs, grads)


@pytest.mark.parametrize("share", [True, False])
def test_the_prepared_mask_replaces_transformers_builder(fresh_backbone, toy_task, builder_calls, share):
    host, _ = _moved_adapter(fresh_backbone, "sdpa")
    items = encode_examples(fresh_backbone.tokenizer, toy_task.spec, toy_task.test[:8], 128)
    with torch.no_grad():
        tail = tail_logits(host.model, [it.prompt for it in items], fresh_backbone.tokenizer.pad_token_id, CPU, 1,
                           share_prefix=share)
    assert tail.shared > 0 if share else tail.shared == 0
    assert builder_calls == [], "transformers built a mask although one was given"


def test_the_mask_itself(tiny_backbone):
    enc = left_pad([[1, 2, 3], [4]], 0)
    m = attention_mask(tiny_backbone.model, enc["attention_mask"], shared=2)
    assert m.shape == (2, 1, 3, 5)
    allowed = m[:, 0] == 0
    # row 1: one token after two padding columns; it sees the prefix and itself only
    assert allowed[1, 2].tolist() == [True, True, False, False, True]
    # row 0: causal over the prefix and its three tokens
    assert allowed[0].tolist() == [[True, True, True, False, False], [True, True, True, True, False],
                                   [True, True, True, True, True]]
    full = left_pad([[1, 2], [3, 4]], 0)["attention_mask"]
    assert attention_mask(tiny_backbone.model, full).dim() == 2, "no padding, no prefix: plain causal attention"


def test_models_that_take_no_prepared_mask_keep_the_2d_one(tiny_backbone, monkeypatch):
    enc = left_pad([[1, 2, 3], [4]], 0)
    monkeypatch.setattr(tiny_backbone.model.config, "_attn_implementation", "flash_attention_2")
    m = attention_mask(tiny_backbone.model, enc["attention_mask"], shared=2)
    assert m.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 1]]


def test_features_and_head_views_are_unchanged(monkeypatch, tiny_backbone, toy_task, builder_calls):
    texts = [e.fields["text"] for e in toy_task.test[:8]]
    tok = tiny_backbone.tokenizer
    own = hidden_features(tiny_backbone.model, tok, texts, None, 64)
    assert builder_calls == []
    monkeypatch.setattr(scoring, "_takes_mask", lambda *a: False)
    ref = hidden_features(tiny_backbone.model, tok, texts, None, 64)
    assert builder_calls, "the reference path uses transformers' builder"
    assert abs(own - ref).max() < 1e-4
