"""`alearn serve --model-process`: the model scores in a spawned process, the HTTP process batches and answers.
Real processes, a real uvicorn, a real HTTP client: the same answers as in process, errors that cross intact,
a killed model process replaced, and nothing left running after the server stops."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import run_alearn  # noqa: E402
from server_common import AUTH, assert_error, build_library, copy_library, running  # noqa: E402

REQUESTS = [{"inputs": ["superb lovely", "dull"], "task": "toy"},
            {"inputs": ["the word fine ||| the word superb"], "task": "pairs"},
            {"inputs": ["lovely wonderful", "the word boring ||| the word boring"]}]  # routed


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return build_library(tmp_path_factory.mktemp("model-process") / "lib")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def in_process_answers(library, tmp_path_factory):
    lib = copy_library(library, tmp_path_factory.mktemp("in-process") / "lib")
    with running(lib) as (client, _):
        return ([client.post("/v1/predict", json=r).json() for r in REQUESTS], client.get("/healthz").json(),
                client.post("/v1/evaluate", json={}, headers=AUTH).json())


def test_the_model_process_answers_as_the_model_in_process_and_errors_cross_intact(library, tmp_path,
                                                                                      in_process_answers):
    want, health_in, evaluated_in = in_process_answers
    lib = copy_library(library, tmp_path / "lib")
    with running(lib, model_process=True) as (client, app):
        pid = app.state.engine.pid
        assert pid is not None and pid != os.getpid() and _alive(pid)
        got = [client.post("/v1/predict", json=r).json() for r in REQUESTS]
        assert client.get("/healthz").json() == health_in  # device, version, counts as the model process says
        for g, w in zip(got, want):
            assert g["library_version"] == w["library_version"]
            assert [(p["label"], p["task"], p["adapter"], p["routed"]) for p in g["predictions"]] == \
                [(p["label"], p["task"], p["adapter"], p["routed"]) for p in w["predictions"]]
            assert [p["confidence"] for p in g["predictions"]] == \
                pytest.approx([p["confidence"] for p in w["predictions"]], abs=1e-6)

        # evaluate runs in the model process too, and its user errors cross back as such
        assert client.post("/v1/evaluate", json={}, headers=AUTH).json() == evaluated_in
        assert_error(client.post("/v1/evaluate", json={"tasks": ["nope"]}, headers=AUTH), 422, "invalid_input")
        # a request's own mistake comes back in the one error shape; the others in its batch are answered
        assert_error(client.post("/v1/predict", json={"inputs": ["x"], "task": "nope"}), 422, "invalid_input")
        assert_error(client.post("/v1/predict", json={"inputs": ["a ||| b ||| c"]}), 422, "invalid_input")
        # the library endpoints stay in the HTTP process; a delete is served from the next batch on
        assert client.delete("/v1/adapters/lora-pairs", headers=AUTH).status_code == 200
        assert_error(client.post("/v1/predict", json={"inputs": ["a ||| b"], "task": "pairs"}), 422, "invalid_input")
        assert client.get("/healthz").json()["tasks"] == 1


def test_a_killed_model_process_fails_only_its_batch_and_is_replaced(library, tmp_path):
    lib = copy_library(library, tmp_path / "lib")
    body = {"inputs": ["lovely"], "task": "toy"}
    with running(lib, model_process=True) as (client, app):
        engine = app.state.engine
        first = engine.pid
        os.kill(first, signal.SIGSTOP)  # a batch sent now waits in the pipe, so the kill lands during it
        answer: list = []
        sender = threading.Thread(target=lambda: answer.append(client.post("/v1/predict", json=body)))
        sender.start()
        end = time.monotonic() + 60
        while not engine._call_lock.locked():
            assert time.monotonic() < end, "the batch never reached the model process"
            time.sleep(0.02)
        time.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        sender.join(120)
        err = assert_error(answer[0], 503, "unavailable")
        assert "model process exited" in err["message"]
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and "model process" in health["problem"]

        r = client.post("/v1/predict", json=body)  # the next batch starts a new model process
        assert r.status_code == 200, r.text
        second = engine.pid
        assert second != first and _alive(second) and engine.starts == 2
        assert client.get("/healthz").json()["status"] == "ok"
        assert "alearn_model_process_starts 2.0" in client.get("/metrics").text
    assert not _alive(second), "the model process outlived the server"


def test_a_library_the_model_process_cannot_open_is_one_error_line(tmp_path):
    code, _, err = run_alearn("serve", tmp_path / "missing", "--model-process", "--port", "0")
    assert code == 2 and "library" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_alearn("serve", tmp_path / "missing", "--model-process", "--ray")
    assert code == 2 and "--model-process" in err and "Traceback" not in err
