"""Open-set routing: an input far from every learned task is 'unknown', not sent to the nearest one."""

import numpy as np
import pytest

from adaptive_learner.router.routing import NoveltyModel


def _clusters(seed: int = 0, n: int = 128, dim: int = 40):
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 3, (3, dim))
    return centres, [c + rng.normal(0, 1, (n, dim)) for c in centres]


def test_novelty_thresholds_hold_out_their_own_examples():
    centres, xs = _clusters()
    model = NoveltyModel(xs, quantile=0.99)
    rng = np.random.RandomState(1)
    fresh = np.vstack([c + rng.normal(0, 1, (200, len(c))) for c in centres])  # new inputs of the same tasks
    false_unknown = float(np.mean(model.novelty(fresh).min(1) > 1))
    assert false_unknown < 0.05, "thresholds from held-out halves keep in-task inputs known"
    far = rng.normal(0, 3, (200, centres.shape[1])) + 12.0  # inputs of no stored task
    assert np.all(model.novelty(far).min(1) > 1)
    # thresholds from the fitted examples themselves would be too tight in this many dimensions
    fitted = NoveltyModel(xs, quantile=0.5)
    assert np.all(fitted.thresholds < model.thresholds)


def test_a_task_too_small_to_hold_out_is_never_unknown():
    centres, xs = _clusters(n=3)
    model = NoveltyModel(xs)
    assert np.all(np.isinf(model.thresholds))
    assert np.all(model.novelty(np.zeros((2, centres.shape[1]))) == 0)


@pytest.fixture()
def routed_lib(tmp_path, toy_task):
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.learner import Learner
    from adaptive_learner.training import TrainConfig

    learner = Learner(tmp_path / "lib", backbone=load_backbone("tiny-random"),
                      train=TrainConfig(steps=2, batch_size=8, max_length=64, early_stop=False))
    learner.learn(toy_task, eval_limit=4)
    return learner


def test_predict_says_unknown_with_the_nearest_task_and_no_abstain_routes(routed_lib, toy_task, monkeypatch):
    from adaptive_learner.router import routing

    texts = ["superb lovely wonderful", "awful dull"]
    known = routed_lib.predict(texts, abstain=False)
    # every input beyond every threshold: each is unknown, with the nearest task and the label it would give
    monkeypatch.setattr(routing.NoveltyModel, "novelty", lambda self, feats: np.full((len(feats), 1), 5.0))
    routed_lib.router._input_router = None
    unknown = routed_lib.predict(texts)
    assert [p.label for p in unknown] == ["unknown", "unknown"]
    assert [p.nearest_label for p in unknown] == [p.label for p in known]
    assert all(p.task == "toy" and p.novelty == 5.0 for p in unknown)
    forced = routed_lib.predict(texts, abstain=False)
    assert [p.label for p in forced] == [p.label for p in known]
    # a task given is never second-guessed
    assert all(p.label in toy_task.spec.label_names for p in routed_lib.predict(texts, task="toy"))
