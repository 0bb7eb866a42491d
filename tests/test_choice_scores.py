"""Multi-token labels scored from one forward (``scoring.choice_scores``): each item's prompt once, then all its
labels after it, each seeing the prompt and itself only. The same scores as one sequence per (prompt, label),
with and without an adapter, with gradients; the ``choices`` training objective uses them."""

import numpy as np
import pytest
import torch

from adaptive_learner import scoring
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import choice_scores, score, shared_prefix
from adaptive_learner.tasks.spec import TaskSpec
from adaptive_learner.training.trainer import label_loss

CPU = torch.device("cpu")
# labels a user writes: several share their first words, none is told apart by one token, lengths differ
LABELS = [" asks for a person", " asks for a place", " asks for an amount of money", " asks for a date",
          " asks for a definition of a word", " something else"]


def multi_items(backbone, task, mode="mean", n=6, labels=LABELS):
    spec = TaskSpec.from_dict({**task.spec.to_dict(), "label_names": [f"l{i}" for i in range(len(labels))],
                               "verbalizers": labels, "label_scoring": mode})
    examples = [type(e)(e.fields, i % len(labels)) for i, e in enumerate(task.train[:n])]
    items = encode_examples(backbone.tokenizer, spec, examples, 128)
    assert all(it.normalise == (mode == "mean") for it in items)
    assert max(len(c) for c in items[0].choices) > 1 and len({len(it.prompt) for it in items}) > 1
    return items


def pair_scores(model, items, pad_id):
    """Each (prompt, label) as its own sequence, run whole: what choice_scores must equal."""
    from test_label_scoring import full_loglik

    return np.array([[(np.mean if it.normalise else np.sum)(full_loglik(model, it.prompt, c)) for c in it.choices]
                     for it in items])


@pytest.mark.parametrize("mode", ["mean", "sum"])
@pytest.mark.parametrize("share", [True, False])
def test_packed_choices_score_what_one_sequence_per_label_scores(tiny_backbone, toy_task, mode, share):
    model, pad = tiny_backbone.model, tiny_backbone.tokenizer.pad_token_id
    items = multi_items(tiny_backbone, toy_task, mode)
    with torch.no_grad():
        got, positions = choice_scores(model, items, pad, CPU, share_prefix=share)
    np.testing.assert_allclose(np.array([g.numpy() for g in got]), pair_scores(model, items, pad), atol=1e-4)
    # the prompt runs once per item, not once per label: fewer positions than the pairs' own tokens
    assert positions < sum(len(it.prompt) + len(c) for it in items for c in it.choices) / 2


def test_score_uses_it_with_a_stored_prefix_and_falls_back_to_pairs_where_it_cannot(tiny_backbone, toy_task,
                                                                                  monkeypatch):
    model, pad = tiny_backbone.model, tiny_backbone.tokenizer.pad_token_id
    items = multi_items(tiny_backbone, toy_task, n=12)
    want = pair_scores(model, items, pad)
    prefixes: list = []
    np.testing.assert_allclose(np.array(score(model, items, pad, batch_size=4, prefixes=prefixes)), want, atol=1e-4)
    assert prefixes and prefixes[0].fits([it.prompt for it in items], 1)  # the call's prefix, run once and kept
    assert shared_prefix(model, [it.prompt for it in items], CPU) is not None
    calls = []
    monkeypatch.setattr(scoring, "_decoder_and_head", lambda m: calls.append(m) or None)  # e.g. a wrapped model
    np.testing.assert_allclose(np.array(score(model, items, pad, batch_size=4)), want, atol=1e-4)
    assert calls  # asked, and the pairs path answered


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_choices_with_an_adapter_give_the_pairs_scores_and_gradients(fresh_backbone, toy_task, attn):
    from test_shared_prefix import _moved_adapter

    fresh_backbone.model.config._attn_implementation = attn
    host, params = _moved_adapter(fresh_backbone)
    items = multi_items(fresh_backbone, toy_task)
    pad = fresh_backbone.tokenizer.pad_token_id
    got, _ = choice_scores(host.model, items, pad, CPU)
    loss = torch.stack([-torch.log_softmax(g, -1)[it.label] for g, it in zip(got, items)]).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    # the reference: each (prompt, label) run whole, with gradients
    ref = []
    for it in items:
        row = []
        for c in it.choices:
            logp = torch.log_softmax(host.model(input_ids=torch.tensor([it.prompt + c])).logits[0].float(), -1)
            row.append(torch.stack([logp[len(it.prompt) - 1 + k, t] for k, t in enumerate(c)]).mean())
        ref.append(-torch.log_softmax(torch.stack(row), -1)[it.label])
    torch.stack(ref).mean().backward()
    torch.testing.assert_close(loss.detach(), torch.stack(ref).mean().detach(), rtol=1e-5, atol=1e-5)
    for n, p in params.items():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-6, msg=f"gradient of {n}")
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)


def test_choices_objective_with_multi_token_labels_is_cross_entropy_over_the_label_scores(tiny_backbone,
                                                                                         toy_task):
    model, pad = tiny_backbone.model, tiny_backbone.tokenizer.pad_token_id
    items = multi_items(tiny_backbone, toy_task)
    with torch.no_grad():
        got, tokens, positions = label_loss(model, items, pad, CPU, objective="choices")
        lm = label_loss(model, items, pad, CPU, objective="lm")[0].item()
    ref = pair_scores(model, items, pad)
    want = np.mean([np.logaddexp.reduce(r) - r[it.label] for r, it in zip(ref, items)])
    assert got.item() == pytest.approx(want, abs=1e-4)
    assert lm != pytest.approx(got.item(), abs=1e-3)  # lm: the gold label's tokens over the whole vocabulary
    assert tokens == sum(len(it.prompt) + sum(map(len, it.choices)) for it in items) and positions > 0


def test_many_labels_read_in_slices_of_the_output_layer(tiny_backbone, toy_task, monkeypatch):
    """More read positions than ``OUTPUT_ROWS``: the log-softmax runs a slice at a time, the same scores."""
    model, pad = tiny_backbone.model, tiny_backbone.tokenizer.pad_token_id
    items = multi_items(tiny_backbone, toy_task)
    with torch.no_grad():
        whole = choice_scores(model, items, pad, CPU)[0]
        monkeypatch.setattr(scoring, "OUTPUT_ROWS", 7)
        sliced = choice_scores(model, items, pad, CPU)[0]
    for a, b in zip(whole, sliced):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("objective", ["choices", "lm"])
def test_micro_batches_of_multi_token_labels_give_the_same_update(toy_task, objective):
    """Under choices a row holds the prompt and every label, and the loss averages over items; under lm the gold
    label's tokens: split into micro-batches either way, a batch trains the same weights."""
    from dataclasses import replace

    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.training import TrainConfig, train_adapter
    from adaptive_learner.training.trainer import micro_batches

    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-2, max_length=128, seed=0, early_stop=False, objective=objective)
    states = []
    for budget in (100_000, 1):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=0)
        items = multi_items(bb, toy_task, n=16)
        whole = len(items[0].prompt) + sum(map(len, items[0].choices))
        assert len(micro_batches(items[:1] * 2, 2 * whole - 1, "choices")) == 2  # every label counts in a row
        assert len(micro_batches(items[:1] * 2, 2 * whole - 1, "lm")) == 1
        rep = train_adapter(host, "toy", items, replace(cfg, max_batch_tokens=budget))
        states.append(({n: p.detach().clone() for n, p in host.trainable("toy").items()}, rep.losses))
    torch.testing.assert_close(torch.tensor(states[0][1]), torch.tensor(states[1][1]), rtol=1e-4, atol=1e-5)
    for n in states[0][0]:
        torch.testing.assert_close(states[0][0][n], states[1][0][n], rtol=1e-3, atol=1e-5, msg=n)


def test_packed_choices_on_a_model_with_sliding_window_layers_and_a_logit_cap():
    """Gemma 3 (sliding-window and full attention layers, its final logits soft-capped): the rows are shorter
    than its window, so the prepared mask holds and the scores are the pairs'."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from adaptive_learner.prompting import Encoded

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=64,
                           layer_types=["sliding_attention", "full_attention"], attention_dropout=0.0,
                           final_logit_softcapping=30.0)
    model = Gemma3ForCausalLM(cfg).eval()
    choices = [[40, 41], [40, 42, 43], [44], [45, 41, 46, 47]]
    items = [Encoded([1] + list(range(10, 22)) + [30 + i] * (i + 1), choices, i % 4, "t", normalise=True)
             for i in range(5)]
    with torch.no_grad():
        got, _ = choice_scores(model, items, 0, CPU)
    np.testing.assert_allclose(np.array([g.numpy() for g in got]), pair_scores(model, items, 0), atol=1e-4)


def test_choice_sample_narrows_each_item_to_its_gold_label_and_others_drawn_by_the_run_seed(tiny_backbone, toy_task):
    """``TrainConfig.choice_sample``: an item with more labels than k (one of several tokens) keeps its gold label
    and k - 1 others, in their order, the label index moved with them; the draw follows the given generator;
    single-token label sets and items with k labels or fewer are left as they are."""
    from adaptive_learner.training.trainer import sample_choices

    items = multi_items(tiny_backbone, toy_task, n=12)
    a = sample_choices(items, 3, np.random.RandomState(0))
    b = sample_choices(items, 3, np.random.RandomState(0))
    for it, x, y in zip(items, a, b):
        assert len(x.choices) == 3 and x.choices == y.choices and x.label == y.label
        assert x.choices[x.label] == it.choices[it.label]  # the gold label kept, under its new index
        picked = [it.choices.index(c) for c in x.choices]
        assert picked == sorted(picked)  # the labels' own order
        assert x.prompt == it.prompt and x.normalise == it.normalise
    drawn = {tuple(map(tuple, x.choices)) for x in sample_choices(items * 4, 3, np.random.RandomState(1))}
    assert len(drawn) > len(LABELS)  # other labels each time, not one fixed subset per gold label
    assert sample_choices(items, len(LABELS), np.random.RandomState(0)) == list(items)
    single = [type(it)(it.prompt, [c[:1] for c in it.choices], it.label, it.task) for it in items[:2]]
    assert sample_choices(single, 2, np.random.RandomState(0)) == single


def test_training_with_sampled_labels_is_reproducible_and_as_many_labels_as_there_are_changes_nothing(toy_task):
    """A run with ``choice_sample`` is the same run twice (the draws follow the run's seed); k at least the number
    of labels trains exactly what the full ``choices`` objective trains; k below it trains other weights."""
    from dataclasses import replace

    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.training import TrainConfig, train_adapter

    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, max_length=128, seed=0, early_stop=False)
    runs = {}
    for name, k in (("full", 0), ("k=labels", len(LABELS)), ("k=2", 2), ("k=2 again", 2)):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("toy", seed=0)
        rep = train_adapter(host, "toy", multi_items(bb, toy_task, n=12), replace(cfg, choice_sample=k))
        runs[name] = rep.losses
    assert runs["k=labels"] == pytest.approx(runs["full"], abs=1e-6)
    assert runs["k=2"] == pytest.approx(runs["k=2 again"], abs=1e-6)
    assert runs["k=2"] != pytest.approx(runs["full"], abs=1e-3)
    with pytest.raises(ValueError, match="choice_sample"):
        TrainConfig(choice_sample=1)
