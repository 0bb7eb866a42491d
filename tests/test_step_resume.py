"""A training call interrupted part-way continues from its last saved step with the uninterrupted call's
weights, losses and held-out curve (training/resume.py), inside a run and inside a bench."""

import json

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.harness import RunConfig, run_sequence
from adaptive_learner.prompting import encode_examples
from adaptive_learner.training import TrainConfig, train_adapter
from adaptive_learner.training import resume as step_state
from adaptive_learner.training.replay import Replay, ReplayBuffer

pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    pass


def host_and_items(toy_task):
    host = AdapterHost(load_backbone("tiny-random"))
    host.create("a", seed=0)
    items = encode_examples(host.backbone.tokenizer, toy_task.spec, toy_task.train[:48], 64)
    return host, items


def train(toy_task, cfg, checkpoint=None, stop_at=None, replay=None):
    host, items = host_and_items(toy_task)

    def on_step(step, model):
        if step == stop_at:
            raise Stop

    regs = [replay()] if replay else []
    rep = train_adapter(host, "a", items, cfg, regs, on_step=on_step, checkpoint=checkpoint)
    return rep, {k: v.clone() for k, v in host.state("a").items()}


@pytest.mark.parametrize("early_stop,ema", [(False, 0.0), (True, 0.0), (True, 0.8)])
def test_a_training_call_resumed_from_a_saved_step_equals_the_uninterrupted_one(toy_task, pair_task, tmp_path,
                                                                               early_stop, ema):
    cfg = TrainConfig(steps=12, batch_size=4, lr=1e-2, max_length=64, seed=3, early_stop=early_stop, eval_every=3,
                      patience=50, schedule="linear", warmup_steps=2, ema=ema)

    def replay():  # a fresh buffer each call (the regulariser adds the task to it at the end)
        buffer = ReplayBuffer(32, seed=0)
        buffer.add(pair_task.spec, pair_task.train[:16])
        return Replay(None, buffer, toy_task)

    straight, w_straight = train(toy_task, cfg, replay=replay)
    with pytest.raises(Stop):  # saved after every step, stopped during step 8 (7 saved)
        train(toy_task, cfg, step_state.StepCheckpoint(tmp_path, "run", 0, every_s=0), stop_at=8, replay=replay)
    assert json.loads((tmp_path / step_state.STATE).read_text())["state"]["step"] == 7
    resumed, w_resumed = train(toy_task, cfg, step_state.StepCheckpoint(tmp_path, "run", 0, every_s=3600),
                               replay=replay)
    assert resumed.losses == straight.losses and resumed.steps == 12
    assert resumed.validation == straight.validation and resumed.best_step == straight.best_step
    assert (resumed.examples, resumed.tokens, resumed.positions) == (straight.examples, straight.tokens,
                                                                      straight.positions)
    for k in w_straight:
        assert torch.equal(w_straight[k], w_resumed[k]), k


class Spy(step_state.StepCheckpoint):
    """Records whether a saved state was taken up."""

    taken: list = []

    def load(self, key):
        got = super().load(key)
        Spy.taken.append(None if got is None else got[0]["step"])
        return got


def test_a_saved_step_of_another_run_task_config_or_data_is_not_used(toy_task, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, max_length=64, seed=0, early_stop=False)
    straight, _ = train(toy_task, cfg)
    with pytest.raises(Stop):
        train(toy_task, cfg, step_state.StepCheckpoint(tmp_path, "run", 0, every_s=0), stop_at=4)
    other_lr = TrainConfig(**{**cfg.to_dict(), "lr": 5e-3})
    other_seed = TrainConfig(**{**cfg.to_dict(), "seed": 1})  # another batch order
    Spy.taken = []
    for args, c in [(("run", 1), cfg), (("other run", 0), cfg), (("run", 0), other_lr), (("run", 0), other_seed)]:
        rep, _ = train(toy_task, c, Spy(tmp_path, *args, every_s=3600))
        assert rep.steps == 6
    assert Spy.taken == [None, None, None, None]
    rep, _ = train(toy_task, cfg, Spy(tmp_path, "run", 0, every_s=3600))
    assert Spy.taken[-1] == 3 and rep.losses == straight.losses  # the matching one is still there
    (tmp_path / step_state.TENSORS).write_bytes(b"damaged")
    rep, _ = train(toy_task, cfg, Spy(tmp_path, "run", 0, every_s=3600))
    assert Spy.taken[-1] is None and rep.losses == straight.losses  # damaged: trained from the first step


def run_cfg(sequence):
    return RunConfig(sequence=sequence, strategy="ewc-replay", backbone="tiny-random", max_train=32, max_test=8,
                     train=TrainConfig(steps=6, batch_size=4, lr=1e-2, max_length=64, early_stop=False),
                     options={"ewc_samples": 8, "replay_buffer_size": 16})


@pytest.mark.parametrize("stop_after_saves", [3, 9])  # during the first task / during the second
def test_a_run_stopped_inside_a_task_resumes_there_and_ends_as_an_uninterrupted_one(toy_sequence, tmp_path,
                                                                                 monkeypatch, stop_after_saves):
    straight = run_sequence(run_cfg(toy_sequence), tmp_path / "straight")
    save, saves, steps_run = step_state.StepCheckpoint.save, [], []

    def save_then_stop(self, key, state, tensors):
        save(self, key, state, tensors)
        saves.append(state["step"])
        if len(saves) == stop_after_saves:
            raise Stop

    monkeypatch.setattr(step_state.StepCheckpoint, "save", save_then_stop)
    out = tmp_path / "resumed"
    with pytest.raises(Stop):
        run_sequence(run_cfg(toy_sequence), out, step_checkpoint_s=0)
    doc = json.loads((out / step_state.STATE).read_text())
    assert (doc["task"], doc["state"]["step"]) == ((0, 3) if stop_after_saves == 3 else (1, 4))
    monkeypatch.setattr(step_state.StepCheckpoint, "save", save)
    load = step_state.StepCheckpoint.load

    def counting_load(self, key):
        got = load(self, key)
        steps_run.append(None if got is None else got[0]["step"])
        return got

    monkeypatch.setattr(step_state.StepCheckpoint, "load", counting_load)
    if stop_after_saves == 3:  # stopped before any task finished: the bench's test of what can resume
        from adaptive_learner.evaluation import checkpoint

        assert checkpoint.resumable(out, run_cfg(toy_sequence), ["toy", "pairs"])
        assert checkpoint.config_from(out).strategy == "ewc-replay"
    again = run_sequence(run_cfg(toy_sequence), out, resume=True, step_checkpoint_s=0)
    assert steps_run[0] == doc["state"]["step"]  # continued from the saved step, not the first
    np.testing.assert_array_equal(again.matrix, straight.matrix)
    assert again.metrics == straight.metrics
    assert [r["final_loss"] for r in again.info["train_reports"]] == \
        [r["final_loss"] for r in straight.info["train_reports"]]
    assert not (out / step_state.STATE).exists() and not (out / step_state.TENSORS).exists()


def test_a_fresh_run_does_not_take_up_a_stale_saved_step(toy_sequence, tmp_path, monkeypatch):
    out = tmp_path / "run"
    save = step_state.StepCheckpoint.save

    def save_then_stop(self, key, state, tensors):
        save(self, key, state, tensors)
        raise Stop

    monkeypatch.setattr(step_state.StepCheckpoint, "save", save_then_stop)
    with pytest.raises(Stop):
        run_sequence(run_cfg(toy_sequence), out, step_checkpoint_s=0)
    assert (out / step_state.STATE).exists()
    monkeypatch.setattr(step_state.StepCheckpoint, "save", save)
    loads = []
    monkeypatch.setattr(step_state.StepCheckpoint, "load", lambda self, key: loads.append(key) or None)
    run_sequence(run_cfg(toy_sequence), out)  # not --resume: starts again, the stale state removed first
    assert loads and not (out / step_state.STATE).exists()


def test_a_step_saved_before_a_training_setting_existed_resumes_at_its_old_value(toy_task, tmp_path):
    """A step state saved by a release without ``choice_sample`` (its key has no such setting) is taken up by a call
    at the value it had (0), not by one at another value."""
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, max_length=64, seed=0, early_stop=False)
    straight, _ = train(toy_task, cfg)
    with pytest.raises(Stop):
        train(toy_task, cfg, step_state.StepCheckpoint(tmp_path, "run", 0, every_s=0), stop_at=4)
    doc = json.loads((tmp_path / step_state.STATE).read_text())
    assert "choice_sample" not in doc["train"]  # at its old value the key leaves it out, as before it existed
    Spy.taken = []
    rep, _ = train(toy_task, TrainConfig(**{**cfg.to_dict(), "choice_sample": 2}), Spy(tmp_path, "run", 0, every_s=3600))
    assert Spy.taken == [None] and rep.steps == 6
    rep, _ = train(toy_task, cfg, Spy(tmp_path, "run", 0, every_s=3600))
    assert Spy.taken[-1] == 3 and rep.losses == straight.losses
