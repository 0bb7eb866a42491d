"""Training until learned: the held-out split, early stopping, the best checkpoint, the recorded curve."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.prompting import encode_examples
from adaptive_learner.training import TrainConfig, train_adapter
from adaptive_learner.training.trainer import split_validation, validate


@pytest.fixture()
def items(tiny_backbone, toy_task):
    return encode_examples(tiny_backbone.tokenizer, toy_task.spec, toy_task.train, 64)


def cfg(**kw):
    return replace(TrainConfig(steps=40, batch_size=8, lr=1e-2, max_length=64, seed=0, eval_every=4, patience=2), **kw)


def test_validation_split_is_stratified_disjoint_and_seeded(items):
    train, val = split_validation(items, cfg())
    assert len(val) == round(0.2 * len(items)) and len(train) + len(val) == len(items)
    assert not {id(x) for x in train} & {id(x) for x in val}
    frac = [np.mean([it.label for it in part]) for part in (train, val, items)]
    assert abs(frac[1] - frac[2]) <= 1 / len(val) + 1e-9  # label proportions kept
    assert [id(x) for x in split_validation(items, cfg())[1]] == [id(x) for x in val]
    assert [id(x) for x in split_validation(items, cfg(seed=1))[1]] != [id(x) for x in val]
    assert split_validation(items, cfg(early_stop=False)) == (list(items), [])
    assert split_validation(items[:20], cfg()) == (list(items[:20]), [])  # too few to hold out 8
    assert len(split_validation(items, cfg(val_max=9))[1]) == 9


def test_a_joint_run_holds_out_each_tasks_part_and_weighs_tasks_equally(fresh_backbone, items):
    # two tasks of unequal size: each holds out what it would alone; the held-out accuracy and loss
    # are the means over tasks (as AvgAcc weighs them), not over the pooled examples
    other = [replace(it, task="other", label=1 - it.label) for it in items[:45]]
    train, val = split_validation([*items, *other], cfg())
    alone = [split_validation(items, cfg()), split_validation(other, cfg())]
    assert [id(x) for x in val] == [id(x) for x in alone[0][1] + alone[1][1]]
    assert [id(x) for x in train] == [id(x) for x in alone[0][0] + alone[1][0]]
    pad = fresh_backbone.tokenizer.pad_token_id
    (a1, l1), (a2, l2) = validate(fresh_backbone.model, alone[0][1], pad), validate(fresh_backbone.model, alone[1][1], pad)
    acc, loss = validate(fresh_backbone.model, val, pad)
    assert acc == pytest.approx((a1 + a2) / 2) and loss == pytest.approx((l1 + l2) / 2)
    n1, n2 = len(alone[0][1]), len(alone[1][1])
    assert loss != pytest.approx((n1 * l1 + n2 * l2) / (n1 + n2))  # what the pooled mean would have been


def test_stops_when_held_out_scores_stop_improving(fresh_backbone, items):
    host = AdapterHost(fresh_backbone)
    host.create("a")
    # lr 0: the weights never move, so no held-out loss is lower than the first
    rep = train_adapter(host, "a", items, cfg(lr=0.0, steps=100))
    assert rep.stopped == "patience" and rep.best_step == 0
    assert rep.steps == 2 * 4 and [v["step"] for v in rep.validation] == [0, 4, 8]


@pytest.mark.parametrize("monitor", ["loss", "accuracy"])
def test_the_best_checkpoint_is_kept(fresh_backbone, items, monitor):
    host = AdapterHost(fresh_backbone)
    host.create("a")
    c = cfg(lr=5e-2, steps=24, patience=100, monitor=monitor)
    rep = train_adapter(host, "a", items, c)
    assert rep.stopped == "steps" and rep.steps == 24 and len(rep.validation) == 7
    kept = rep.validation[0]
    for v in rep.validation[1:]:
        if monitor == "loss":  # the last score at least min_delta below every earlier one
            better = v["loss"] < kept["loss"] - c.min_delta
        else:  # a higher accuracy, or the same with a lower loss
            better = v["accuracy"] > kept["accuracy"] or (v["accuracy"] == kept["accuracy"]
                                                          and v["loss"] < kept["loss"])
        kept = v if better else kept
    assert rep.best_step == kept["step"]
    # the adapter left behind scores exactly what the curve recorded at the best step
    acc, loss = validate(host.model, split_validation(items, c)[1], fresh_backbone.tokenizer.pad_token_id)
    assert acc == pytest.approx(kept["accuracy"], abs=1e-4) and loss == pytest.approx(kept["loss"], abs=1e-3)


def test_without_early_stopping_every_step_runs_on_every_example(fresh_backbone, items):
    host = AdapterHost(fresh_backbone)
    host.create("a")
    rep = train_adapter(host, "a", items, cfg(early_stop=False, steps=7))
    assert rep.steps == 7 and rep.validation == [] and rep.best_step is None and rep.examples == 7 * 8


def test_learn_records_the_validation_curve_in_the_history(tmp_path, fresh_backbone, toy_task):
    from adaptive_learner import Learner
    from adaptive_learner.library import AdapterLibrary

    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=cfg(steps=8))
    out = learner.learn(toy_task, force_new=True)
    assert out.train["validation"] and out.train["validation"][0]["step"] == 0
    event = AdapterLibrary.open(tmp_path / "lib").history[-1]
    assert event["train"]["validation"] == out.train["validation"]
    assert event["train"]["best_step"] == out.train["best_step"]


def test_the_command_line_defaults_are_the_train_configs():
    from adaptive_learner import cli

    d = TrainConfig()
    assert (cli.DEFAULT_STEPS, cli.DEFAULT_LR, cli.DEFAULT_PATIENCE, cli.DEFAULT_EVAL_EVERY, cli.DEFAULT_MONITOR,
            cli.DEFAULT_LR_RETRIES) == (d.steps, d.lr, d.patience, d.eval_every, d.monitor, d.lr_retries)
    from adaptive_learner.server.protocol import LearnRequest

    fields = LearnRequest.model_fields
    assert (fields["patience"].default, fields["monitor"].default, fields["lr_retries"].default) == \
        (d.patience, d.monitor, d.lr_retries)


def test_learned_verdict_needs_held_out_accuracy_clearly_above_the_majority_rate():
    from adaptive_learner.training.trainer import learned_verdict

    assert learned_verdict(0.90, 0.5, 32) is True
    assert learned_verdict(0.531, 0.53, 32) is False  # RTE-like: at the majority rate
    assert learned_verdict(0.62, 0.5, 32) is False and learned_verdict(0.62, 0.5, 400) is True  # n matters
    assert learned_verdict(5 / 8, 0.5, 8) is False  # a handful of examples cannot tell
    assert learned_verdict(0.8, 0.5, 0) is None


def test_an_imbalanced_task_that_removed_most_of_the_majority_rate_errors_counts_as_learned():
    from adaptive_learner.training.trainer import learned_verdict

    # sms_spam-like: 31 of 32 against a majority of 28 of 32 is not clear of the rate at 95% on 32 examples,
    # but three quarters of its errors are gone
    assert learned_verdict(31 / 32, 28 / 32, 32) is True
    assert learned_verdict(30 / 32, 28 / 32, 32) is True  # half of them: the boundary is learned
    assert learned_verdict(29 / 32, 28 / 32, 32) is False
    assert learned_verdict(1.0, 1.0, 32) is False  # nothing to learn above a held-out split of one label


def test_adapter_learned_judges_the_kept_step_not_the_last():
    from adaptive_learner.training.trainer import TrainReport, adapter_learned

    curve = [{"step": 0, "accuracy": 0.5, "loss": 0.7}, {"step": 10, "accuracy": 0.9, "loss": 0.3},
             {"step": 20, "accuracy": 0.5, "loss": 0.6}]
    rep = TrainReport(20, 160, 0, 1.0, 0.3, [], validation=curve, best_step=10, val_majority=0.5, val_size=32)
    assert adapter_learned(rep) is True
    assert adapter_learned(TrainReport(20, 160, 0, 1.0, 0.3, [], validation=curve, best_step=20, val_majority=0.5,
                                       val_size=32)) is False
    assert adapter_learned(TrainReport(20, 160, 0, 1.0, 0.3, [])) is None  # no held-out split


def test_learn_warns_when_the_task_is_not_learned(tmp_path, fresh_backbone, toy_task):
    from adaptive_learner import Learner
    from adaptive_learner.library import AdapterLibrary

    # lr 0: the adapter never moves, so the tiny random backbone's held-out accuracy stays at chance
    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=cfg(steps=8, lr=0.0, head=False))
    out = learner.learn(toy_task, force_new=True)
    t = out.train
    assert t["held_out_size"] == round(0.2 * len(toy_task.train)) and 0.5 <= t["held_out_majority"] <= 1
    assert t["learned"] is False
    assert AdapterLibrary.open(tmp_path / "lib").history[-1]["train"]["learned"] is False


def test_on_step_sees_every_step_in_eval_mode_and_changes_nothing(fresh_backbone, items):
    host = AdapterHost(fresh_backbone)
    host.create("a", seed=0)
    host.create("b", seed=0)
    seen = []
    rep = train_adapter(host, "a", items, cfg(early_stop=False, steps=5),
                        on_step=lambda step, model: seen.append((step, model.training)))
    assert seen == [(s, False) for s in range(1, 6)]
    ref = train_adapter(host, "b", items, cfg(early_stop=False, steps=5))
    assert rep.losses == pytest.approx(ref.losses, abs=1e-6)


def test_a_task_too_small_to_hold_out_stops_once_its_examples_are_fitted(fresh_backbone, items, monkeypatch):
    # 20 examples: nothing can be held out (MIN_VALIDATION), so no held-out accuracy to stop on; training
    # stops eval_every steps (one evaluation's worth) after the mean training loss over the last epoch (at least
    # eval_every steps) first falls below FIT_LOSS
    from adaptive_learner.training import trainer

    host = AdapterHost(fresh_backbone)
    small = items[:20]
    host.create("a", seed=0)
    monkeypatch.setattr(trainer, "FIT_LOSS", 1e9)  # every loss counts as fitted: fitted at the first window
    rep = train_adapter(host, "a", small, cfg(steps=100))
    window = max(4, -(-20 // 8))  # eval_every 4, an epoch of 3 steps
    assert rep.stopped == "fitted" and rep.steps == window + 4 and rep.val_size == 0 and rep.validation == []
    host.create("b", seed=0)
    monkeypatch.setattr(trainer, "FIT_LOSS", 0.0)  # never fitted: the cap, as before
    rep = train_adapter(host, "b", small, cfg(steps=30))
    assert rep.stopped == "steps" and rep.steps == 30
    host.create("c", seed=0)
    monkeypatch.setattr(trainer, "FIT_LOSS", 1e9)
    rep = train_adapter(host, "c", small, cfg(steps=30, early_stop=False))  # --no-early-stop: exactly --steps
    assert rep.stopped == "steps" and rep.steps == 30
    host.create("d", seed=0)
    rep = train_adapter(host, "d", items, cfg(steps=100, lr=0.0))  # held-out examples: the held-out rule alone
    assert rep.stopped == "patience"


def test_the_fitted_stop_uses_the_training_loss_over_the_last_window(fresh_backbone, items, monkeypatch):
    from adaptive_learner.training import trainer

    host = AdapterHost(fresh_backbone)
    small = items[:20]
    host.create("a", seed=0)
    rep = train_adapter(host, "a", small, cfg(steps=60, lr=5e-2))
    monkeypatch.setattr(trainer, "FIT_LOSS", float(np.mean(rep.losses[9:13])) + 1e-9)
    host.create("b", seed=0)
    rep2 = train_adapter(host, "b", small, cfg(steps=60, lr=5e-2))
    assert rep2.losses == rep.losses[:rep2.steps]  # the same run, ended early
    means = [np.mean(rep.losses[s - 4:s]) for s in range(4, 61)]
    first = 4 + next(i for i, m in enumerate(means) if m < trainer.FIT_LOSS)
    assert rep2.stopped == "fitted" and rep2.steps == first + 4


def test_the_moving_average_is_what_is_kept_without_held_out_examples(fresh_backbone, items):
    # the weights left behind are the average of every step's weights, at ema_decay's warmed-up decay
    from adaptive_learner.training.trainer import ema_decay

    host = AdapterHost(fresh_backbone)
    host.create("a", seed=0)
    host.create("b", seed=0)
    params = host.trainable("a")
    avg = {n: p.detach().clone() for n, p in params.items()}
    last = {}

    def follow(step, model):
        d = ema_decay(0.8, step)
        for n, p in params.items():
            avg[n] = d * avg[n] + (1 - d) * p.detach()
            last[n] = p.detach().clone()

    rep = train_adapter(host, "a", items, cfg(early_stop=False, steps=12, ema=0.8), on_step=follow)
    for n, p in host.trainable("a").items():
        assert torch.allclose(p, avg[n], atol=1e-6)
    assert any(not torch.allclose(last[n], avg[n], atol=1e-4) for n in avg)  # not the last step's weights
    # the average changes what is kept, never the steps themselves
    ref = train_adapter(host, "b", items, cfg(early_stop=False, steps=12))
    assert rep.losses == pytest.approx(ref.losses, abs=1e-6)
    assert ema_decay(0.8, 1) == pytest.approx(2 / 11) and ema_decay(0.8, 1000) == 0.8


def test_with_a_moving_average_the_held_out_checks_score_it_and_keep_it(fresh_backbone, items):
    host = AdapterHost(fresh_backbone)
    host.create("a", seed=0)
    host.create("b", seed=0)
    c = cfg(lr=5e-2, steps=24, patience=100, ema=0.7)
    rep = train_adapter(host, "a", items, c)
    # the adapter left behind scores exactly what the curve recorded at the kept step
    kept = next(v for v in rep.validation if v["step"] == rep.best_step)
    acc, loss = validate(host.model, split_validation(items, c)[1], fresh_backbone.tokenizer.pad_token_id)
    assert acc == pytest.approx(kept["accuracy"], abs=1e-4) and loss == pytest.approx(kept["loss"], abs=1e-3)
    ref = train_adapter(host, "b", items, replace(c, ema=0.0))
    assert rep.losses == pytest.approx(ref.losses, abs=1e-6)  # the same steps
    # what was scored is the average, not the step's weights
    assert [v["loss"] for v in rep.validation[1:]] != pytest.approx([v["loss"] for v in ref.validation[1:]], abs=1e-4)


def test_a_moving_average_decay_outside_0_1_is_refused():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema must be in"):
            cfg(ema=bad)


def _weights(host, adapter):
    return {n.replace(f".{adapter}.", "."): p.detach().clone() for n, p in host.trainable(adapter).items()}


def test_a_task_not_learned_is_trained_again_from_its_start_at_half_the_rate(fresh_backbone, items, monkeypatch):
    from adaptive_learner.training import trainer

    # the verdict reads the held-out curve against the majority rate; here every attempt counts as not learned
    monkeypatch.setattr(trainer, "worth_retrying", lambda rep: True)
    host = AdapterHost(fresh_backbone)
    c = cfg(lr=5e-2, steps=24, patience=100)
    # each retry is exactly a fresh call at its rate from the same starting weights
    alone = []
    for k, lr in enumerate((5e-2, 2.5e-2, 1.25e-2)):
        host.create(f"b{k}", seed=3)
        alone.append((train_adapter(host, f"b{k}", items, replace(c, lr=lr)), _weights(host, f"b{k}")))
    host.create("a", seed=3)
    rep = train_adapter(host, "a", items, replace(c, lr_retries=2))
    assert [a["lr"] for a in rep.attempts] == [5e-2, 2.5e-2, 1.25e-2]
    assert [a["best_step"] for a in rep.attempts] == [r.best_step for r, _ in alone]
    assert [a["steps"] for a in rep.attempts] == [r.steps for r, _ in alone]
    # the attempt with the best kept held-out point (accuracy, then loss) is what is left in the adapter
    best = 0
    for k in (1, 2):
        if trainer.improvement(c.monitor, c.min_delta, trainer.kept_point(alone[best][0]),
                               trainer.kept_point(alone[k][0]))[0]:
            best = k
    assert [a["kept"] for a in rep.attempts] == [k == best for k in range(3)]
    assert rep.lr == rep.attempts[best]["lr"] and rep.validation == alone[best][0].validation
    kept = _weights(host, "a")
    assert all(torch.equal(kept[n], alone[best][1][n]) for n in kept)
    # what training cost adds up over the attempts
    assert rep.steps == sum(r.steps for r, _ in alone) and rep.tokens == sum(r.tokens for r, _ in alone)


def test_a_learned_task_is_not_trained_again(fresh_backbone, items, monkeypatch):
    from adaptive_learner.training import trainer

    monkeypatch.setattr(trainer, "worth_retrying", lambda rep: False)
    host = AdapterHost(fresh_backbone)
    c = cfg(lr=5e-2, steps=24, patience=100)
    host.create("once", seed=3)
    ref = train_adapter(host, "once", items, c)
    host.create("a", seed=3)
    rep = train_adapter(host, "a", items, replace(c, lr_retries=2))
    assert rep.attempts == [] and rep.lr == c.lr and rep.steps == ref.steps
    a, once = _weights(host, "a"), _weights(host, "once")
    assert all(torch.equal(a[n], once[n]) for n in a)


def test_a_negative_number_of_retries_is_refused():
    with pytest.raises(ValueError, match="lr_retries"):
        TrainConfig(lr_retries=-1)


def test_a_retry_is_wanted_only_where_the_task_stayed_near_its_majority_rate():
    from adaptive_learner.training.trainer import TrainReport, worth_retrying

    def rep(accuracy, majority, n):
        return TrainReport(10, 80, 800, 1.0, 0.5, [0.5], validation=[{"step": 10, "accuracy": accuracy, "loss": 0.6}],
                           best_step=10, val_majority=majority, val_size=n)

    assert worth_retrying(rep(14 / 26, 13 / 26, 26))  # one example above always answering the common label
    assert worth_retrying(rep(23 / 32, 22 / 32, 32))
    assert not worth_retrying(rep(29 / 32, 16 / 32, 32))  # learned: clear of the majority rate
    # 31 of 32 against a majority of 28: not clear at 95% on 32 examples, but three quarters of its errors gone
    assert not worth_retrying(rep(31 / 32, 28 / 32, 32))
    assert not worth_retrying(replace(rep(0.5, 0.5, 0), val_size=0, val_majority=None))  # nothing held out
