"""Shared pieces of the server tests: a library with a one-field and a two-field task, and a real
uvicorn serving it on a free loopback port of this process."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from conftest import FIXTURES, make_toy_library, run_alearn

PAIRS = str(FIXTURES / "toy_pairs.jsonl")
TRAIN = ["--steps", "3", "--max-length", "64", "--batch-size", "4"]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def build_library(lib: Path) -> Path:
    """``toy`` (sentiment, one field) and ``pairs`` (two fields), learned on the tiny backbone."""
    make_toy_library(lib, *TRAIN, description="Is the review positive?")
    code, _, err = run_alearn("learn", "--library", lib, "--data", PAIRS, "--description",
                              "Are the two words the same?", "--name", "pairs", "--text-column", "first",
                              "--text-column", "second", "--label-column", "same", "--force-new", *TRAIN)
    assert code == 0, err
    return lib


def copy_library(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def serve_config(lib: Path, **overrides: Any) -> Any:
    from adaptive_learner.server import BatchSettings, Limits, ServeConfig

    limits = Limits(max_inputs=8, max_chars=200, max_body_bytes=64 * 1024, max_upload_bytes=32 * 1024,
                    lock_wait_s=0.5, **overrides.pop("limits", {}))
    return ServeConfig(library=lib, port=0, token=overrides.pop("token", TOKEN), max_length=64, limits=limits,
                       batching=BatchSettings(**overrides.pop("batching", {})), log_level="warning",
                       **overrides).check()


@contextlib.contextmanager
def running(lib: Path, backbone: Any = None, **overrides: Any) -> Iterator[tuple[Any, Any]]:
    """(httpx client on the server's URL, the app) while a uvicorn serves ``lib`` on a free port (the model in
    this process, or with ``model_process=True`` in its own, started by the app)."""
    import httpx

    from adaptive_learner.server.api import create_app
    from adaptive_learner.server.runner import BackgroundServer
    from adaptive_learner.server.serving import ServingEngine

    cfg = serve_config(lib, **overrides)
    app = create_app(cfg, None if cfg.model_process else ServingEngine(cfg, backbone=backbone))
    with BackgroundServer(app, cfg) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        yield client, app


def wait_job(client: Any, job_id: str, done: Callable[[dict[str, Any]], bool] | None = None,
             give_up_s: float = 600) -> dict[str, Any]:
    """Poll a job until ``done(job)`` (default: it has ended); ``give_up_s`` only guards against a hang."""
    done = done or (lambda j: j["state"] in ("succeeded", "failed"))
    end = time.monotonic() + give_up_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < end, f"job {job_id} never got there: {job}"
        time.sleep(0.2)


def assert_error(resp: Any, status: int, type_: str | None = None, limit: str | None = None) -> dict[str, Any]:
    """The one error shape, the status, no traceback."""
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert "Traceback" not in resp.text
    err = resp.json()["error"]
    assert set(err) == {"type", "message", "limit", "request_id"}
    assert err["message"] and "\n" not in err["message"]
    if type_ is not None:
        assert err["type"] == type_, err
    if limit is not None:
        assert err["limit"] == limit, err
    return err
