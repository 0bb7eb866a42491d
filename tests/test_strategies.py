"""The forgetting-control strategies (ewc, replay, ewc-replay, o-lora) on the tiny backbone, and Learner reuse."""

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.errors import UserError
from adaptive_learner.evaluation.harness import RunConfig, run_sequence
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.strategies import Context, make
from adaptive_learner.strategies.o_lora import Orthogonality, overlap
from adaptive_learner.training import TrainConfig, train_adapter
from adaptive_learner.training.forgetting import ForgettingOptions





def small_run(sequence, strategy, out, **options):
    cfg = RunConfig(sequence=sequence, strategy=strategy, backbone="tiny-random", max_train=32, max_test=8,
                    train=TrainConfig(steps=4, batch_size=4, lr=1e-2, max_length=64, early_stop=False),
                    options={"ewc_samples": 8, "replay_buffer_size": 16, **options})
    return run_sequence(cfg, out)


@pytest.mark.parametrize("strategy,n_adapters", [("ewc", 1), ("replay", 1), ("ewc-replay", 1), ("o-lora", 2)])
def test_strategy_fills_the_matrix(strategy, n_adapters, toy_sequence, tmp_path):
    res = small_run(toy_sequence, strategy, tmp_path)
    assert res.matrix.shape == (2, 2) and not np.isnan(res.matrix).any()
    assert res.info["n_adapters"] == n_adapters
    assert (tmp_path / "results.json").exists()


def test_ewc_replay_keeps_fisher_and_buffer_of_every_task(toy_sequence, tiny_backbone, tmp_path):
    from adaptive_learner.evaluation.harness import prepare_tasks

    cfg = RunConfig(sequence=toy_sequence, strategy="ewc-replay", max_train=32, max_test=8)
    tasks = prepare_tasks(cfg)
    host = AdapterHost(load_backbone("tiny-random"))
    ctx = Context(host=host, train=TrainConfig(steps=3, batch_size=4, lr=1e-2, max_length=64, early_stop=False), n_tasks=2,
                  workdir=tmp_path, options={"ewc_samples": 4, "replay_buffer_size": 16})
    strat = make("ewc-replay", ctx)
    for t in tasks:
        strat.learn(t, encode_examples(host.backbone.tokenizer, t.spec, t.train, 64))
    state = strat.memory["shared"]
    assert int(state["ewc"]["__ewc_tasks__"]) == 2
    assert {e["task"] for e in state["replay"]["examples"]} == {"toy", "pairs"}
    assert set(k for k in state["ewc"] if not k.startswith("__")) == \
        {k.replace(".shared.", ".") for k in host.trainable("shared")}


def test_mtl_stops_on_the_mean_of_each_tasks_held_out_accuracy(toy_sequence, tmp_path):
    # the joint run is checked every eval_every x tasks steps, on each task's own held-out part
    from adaptive_learner.evaluation.harness import prepare_tasks

    tasks = prepare_tasks(RunConfig(sequence=toy_sequence, strategy="mtl", max_train=48, max_test=8))
    host = AdapterHost(load_backbone("tiny-random"))
    train = TrainConfig(steps=6, batch_size=4, lr=1e-2, max_length=64, eval_every=3, patience=100,
                        val_fraction=0.35)  # the pair task is small: enough held out to validate on
    strat = make("mtl", Context(host=host, train=train, n_tasks=2, workdir=tmp_path, options={}))
    for t in tasks:
        strat.learn(t, encode_examples(host.backbone.tokenizer, t.spec, t.train, 64))
    rep = strat.reports[-1]
    assert rep["steps"] == 12 and [v["step"] for v in rep["validation"]] == [0, 6, 12]
    for v in rep["validation"]:
        assert set(v["tasks"]) == {t.spec.name for t in tasks}
        assert v["accuracy"] == pytest.approx(np.mean(list(v["tasks"].values())), abs=1e-3)


def test_unknown_or_malformed_forgetting_options_are_user_errors():
    with pytest.raises(UserError, match="ewc_strenght"):
        ForgettingOptions.from_mapping({"ewc_strenght": 1})
    with pytest.raises(UserError, match="replay_ratio"):
        ForgettingOptions.from_mapping({"replay_ratio": "lots"})
    opts = ForgettingOptions.from_mapping({"ewc_strength": "2.5", "replay_policy": "balanced", "router_x": 1})
    assert opts.ewc_cfg.strength == 2.5 and opts.replay_cfg.policy == "balanced"


def two_adapters(toy_task, pair_task, lambda1):
    bb = load_backbone("tiny-random")
    host = AdapterHost(bb)
    cfg = TrainConfig(steps=8, batch_size=4, lr=1e-2, max_length=64, early_stop=False)
    host.create("olora-0", seed=0)
    train_adapter(host, "olora-0", encode_examples(bb.tokenizer, toy_task.spec, toy_task.train, 64), cfg)
    before = host.state("olora-0")
    host.create("olora-1", seed=1)
    train_adapter(host, "olora-1", encode_examples(bb.tokenizer, pair_task.spec, pair_task.train, 64), cfg,
                  [Orthogonality(["olora-0"], lambda1=lambda1)])
    return host, before


def test_o_lora_loss_makes_the_new_subspace_more_orthogonal(toy_task, pair_task):
    plain, _ = two_adapters(toy_task, pair_task, 0.0)
    ortho, before = two_adapters(toy_task, pair_task, 0.5)
    assert overlap(ortho, "olora-0", "olora-1") < 0.8 * overlap(plain, "olora-0", "olora-1")
    # the earlier adapter was active during training but frozen
    assert all(torch.equal(before[k], v) for k, v in ortho.state("olora-0").items())
    assert ortho.peft.active_adapter == "olora-1"


def test_o_lora_scores_with_every_adapter_summed(toy_sequence, tmp_path, toy_task):
    """The summed model equals peft's exact 'cat' merge of all task adapters (no task id needed)."""
    from adaptive_learner.evaluation.harness import prepare_tasks

    tasks = prepare_tasks(RunConfig(sequence=toy_sequence, strategy="o-lora", max_train=32, max_test=8))
    host = AdapterHost(load_backbone("tiny-random"))
    ctx = Context(host=host, train=TrainConfig(steps=3, batch_size=4, lr=1e-2, max_length=64, early_stop=False), n_tasks=2,
                  workdir=tmp_path)
    strat = make("o-lora", ctx)
    tok = host.backbone.tokenizer
    for t in tasks:
        strat.learn(t, encode_examples(tok, t.spec, t.train, 64))
    items = encode_examples(tok, toy_task.spec, toy_task.test[:6], 64)
    summed = strat.score("toy", items)
    assert strat.eval_key("toy") == strat.eval_key("pairs")
    host.peft.add_weighted_adapter(["olora-0", "olora-1"], [1.0, 1.0], "merged", combination_type="cat")
    with host.using("merged") as m:
        merged = score(m, items, tok.pad_token_id)
    with host.using("olora-1") as m:
        last_only = score(m, items, tok.pad_token_id)
    for a, b, c in zip(summed, merged, last_only):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert any(not np.allclose(a, c, atol=1e-4) for a, c in zip(summed, last_only))


def test_learner_stores_fisher_and_buffer_and_uses_them_when_reusing(tmp_path, toy_task, pair_task):
    from adaptive_learner.learner import Learner
    from adaptive_learner.library import AdapterLibrary
    from adaptive_learner.training.forgetting import load_forgetting_state

    train = TrainConfig(steps=3, batch_size=4, lr=1e-2, max_length=64, early_stop=False)
    opts = ForgettingOptions.from_mapping({"ewc_samples": 4, "replay_buffer_size": 12})
    learner = Learner(tmp_path / "lib", backbone="tiny-random", train=train, forgetting=opts)
    first = learner.learn(toy_task.subsample(24, 8, 0))
    fisher, buf = load_forgetting_state(learner.library, first.adapter)
    assert int(fisher["__ewc_tasks__"]) == 1 and buf.tasks == ["toy"] and len(buf.examples) == 12
    second = learner.learn(pair_task.subsample(24, 8, 0), reuse=first.adapter)
    assert second.action == "reuse" and second.train["regularisers"] == ["replay", "ewc"]
    fisher2, buf2 = load_forgetting_state(AdapterLibrary.open(tmp_path / "lib"), first.adapter)
    assert int(fisher2["__ewc_tasks__"]) == 2 and buf2.tasks == ["toy", "pairs"]
    assert {e["task"] for e in buf2.examples} == {"toy", "pairs"}
    assert AdapterLibrary.open(tmp_path / "lib").verify() == []


def test_the_listed_strategy_names_are_the_registry():
    """``alearn data ls`` lists strategies without importing them: the list is the registry's."""
    from adaptive_learner.names import STRATEGY_NAMES
    from adaptive_learner.strategies import REGISTRY

    assert list(STRATEGY_NAMES) == sorted(REGISTRY)


def head_run(sequence, strategy, out, head=True, **kw):
    cfg = RunConfig(sequence=sequence, strategy=strategy, backbone="tiny-random", max_train=60, max_test=8,
                    train=TrainConfig(steps=6, batch_size=4, lr=1e-2, max_length=64, eval_every=3, patience=5,
                                      head_mix=kw.pop("head_mix", "gated")),
                    options={"head": head, **kw})
    return cfg, run_sequence(cfg, out)


@pytest.mark.parametrize("strategy", ["per-task", "router"])
def test_the_head_option_fits_each_tasks_head_and_scores_the_task_with_the_mix(strategy, toy_sequence, tmp_path):
    # head_mix 0.5: every task's head is mixed in, so its answers differ from the adapter's alone
    from adaptive_learner.evaluation.harness import prepare_tasks

    cfg, res = head_run(toy_sequence, strategy, tmp_path / "with", head_mix="0.5")
    assert [h["task"] for h in res.info["heads"]] == ["toy", "pairs"]
    assert all(h["mix"] == 0.5 for h in res.info["heads"])
    _, plain = head_run(toy_sequence, strategy, tmp_path / "without", head=False, head_mix="0.5")
    assert "heads" not in plain.info
    losses = [[r["final_loss"] for r in run.info["train_reports"]] for run in (res, plain)]
    assert losses[0] == losses[1]  # the head changes the answers, not the adapters' training
    assert res.matrix.tolist() != plain.matrix.tolist() or res.info["final_correct"] != plain.info["final_correct"]
    # the scores are the adapter's mixed with the head's, as alearn learn mixes them
    ctx_host = AdapterHost(load_backbone("tiny-random"))
    ctx = Context(host=ctx_host, train=cfg.train, n_tasks=2, workdir=tmp_path / "ctx", options={"head": True})
    strat = make(strategy, ctx)
    tasks = prepare_tasks(cfg)
    task = tasks[0]
    items = encode_examples(ctx_host.backbone.tokenizer, task.spec, task.train, 64)
    test = encode_examples(ctx_host.backbone.tokenizer, task.spec, task.test, 64)
    strat.learn(task, items)
    strat.fit_head(task, items)
    head = strat.heads[task.name]
    pad = ctx_host.backbone.tokenizer.pad_token_id
    with ctx_host.using(strat.adapter_for(task.name)) as m:
        alone = score(m, test, pad)
    with ctx_host.base() as m:
        mixed = head.combine(alone, head.features(m, test, pad))
    assert np.allclose(np.stack(strat.score(task.name, test)), np.stack(mixed), atol=1e-5)
    assert not np.allclose(np.stack(mixed), np.stack(alone), atol=1e-3)


def test_the_routers_task_inferred_row_answers_with_the_routed_tasks_head(toy_sequence, tmp_path):
    # the toy tasks take one and two fields, so every input is routed to its own task: the row with the task
    # inferred then equals the row with the task id given, each task's head mix included (as alearn predict does)
    _, res = head_run(toy_sequence, "router", tmp_path / "with", head_mix="0.5")
    _, plain = head_run(toy_sequence, "router", tmp_path / "without", head=False, head_mix="0.5")
    for run in (res, plain):
        inferred = run.info["router"]["task_inferred"]["per_task"]
        assert all(v["routing_accuracy"] == 1.0 for v in inferred.values())
        assert {t: v["correct"] for t, v in inferred.items()} == {t: list(c) for t, c in run.info["final_correct"].items()}
    assert res.info["final_correct"] != plain.info["final_correct"]  # the head changed answers the row must follow


def test_the_head_option_reaches_only_the_strategies_that_answer_by_a_task_adapter():
    from adaptive_learner.evaluation.bench import strategy_options

    opts = {"head": True, "ewc_strength": 3.0}
    for s in ("naive", "per-task", "per-task-warm", "ewc", "replay", "ewc-replay", "router"):
        assert strategy_options(s, opts).get("head") is True, s
    for s in ("osf", "arrow", "o-lora", "mtl", "zero-shot"):
        assert "head" not in strategy_options(s, opts), s
    assert strategy_options("naive", {"ewc_strength": 3.0}) == {}  # no head option: runs stored before it unchanged


@pytest.mark.parametrize("strategy", ["per-task", "router"])
def test_a_run_with_heads_resumes_with_the_heads_it_had(strategy, toy_sequence, tmp_path, monkeypatch):
    from adaptive_learner.strategies import REGISTRY

    cfg, straight = head_run(toy_sequence, strategy, tmp_path / "straight", head_mix="0.5")
    learn, calls = REGISTRY[strategy].learn, []

    def interrupted(self, task, items):
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return learn(self, task, items)

    monkeypatch.setattr(REGISTRY[strategy], "learn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sequence(cfg, tmp_path / "resumed")
    monkeypatch.setattr(REGISTRY[strategy], "learn", learn)
    resumed = run_sequence(cfg, tmp_path / "resumed", resume=True)
    assert resumed.matrix.tolist() == straight.matrix.tolist()
    assert resumed.info["final_correct"] == straight.info["final_correct"]
    # each stage's outcomes right after it, the first restored from the checkpoint
    assert resumed.info["learned_correct"] == straight.info["learned_correct"] and None not in resumed.info["learned_correct"]
    untimed = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.info["heads"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.info["heads"]] == untimed
