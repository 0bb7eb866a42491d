"""Open-set routing: an input far from every learned task is 'unknown', not sent to the nearest one."""

import numpy as np
import pytest

from adaptive_learner.router.routing import NoveltyModel


def _directions(seed: int = 0, n: int = 128, dim: int = 40, spread: float = 0.3):
    """Three tasks' input embeddings: noisy copies of three random directions."""
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 1, (3, dim))
    return centres, [c + spread * rng.normal(0, 1, (n, dim)) * np.linalg.norm(c) / np.sqrt(dim) for c in centres]


def test_novelty_thresholds_hold_out_each_example():
    centres, xs = _directions()
    model = NoveltyModel(xs, quantile=0.99)
    _, fresh = _directions(seed=0, n=400)  # the same tasks, new inputs (another draw of the noise)
    fresh = np.vstack([f[128:] for f in fresh])
    false_unknown = float(np.mean(model.novelty(fresh).min(1) > 1))
    assert false_unknown < 0.05, "thresholds from held-out neighbours keep in-task inputs known"
    rng = np.random.RandomState(5)
    far = rng.normal(0, 1, (200, centres.shape[1]))  # inputs of no stored task: other directions
    assert np.mean(model.novelty(far).min(1) > 1) > 0.95
    # a lower quantile gives tighter thresholds: more in-task inputs called unknown
    assert np.all(NoveltyModel(xs, quantile=0.5).thresholds < model.thresholds)


def test_a_pair_of_the_wrong_shape_is_unknown_to_a_pair_task():
    """Same text embeddings, different field length ratio: an entailment-shaped pair (long text, short
    statement) against a stored paraphrase-shaped task is unknown; pairs of the task's own shape and
    single inputs are judged by their embeddings alone."""
    centres, xs = _directions()
    rng = np.random.RandomState(3)
    ratios = [rng.normal(0.0, 0.2, 128), None, None]  # task 0 stores pairs of two similar-length sentences
    model = NoveltyModel(xs, quantile=0.99, ratios=ratios)
    _, fresh = _directions(seed=0, n=400)
    near = fresh[0][128:228]
    own = model.novelty(near, list(rng.normal(0.0, 0.2, 100)))[:, 0]
    wrong_shape = model.novelty(near, [-1.6] * 100)[:, 0]
    assert np.mean(own > 1) < 0.05 and np.all(wrong_shape > 1)
    assert np.allclose(model.novelty(near, [None] * 100), model.novelty(near))
    assert np.allclose(model.novelty(near, [-1.6] * 100)[:, 1:], model.novelty(near)[:, 1:])  # no ratios stored


def test_a_task_without_embeddings_or_too_few_never_says_unknown():
    centres, xs = _directions(n=4)
    model = NoveltyModel([xs[0], None, xs[2]], k=5)
    assert np.all(np.isinf(model.thresholds))
    assert np.all(model.novelty(np.ones((2, centres.shape[1]))) == 0)


def test_the_neighbour_read_grows_with_the_square_root_of_a_tasks_examples():
    """A task of 144 stored examples is judged by the distance to an input's 12th nearest example (a fixed 5th
    would read one stray example's noise); a task of 16 by its 5th; a given k overrides the rule."""
    from adaptive_learner.router.routing import neighbours

    assert [neighbours(n) for n in (8, 16, 25, 144, 400)] == [5, 5, 5, 12, 20]
    assert neighbours(144, 3) == 3
    centres, xs = _directions(n=144)
    model, five = NoveltyModel(xs, quantile=0.99), NoveltyModel(xs, quantile=0.99, k=5)
    assert model.embedding_view.ks == [12, 12, 12] and five.embedding_view.ks == [5, 5, 5]
    rng = np.random.RandomState(4)
    x = rng.normal(0, 1, (3, centres.shape[1]))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    d = np.sort(1 - unit(x) @ unit(xs[1]).T, axis=1)
    assert np.allclose(model.novelty(x)[:, 1], d[:, 11] / model.thresholds[1])
    assert np.allclose(five.novelty(x)[:, 1], d[:, 4] / five.thresholds[1])


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
    monkeypatch.setattr(routing.NoveltyModel, "novelty", lambda self, emb, ratios=None, feats=None: np.full((len(emb), 1), 5.0))
    routed_lib.router._input_router = None
    unknown = routed_lib.predict(texts)
    assert [p.label for p in unknown] == ["unknown", "unknown"]
    assert [p.nearest_label for p in unknown] == [p.label for p in known]
    assert all(p.task == "toy" and p.novelty == 5.0 for p in unknown)
    forced = routed_lib.predict(texts, abstain=False)
    assert [p.label for p in forced] == [p.label for p in known]
    assert all(p.novelty is None for p in forced)  # --no-abstain skips the open-set check
    # a task given is never second-guessed
    assert all(p.label in toy_task.spec.label_names for p in routed_lib.predict(texts, task="toy"))


def test_backbone_features_are_a_second_view_averaged_with_the_embeddings():
    """With the backbone features stored too, an input's novelty is the mean of the two views: in-task
    inputs in both stay known, an input in-task by its embedding but of no task by its features is
    judged more novel than by its embedding alone, and a task stored without features is judged by its
    embeddings alone."""
    centres, xs = _directions()
    fcentres, fs = _directions(seed=7, dim=24)  # another space: the backbone's features of the same inputs
    model = NoveltyModel(xs, quantile=0.99, features=fs)
    _, fresh = _directions(seed=0, n=400)
    _, ffresh = _directions(seed=7, n=400, dim=24)
    emb, feats = np.vstack([f[128:] for f in fresh]), np.vstack([f[128:] for f in ffresh])
    both = model.novelty(emb, features=feats)
    assert np.mean(both.min(1) > 1) < 0.05
    rng = np.random.RandomState(9)
    far_feats = rng.normal(0, 1, (len(emb), 24)) * 10
    assert np.all(model.novelty(emb, features=far_feats).min(1) > model.novelty(emb).min(1))
    assert np.allclose(model.novelty(emb), NoveltyModel(xs, quantile=0.99).novelty(emb))  # no features given
    partial = NoveltyModel(xs, quantile=0.99, features=[fs[0], None, fs[2]])
    assert np.allclose(partial.novelty(emb, features=far_feats)[:, 1], model.novelty(emb)[:, 1])


def test_the_input_length_is_a_library_setting_and_an_old_library_keeps_256(routed_lib):
    from adaptive_learner.features import FeatureConfig
    from adaptive_learner.library import AdapterLibrary
    from adaptive_learner.router.service import LibraryRouter
    from adaptive_learner.router.store import router_state

    stored = router_state(AdapterLibrary.open(routed_lib.library.path))
    assert stored["features"]["input_embedding_tokens"] == FeatureConfig().input_embedding_tokens == 64
    # a library written before the setting existed: its profiles were embedded at MiniLM's own 256
    old = {**stored, "features": {k: v for k, v in stored["features"].items() if k != "input_embedding_tokens"}}
    assert FeatureConfig.from_dict(old["features"]).input_embedding_tokens == 256
    host = routed_lib.host
    assert LibraryRouter(host, stored=old).extractor.config.input_embedding_tokens == 256
    assert LibraryRouter(host, stored=stored).extractor.config.input_embedding_tokens == 64


def test_profiles_and_routed_inputs_are_embedded_at_the_same_input_length(fresh_backbone, toy_task, monkeypatch):
    """The stored examples' embeddings and a routed input's are cut at the library's length: two inputs
    that differ only past it look the same to the open set, and both paths give one embedding."""
    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.features import FeatureConfig, FeatureExtractor, input_text
    from adaptive_learner.router.evidence import TaskProfile
    from adaptive_learner.router.service import LibraryRouter

    host = AdapterHost(fresh_backbone)
    ext = FeatureExtractor(host, FeatureConfig(input_embedding_tokens=3))
    head = "a fine and"
    a, b = ext.input_embeddings([head + " lovely film", head + " dreadful mess"])
    assert np.allclose(a, b)
    full = FeatureExtractor(host, FeatureConfig(input_embedding_tokens=64)).input_embeddings(
        [head + " lovely film", head + " dreadful mess"])
    assert not np.allclose(full[0], full[1])
    ex = toy_task.train[:6]
    feats = ext.task_features(toy_task.spec, ex)
    texts = [input_text(e.fields, toy_task.spec) for e in ex]
    assert np.allclose(feats.inputs, ext.input_embeddings(texts))
    assert not np.allclose(feats.inputs, FeatureExtractor(host, FeatureConfig()).input_embeddings(texts))
    router = LibraryRouter(host, features=FeatureConfig(input_embedding_tokens=3))
    seen = {}
    from adaptive_learner.router import routing

    real = routing.InputRouter.route

    def spy(self, feats_, fields, embeddings=None, texts=None, open_set=True):
        seen["emb"] = embeddings
        return real(self, feats_, fields, embeddings, texts=texts, open_set=open_set)

    monkeypatch.setattr(routing.InputRouter, "route", spy)
    router.route(texts[:2], [TaskProfile("toy", "lora-toy", feats)])
    assert np.allclose(seen["emb"], ext.input_embeddings(texts[:2]))
    assert not np.allclose(seen["emb"], FeatureExtractor(host, FeatureConfig()).input_embeddings(texts[:2]))
    # without the open set, single texts still bring their embeddings where two single-field tasks give the
    # router its text view (routing._TextView); with one task there is nothing to route between
    other = ext.task_features(toy_task.spec, toy_task.train[6:12])
    other.task = "toy2"
    seen.clear()
    router.route(texts[:2], [TaskProfile("toy", "lora-toy", feats)], open_set=False)
    assert seen["emb"] is None
    router.route(texts[:2], [TaskProfile("toy", "lora-toy", feats), TaskProfile("toy2", "lora-b", other)],
                 open_set=False)
    assert np.allclose(seen["emb"], ext.input_embeddings(texts[:2]))


@pytest.mark.slow
def test_minilm_embeds_the_first_tokens_and_keeps_its_own_length():
    from adaptive_learner.features import text_encoder

    enc = text_encoder("minilm")
    text = "the quarterly results of the company beat every forecast " * 20
    short = enc.encode([text], max_tokens=16)
    ids = enc.model.tokenizer(text, add_special_tokens=False)["input_ids"][:14]  # 16 with [CLS] and [SEP]
    assert np.allclose(short, enc.encode([enc.model.tokenizer.decode(ids)]), atol=1e-5)
    assert not np.allclose(short, enc.encode([text]), atol=1e-3)
    assert enc.model.max_seq_length == 256
