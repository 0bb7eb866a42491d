"""``alearn bench``: same data for every strategy, repeats with mean and spread, lr search on held-out data."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from adaptive_learner.evaluation.bench import SEARCH_REPEAT_SEED, BenchConfig, holdout_tasks, run_bench, task_orders
from adaptive_learner.evaluation.harness import RunConfig, prepare_tasks
from adaptive_learner.training import TrainConfig

from conftest import alearn



def tiny_bench(sequence, **kw):
    base = dict(sequence=sequence, strategies=["zero-shot", "naive", "ewc-replay"], backbone="tiny-random",
                max_train=24, max_test=6, train=TrainConfig(steps=2, batch_size=4, lr=1e-2, max_length=64, early_stop=False),
                options={"ewc_samples": 4, "replay_buffer_size": 8})
    return BenchConfig(**{**base, **kw})


def test_task_orders_are_distinct_and_start_with_the_written_one():
    orders = task_orders(4, 3)
    assert orders[0] == [0, 1, 2, 3] and len({tuple(o) for o in orders}) == 3
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert task_orders(4, 3) == orders


@pytest.fixture(scope="module")
def repeated(toy_sequence, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = tiny_bench(toy_sequence, seeds=[0, 1], orders=2, reference="naive")
    return cfg, run_bench(cfg, out), out


def test_every_strategy_runs_on_the_same_data_for_each_seed_and_order(repeated):
    cfg, res, out = repeated
    assert len(res.runs) == 3 * 2 * 2
    for seed in (0, 1):
        for order in (0, 1):
            group = [r for r in res.runs if r["seed"] == seed and r["order"] == order]
            assert [r["strategy"] for r in group] == cfg.strategies
            assert len({tuple(r["tasks"]) for r in group}) == 1
            docs = [json.loads((out / f"seed{seed}-order{order}" / s / "results.json").read_text())
                    for s in cfg.strategies]
            assert len({json.dumps([d["n_train"], d["n_test"], d["config"]["train"]["steps"]]) for d in docs}) == 1
    assert [r["tasks"] for r in res.runs if r["order"] == 1][0] == ["pairs", "toy"]


def test_table_reports_mean_and_spread_over_repeats(repeated):
    cfg, res, out = repeated
    row = next(r for r in res.table if r["strategy"] == "naive")
    accs = [r["metrics"]["avg_acc"] for r in res.runs if r["strategy"] == "naive"]
    assert row["n"] == 4
    assert row["avg_acc"][0] == pytest.approx(np.mean(accs))
    assert row["avg_acc"][1] == pytest.approx(np.std(accs, ddof=1))
    assert row["n_adapters"][0] == 1 and row["trainable_params"][0] > 0
    las = [np.mean(np.diag(r["matrix"])) for r in res.runs if r["strategy"] == "naive"]  # each task after its training
    assert row["learning_acc"][0] == pytest.approx(np.mean(las)) and row["learning_acc"][1] == pytest.approx(
        np.std(las, ddof=1))
    md = (out / "bench.md").read_text()
    header = ("| strategy | lr | AvgAcc | AvgAcc - naive [95% CI] | LA | BWT | FWT | Forgetting | trainable params | "
              "adapters | wall s |")
    assert header in md and "±" in md and md.count("### ") == 12
    assert (out / "bars.png").stat().st_size > 1000
    doc = json.loads((out / "bench.json").read_text())
    assert doc["orders"] == [["toy", "pairs"], ["pairs", "toy"]] and len(doc["runs"]) == 12


def test_bench_reports_what_its_runs_cost_in_wall_and_cpu_hours(repeated):
    """Every run records its process's CPU seconds beside its wall seconds; bench.md sums both over the runs."""
    cfg, res, out = repeated
    # (tiny runs: a run's seconds, rounded to 0.1, may be 0; the results file holds the same figures)
    for r in res.runs:
        t = json.loads((out / f"seed{r['seed']}-order{r['order']}" / r["strategy"] / "results.json").read_text())
        assert (r["cpu_s"], r["wall_s"]) == (t["timings_s"]["cpu"], t["timings_s"]["total"]) and r["cpu_s"] >= 0
    assert sum(r["cpu_s"] for r in res.runs) > 0
    wall, cpu = sum(r["wall_s"] for r in res.runs) / 3600, sum(r["cpu_s"] for r in res.runs) / 3600
    line = next(x for x in (out / "bench.md").read_text().splitlines() if x.startswith("Cost of the"))
    assert line == f"Cost of the 12 runs on the test data: {wall:.2f} hours of wall time, {cpu:.2f} CPU hours."
    from adaptive_learner.evaluation.bench import cost_markdown

    older = [{**r, "cpu_s": None} if i else r for i, r in enumerate(res.runs)]  # runs made before CPU was recorded
    assert "(the 1 of 12 runs that recorded it)" in cost_markdown(older)[-1]


def test_finished_runs_are_reused(repeated):
    cfg, res, out = repeated
    f = out / "seed1-order1" / "naive" / "results.json"
    before = f.stat().st_mtime_ns
    again = run_bench(cfg, out)
    assert f.stat().st_mtime_ns == before
    assert [r["metrics"] for r in again.runs] == [r["metrics"] for r in res.runs]


def test_a_run_stored_before_a_training_setting_existed_is_the_run_with_its_old_value():
    from adaptive_learner.evaluation.config import ADDED_LATER, RunConfig, run_identity
    from adaptive_learner.training import TrainConfig

    another = {"monitor": "accuracy", "ema": 0.9, "lr_retries": 1, "choice_sample": 8,  # a value other than the one
               "lora_plus_ratio": 16.0}                                                # stored runs had
    assert set(another) == set(ADDED_LATER)
    for key, old in ADDED_LATER.items():
        stored = json.loads(json.dumps(RunConfig(train=TrainConfig(**{key: old})).to_dict(), default=str))
        del stored["train"][key]  # as written before the setting existed
        same = json.loads(json.dumps(RunConfig(train=TrainConfig(**{key: old})).to_dict(), default=str))
        assert run_identity(stored) == run_identity(same)
        other = json.loads(json.dumps(RunConfig(train=TrainConfig(**{key: another[key]})).to_dict(), default=str))
        assert run_identity(stored) != run_identity(other)


def test_holdout_split_comes_from_training_data_only(toy_sequence):
    cfg = tiny_bench(toy_sequence, lr_search=True, holdout=0.25, holdout_max=5)
    tasks = prepare_tasks(RunConfig(sequence=toy_sequence, strategy="naive", max_train=24, max_test=6))
    split = holdout_tasks(tasks, cfg, 0)
    for t, s in zip(tasks, split):
        fields = lambda rows: [json.dumps(r.fields, sort_keys=True) for r in rows]  # noqa: E731
        assert set(fields(s.test)) <= set(fields(t.train)) and not set(fields(s.test)) & set(fields(t.test))
        assert len(s.test) == 5 and len(s.train) == 18


def test_lr_search_picks_from_the_grid_and_is_reported(toy_sequence, tmp_path):
    cfg = tiny_bench(toy_sequence, strategies=["zero-shot", "naive"], lr_search=True, lr_grid=[1e-4, 3e-2])
    res = run_bench(cfg, tmp_path)
    assert set(res.search) == {"naive"} and res.lrs["naive"] in (1e-4, 3e-2) and res.lrs["zero-shot"] == 1e-2
    assert set(res.search["naive"]) == {"0.0001", "0.03"}
    searched = json.loads((tmp_path / "lr-search" / "naive-lr0.03" / "results.json").read_text())
    tasks = prepare_tasks(RunConfig(sequence=toy_sequence, strategy="naive", max_train=24, max_test=6))
    held = holdout_tasks(tasks, cfg, 0)
    assert searched["n_test"] == [len(t.test) for t in held] != [6, 6]  # held-out parts, not the test split
    assert searched["n_train"] == [len(t.train) for t in held]
    assert next(r for r in res.runs if r["strategy"] == "naive")["lr"] == res.lrs["naive"]
    md = (tmp_path / "bench.md").read_text()
    assert "## Learning-rate search" in md and "(searched)" in md


def test_lr_search_on_part_of_the_sequence_alone_runs_nothing_on_test(toy_sequence, tmp_path):
    cfg = tiny_bench(toy_sequence, strategies=["zero-shot", "naive"], lr_search=True, lr_grid=[1e-4, 3e-2],
                     search_tasks=["pairs"], search_only=True)
    res = run_bench(cfg, tmp_path)
    assert res.runs == [] and set(res.search) == {"naive"} and res.lrs["naive"] in (1e-4, 3e-2)
    searched = json.loads((tmp_path / "lr-search" / "naive-lr0.03" / "results.json").read_text())
    assert searched["tasks"] == ["pairs"]
    assert not list(tmp_path.glob("seed*"))  # no run on the test data
    md = (tmp_path / "bench.md").read_text()
    assert "## Learning-rate search (on pairs only;" in md and "| naive |" in md and "### " not in md
    assert json.loads((tmp_path / "bench.json").read_text())["lr_search"]["naive"] == res.search["naive"]


def test_repeated_lr_search_scores_each_rate_by_the_mean_of_its_own_splits_and_reuses_the_single_search(
        toy_sequence, tmp_path):
    base = dict(strategies=["naive"], lr_search=True, lr_grid=[1e-4, 3e-2], search_only=True)
    single = run_bench(tiny_bench(toy_sequence, **base), tmp_path)
    first = {p: (tmp_path / "lr-search" / p / "results.json").stat().st_mtime_ns
             for p in ("naive-lr0.0001", "naive-lr0.03")}
    cfg = tiny_bench(toy_sequence, search_repeats=2, **base)
    res = run_bench(cfg, tmp_path)
    for lr in ("0.0001", "0.03"):  # repeat 0 is the single search's run, kept; repeat 1 ran in -r1
        assert (tmp_path / "lr-search" / f"naive-lr{lr}" / "results.json").stat().st_mtime_ns == first[f"naive-lr{lr}"]
        again = json.loads((tmp_path / "lr-search" / f"naive-lr{lr}-r1" / "results.json").read_text())
        each = res.search_runs["naive"][lr]
        assert each[0] == single.search["naive"][lr] and each[1] == again["metrics"]["avg_acc"]
        assert res.search["naive"][lr] == float(np.mean(each))
        assert again["config"]["seed"] == SEARCH_REPEAT_SEED
    tasks = prepare_tasks(RunConfig(sequence=toy_sequence, strategy="naive", max_train=24, max_test=6))
    held = [[json.dumps(r.fields, sort_keys=True) for r in t.test] for t in holdout_tasks(tasks, cfg, 0)]
    held_r1 = [[json.dumps(r.fields, sort_keys=True) for r in t.test]
               for t in holdout_tasks(tasks, cfg, SEARCH_REPEAT_SEED)]
    assert held != held_r1  # the repeat scores other held-out examples
    assert res.lrs["naive"] == max(cfg.lr_grid, key=lambda lr: (res.search["naive"][f"{lr:g}"],
                                                                 -abs(np.log(lr / cfg.train.lr))))
    assert "2 runs per rate" in (tmp_path / "bench.md").read_text()
    assert json.loads((tmp_path / "bench.json").read_text())["lr_search_runs"]["naive"] == res.search_runs["naive"]


def test_cli_bench_mistakes_are_one_line_errors(capsys, toy_sequence):
    for args, msg in [(["--strategies", "naive,nope"], "unknown strategies"),
                      (["--lr-search", "--search-tasks", "pairs,nope"], "nope not in this sequence"),
                      (["--search-only"], "need --lr-search"),
                      (["--search-repeats", "2"], "--search-repeats needs --lr-search"),
                      (["--lr-search", "--search-repeats", "0"], "--search-repeats must be at least 1"),
                      (["--seeds", "0,x"], "--seeds"), (["--orders", "0"], "--orders"),
                      (["--set", "ewc_strength"], "KEY=VALUE"),
                      (["--zero-shot-cache", str(Path(toy_sequence).parent)], "is not a file")]:
        code, out, err = alearn(capsys, "bench", toy_sequence, "--backbone", "tiny-random", *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_each_run_records_only_the_options_its_strategy_reads():
    from adaptive_learner.evaluation.bench import strategy_options

    opts = {"ewc_strength": 3.0, "replay_ratio": 0.5, "olora_lambda1": 0.1}
    assert strategy_options("naive", opts) == {}
    assert strategy_options("ewc-replay", opts) == {"ewc_strength": 3.0, "replay_ratio": 0.5}
    assert strategy_options("o-lora", opts) == {"olora_lambda1": 0.1}


def test_each_strategy_is_compared_with_the_reference_on_the_same_examples(repeated):
    """The paired difference is the mean AvgAcc difference over the 4 runs, with its interval around it."""
    from adaptive_learner.evaluation.stats import avg_accuracy

    cfg, res, out = repeated
    rows = {r["strategy"]: r for r in res.paired}
    assert set(rows) == {"zero-shot", "ewc-replay"} and all(r["against"] == "naive" for r in rows.values())
    for s, row in rows.items():
        diffs = []
        for r in (r for r in res.runs if r["strategy"] == s):
            mine, ref = (json.loads((out / f"seed{r['seed']}-order{r['order']}" / x / "results.json").read_text())
                         for x in (s, "naive"))
            assert [len(mine["final_correct"][t]) for t in mine["tasks"]] == mine["n_test"]
            assert avg_accuracy(mine["final_correct"]) == pytest.approx(mine["metrics"]["avg_acc"])
            diffs.append(mine["metrics"]["avg_acc"] - ref["metrics"]["avg_acc"])
        assert row["runs"] == 4 and row["mean"] == pytest.approx(np.mean(diffs))
        assert row["low"] <= row["mean"] <= row["high"] and row["excludes_zero"] == (row["low"] > 0 or row["high"] < 0)
    md = (out / "bench.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| ewc-replay |"))
    d = rows["ewc-replay"]
    assert f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" in line and "| naive | 0.01 |" in md
    assert "## Paired differences of AvgAcc" in md and "(reference)" in md
    assert json.loads((out / "bench.json").read_text())["paired"] == json.loads(json.dumps(res.paired))


def test_bwt_has_a_paired_interval_from_each_stages_outcomes_right_after_it(repeated):
    """Each run keeps its diagonal's per-example outcomes; BWT's paired interval is built from them and the final
    row's, around the mean BWT of the runs, and printed in the table."""
    from adaptive_learner.evaluation.stats import bwt_paired

    cfg, res, out = repeated
    for row in res.table:
        if row["strategy"] == "zero-shot":
            continue
        docs = [json.loads((out / f"seed{r['seed']}-order{r['order']}" / row["strategy"] / "results.json").read_text())
                for r in res.runs if r["strategy"] == row["strategy"]]
        for doc in docs:  # the diagonal of the matrix, example by example
            assert [np.mean(x) for x in doc["learned_correct"]] == pytest.approx(np.diag(doc["matrix"]).tolist())
        d = bwt_paired(docs, [doc["config"]["seed"] for doc in docs])
        assert d.mean == pytest.approx(np.mean([doc["metrics"]["bwt"] for doc in docs]), abs=1e-9)
        assert row["bwt_interval"] == [d.low, d.high] and d.low <= d.mean <= d.high
        lines = (out / "bench.md").read_text().splitlines()
        column = next(x for x in lines if x.startswith("| strategy |")).split("|").index(" BWT ")
        line = next(x for x in lines if x.startswith(f"| {row['strategy']} |"))
        assert f"[{d.low:+.3f}, {d.high:+.3f}]" in line.split("|")[column]


def test_router_comparisons_include_its_task_inferred_row_and_old_runs_still_read(toy_sequence, tmp_path):
    cfg = tiny_bench(toy_sequence, strategies=["naive", "arrow", "router"], seeds=[0, 1], max_test=8,
                     options={"router_k": 8, "ewc_samples": 4, "replay_buffer_size": 8})
    res = run_bench(cfg, tmp_path)
    pairs = {(r["strategy"], r["against"]): r for r in res.paired}
    assert set(pairs) == {("naive", "router"), ("arrow", "router"), ("router (task inferred)", "router"),
                          ("arrow", "router (task inferred)")}
    doc = json.loads((tmp_path / "seed0-order0" / "router" / "results.json").read_text())
    inferred = doc["router"]["task_inferred"]
    for t, v in inferred["per_task"].items():
        assert len(v["correct"]) == v["n"] and np.mean(v["correct"]) == pytest.approx(v["accuracy"])
    for seed in (0, 1):  # results written before outcomes were recorded
        f = tmp_path / f"seed{seed}-order0" / "naive" / "results.json"
        old = json.loads(f.read_text())
        del old["final_correct"], old["metrics"]["learning_acc"]  # and before LA was a metric
        f.write_text(json.dumps(old))
    again = run_bench(cfg, tmp_path)
    assert [r["metrics"] for r in again.runs] == [r["metrics"] for r in res.runs]
    assert ("naive", "router") not in {(r["strategy"], r["against"]) for r in again.paired}
    line = next(x for x in (tmp_path / "bench.md").read_text().splitlines() if x.startswith("| naive |"))
    assert line.split("|")[4].strip() == "n/a"  # the column of the difference with the router


def test_cli_bench_reference_and_resamples_are_checked(capsys, toy_sequence):
    for args, msg in [(["--reference", "nope"], "--reference"), (["--resamples", "5"], "--resamples")]:
        code, out, err = alearn(capsys, "bench", toy_sequence, "--backbone", "tiny-random", *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_zero_shot_row_is_scored_once_per_seed_and_order(repeated, tiny_backbone, tmp_path, monkeypatch):
    cfg, res, out = repeated
    for seed in (0, 1):  # every strategy of a seed and order reports the same row, from one shared cache
        rows = {json.dumps(json.loads((out / f"seed{seed}-order0" / s / "results.json").read_text())["zero_shot"])
                for s in cfg.strategies}
        assert len(rows) == 1 and (out / f"seed{seed}-order0" / "zero-shot.json").is_file()
    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.evaluation import harness
    from adaptive_learner.prompting import encode_examples
    tasks = prepare_tasks(RunConfig(sequence=cfg.sequence, strategy="naive", max_train=24, max_test=6))
    rc = RunConfig(sequence=cfg.sequence, backbone="tiny-random")
    items = [encode_examples(tiny_backbone.tokenizer, t.spec, t.test, 64) for t in tasks]
    host = AdapterHost(tiny_backbone, rc.lora)
    first = harness.zero_shot_row(host, rc, items, tmp_path / "zs.json")
    calls = []
    monkeypatch.setattr(harness, "score", lambda m, its, *a, **k: calls.append(1) or
                        [np.eye(len(it.choices))[0] for it in its])
    assert list(harness.zero_shot_row(host, rc, items, tmp_path / "zs.json")) == list(first) and not calls
    other = RunConfig(sequence=cfg.sequence, backbone="another-model")  # another backbone is scored anew
    harness.zero_shot_row(host, other, items, tmp_path / "zs.json")
    assert len(calls) == len(items)


def test_benches_given_one_zero_shot_cache_file_share_their_rows(toy_sequence, tmp_path):
    """--zero-shot-cache: a bench in another directory reads the rows an earlier bench wrote to the file (and
    writes no per-seed file of its own); the stored value, not a new scoring, is what its runs report."""
    cache = tmp_path / "shared" / "zero-shot.json"
    cfg = tiny_bench(toy_sequence, strategies=["naive"], zero_shot_cache=cache)
    first = run_bench(cfg, tmp_path / "a")
    assert cache.is_file() and not (tmp_path / "a" / "seed0-order0" / "zero-shot.json").exists()
    rows = json.loads(cache.read_text())
    assert len(rows) == len(first.runs[0]["tasks"])
    cache.write_text(json.dumps({k: 0.125 for k in rows}))  # no 6-example task can score 0.125: read, not rescored
    second = run_bench(tiny_bench(toy_sequence, strategies=["per-task"], zero_shot_cache=cache), tmp_path / "b")
    assert second.runs[0]["zero_shot"] == [0.125] * len(rows)
    assert json.loads((tmp_path / "b" / "bench.json").read_text())["config"]["zero_shot_cache"] == str(cache)


def test_an_interrupted_run_resumes_from_its_checkpoint_when_the_bench_is_run_again(toy_sequence, tmp_path,
                                                                                 monkeypatch):
    """A bench stopped during a run's second task continues from its first task's checkpoint when the same
    command is run again (the first task is not trained again), and ends with the uninterrupted results."""
    from adaptive_learner.strategies import REGISTRY

    cfg = tiny_bench(toy_sequence, strategies=["naive"], seeds=[0])
    straight = run_bench(cfg, tmp_path / "straight")
    learn, calls = REGISTRY["naive"].learn, []

    def interrupted(self, task, items):
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        end = time.process_time() + 1.0  # the first process's share of the wall and CPU time is at least a second
        while time.process_time() < end:
            pass
        return learn(self, task, items)

    monkeypatch.setattr(REGISTRY["naive"], "learn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cfg, tmp_path / "resumed")
    run_dir = tmp_path / "resumed" / "seed0-order0" / "naive"
    ckpt = json.loads((run_dir / "checkpoint.json").read_text())
    assert ckpt["done"] == 1
    calls.clear()
    monkeypatch.setattr(REGISTRY["naive"], "learn", lambda self, task, items: (calls.append(task.name),
                                                                              learn(self, task, items))[1])
    again = run_bench(cfg, tmp_path / "resumed")
    assert calls == ["pairs"]  # only the task after the checkpoint
    assert not (run_dir / "checkpoint.json").exists()
    assert [r["metrics"] for r in again.runs] == [r["metrics"] for r in straight.runs]
    # the wall and CPU times count both processes' shares, not only the resumed one's
    t = json.loads((run_dir / "results.json").read_text())["timings_s"]
    assert ckpt["timings"]["total"] >= 1.0 and t["total"] > ckpt["timings"]["total"]
    assert ckpt["timings"]["cpu"] >= 1.0 and t["cpu"] > ckpt["timings"]["cpu"]
