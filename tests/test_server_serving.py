"""The server's logic without HTTP: the batcher, the limits, and the engine's answers and reloads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")

from server_common import build_library, copy_library, serve_config  # noqa: E402


# ---------------------------------------------------------------------- the batcher
def _run_batcher(sizes, enabled=True, max_inputs=64, fail=None):
    """Submit one request per size, all at once; return (results, the batches fn saw)."""
    from adaptive_learner.server.batching import Batcher
    from adaptive_learner.server.config import BatchSettings

    seen = []

    def fn(batch):
        seen.append(list(batch))
        if fail == "all":
            raise RuntimeError("the model broke")
        return [ValueError(f"bad {r}") if r == fail else r * 10 for r in batch]

    async def main():
        batcher = Batcher(fn, ThreadPoolExecutor(1), BatchSettings(enabled, max_wait_ms=50, max_inputs=max_inputs))
        try:
            return await asyncio.gather(*(batcher.submit(i, n) for i, n in enumerate(sizes)), return_exceptions=True)
        finally:
            await batcher.close()

    return asyncio.run(main()), seen


def test_concurrent_requests_share_one_batch_and_get_their_own_results():
    results, seen = _run_batcher([1] * 10)
    assert seen == [list(range(10))]
    assert results == [i * 10 for i in range(10)]


def test_without_batching_each_request_runs_alone():
    results, seen = _run_batcher([1] * 5, enabled=False)
    assert seen == [[0], [1], [2], [3], [4]]
    assert results == [0, 10, 20, 30, 40]


def test_a_batch_closes_when_it_holds_max_inputs():
    _, seen = _run_batcher([3] * 6, max_inputs=6)
    assert seen == [[0, 1], [2, 3], [4, 5]]


def test_a_request_that_fails_fails_alone_and_a_broken_batch_fails_every_request():
    results, _ = _run_batcher([1] * 3, fail=1)
    assert results[0] == 0 and results[2] == 20 and isinstance(results[1], ValueError)
    results, _ = _run_batcher([1] * 3, fail="all")
    assert all(isinstance(r, RuntimeError) for r in results)


# ---------------------------------------------------------------------- limits
LIMIT_CASES = [  # (inputs, limit or None for a 422)
    (["a"] * 9, "max_inputs"),
    (["a" * 201], "max_chars"),
    ([{"first": "a" * 100, "second": "b" * 101}], "max_chars"),
    (["  "], None),
    ([{"first": "a", "second": " "}], None),
    ([{}], None),
]


@pytest.mark.parametrize("inputs,limit", LIMIT_CASES)
def test_check_predict_names_the_limit(tmp_path, inputs, limit):
    from adaptive_learner.server.errors import ApiError
    from adaptive_learner.server.protocol import PredictRequest
    from adaptive_learner.server.serving import check_predict

    cfg = serve_config(tmp_path)
    with pytest.raises(ApiError) as exc:
        check_predict(PredictRequest(inputs=inputs), cfg.limits)
    assert (exc.value.status, exc.value.limit) == ((413, limit) if limit else (422, None))
    check_predict(PredictRequest(inputs=["a" * 200] * 8), cfg.limits)  # at the limits: accepted


# ---------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return build_library(tmp_path_factory.mktemp("engine") / "lib")


@pytest.fixture()
def engine(library, tmp_path):
    from adaptive_learner.server.serving import ServingEngine

    lib = copy_library(library, tmp_path / "lib")
    return ServingEngine(serve_config(lib))


def _req(inputs, task=None):
    from adaptive_learner.server.protocol import PredictRequest

    return PredictRequest(inputs=inputs, task=task)


def test_a_mixed_batch_answers_each_request_as_the_learner_does_alone(engine):
    """Single inputs of different tasks go through one peft mixed-adapter batch; inputs of one task
    through that adapter with the shared prefix; either way the same answers as ``Learner.predict``."""
    from adaptive_learner.learner import Learner
    from adaptive_learner.training import TrainConfig

    reqs = [_req(["superb lovely"], "toy"), _req(["the word fine ||| the word superb"], "pairs"),
            _req(["dull", "lovely wonderful"], "toy"), _req(["the word boring ||| the word boring", "lovely"])]
    out = engine.answer(reqs)
    reference = Learner(engine.path, create=False, train=TrainConfig(max_length=engine.config.max_length))
    for req, res in zip(reqs, out):
        texts = list(req.inputs)
        want = reference.predict(texts, req.task)
        assert [(p.label, p.task, p.adapter) for p in res.predictions] == [(w.label, w.task, w.adapter) for w in want]
        assert [p.confidence for p in res.predictions] == pytest.approx([w.confidence for w in want], abs=1e-4)
        assert all(p.routed == (req.task is None) for p in res.predictions)


def test_a_request_with_a_mistake_gets_its_error_and_the_others_their_answers(engine):
    from adaptive_learner.server.errors import ApiError

    out = engine.answer([_req(["lovely"], "toy"), _req(["a ||| b ||| c"]), _req(["x"], "nope"),
                         _req([{"text": "x"}], "pairs")])
    assert out[0].predictions[0].task == "toy"
    assert all(isinstance(e, ApiError) and e.status == 422 for e in out[1:])
    assert "3 field" in out[1].message and "'nope'" in out[2].message and "first" in out[3].message


def test_a_change_committed_elsewhere_is_read_before_the_next_batch(engine):
    from adaptive_learner.library import AdapterLibrary

    engine.answer([_req(["a ||| b"], "pairs")])
    assert "lora-pairs" in engine.learner.host.names
    assert not engine.refresh()  # nothing changed
    lib = AdapterLibrary.open(engine.path, verify=False)
    with lib.transaction() as tx:  # another writer removes an adapter
        tx.remove_adapter("lora-pairs")
    out = engine.answer([_req(["a ||| b"], "pairs"), _req(["lovely"], "toy")])
    assert out[0].status == 422 and out[1].predictions[0].adapter == "lora-toy"
    assert "lora-pairs" not in engine.learner.host.names


def test_a_damaged_library_keeps_the_last_good_state_served(engine):
    engine.answer([_req(["lovely"], "toy")])
    manifest = engine.path / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("{ not json")
    out = engine.answer([_req(["lovely"], "toy")])
    assert out[0].predictions[0].task == "toy" and "corrupted" in engine.problem
    manifest.write_text(good)
    engine.answer([_req(["lovely"], "toy")])
    assert engine.problem is None


def test_delete_removes_the_adapter_and_its_tasks_in_one_transaction(engine):
    from adaptive_learner.errors import UserError
    from adaptive_learner.server.errors import ApiError

    assert engine.delete_adapter("lora-pairs").tasks == ["pairs"]
    assert [t.name for t in engine.library_out().tasks] == ["toy"]
    assert engine.library_out().history[-1]["action"] == "remove"
    with pytest.raises(ApiError) as exc:
        engine.delete_adapter("lora-pairs")
    assert exc.value.status == 404
    with pytest.raises(UserError):
        engine.delete_adapter("../toy")
    assert engine.refresh() and engine.library.verify() == []  # the engine reads its own change too
