"""`alearn serve` through a real HTTP client against uvicorn on a free loopback port: every endpoint,
the one error shape, the token, learn jobs in a worker process, and hot reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import TOY, run_alearn  # noqa: E402
from server_common import (AUTH, TRAIN, assert_error, build_library, copy_library, running,  # noqa: E402
                           wait_job)


@pytest.fixture(scope="module")
def base_library(tmp_path_factory):
    return build_library(tmp_path_factory.mktemp("serve") / "lib")


@pytest.fixture(scope="module")
def served(base_library, tmp_path_factory):
    """A server on a copy of the library that the tests of this module do not change."""
    lib = copy_library(base_library, tmp_path_factory.mktemp("served") / "lib")
    with running(lib) as (client, app):
        yield client, app, lib


def test_healthz_docs_and_openapi(served):
    client, _, _ = served
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["backbone"] == "tiny-random"
    assert health["device"] == "cpu"  # auto on a machine without a GPU (CI)
    assert (health["adapters"], health["tasks"]) == (2, 2)
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/learn", "/v1/jobs/{job_id}", "/v1/library", "/v1/adapters/{name}"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_predict_with_a_task_answers_as_the_learner_does(served):
    from adaptive_learner.learner import Learner
    from adaptive_learner.training import TrainConfig

    client, app, lib = served
    texts = ["superb wonderful lovely", "bad dull terrible boring", "lovely"]
    r = client.post("/v1/predict", json={"inputs": texts, "task": "toy"})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = Learner(lib, create=False, train=TrainConfig(max_length=app.state.config.max_length)).predict(texts, "toy")
    assert [(p["label"], p["task"], p["adapter"], p["routed"]) for p in got] == \
        [(w.label, "toy", w.adapter, False) for w in want]
    assert [p["confidence"] for p in got] == pytest.approx([w.confidence for w in want], abs=1e-4)


def test_the_scoring_batch_changes_no_answer(served):
    from adaptive_learner.errors import UserError
    from adaptive_learner.learner import Learner

    _, _, lib = served
    texts = ["superb wonderful lovely", "bad dull terrible boring", "lovely", "dull"]
    by_device, by_one = Learner(lib, create=False), Learner(lib, create=False, score_batch=1)
    for task in ("toy", None):  # given and routed
        a, b = by_device.predict(texts, task), by_one.predict(texts, task)
        assert [(p.task, p.label) for p in a] == [(p.task, p.label) for p in b]
        assert [p.confidence for p in a] == pytest.approx([p.confidence for p in b], abs=1e-4)
    with pytest.raises(UserError, match="scoring batch"):
        Learner(lib, create=False, score_batch=0)


def test_predict_routes_each_input_and_takes_pairs_as_text_or_fields(served):
    client, _, _ = served
    inputs = ["superb lovely", "the word fine ||| the word superb",
              {"first": "the word fine", "second": "the word superb"}]
    r = client.post("/v1/predict", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["task"] for p in preds] == ["toy", "pairs", "pairs"]
    assert all(p["routed"] and 0 < p["route_confidence"] <= 1 for p in preds)
    assert preds[1]["label"] == preds[2]["label"] and preds[1]["confidence"] == pytest.approx(preds[2]["confidence"])
    given = client.post("/v1/predict", json={"inputs": [inputs[2]], "task": "pairs"}).json()["predictions"][0]
    assert given["label"] in ("0", "1") and not given["routed"] and given["route_confidence"] is None


BAD_PREDICTS = [  # (name, body or raw bytes, status, type, limit)
    ("too many inputs", {"inputs": ["a"] * 9}, 413, "limit_exceeded", "max_inputs"),
    ("too long an input", {"inputs": ["a" * 201]}, 413, "limit_exceeded", "max_chars"),
    ("too long a pair", {"inputs": [{"first": "a" * 150, "second": "b" * 60}], "task": "pairs"}, 413,
     "limit_exceeded", "max_chars"),
    ("body over the cap", b'{"inputs": ["' + b"a" * 70_000 + b'"]}', 413, "limit_exceeded", "max_body_bytes"),
    ("no inputs", {"inputs": []}, 422, "invalid_input", None),
    ("empty input", {"inputs": ["   "], "task": "toy"}, 422, "invalid_input", None),
    ("wrong type", {"inputs": "superb"}, 422, "invalid_input", None),
    ("numbers", {"inputs": [1, 2]}, 422, "invalid_input", None),
    ("nested", {"inputs": [[["a"]]]}, 422, "invalid_input", None),
    ("unknown key", {"inputs": ["a"], "adapter": "x"}, 422, "invalid_input", None),
    ("unknown task", {"inputs": ["a"], "task": "nope"}, 422, "invalid_input", None),
    ("path as task", {"inputs": ["a"], "task": "../../etc/passwd"}, 422, "invalid_input", None),
    ("pair for a one-field task", {"inputs": [{"first": "a", "second": "b"}], "task": "toy"}, 422, "invalid_input",
     None),
    ("one field for a pair task", {"inputs": ["just one"], "task": "pairs"}, 422, "invalid_input", None),
    ("three fields routed", {"inputs": ["a ||| b ||| c"]}, 422, "invalid_input", None),
    ("not json", b"{inputs: nope", 422, "invalid_input", None),
    ("deep nesting", b"[" * 20_000 + b"]" * 20_000, 400, "bad_request", None),
    ("not utf-8", b'{"inputs": ["\xff\xfe"]}', 400, "bad_request", None),
]


@pytest.mark.parametrize("name,body,status,type_,limit", BAD_PREDICTS, ids=[c[0] for c in BAD_PREDICTS])
def test_bad_predict_requests_get_one_json_error(served, name, body, status, type_, limit):
    client, _, _ = served
    if isinstance(body, bytes):
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/v1/predict", json=body)
    assert_error(r, status, type_, limit)


def test_one_bad_request_in_a_batch_does_not_fail_the_others(served):
    import httpx
    import anyio

    client, _, _ = served

    async def both():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as ac:
            good = ac.post("/v1/predict", json={"inputs": ["lovely"], "task": "toy"})
            bad = ac.post("/v1/predict", json={"inputs": ["lovely"], "task": "nope"})
            return [await good, await bad]

    good, bad = anyio.run(both)
    assert good.status_code == 200 and good.json()["predictions"][0]["task"] == "toy"
    assert_error(bad, 422, "invalid_input")


def test_routes_and_methods_that_do_not_exist(served):
    client, _, _ = served
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert_error(client.get("/v1/jobs/unknown"), 404, "not_found")
    assert_error(client.post("/v1/learn", content=b"x", headers={"content-type": "text/plain", **AUTH}), 415)


def test_learn_and_delete_need_the_token_predict_does_not(served):
    client, _, _ = served
    r = client.post("/v1/learn", json={"task": "sst2"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(client.delete("/v1/adapters/lora-toy"), 401, "unauthorized")
    assert_error(client.delete("/v1/adapters/lora-toy", headers={"Authorization": "Bearer wrong"}), 401)
    assert client.post("/v1/predict", json={"inputs": ["lovely"], "task": "toy"}).status_code == 200
    assert client.get("/v1/library").json()["tasks"][1]["name"] == "toy"  # nothing was deleted


def test_evaluate_scores_each_task_on_its_kept_examples_as_alearn_evaluate_does(served):
    client, _, lib = served
    r = client.post("/v1/evaluate", json={}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    code, out, err = run_alearn("evaluate", lib, "--json")
    assert code == 0, err
    want = [json.loads(line) for line in out.splitlines()]
    assert [x["task"] for x in body["results"]] == [w["task"] for w in want] == ["pairs", "toy"]
    for got, w in zip(body["results"], want):
        assert got["verdict"] == w["verdict"] == "kept"  # nothing learned since: each scores what it scored then
        assert (got["adapter"], got["examples"]) == (w["adapter"], w["examples"])
        assert (got["then"], got["now"]) == pytest.approx((w["then"], w["now"]), abs=1e-9)
        assert got["now"] == pytest.approx(got["then"]) and got["low"] <= got["change"] <= got["high"]
    assert body["lost"] == 0 and body["library_version"] == client.get("/healthz").json()["library_version"]
    one = client.post("/v1/evaluate", json={"tasks": ["toy"]}, headers=AUTH).json()
    assert [x["task"] for x in one["results"]] == ["toy"] and one["results"][0] == body["results"][1]


@pytest.mark.parametrize("body,headers,status", [
    ({"tasks": ["nope"]}, AUTH, 422),  # an unknown task is named before anything is scored
    ({"tasks": []}, AUTH, 422),
    ({"tasks": "toy"}, AUTH, 422),
    ({"task": "toy"}, AUTH, 422),  # unknown key
    ({}, {}, 401),  # the token, as for learn and delete
], ids=["unknown task", "empty list", "not a list", "unknown key", "no token"])
def test_bad_evaluate_requests_get_one_json_error(served, body, headers, status):
    client, _, _ = served
    err = assert_error(client.post("/v1/evaluate", json=body, headers=headers), status)
    if body.get("tasks") == ["nope"]:
        assert "'nope'" in err["message"] and "pairs" in err["message"]


BAD_LEARNS = [  # (name, json body or (form fields, file), status, limit)
    ("unknown built-in task", {"task": "no-such-task"}, 422, None),
    ("neither task nor file", {"steps": 3}, 422, None),
    ("negative steps", {"task": "sst2", "steps": -1}, 422, None),
    ("unknown router", {"task": "sst2", "router": "magic"}, 422, None),
    ("force_new and reuse", {"task": "sst2", "force_new": True, "reuse": "lora-toy"}, 422, None),
    ("reuse of a missing adapter", {"task": "sst2", "reuse": "lora-none"}, 422, None),
    ("upload without description", ({"name": "t"}, ("t.csv", b"text,label\na,b\n")), 422, None),
    ("upload of a bad type", ({"description": "d"}, ("t.exe", b"MZ")), 422, None),
    ("upload with a path as name", ({"description": "d", "name": "../x"}, ("t.csv", b"text,label\na,b\n")), 422, None),
    ("upload missing its column", ({"description": "d", "text_column": "nope"}, ("t.csv", TOY)), 422, None),
    ("upload not utf-8", ({"description": "d"}, ("t.csv", b"text,label\n\xff\xfe,\x00\n")), 422, None),
    ("upload over the cap", ({"description": "d"}, ("big.csv", b"text,label\n" + b"a,b\n" * 30_000)), 413,
     "max_upload_bytes"),
]


@pytest.mark.parametrize("name,body,status,limit", BAD_LEARNS, ids=[c[0] for c in BAD_LEARNS])
def test_bad_learn_requests_are_refused_before_any_job(served, name, body, status, limit):
    client, app, _ = served
    before = len(app.state.jobs.all())
    if isinstance(body, dict):
        r = client.post("/v1/learn", json=body, headers=AUTH)
    else:
        fields, (fname, data) = body
        if isinstance(data, str):
            data = open(data, "rb").read()
        r = client.post("/v1/learn", data=fields, files={"file": (fname, data)}, headers=AUTH)
    err = assert_error(r, status, limit=limit)
    assert "alearn-upload-" not in err["message"]  # the server's temp paths stay on the server
    assert len(app.state.jobs.all()) == before


def test_library_lists_adapters_tasks_and_history(served):
    client, _, _ = served
    lib = client.get("/v1/library").json()
    assert [a["name"] for a in lib["adapters"]] == ["lora-pairs", "lora-toy"]
    pairs = next(t for t in lib["tasks"] if t["name"] == "pairs")
    assert pairs["input_fields"] == ["first", "second"] and pairs["adapter"] == "lora-pairs"
    assert [h["task"] for h in lib["history"]] == ["toy", "pairs"]


def test_metrics_count_requests_latency_and_batches(served):
    client, _, _ = served
    client.post("/v1/predict", json={"inputs": ["lovely", "dull"], "task": "toy"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'alearn_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'alearn_request_latency_seconds_bucket{le="0.001",route="/v1/predict"}' in text
    assert "alearn_batch_inputs_count" in text and "alearn_jobs_running 0.0" in text
    assert "alearn_model_process_starts 0.0" in text  # the model in this process


def test_learn_upload_runs_in_a_worker_and_is_served_at_once(base_library, tmp_path):
    lib = copy_library(base_library, tmp_path / "lib")
    with running(lib) as (client, app):
        form = {"description": "Is it a good review?", "name": "toy2", "force_new": "true", "steps": "3",
                "max_length": "64", "batch_size": "4"}
        dry = client.post("/v1/learn", data={**form, "dry_run": "true"},
                          files={"file": ("reviews.csv", open(TOY, "rb"))}, headers=AUTH)
        assert dry.status_code == 202, dry.text
        job = wait_job(client, dry.json()["id"])
        assert job["state"] == "succeeded", job
        assert job["dry_run"] and job["action"] == "new" and job["adapter"] == "lora-toy2"
        assert "lora-toy2" not in client.get("/v1/library").text  # a dry run writes nothing

        r = client.post("/v1/learn", data=form, files={"file": ("reviews.csv", open(TOY, "rb"))}, headers=AUTH)
        assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        job = wait_job(client, r.json()["id"])
        assert job["state"] == "succeeded", job
        assert job["progress"] == {"step": 3, "steps": 3}
        assert job["adapter"] == "lora-toy2" and 0 <= job["accuracy_before"] <= 1 and 0 <= job["accuracy_after"] <= 1
        assert job["retention"] is None  # a new adapter: no other task's answers changed
        pred = client.post("/v1/predict", json={"inputs": ["lovely"], "task": "toy2"})
        assert pred.status_code == 200 and pred.json()["predictions"][0]["adapter"] == "lora-toy2"
        assert 'alearn_jobs_total{state="succeeded"} 2.0' in client.get("/metrics").text
        assert not app.state.jobs.get(r.json()["id"]).upload_dir.exists()  # the upload is removed


def test_a_reuse_job_reports_what_it_cost_the_adapters_other_task(base_library, tmp_path):
    lib = copy_library(base_library, tmp_path / "lib")
    then = json.loads((lib / "manifest.json").read_text())["tasks"]["toy"]["accuracy"]
    with running(lib) as (client, _):
        form = {"description": "Is it a good review?", "name": "toy3", "reuse": "lora-toy", "steps": "3",
                "max_length": "64", "batch_size": "4", "guard": "true"}
        r = client.post("/v1/learn", data=form, files={"file": ("reviews.csv", open(TOY, "rb"))}, headers=AUTH)
        job = wait_job(client, r.json()["id"])
        assert job["state"] == "succeeded", job
        (kept,) = job["retention"]
        # the guard acts exactly when the reuse cost the other task
        if kept["verdict"] == "lost":
            assert (job["action"], job["rejected"], job["init_from"]) == ("new", "lora-toy", "lora-toy")
        else:
            assert (job["action"], job["adapter"], job["rejected"]) == ("reuse", "lora-toy", None)
        assert kept["task"] == "toy" and kept["then"] == pytest.approx(then) and kept["examples"] == 24
        assert kept["low"] <= kept["change"] <= kept["high"] and kept["verdict"] in ("kept", "lost", "gained")
        history = client.get("/v1/library").json()["history"]
        assert history[-1]["retention"][0]["task"] == "toy"
        # evaluate afterwards scores the adapter as the library holds it: the reuse's "now", or, where the guard
        # discarded the reuse, the stored adapter as it was (what toy scored when learned)
        (toy,) = client.post("/v1/evaluate", json={"tasks": ["toy"]}, headers=AUTH).json()["results"]
        assert toy["now"] == pytest.approx(kept["then"] if job["rejected"] else kept["now"], abs=1e-9)


def test_learn_upload_takes_a_prompt_template_and_refuses_a_bad_one(base_library, tmp_path):
    lib = copy_library(base_library, tmp_path / "lib")
    with running(lib) as (client, app):
        form = {"description": "Is it a good review?", "name": "toy3", "force_new": "true", "steps": "3",
                "max_length": "64", "batch_size": "4", "template": "Review: {text}\nSentiment:"}
        r = client.post("/v1/learn", data=form, files={"file": ("reviews.csv", open(TOY, "rb"))}, headers=AUTH)
        assert r.status_code == 202, r.text
        assert wait_job(client, r.json()["id"])["state"] == "succeeded"
        spec = json.loads((lib / "manifest.json").read_text())["tasks"]["toy3"]["spec"]
        assert spec["template"] == "Review: {text}\nSentiment:"
        for template, says in (("Review: {review}\nSentiment:", "cannot be filled from the text columns"),
                               ("Review:\nSentiment:", "template does not use input field {text}"),
                               ("  ", "template is empty")):
            bad = client.post("/v1/learn", data={**form, "name": "toy4", "template": template},
                              files={"file": ("reviews.csv", open(TOY, "rb"))}, headers=AUTH)
            assert says in assert_error(bad, 422)["message"]
        assert "template is for an upload" in assert_error(
            client.post("/v1/learn", json={"task": "sst2", "template": "{sentence}"}, headers=AUTH), 422)["message"]


def test_while_a_job_holds_the_library_the_server_answers_refuses_and_survives_its_kill(base_library, tmp_path,
                                                                                         monkeypatch):
    lib = copy_library(base_library, tmp_path / "lib")
    with running(lib) as (client, app):
        # the worker stops at its first library write, holding the writer lock, until it is killed
        monkeypatch.setenv("ADAPTIVE_LEARNER_TEST_STOP_AT", "0")
        form = {"description": "Good?", "name": "held", "force_new": "true", "steps": "3", "max_length": "64",
                "batch_size": "4"}
        r = client.post("/v1/learn", data=form, files={"file": ("held.csv", open(TOY, "rb"))}, headers=AUTH)
        monkeypatch.delenv("ADAPTIVE_LEARNER_TEST_STOP_AT")
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        # trained and evaluated under the lock; it stops at its first write
        job = wait_job(client, job_id, lambda j: j["phase"] in ("evaluating", "done"))
        assert job["state"] == "running"
        pred = client.post("/v1/predict", json={"inputs": ["lovely", "the word a ||| the word b"]})
        assert pred.status_code == 200 and len(pred.json()["predictions"]) == 2
        assert_error(client.delete("/v1/adapters/lora-toy", headers=AUTH), 409, "library_busy", "lock_wait_s")
        assert_error(client.post("/v1/learn", json={"task": "sst2"}, headers=AUTH), 429, "limit_exceeded", "max_jobs")
        assert client.get("/healthz").json()["jobs_running"] == 1

        os.kill(app.state.jobs.get(job_id).process.pid, signal.SIGKILL)
        job = wait_job(client, job_id)
        assert job["state"] == "failed" and "exit code -9" in job["error"] and "\n" not in job["error"]
        assert "held" not in {t["name"] for t in client.get("/v1/library").json()["tasks"]}
        assert client.post("/v1/predict", json={"inputs": ["lovely"], "task": "toy"}).status_code == 200
    code, out, err = run_alearn("library", "verify", lib)
    assert code == 0, err


def test_delete_and_a_commit_by_another_process_are_served_from_the_next_request(base_library, tmp_path):
    lib = copy_library(base_library, tmp_path / "lib")
    with running(lib) as (client, app):
        before = client.get("/healthz").json()["library_version"]
        assert_error(client.delete("/v1/adapters/..%2F..%2Fetc", headers=AUTH), 404)
        assert_error(client.delete("/v1/adapters/a b", headers=AUTH), 422, "invalid_input")
        assert_error(client.delete("/v1/adapters/lora-none", headers=AUTH), 404, "not_found")
        r = client.delete("/v1/adapters/lora-pairs", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"adapter": "lora-pairs", "tasks": ["pairs"]}
        assert_error(client.post("/v1/predict", json={"inputs": ["a ||| b"], "task": "pairs"}), 422, "invalid_input")
        assert "lora-pairs" not in app.state.engine.learner.host.names  # dropped from memory too

        cmd = [sys.executable, "-m", "adaptive_learner.cli", "learn", "--library", str(lib), "--data", TOY,
               "--description", "Is this review glowing?", "--name", "glowing", "--force-new", *TRAIN]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        r = client.post("/v1/predict", json={"inputs": ["lovely"], "task": "glowing"})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["adapter"] == "lora-glowing"
        assert r.json()["library_version"] != before
        history = client.get("/v1/library").json()["history"]
        assert [(h.get("action"), h.get("adapter")) for h in history[-2:]] == \
            [("remove", "lora-pairs"), ("new", "lora-glowing")]
    assert json.loads((lib / "manifest.json").read_text())["tasks"].keys() == {"toy", "glowing"}


def test_a_learn_job_yields_the_cpu_to_the_requests(tmp_path, monkeypatch):
    """Learn workers start with a lower OS priority and their own thread count (--job-nice, --job-threads)."""
    from adaptive_learner.server import JobSettings, Limits
    from adaptive_learner.server.jobs import JobManager

    code = ("import os, torch; from adaptive_learner.server.jobs import yield_to_requests; "
            "before = os.nice(0); yield_to_requests(5, 1); print(os.nice(0) - before, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["5", "1"]

    started = []

    class FakeProcess:  # records what the worker would be given, starts nothing
        def __init__(self, target, args, name, daemon):
            started.append(args[0])

        def start(self):
            pass

        def is_alive(self):
            return False

    jobs = JobManager(tmp_path, Limits(max_jobs=4), settings=JobSettings(nice=7, threads=3))
    monkeypatch.setattr(jobs._ctx, "Process", FakeProcess)
    monkeypatch.setattr(jobs, "_start_pump", lambda: None)
    jobs.submit("t", {"kind": "catalog", "name": "sst2"}, {"dry_run": True})
    assert started[0]["nice"] == 7 and started[0]["threads"] == 3
    assert started[0]["device"] == "auto"  # the job trains where the server scores


@pytest.mark.parametrize("option, value, words", [("--device", "tpu", "unknown device"),
                                                  ("--device", "cuda:7", "cuda:7"),
                                                  ("--score-batch", "-1", "--score-batch"),
                                                  ("--switch-ms", "0", "--switch-ms")])
def test_bad_serve_device_or_batch_is_one_line_error(tmp_path, option, value, words):
    code, out, err = run_alearn("serve", tmp_path / "lib", option, value)
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("option, value", [("--job-nice", "25"), ("--job-threads", "-1")])
def test_bad_job_settings_are_one_line_errors(tmp_path, option, value):
    code, out, err = run_alearn("serve", tmp_path / "lib", option, value)
    assert code == 2 and option in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
