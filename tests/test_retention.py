"""Each task's test examples kept with its adapter, scored again: after a reuse (alearn learn) and on demand
(alearn evaluate, Learner.check), against what they scored when learned, paired example by example."""

import json

import numpy as np
import pytest

from adaptive_learner.errors import LibraryError
from adaptive_learner.evaluation.retention import FORMAT, TaskCheck, check_file, describe, retention
from adaptive_learner.tasks.spec import Example

from conftest import FIXTURES, TOY, make_toy_library, run_alearn, tree_digest

TRAIN = ["--steps", "2", "--max-length", "48", "--batch-size", "4", "--no-head"]


def _check(correct):
    return TaskCheck("t", [Example({"text": f"x{i}"}, i % 2) for i in range(len(correct))], list(correct))


def test_a_check_round_trips_and_a_damaged_one_is_refused():
    c = _check([1, 0, 1, 1])
    back = TaskCheck.from_json(json.loads(json.dumps(c.to_json())), n_labels=2, fields=["text"])
    assert back == c and back.accuracy == 0.75
    good = c.to_json()
    for bad in ({**good, "format": "other"},
                {**good, "examples": [{**good["examples"][0], "label": 2}]},
                {**good, "examples": [{**good["examples"][0], "correct": 3}]},
                {**good, "examples": [{"fields": {"other": "x"}, "label": 0, "correct": 1}]},
                {k: v for k, v in good.items() if k != "examples"}, [1, 2]):
        with pytest.raises(LibraryError):
            TaskCheck.from_json(bad, n_labels=2, fields=["text"])


def test_retention_pairs_the_change_by_example():
    same = retention(_check([1, 0] * 20), "a", [1, 0] * 20)
    assert (same.then, same.now, same.change.mean, same.change.low, same.change.high) == (0.5, 0.5, 0, 0, 0)
    assert same.verdict == "kept"
    # the same accuracy from other examples is still no change on average, but not a zero-width interval
    swapped = retention(_check([1, 0] * 20), "a", [0, 1] * 20)
    assert swapped.change.mean == 0 and swapped.change.low < 0 < swapped.change.high and swapped.verdict == "kept"
    lost = retention(_check([1] * 40), "a", [1] * 20 + [0] * 20)
    assert lost.now == 0.5 and lost.change.high < 0 and lost.verdict == "lost"
    assert "-50.0 points" in describe(lost) and "lost" in describe(lost)
    gained = retention(_check([0] * 40), "a", [1] * 40)
    assert gained.verdict == "gained" and gained.to_json()["change"] == 1.0
    with pytest.raises(ValueError, match="3 outcomes for 40"):
        retention(_check([1] * 40), "a", [1, 1, 1])


@pytest.fixture(scope="module")
def reused_library(tmp_path_factory):
    """toy learned, then toy-again learned into the same adapter (--reuse), through the CLI."""
    lib = make_toy_library(tmp_path_factory.mktemp("retention") / "lib", "--backbone", "tiny-random", *TRAIN)
    code, out, err = run_alearn("learn", "--library", lib, "--data", TOY, "--description", "Is it positive?",
                                "--name", "toy-again", "--reuse", "lora-toy", *TRAIN)
    assert code == 0, err
    return lib, out


def test_learn_keeps_each_tasks_test_examples_with_what_was_right(reused_library):
    lib, _ = reused_library
    m = json.loads((lib / "manifest.json").read_text())
    files = m["adapters"]["lora-toy"]["files"]
    for task in ("toy", "toy-again"):
        rel = f"data/lora-toy/{check_file(task)}"
        assert rel in files
        stored = json.loads((lib / rel).read_text())
        assert stored["format"] == FORMAT and stored["task"] == task
        # the accuracy the manifest reports is the mean of the outcomes kept
        assert np.mean([e["correct"] for e in stored["examples"]]) == pytest.approx(m["tasks"][task]["accuracy"])
        assert len(stored["examples"]) == 24  # the toy file's stratified 30% test split, every example
    assert run_alearn("library", "verify", lib)[0] == 0


def test_a_reuse_scores_the_adapters_other_tasks_again(reused_library):
    lib, out = reused_library
    m = json.loads((lib / "manifest.json").read_text())
    event = m["history"][-1]
    assert event["action"] == "reuse" and [r["task"] for r in event["retention"]] == ["toy"]
    r = event["retention"][0]
    assert r["then"] == pytest.approx(m["tasks"]["toy"]["accuracy"]) and r["examples"] == 24
    assert r["low"] <= r["change"] <= r["high"] and r["change"] == pytest.approx(r["now"] - r["then"])
    assert "the other tasks of lora-toy" in out and "toy (lora-toy): " in out and " when learned, " in out
    # evaluate afterwards scores the adapter as stored: what the reuse reported as now
    code, out, err = run_alearn("evaluate", lib, "--task", "toy", "--json")
    assert code == 0, err
    line = json.loads(out)
    assert line["now"] == pytest.approx(r["now"]) and line["then"] == pytest.approx(r["then"])


def test_evaluate_right_after_learning_reports_no_change(tmp_path):
    lib = make_toy_library(tmp_path / "lib", "--backbone", "tiny-random", *TRAIN)
    before = tree_digest(lib)
    code, out, err = run_alearn("evaluate", lib)
    assert code == 0, err
    assert out.startswith("toy (lora-toy): ") and "+0.0 points [+0.0, +0.0] over 24 examples; kept" in out
    assert tree_digest(lib) == before  # evaluating writes nothing


def test_evaluate_on_a_users_file_with_and_without_the_task_id(reused_library):
    lib, _ = reused_library
    code, out, err = run_alearn("evaluate", lib, "--task", "toy", "--data", TOY, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["examples"] == 80 and r["majority"] == 0.5 and r["low"] <= r["accuracy"] <= r["high"]
    table = {x["label"]: x for x in r["per_label"]}
    assert set(table) == {"negative", "positive"} and {x["support"] for x in table.values()} == {40}
    assert sum(x["answered"] for x in table.values()) == 80  # with the task id every answer is one of its labels
    # the right answers, counted by gold label, are the accuracy's
    assert sum(x["recall"] * x["support"] for x in table.values()) == pytest.approx(80 * r["accuracy"])
    code, out, err = run_alearn("evaluate", lib, "--task", "toy", "--data", TOY, "--routed", "--no-abstain", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["routed"] is True and sum(r["routes"].values()) == 80 and r["unknown"] == 0
    assert r["routed_to_task"] == pytest.approx(r["routes"].get("toy", 0) / 80)
    code, out, err = run_alearn("evaluate", lib, "--task", "toy", "--data", TOY)
    assert code == 0 and "accuracy" in out and "over 80 examples; majority class 0.500" in out
    assert "label     support  recall  precision" in out and out.count("\n") == 4  # a line per label


def test_per_label_counts_recall_and_precision():
    from adaptive_learner.learner import per_label

    gold = ["a", "a", "a", "b", "b", "c"]
    said = ["a", "b", "a", "b", "unknown", "a"]
    table = {x["label"]: x for x in per_label(gold, said, ["a", "b", "c"])}
    assert table["a"] == {"label": "a", "support": 3, "answered": 3, "recall": 2 / 3, "precision": 2 / 3}
    assert table["b"] == {"label": "b", "support": 2, "answered": 2, "recall": 0.5, "precision": 0.5}
    assert table["c"] == {"label": "c", "support": 1, "answered": 0, "recall": 0.0, "precision": None}


def test_fail_on_loss_exits_1_when_a_task_lost_accuracy(reused_library, monkeypatch):
    lib, _ = reused_library
    from adaptive_learner.learner import Learner

    # every stored example now wrong: whatever the tiny model got right when learned is lost
    monkeypatch.setattr(Learner, "_correct", lambda self, spec, examples, adapter, head: np.zeros(len(examples), int))
    stored = json.loads((lib / "data" / "lora-toy" / check_file("toy")).read_text())
    if not any(e["correct"] for e in stored["examples"]):
        pytest.skip("the tiny model got nothing right: nothing to lose")
    code, out, _ = run_alearn("evaluate", lib, "--task", "toy", "--fail-on-loss")
    assert code == 1 and "lost" in out
    assert run_alearn("evaluate", lib, "--task", "toy")[0] == 0  # without the flag: reported, exit 0


def test_a_task_without_kept_examples_is_named(tmp_path, tiny_backbone, toy_task, fast_train):
    from adaptive_learner.learner import Learner

    learner = Learner(tmp_path / "lib", backbone=tiny_backbone, train=fast_train)
    learner.learn(toy_task, eval_limit=0)  # no test examples scored: none kept (as a library of an earlier release)
    assert learner.check() == [toy_task.name]
    code, out, _ = run_alearn("evaluate", tmp_path / "lib")
    assert code == 0 and "no test examples kept" in out and "--data" in out


@pytest.mark.parametrize("args, message", [
    (["--data", TOY], "exactly one --task"),
    (["--task", "toy", "--task", "toy-again", "--data", TOY], "exactly one --task"),
    (["--routed"], "are for --data"),
    (["--task", "ghost"], "no task 'ghost'"),
    (["--task", "ghost", "--data", TOY], "no task 'ghost'"),
    (["--task", "toy", "--data", str(FIXTURES / "toy_pairs.jsonl")], "missing column"),
    (["--task", "toy", "--data", "/nonexistent.csv"], "nonexistent.csv"),
])
def test_evaluate_bad_input_is_one_error_line(reused_library, args, message):
    lib, _ = reused_library
    before = tree_digest(lib)
    code, _, err = run_alearn("evaluate", lib, *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert tree_digest(lib) == before


def test_a_task_learned_again_into_another_adapter_moves_its_check(tmp_path):
    lib = make_toy_library(tmp_path / "lib", "--backbone", "tiny-random", *TRAIN)
    code, _, err = run_alearn("learn", "--library", lib, "--data", TOY, "--description", "Positive?", "--name", "toy",
                              "--force-new", *TRAIN)
    assert code == 0, err
    m = json.loads((lib / "manifest.json").read_text())
    moved = m["tasks"]["toy"]["adapter"]
    assert moved != "lora-toy"
    assert f"data/{moved}/{check_file('toy')}" in m["adapters"][moved]["files"]
    assert f"data/lora-toy/{check_file('toy')}" not in m["adapters"]["lora-toy"]["files"]
    assert not (lib / "data" / "lora-toy" / check_file("toy")).exists()
    assert run_alearn("library", "verify", lib)[0] == 0
    code, out, _ = run_alearn("evaluate", lib)
    assert code == 0 and out.startswith(f"toy ({moved}): ") and len(out.strip().splitlines()) == 1


def test_guard_keeps_the_reused_adapter_and_its_trained_weights_as_a_new_one(tmp_path, tiny_backbone, toy_task, monkeypatch):
    from dataclasses import replace

    from adaptive_learner import learner as learner_module
    from adaptive_learner.learner import Learner
    from adaptive_learner.training import TrainConfig, train_adapter
    from adaptive_learner.training.ewc import EWC_FILE
    from adaptive_learner.training.replay import REPLAY_FILE, ReplayBuffer

    learner = Learner(tmp_path / "lib", backbone=tiny_backbone,
                      train=TrainConfig(steps=3, batch_size=4, max_length=48, early_stop=False, head=False))
    first = learner.learn(toy_task)
    stored = dict(learner.library.adapters[first.adapter]["files"])  # every file of the adapter, by sha256
    weights = {k: v.detach().clone() for k, v in learner.host.trainable(first.adapter).items()}
    # a stand-in for a reuse that cost the first task its answers (the tiny model's own changes are noise)
    cost = replace(retention(_check([1] * 40), first.adapter, [0] * 40), task=toy_task.name)
    monkeypatch.setattr(Learner, "_retention_of", lambda self, adapter, learning: [cost])
    trained = []  # each training's adapter and the weights it ended with

    def recording(host, adapter, *args, **kw):
        rep = train_adapter(host, adapter, *args, **kw)
        trained.append((adapter, {k.replace(f".{adapter}.", "."): v.detach().clone()
                                  for k, v in host.trainable(adapter).items()}))
        return rep

    monkeypatch.setattr(learner_module, "train_adapter", recording)
    second = learner.learn(toy_task.renamed("toy2"), reuse=first.adapter, guard=True)
    assert (second.action, second.rejected, second.init_from) == ("new", first.adapter, first.adapter)
    assert second.adapter not in (first.adapter, None) and "(guard)" in second.explanation
    # one training, in the reused adapter; its weights are the new adapter's, stored as they were trained
    assert [a for a, _ in trained] == [first.adapter]
    ours = {k.replace(f".{second.adapter}.", "."): v for k, v in learner.host.trainable(second.adapter).items()}
    assert ours.keys() == trained[0][1].keys() and all(bool((ours[k] == trained[0][1][k]).all()) for k in ours)
    assert any(not bool((trained[0][1][k] == v).all())
               for k, v in ((k.replace(f".{first.adapter}.", "."), v) for k, v in weights.items()))
    # its forgetting state is its own task's: the replay buffer holds toy2 alone, EWC one task's Fisher
    learner.library.reload()
    buffer = learner.library.read_json(second.adapter, REPLAY_FILE)
    assert ReplayBuffer.from_json(buffer).tasks == ["toy2"]
    fisher = learner.library.read_tensors(second.adapter, EWC_FILE)
    assert int(fisher.pop("__ewc_tasks__")) == 1 and len(fisher) == len(ours)  # one task's Fisher, every weight
    # the accuracy reported is that of the weights kept, on the task's test examples
    (checked,) = learner.check(["toy2"])
    assert checked.change.mean == 0
    learner.library.reload()
    assert learner.library.adapters[first.adapter]["files"] == stored  # the reused adapter as it was, every file
    assert learner.library.adapter_of("toy2") == second.adapter
    assert learner.library.history[-1]["rejected"] == first.adapter
    assert learner.library.history[-1]["retention"][0]["verdict"] == "lost"
    # and in memory: the adapter's weights as stored (the reuse's training undone), its task's answers as when learned
    now = learner.host.trainable(first.adapter)
    assert weights.keys() == now.keys() and all(bool((weights[k] == now[k]).all()) for k in weights)
    (kept,) = learner.check([toy_task.name])
    assert kept.change.mean == 0 and kept.change.low == kept.change.high == 0
    # without the guard the same cost is reported and the reuse is kept
    third = learner.learn(toy_task.renamed("toy3"), reuse=first.adapter)
    assert (third.action, third.adapter, third.rejected) == ("reuse", first.adapter, None)
    assert third.retention[0].verdict == "lost"


def test_learn_guard_on_the_command_line(tmp_path, monkeypatch):
    from dataclasses import replace

    from adaptive_learner.learner import Learner

    lib = make_toy_library(tmp_path / "lib", "--backbone", "tiny-random", *TRAIN)
    cost = replace(retention(_check([1] * 24), "lora-toy", [0] * 24), task="toy")
    monkeypatch.setattr(Learner, "_retention_of", lambda self, adapter, learning: [cost])
    code, out, err = run_alearn("learn", "--library", lib, "--data", TOY, "--description", "Positive?", "--name", "toy2",
                                "--reuse", "lora-toy", "--guard", *TRAIN)
    assert code == 0, err
    assert "toy2: new adapter lora-toy2, started from lora-toy" in out and "(guard)" in out
    assert "the other tasks of lora-toy, after the reuse that was not kept (--guard):" in out and "; lost)" in out
