"""The router inside a library: decisions recorded, dry runs, profiles stored and removed, routed predict."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from adaptive_learner.learner import Learner
from adaptive_learner.library import AdapterLibrary
from adaptive_learner.router.store import load_profiles, profile_files
from adaptive_learner.training import TrainConfig


TRAIN = TrainConfig(steps=2, batch_size=4, lr=1e-2, max_length=64, seed=0, early_stop=False)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".lock"):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()



@pytest.fixture(scope="module")
def lib(tmp_path_factory, toy_task, pair_task):
    """A library that learned the toy sentiment task and the toy pair task through the router."""
    from adaptive_learner.backbone import load_backbone

    path = tmp_path_factory.mktemp("router") / "lib"
    learner = Learner(path, backbone=load_backbone("tiny-random"), train=TRAIN)
    first = learner.learn(toy_task, eval_limit=8)
    second = learner.learn(pair_task, eval_limit=8)
    return path, learner, first, second


def test_first_task_of_an_empty_library_creates_and_the_decision_is_recorded(lib):
    path, learner, first, _ = lib
    assert first.action == "new" and first.confidence == 1.0 and "empty" in first.explanation
    m = json.loads((path / "manifest.json").read_text())
    assert m["history"][0]["decision"]["action"] == "new"
    assert m["router"]["encoder"] == "hashing" and "combiner" in m["router"]


def test_each_task_has_a_profile_in_its_adapters_data(lib):
    path, learner, _, second = lib
    lib_ = AdapterLibrary.open(path)
    profiles = {p.task: p for p in load_profiles(lib_)}
    assert set(profiles) == {"toy", "pairs"}
    assert profiles["pairs"].features.n_fields == 2 and profiles["toy"].features.examples.shape[1] == 2 * 64 + 2
    for task, prof in profiles.items():
        for name in profile_files(task):
            assert (path / "data" / prof.adapter / name).is_file()
    assert lib_.verify() == []
    assert {c["adapter"] for c in second.decision["candidates"]} == {"lora-toy"}
    # whether the adapter learned its task is stored with the task and reaches the router's profiles
    # (no held-out split at this budget: unknown, None)
    for task, prof in profiles.items():
        assert "adapter_learned" in lib_.tasks[task] and prof.learned is lib_.tasks[task]["adapter_learned"] is None


def test_dry_run_prints_the_decision_and_changes_nothing(lib, toy_task):
    path, learner, _, _ = lib
    before = digest(path)
    again = learner.learn(replace(toy_task), dry_run=True)
    assert digest(path) == before
    assert set(again.decision) >= {"action", "adapter", "confidence", "candidates", "explanation"}
    assert again.action == "reuse" and again.adapter == "lora-toy"


def test_reopening_the_library_gives_identical_decisions(lib, toy_task, pair_task):
    path, learner, _, _ = lib
    from adaptive_learner.backbone import load_backbone

    other = Learner(path, backbone=load_backbone("tiny-random"), train=TRAIN)
    for task in (toy_task, pair_task):
        a = learner.learn(task, dry_run=True).decision
        b = other.learn(task, dry_run=True).decision
        assert a == b


def test_predict_without_a_task_routes_each_input(lib, pair_task):
    path, learner, _, _ = lib
    preds = learner.predict(["superb lovely wonderful", "the word fine ||| the word fine"])
    assert preds[0].task == "toy" and preds[0].adapter == "lora-toy"
    assert preds[1].task == "pairs" and preds[1].adapter == "lora-pairs"
    assert preds[1].label in pair_task.spec.label_names
    assert all(p.route_confidence is not None and 0 < p.route_confidence <= 1 for p in preds)
    # routed answers equal the answers with the task given (same prompt, same adapter)
    given = learner.predict(["superb lovely wonderful"], task="toy")[0]
    assert given.label == preds[0].label and given.confidence == pytest.approx(preds[0].confidence, abs=1e-4)


def test_forced_choices_override_the_router(lib, toy_task):
    path, learner, _, _ = lib
    out = learner.learn(toy_task, force_new=True, dry_run=True)
    assert out.action == "new" and out.decision is None and "forced" in out.explanation
    out = learner.learn(toy_task, reuse="lora-pairs", dry_run=True)
    assert out.action == "reuse" and out.adapter == "lora-pairs"


def test_moving_a_task_drops_its_old_profile_and_removing_an_adapter_removes_its_profiles(tmp_path, toy_task,
                                                                                           fresh_backbone):
    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=TRAIN)
    learner.learn(toy_task, eval_limit=4)
    learner.learn(toy_task, force_new=True, eval_limit=4)  # toy now lives in lora-toy-2
    lib_ = AdapterLibrary.open(tmp_path / "lib")
    assert [(p.task, p.adapter) for p in load_profiles(lib_)] == [("toy", "lora-toy-2")]
    assert not any((tmp_path / "lib" / "data" / "lora-toy" / n).exists() for n in profile_files("toy"))
    assert lib_.verify() == []
    with lib_.transaction() as tx:
        tx.remove_adapter("lora-toy-2")
    assert load_profiles(AdapterLibrary.open(tmp_path / "lib")) == []
    assert not (tmp_path / "lib" / "data" / "lora-toy-2").exists()


def test_predict_without_task_on_a_library_without_profiles_is_a_clear_error(tmp_path, fresh_backbone):
    from adaptive_learner.errors import UserError

    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=TRAIN)
    with pytest.raises(UserError, match="no learned task"):
        learner.predict(["hello"])


def test_fewer_examples_than_k_still_decides_and_says_so(tmp_path, fresh_backbone, toy_task):
    from adaptive_learner.tasks.spec import TaskData

    learner = Learner(tmp_path / "lib", backbone=fresh_backbone, train=TRAIN)
    learner.learn(toy_task, eval_limit=4)
    few = TaskData(toy_task.spec, toy_task.train[:3], toy_task.test)
    d = learner.learn(few, dry_run=True)
    assert d.action in ("reuse", "new") and "fewer than k" in d.explanation
    sigs = {c["head"] for c in d.decision["candidates"]}
    assert sigs == {"description+label_names+labels"}  # below min_examples: description and labels only


def test_decide_hands_the_router_an_answer_trial_unless_told_not_to(lib, toy_task, monkeypatch):
    """``Learner.decide(answer_trial=False)`` decides on the signals alone; by default the router gets a
    trial that asks the stored adapters (``router.trial.run_answer_trial``) in their own tasks' words."""
    from adaptive_learner.router import trial as trial_module

    _, learner, _, _ = lib
    given, asked = [], []
    real = learner.router.decider.decide

    def spy(probe, profiles, trial=None, answer_trial=None):
        given.append(answer_trial)
        if answer_trial is not None:
            answer_trial([(p.adapter, p.task) for p in profiles])
        return real(probe, profiles, trial)

    monkeypatch.setattr(learner.router.decider, "decide", spy)
    monkeypatch.setattr(trial_module, "run_answer_trial", lambda host, spec, ex, cands, *a, **k: asked.append(
        [(a, s.name) for a, s in cands]) or {})
    learner.decide(toy_task, answer_trial=False)
    assert given == [None] and asked == []
    learner.decide(toy_task)
    assert callable(given[-1]) and asked and {name for _, name in asked[0]} == {p.task for p in load_profiles(learner.library)}
