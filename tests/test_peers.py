"""The peers on the tiny backbone: peft's Arrow and OSF wrapped as strategies, and per-task-warm."""

import json

import numpy as np
import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.errors import UserError
from adaptive_learner.evaluation import checkpoint
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.strategies import Context, make
from adaptive_learner.tasks import load_file_task
from adaptive_learner.training import TrainConfig

from conftest import FIXTURES
from test_strategies import small_run

TRAIN = TrainConfig(steps=8, batch_size=4, lr=1e-2, max_length=64, early_stop=False)


@pytest.fixture(scope="module")
def tasks():
    toy = load_file_task(FIXTURES / "toy_sentiment.csv", "toy", "Is the review positive or negative?",
                         family="sentiment")
    pairs = load_file_task(FIXTURES / "toy_pairs.jsonl", "pairs", "Do the two phrases mean the same?",
                           ["first", "second"], "same", family="paraphrase")
    return toy.subsample(32, 8, 0), pairs.subsample(32, 8, 0)


def learned(strategy, tasks, tmp_path, n_tasks=2, **options):
    """A strategy on a fresh tiny backbone after learning ``tasks`` in order."""
    host = AdapterHost(load_backbone("tiny-random"))
    ctx = Context(host=host, train=TRAIN, n_tasks=n_tasks, workdir=tmp_path, options=options)
    strat = make(strategy, ctx)
    for t in tasks:
        strat.learn(t, encode_examples(host.backbone.tokenizer, t.spec, t.train, 64))
    return strat, host


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("strategy,n_adapters", [("arrow", 2), ("osf", 0), ("per-task-warm", 2)])
def test_peer_fills_the_matrix_and_records_final_outcomes(strategy, n_adapters, toy_sequence, tmp_path):
    res = small_run(toy_sequence, strategy, tmp_path)
    assert res.matrix.shape == (2, 2) and not np.isnan(res.matrix).any()
    assert res.info["n_adapters"] == n_adapters and res.info["trainable_params"] > 0
    doc = json.loads((tmp_path / "results.json").read_text())
    for j, task in enumerate(doc["tasks"]):
        assert len(doc["final_correct"][task]) == doc["n_test"][j]
        assert np.mean(doc["final_correct"][task]) == pytest.approx(doc["matrix"][-1][j])


# -- arrow

@pytest.fixture(scope="module")
def arrow(tasks, tmp_path_factory):
    return learned("arrow", tasks, tmp_path_factory.mktemp("arrow"))


def test_arrow_is_peft_create_arrow_model_over_the_same_adapters(arrow, tasks, tmp_path):
    from peft import ArrowConfig, create_arrow_model

    strat, host = arrow
    tok = host.backbone.tokenizer
    items = encode_examples(tok, tasks[0].spec, tasks[0].test, 64)
    for name in strat.experts:
        host.save(name, tmp_path / name)
    peft_model = create_arrow_model(load_backbone("tiny-random").model, [str(tmp_path / n) for n in strat.experts],
                                    ArrowConfig(top_k=2, rng_seed=0))
    assert max_diff(strat.score("toy", items), score(peft_model, items, tok.pad_token_id)) < 1e-5
    assert host.names == strat.experts  # the router was removed after scoring


def test_arrow_answers_follow_its_routing_and_need_no_task_id(arrow, tasks):
    strat, host = arrow
    tok = host.backbone.tokenizer
    items = encode_examples(tok, tasks[0].spec, tasks[0].test, 64)
    routed = strat.score("toy", items)
    assert strat.eval_key("toy") == strat.eval_key("pairs")
    assert max_diff(strat.score("pairs", items), routed) == 0.0  # the task's name plays no part
    singles = []
    for name in strat.experts:
        with host.using(name) as m:
            singles.append(score(m, items, tok.pad_token_id))
    assert min(max_diff(routed, s) for s in singles) > 1e-3  # neither adapter alone
    host.peft.add_weighted_adapter(strat.experts, [0.5, 0.5], "avg", combination_type="cat")
    with host.using("avg") as m:
        average = score(m, items, tok.pad_token_id)
    host.delete("avg")
    strat.temperature = 1e9  # a flat softmax: every token takes both adapters by half
    try:
        assert max_diff(strat.score("toy", items), average) < 1e-4
    finally:
        strat.temperature = 1.0
    assert max_diff(routed, average) > 1e-2  # at peft's temperature the routing weights are not flat


def test_arrow_with_one_adapter_is_that_adapter(tasks, tmp_path):
    strat, host = learned("arrow", tasks[:1], tmp_path, n_tasks=1)
    items = encode_examples(host.backbone.tokenizer, tasks[0].spec, tasks[0].test, 64)
    with host.using("lora-toy") as m:
        alone = score(m, items, host.backbone.tokenizer.pad_token_id)
    assert max_diff(strat.score("toy", items), alone) < 1e-5
    assert strat.finish_info()["arrow"]["top_k_used"] == 1


def test_arrow_trains_exactly_the_per_task_adapters(arrow, tasks, tmp_path):
    strat, host = arrow
    _, per_task_host = learned("per-task", tasks, tmp_path)
    for name in strat.experts:
        mine, theirs = host.state(name), per_task_host.state(name)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_arrow_options_are_checked(tmp_path):
    host = AdapterHost(load_backbone("tiny-random"))
    with pytest.raises(UserError, match="arrow_top_k"):
        make("arrow", Context(host=host, train=TRAIN, n_tasks=1, workdir=tmp_path, options={"arrow_top_k": 0}))


# -- osf

def osf_targets(model):
    return {n: p for n, p in model.named_parameters() if n.endswith("proj.weight")}


def test_osf_trains_its_low_rank_factors_only_and_changes_a_copy_of_the_model(tasks, tmp_path):
    strat, host = learned("osf", tasks[:1], tmp_path)
    backbone = load_backbone("tiny-random").model
    untouched = dict(backbone.named_parameters())
    assert all(torch.equal(p, untouched[n]) for n, p in host.backbone.model.named_parameters())
    tuned = dict(strat.model.named_parameters())
    assert sorted(strat.changed) == sorted(osf_targets(backbone))  # peft's default targets: every projection
    for n, p in tuned.items():
        assert torch.equal(p, untouched[n]) != (n in strat.changed), n  # exactly the targets changed
    # first of 2 tasks: all but the top singular direction of each matrix is trained (U_low, S_low, V_low)
    expected = sum((min(p.shape) - 1) * (p.shape[0] + p.shape[1] + 1) for p in osf_targets(backbone).values())
    assert strat.trained == [expected] and strat.preserved == [1]
    items = encode_examples(host.backbone.tokenizer, tasks[0].spec, tasks[0].test, 64)
    with host.base() as m:
        before = score(m, items, host.backbone.tokenizer.pad_token_id)
    assert max_diff(strat.score("toy", items), before) > 1e-3


def block_share(before, after, preserved):
    """Per weight, the share of the update's norm inside the top ``preserved`` singular directions of ``before``."""
    out = []
    for n, w in before.items():
        d = after[n] - w
        u, _, vt = torch.linalg.svd(w, full_matrices=False)
        k = int(min(w.shape) * preserved)
        out.append(float((u[:, :k].T @ d @ vt[:k].T).norm() / d.norm()))
    return np.array(out)


@pytest.mark.parametrize("options,inside", [({}, "small"),
                                            ({"osf_schedule": "fixed", "osf_effective_rank": 1}, "large")])
def test_osf_keeps_the_second_task_out_of_the_directions_preserved_from_the_first(options, inside, tasks, tmp_path):
    """Task 2 of 2 preserves half of each matrix: its update stays out of those directions; with only
    the top direction preserved (the control), the same training moves them freely."""
    host = AdapterHost(load_backbone("tiny-random"))
    strat = make("osf", Context(host=host, train=TRAIN, n_tasks=2, workdir=tmp_path, options=options))
    tok = host.backbone.tokenizer
    strat.learn(tasks[0], encode_examples(tok, tasks[0].spec, tasks[0].train, 64))
    first = {n: strat.model.get_parameter(n).detach().clone() for n in strat.changed}
    strat.learn(tasks[1], encode_examples(tok, tasks[1].spec, tasks[1].train, 64))
    share = block_share(first, {n: strat.model.get_parameter(n).detach() for n in strat.changed}, 0.5)
    if inside == "small":
        assert strat.preserved == [1, 0.5] and share.max() < 0.1
    else:
        assert strat.preserved == [1, 1] and share.min() > 0.3


def test_osf_state_survives_a_checkpoint(tasks, tmp_path):
    strat, host = learned("osf", tasks[:1], tmp_path)
    tensors = {}
    doc = json.loads(json.dumps(checkpoint.strategy_state(strat, tensors)))
    again = make("osf", Context(host=host, train=TRAIN, n_tasks=2, workdir=tmp_path))
    checkpoint.restore_strategy(again, doc, tensors)
    items = encode_examples(host.backbone.tokenizer, tasks[0].spec, tasks[0].test, 64)
    assert max_diff(again.score("toy", items), strat.score("toy", items)) == 0.0 and again.done == 1


def test_osf_trains_at_its_own_fraction_of_the_runs_learning_rate(tasks, tmp_path, monkeypatch):
    """peft advises 1e-5..1e-4 for OSF: it trains at osf_lr_scale (0.005) times the run's (LoRA) rate."""
    from adaptive_learner.strategies import osf as osf_module

    seen = []
    real = osf_module.Strategy.train
    monkeypatch.setattr(osf_module.Strategy, "train",
                        lambda self, *a, cfg=None, **k: seen.append(cfg.lr) or real(self, *a, cfg=cfg, **k))
    host = AdapterHost(load_backbone("tiny-random"))
    tok = host.backbone.tokenizer
    for opts, lr in [({}, TRAIN.lr * 0.005), ({"osf_lr_scale": 1.0}, TRAIN.lr)]:
        strat = make("osf", Context(host=host, train=TRAIN, n_tasks=1, workdir=tmp_path, options=opts))
        strat.learn(tasks[0], encode_examples(tok, tasks[0].spec, tasks[0].train, 64))
        assert seen[-1] == pytest.approx(lr) and strat.finish_info()["osf"]["lr"] == pytest.approx(lr)


def test_osf_options_are_checked(tmp_path):
    host = AdapterHost(load_backbone("tiny-random"))
    for opts, msg in [({"osf_schedule": "sometimes"}, "osf_schedule"),
                      ({"osf_effective_rank": -2}, "osf_effective_rank"), ({"osf_lr_scale": 0}, "osf_lr_scale")]:
        with pytest.raises(UserError, match=msg):
            make("osf", Context(host=host, train=TRAIN, n_tasks=1, workdir=tmp_path, options=opts))


# -- per-task-warm

def test_per_task_warm_starts_each_new_adapter_as_the_routers_nearest_and_never_reuses(tasks, tmp_path):
    toy, pairs = tasks
    again = load_file_task(FIXTURES / "toy_sentiment.csv", "toy_again", "Is the review positive or negative?",
                           family="sentiment").subsample(32, 8, 1)
    host = AdapterHost(load_backbone("tiny-random"))
    strat = make("per-task-warm", Context(host=host, train=TRAIN, n_tasks=3, workdir=tmp_path))
    starts, ends = {}, {}
    train = strat.train

    def spy(adapter, items, *args, **kwargs):
        starts[adapter] = host.state(adapter)
        rep = train(adapter, items, *args, **kwargs)
        ends[adapter] = host.state(adapter)
        return rep

    strat.train = spy
    for t in (toy, pairs, again):
        strat.learn(t, encode_examples(host.backbone.tokenizer, t.spec, t.train, 64))
    d = strat.decisions
    assert [x["action"] for x in d] == ["new", "new", "new"] and len(strat.adapters) == 3
    assert d[2]["router_advised"] == "reuse" and d[2]["init_from"] == "lora-toy"  # the router would reuse it
    assert d[0]["init_from"] is None and all(not v.any() for k, v in starts["lora-toy"].items() if "lora_B" in k)
    for x in d[1:]:
        src, new = x["init_from"], x["adapter"]
        assert src in ("lora-toy", "lora-pairs") and new not in (src, "lora-toy")
        copied = {k.replace(f".{new}.", f".{src}."): v for k, v in starts[new].items()}
        assert copied.keys() == ends[src].keys() and all(torch.equal(v, ends[src][k]) for k, v in copied.items())
        assert any(not torch.equal(starts[new][k], ends[new][k]) for k in starts[new])  # then trained
    for name, state in ends.items():  # no adapter was trained again after its own task
        assert all(torch.equal(v, host.state(name)[k]) for k, v in state.items())
    assert d[0]["regularisers"] == d[2]["regularisers"] == []


# -- bad input

@pytest.mark.parametrize("strategy,missing", [("arrow", "ArrowConfig"), ("osf", "OSFConfig")])
def test_a_peft_without_the_method_is_a_one_line_error(strategy, missing, monkeypatch, capsys, toy_sequence):
    import peft

    from conftest import alearn

    monkeypatch.delattr(peft, missing)
    for args in (["bench", toy_sequence, "--strategies", f"naive,{strategy}"],
                 ["run", toy_sequence, "--strategy", strategy]):
        code, out, err = alearn(capsys, *args, "--backbone", "tiny-random")
        assert code == 2 and f"needs peft's {missing}" in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
