"""Hostile input against a real running `alearn serve` (uvicorn on a free loopback port): one case per
category of benchmarks/serve_fuzz.py, each answered below 500 with no traceback; the server answers
normally afterwards and the library verifies clean. Plus the regressions of what that fuzzing found."""

from __future__ import annotations

import multiprocessing as mp
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import TOY, run_alearn  # noqa: E402
from server_common import AUTH, TOKEN, assert_error, build_library, copy_library, running  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    lib = copy_library(build_library(tmp_path_factory.mktemp("hostile") / "base"),
                       tmp_path_factory.mktemp("hostile-served") / "lib")
    with running(lib) as (client, app):
        yield client, app, lib


def raw(client, data: bytes, responses: int = 1, timeout: float = 10) -> list[bytes]:
    """Send bytes as they are on one connection; the raw responses that came back (up to ``responses``)."""
    url = client.base_url
    got = b""
    with socket.create_connection((url.host, url.port), timeout=timeout) as s:
        s.sendall(data)
        try:
            while got.count(b"HTTP/1.1 ") < responses or not _complete(got, responses):
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except (ConnectionResetError, socket.timeout):
            pass
    return [b"HTTP/1.1 " + part for part in got.split(b"HTTP/1.1 ")[1:]]


def _complete(data: bytes, n: int) -> bool:
    """Whether the last of ``n`` responses has all the bytes its Content-Length announces."""
    last = data.split(b"HTTP/1.1 ")[n] if data.count(b"HTTP/1.1 ") >= n else b""
    head, sep, body = last.partition(b"\r\n\r\n")
    length = [ln.split(b":")[1] for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
    return bool(sep) and (not length or len(body) >= int(length[0]))


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    hdrs = {"Host": "127.0.0.1", **(headers or {})}
    if body:
        hdrs.setdefault("Content-Length", str(len(body)))
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())).encode("latin-1") \
        + b"\r\n" + body


def _multipart(parts: list[tuple[bytes, bytes, bytes | None]]) -> tuple[bytes, str]:
    out = b""
    for name, value, filename in parts:
        disp = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename else b"")
        out += b"--bnd\r\nContent-Disposition: " + disp + b"\r\n\r\n" + value + b"\r\n"
    return out + b"--bnd--\r\n", "multipart/form-data; boundary=bnd"


def _send(client, case):
    """(status, body text) of one case: an httpx call, or raw bytes."""
    if isinstance(case, bytes):
        resp = raw(client, case)
        assert resp, "the server closed the connection without an answer"
        return status_of(resp[0]), resp[0].partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
    method, path, kw = case
    r = client.request(method, path, **kw)
    return r.status_code, r.text


CSV = b"text,label\nlovely film,pos\nawful film,neg\nsuperb,pos\ndull,neg\n"
FORM_BAD_BYTES = _multipart([(b"description", b"\xff\xfe", None), (b"file", CSV, b"\xff.csv")])

HOSTILE = [  # (category, case, the status it must get); a case is (method, path, httpx kwargs) or raw bytes
    ("huge", ("POST", "/v1/predict", {"content": iter([b'{"inputs": ["'] + [b"a" * 65536] * 2 + [b'"]}'])}), 413),
    ("huge", ("POST", "/v1/learn", {"files": {"file": ("big.csv", b"text,label\n" + b"a,b\n" * 30_000)},
                                     "data": {"description": "d"}, "headers": AUTH}), 413),
    ("nested", ("POST", "/v1/learn", {"content": b'{"task": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                                       "headers": {"content-type": "application/json", **AUTH}}), 400),
    ("wrong types", ("POST", "/v1/learn", {"json": {"task": "sst2", "steps": "many"}, "headers": AUTH}), 422),
    ("wrong types", ("POST", "/v1/predict", {"json": {"inputs": [{"first": 1}], "task": "pairs"}}), 422),
    ("non-UTF-8", ("POST", "/v1/predict", {"content": b'{"inputs": ["\xff\xfe"]}',
                                           "headers": {"content-type": "application/json"}}), 400),
    ("non-UTF-8", ("POST", "/v1/predict", {"content": b'{"inputs": ["\\ud800 lovely"], "task": "toy"}',
                                           "headers": {"content-type": "application/json"}}), 422),
    ("non-UTF-8", ("POST", "/v1/predict", {"content": b'{"inputs": ["\\udfff"]}',
                                           "headers": {"content-type": "application/json"}}), 422),
    ("non-UTF-8", ("POST", "/v1/predict", {"content": b'{"inputs": [{"first": "\\ud800", "second": "b"}], '
                                                      b'"task": "pairs"}',
                                           "headers": {"content-type": "application/json"}}), 422),
    ("non-UTF-8", ("POST", "/v1/learn", {"content": FORM_BAD_BYTES[0],
                                         "headers": {"content-type": FORM_BAD_BYTES[1], **AUTH}}), 422),
    ("path tricks", ("POST", "/v1/learn", {"data": {"description": "d", "name": "../../x"},
                                           "files": {"file": ("t.csv", CSV)}, "headers": AUTH}), 422),
    ("path tricks", ("POST", "/v1/learn", {"data": {"description": "d", "name": "x\n"},
                                           "files": {"file": ("t.csv", CSV)}, "headers": AUTH}), 422),
    ("path tricks", ("POST", "/v1/learn", {"json": {"task": "sst2", "reuse": "../lora-toy"}, "headers": AUTH}), 422),
    ("path tricks", ("DELETE", "/v1/adapters/..%2F..", {"headers": AUTH}), 404),
    ("path tricks", ("DELETE", "/v1/adapters/%2e%2e", {"headers": AUTH}), 422),
    ("path tricks", request("DELETE", "/v1/adapters/lora-toy/../lora-pairs", {"Authorization": f"Bearer {TOKEN}",
                                                                              "Connection": "close"}), 404),
    ("routes", ("GET", "/v1/nothing", {}), 404),
    ("methods", ("PUT", "/v1/predict", {}), 405),
    ("methods", request("FOO", "/v1/library", {"Connection": "close"}), 400),
    ("token", ("DELETE", "/v1/adapters/lora-toy", {"headers": {"Authorization": "Bearer " + "x" * 50_000}}), 401),
    ("token", request("POST", "/v1/learn", {"Authorization": "Bearer \xff\xfe", "Content-Type": "application/json",
                                            "Connection": "close"}, b'{"task": "sst2"}'), 401),
    ("broken HTTP", request("POST", "/v1/predict", {"Content-Length": "abc", "Connection": "close"}, b"{}"), 400),
]


@pytest.mark.parametrize("category,case,status", HOSTILE, ids=[f"{c[0]}-{i}" for i, c in enumerate(HOSTILE)])
def test_hostile_input_gets_a_4xx_and_no_traceback(served, category, case, status):
    client, app, _ = served
    jobs = len(app.state.jobs.all())
    got, body = _send(client, case)
    assert got == status and got < 500, (got, body[:300])
    assert "Traceback" not in body
    assert len(app.state.jobs.all()) == jobs  # nothing hostile started a job


def test_after_the_hostile_input_the_server_answers_and_the_library_verifies(served):
    client, _, lib = served
    for category, case, _ in HOSTILE:
        _send(client, case)
    r = client.post("/v1/predict", json={"inputs": ["lovely", "the word a ||| the word a"]})
    assert r.status_code == 200 and [p["task"] for p in r.json()["predictions"]] == ["toy", "pairs"]
    assert [a["name"] for a in client.get("/v1/library").json()["adapters"]] == ["lora-pairs", "lora-toy"]
    code, out, err = run_alearn("library", "verify", lib)
    assert code == 0, err
    assert {p.name for p in lib.iterdir()} <= {".lock", "adapters", "data", "manifest.json"}  # nothing else written


def test_lone_surrogates_are_refused_in_every_string_of_a_request():
    from pydantic import ValidationError

    from adaptive_learner.server.protocol import LearnRequest, PredictRequest

    for body in ({"inputs": ["\ud800"]}, {"inputs": [{"a": "\udfff"}]}, {"inputs": [{"\ud800": "a"}]},
                 {"inputs": ["a"], "task": "\ud800"}):
        with pytest.raises(ValidationError, match="lone surrogate"):
            PredictRequest.model_validate(body)
    for field, value in (("task", "\ud800"), ("description", "\ud800"), ("name", "x\udc80"), ("labels", ["\ud800"]),
                         ("text_column", ["\ud800"]), ("label_column", "\ud800"), ("family", "\ud800"),
                         ("reuse", "\ud800")):
        with pytest.raises(ValidationError, match="lone surrogate"):
            LearnRequest.model_validate({field: value})
    assert PredictRequest.model_validate({"inputs": ["\U0001f600 é \u202e \x00"]}).inputs  # odd but valid Unicode


def test_names_with_a_trailing_newline_are_refused():
    from adaptive_learner.errors import UserError
    from adaptive_learner.library.check import check_file_name, valid_rel
    from adaptive_learner.tasks.spec import check_name

    for bad in ("toy\n", "lora-toy\n"):
        with pytest.raises(UserError):
            check_name(bad)
    with pytest.raises(UserError):
        check_file_name("profile-x.safetensors\n")
    assert not valid_rel("adapters/lora-x\n") and valid_rel("adapters/lora-x")


def test_an_unexpected_fault_is_a_clean_500_and_the_connection_stays_open(served, monkeypatch):
    client, app, _ = served

    def broken(requests):
        raise RuntimeError("the model broke\nTraceback (most recent call last): secret")

    monkeypatch.setattr(app.state.engine, "answer", broken)
    err = assert_error(client.post("/v1/predict", json={"inputs": ["lovely"], "task": "toy"}), 500, "internal")
    assert "secret" not in err["message"]
    # two requests on one keep-alive connection: the 500 must not close it (it did: the framework re-raised
    # the error after answering, and uvicorn then dropped the connection under the next request)
    body = b'{"inputs": ["lovely"], "task": "toy"}'
    resp = raw(client, request("POST", "/v1/predict", {"Content-Type": "application/json"}, body)
               + request("GET", "/healthz", {"Connection": "close"}), responses=2)
    assert [status_of(r) for r in resp] == [500, 200]


def _sleep_job(job, events):
    time.sleep(60)


def _watched_child(server_pid):
    from adaptive_learner.server import jobs

    jobs.run_job = _sleep_job  # (forked: the patch stays in this process)
    jobs.run_watched({}, None, server_pid, every_s=0.05)


def test_a_worker_ends_when_its_server_is_gone():
    """A learn worker whose server died (SIGKILL) stops at once instead of training on and committing
    behind the back of a restarted server (benchmarks/serve_kill.py found it doing so)."""
    ctx = mp.get_context("fork")
    orphan = ctx.Process(target=_watched_child, args=(2 ** 22 + 7,))  # not its parent: as if the server died
    orphan.start()
    orphan.join(10)
    assert orphan.exitcode == 1
    watched = ctx.Process(target=_watched_child, args=(mp.current_process().pid,))  # its parent is alive
    watched.start()
    watched.join(0.5)
    assert watched.is_alive()
    watched.kill()
    watched.join(5)


def test_a_worker_killed_after_its_commit_point_reports_that_its_change_is_in(tmp_path, monkeypatch):
    """benchmarks/serve_kill.py: a worker killed after the commit point left its change in the library (as the
    transactions promise) while its job read only "failed ... the library keeps its last committed state"."""
    import os
    import signal

    from adaptive_learner.library.txn import committed
    from server_common import wait_job

    lib = copy_library(build_library(tmp_path / "base"), tmp_path / "lib")
    with running(lib) as (client, app):
        monkeypatch.setenv("ADAPTIVE_LEARNER_TEST_STOP_AT", "committed")  # the worker's commit point
        form = {"description": "Glowing?", "name": "late", "force_new": "true", "steps": "3", "max_length": "64",
                "batch_size": "4"}
        r = client.post("/v1/learn", data=form, files={"file": ("late.csv", open(TOY, "rb"))}, headers=AUTH)
        monkeypatch.delenv("ADAPTIVE_LEARNER_TEST_STOP_AT")
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_job(client, job_id, lambda j: j["phase"] in ("evaluating", "done"))
        end = time.monotonic() + 120
        while not committed(lib):  # its plan is in place: the change is committed
            assert time.monotonic() < end, "the worker never committed"
            time.sleep(0.1)
        time.sleep(0.5)  # then it reaches the write point "committed", where it sleeps (for minutes)
        os.kill(app.state.jobs.get(job_id).process.pid, signal.SIGKILL)
        job = wait_job(client, job_id)
        assert job["state"] == "failed" and "exit code -9" in job["error"], job
        assert "after its change was committed" in job["error"] and "lora-late" in job["error"], job["error"]
        pred = client.post("/v1/predict", json={"inputs": ["lovely"], "task": "late"})
        assert pred.status_code == 200 and pred.json()["predictions"][0]["adapter"] == "lora-late"
    code, _, err = run_alearn("library", "verify", lib)
    assert code == 0, err
