"""Replay: buffers deterministic under a seed, mixing into batches, generated examples valid and labelled."""

import json

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.errors import LibraryError, UserError
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks.spec import Example
from adaptive_learner.training import TrainConfig, train_adapter
from adaptive_learner.training.generative import cut_field, generate_examples, template_parts
from adaptive_learner.training.replay import Replay, ReplayBuffer, ReplayConfig




def stream(buf, toy_task, pair_task):
    buf.add(toy_task.spec, toy_task.train)
    buf.add(pair_task.spec, pair_task.train)
    return buf


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_buffer_is_deterministic_under_a_seed(policy, toy_task, pair_task):
    a = stream(ReplayBuffer(10, policy, seed=3), toy_task, pair_task)
    b = stream(ReplayBuffer(10, policy, seed=3), toy_task, pair_task)
    c = stream(ReplayBuffer(10, policy, seed=4), toy_task, pair_task)
    assert a.to_json() == b.to_json()
    assert a.examples != c.examples
    assert len(a.examples) == 10 and a.n_seen == len(toy_task.train) + len(pair_task.train)


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_a_buffer_rebuilt_from_json_continues_exactly(policy, toy_task, pair_task):
    whole = stream(ReplayBuffer(12, policy, seed=0), toy_task, pair_task)
    part = ReplayBuffer(12, policy, seed=0)
    part.add(toy_task.spec, toy_task.train)
    part = ReplayBuffer.from_json(json.loads(json.dumps(part.to_json())))  # what the library stores
    part.add(pair_task.spec, pair_task.train)
    assert part.to_json() == whole.to_json()


def test_reservoir_keeps_a_share_of_every_task(toy_task, pair_task):
    buf = stream(ReplayBuffer(20, "reservoir", seed=0), toy_task, pair_task)
    tasks = [e["task"] for e in buf.examples]
    assert tasks.count("toy") >= 3 and tasks.count("pairs") >= 3


def test_balanced_buffer_evens_out_task_label_classes(toy_task, pair_task):
    # offer a heavily skewed stream: 30 negatives then a few positives
    neg = [e for e in toy_task.train if e.label == 0][:30]
    pos = [e for e in toy_task.train if e.label == 1][:4]
    buf = ReplayBuffer(8, "balanced", seed=0)
    buf.add(toy_task.spec, neg + pos)
    counts = np.bincount([e["label"] for e in buf.examples], minlength=2)
    assert counts.tolist() == [4, 4]
    res = ReplayBuffer(8, "reservoir", seed=0)
    res.add(toy_task.spec, neg + pos)
    assert np.bincount([e["label"] for e in res.examples], minlength=2)[1] < 4


def test_damaged_buffer_files_are_refused(toy_task):
    good = ReplayBuffer(4, seed=0)
    good.add(toy_task.spec, toy_task.train[:4])
    doc = good.to_json()
    with pytest.raises(LibraryError):
        ReplayBuffer.from_json({**doc, "format": "other"})
    bad = json.loads(json.dumps(doc))
    bad["examples"][0]["label"] = 7
    with pytest.raises(LibraryError):
        ReplayBuffer.from_json(bad)
    with pytest.raises(UserError):
        ReplayConfig(ratio=1.5)


def test_mix_replaces_a_fixed_share_of_each_batch_with_earlier_tasks(tiny_backbone, toy_task, pair_task):
    buf = ReplayBuffer(16, seed=0)
    buf.add(pair_task.spec, pair_task.train)
    host = AdapterHost(tiny_backbone)
    rep = Replay(ReplayConfig(buffer_size=16, ratio=0.25, max_length=64), buf, toy_task)
    rep.begin(host, "unused")
    assert len(rep.pool) == 16 and all(it.task == "pairs" for it in rep.pool)
    batch = encode_examples(tiny_backbone.tokenizer, toy_task.spec, toy_task.train[:8], 64)
    mixed = rep.mix(batch, np.random.RandomState(0))
    assert len(mixed) == 8 and [it.task for it in mixed].count("pairs") == 2
    assert mixed[:6] == batch[:6]
    # after training, the task's examples are offered to the buffer
    rep.end(host, "unused", batch)
    assert "toy" in {e["task"] for e in buf.examples} and buf.tasks == ["pairs", "toy"]


def test_replay_changes_training(toy_task, pair_task, fast_train):
    """The same second-task run with and without replay ends at different weights."""
    states = []
    for use in (False, True):
        bb = load_backbone("tiny-random")
        host = AdapterHost(bb)
        host.create("shared", seed=0)
        buf = ReplayBuffer(16, seed=0)
        buf.add(toy_task.spec, toy_task.train)
        regs = [Replay(ReplayConfig(buffer_size=16, ratio=0.5, max_length=64), buf, pair_task)] if use else []
        items = encode_examples(bb.tokenizer, pair_task.spec, pair_task.train, 64)
        train_adapter(host, "shared", items, TrainConfig(**{**fast_train.to_dict(), "steps": 5}), regs)
        states.append(host.state("shared"))
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_template_is_filled_field_by_field(pair_task):
    boolq_like = "Passage: {passage}\nQuestion: {question}?\nAnswer:"
    spec = pair_task.spec.from_dict({**pair_task.spec.to_dict(), "input_fields": ["passage", "question"],
                                     "template": boolq_like})
    assert template_parts(spec) == [("Passage: ", "passage"), ("\nQuestion: ", "question"), ("?\nAnswer:", None)]
    assert cut_field(" is the sky blue? yes\nmore", "?\nAnswer:") == "is the sky blue"
    assert cut_field(" a  long\tpassage\nQuestion: x", "\nQuestion: ") == "a long passage"


@pytest.mark.parametrize("task_name", ["toy", "pairs"])
def test_generated_examples_are_valid_labelled_inputs_of_the_task(task_name, toy_task, pair_task, fresh_backbone):
    task = {"toy": toy_task, "pairs": pair_task}[task_name]
    host = AdapterHost(fresh_backbone)
    host.create("shared", seed=0)
    cfg = ReplayConfig(generate_per_task=6, min_confidence=0.0, max_new_tokens=12, max_length=64)
    made = generate_examples(host, "shared", task.spec, cfg, seed=0)
    assert 0 < len(made) <= 6
    tok = fresh_backbone.tokenizer
    for ex, conf in made:
        assert isinstance(ex, Example) and set(ex.fields) == set(task.spec.input_fields)
        assert all(isinstance(v, str) and v.strip() and "\n" not in v for v in ex.fields.values())
        assert 0 <= ex.label < len(task.spec.label_names)
        task.spec.prompt(ex.fields)  # renders with the task's template
        # labelled by the model: the label is the adapted model's own choice, with that probability
        (it,) = encode_examples(tok, task.spec, [ex], 64)
        with host.using("shared") as m:
            s = score(m, [it], tok.pad_token_id)[0]
        p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        assert int(np.argmax(p)) == ex.label and abs(p[ex.label] - conf) < 1e-4
    # same seed, same examples
    again = generate_examples(host, "shared", task.spec, cfg, seed=0)
    assert [(e.fields, e.label) for e, _ in again] == [(e.fields, e.label) for e, _ in made]


def test_confidence_filter_drops_unsure_examples(toy_task, fresh_backbone):
    host = AdapterHost(fresh_backbone)
    host.create("shared", seed=0)
    base = dict(generate_per_task=6, max_new_tokens=8, max_length=64)
    loose = generate_examples(host, "shared", toy_task.spec, ReplayConfig(min_confidence=0.0, **base), seed=0)
    strict_cut = float(np.median([c for _, c in loose]))
    strict = generate_examples(host, "shared", toy_task.spec, ReplayConfig(min_confidence=strict_cut, **base), seed=0)
    assert all(c >= strict_cut for _, c in strict) and len(strict) <= len(loose)
    assert generate_examples(host, "shared", toy_task.spec, ReplayConfig(min_confidence=1.01, **base), seed=0) == []


def test_generative_replay_feeds_the_pool(toy_task, pair_task, fresh_backbone):
    buf = ReplayBuffer(0, seed=0)  # generated-only: the buffer keeps specs, no real examples
    buf.add(toy_task.spec, [])
    host = AdapterHost(fresh_backbone)
    host.create("shared", seed=0)
    cfg = ReplayConfig(buffer_size=0, source="generated", generate_per_task=4, min_confidence=0.0,
                       max_new_tokens=8, max_length=64)
    rep = Replay(cfg, buf, pair_task)
    rep.begin(host, "shared")
    assert rep.generated and all(t == "toy" for t, _, _ in rep.generated)
    assert len(rep.pool) == len(rep.generated) and all(it.task == "toy" for it in rep.pool)
    rep.end(host, "shared", [])
    assert buf.examples == [] and buf.tasks == ["toy", "pairs"]

