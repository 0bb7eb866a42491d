"""Ray as the scale-out engine: ``alearn bench --workers N`` gives what the sequential bench gives and
reuses finished runs; bad Ray options are one line; ``alearn serve --ray`` answers through Ray Serve.

One local Ray (2 CPUs) for the whole module. Without Ray installed (the ``ray`` extra) only the test
of that case runs."""

from __future__ import annotations

import json
import re
import socket
import sys

import pytest

from conftest import FIXTURES, make_toy_library, run_alearn

SEQ_YAML = (f"name: toy2\ntasks:\n"
            f"  - name: toy\n    data: {FIXTURES / 'toy_sentiment.csv'}\n"
            f"    description: Is the review positive or negative?\n    family: sentiment\n"
            f"  - name: pairs\n    data: {FIXTURES / 'toy_pairs.jsonl'}\n"
            f"    description: Do the two phrases mean the same?\n"
            f"    text_columns: [first, second]\n    label_column: same\n")
BENCH = ["--backbone", "tiny-random", "--strategies", "zero-shot,naive,per-task", "--reference", "naive",
         "--seeds", "0", "--max-train", "24", "--max-test", "6", "--steps", "2", "--batch-size", "4",
         "--lr", "1e-2", "--max-length", "64", "--no-early-stop", "--resamples", "100"]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray for the module; the package's cache dir as the other tests see it."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTIVE_LEARNER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        from adaptive_learner.ray_engine import LOCAL_DEFAULTS

        for k, v in LOCAL_DEFAULTS.items():  # the settings the product's own local Ray starts with
            mp.setenv(k, v)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    p = tmp_path_factory.mktemp("seq") / "toy2.yaml"
    p.write_text(SEQ_YAML)
    return str(p)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _comparable(out):
    """bench.json and bench.md without what differs between two runs of the same bench (wall and CPU times)."""
    doc = json.loads((out / "bench.json").read_text())
    for r in doc["runs"] + doc["table"]:
        r.pop("wall_s")
        r.pop("cpu_s")
    md = (out / "bench.md").read_text()
    md = "\n".join(re.sub(r"\| [\d.]+ \|$", "|", line) for line in md.splitlines()  # the table's wall s column
                   if not line.startswith("Cost of the"))
    return {k: doc[k] for k in ("config", "orders", "lrs", "lr_search", "table", "paired", "runs")}, md


def _one_line_error(code, err, words):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and err.startswith("error: "), err
    assert words in err, err


def test_bench_with_two_workers_matches_one_and_reuses_finished_runs(ray_local, sequence, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    code, _, err = run_alearn("bench", sequence, *BENCH, "--out", one)
    assert code == 0, err
    code, _, err = run_alearn("bench", sequence, *BENCH, "--out", two, "--workers", "2")
    assert code == 0, err
    assert "ray: 3/3 runs finished" in err  # three runs, as Ray tasks
    assert _comparable(two) == _comparable(one)

    # finished runs are reused (no Ray task at all); one whose key is gone runs again, alone
    results = {p: p.stat().st_mtime_ns for p in two.glob("seed0-order0/*/results.json")}
    code, _, err = run_alearn("bench", sequence, *BENCH, "--out", two, "--workers", "2")
    assert code == 0, err
    assert "ray:" not in err
    assert {p: p.stat().st_mtime_ns for p in results} == results
    (two / "seed0-order0" / "naive" / "bench-key.json").unlink()  # as if interrupted before it finished
    code, _, err = run_alearn("bench", sequence, *BENCH, "--out", two, "--workers", "2")
    assert code == 0, err
    assert "ray: 1/1 runs finished (" in err
    assert _comparable(two) == _comparable(one)


def test_runs_on_workers_keep_the_drivers_priority(ray_local):
    """Ray would raise the workers' niceness by 15: a bench's runs would yield to any other job."""
    import os

    @ray_local.remote
    def niceness():
        return os.nice(0)

    assert ray_local.get(niceness.remote()) == os.nice(0)


def test_bad_workers_and_ray_address_are_one_line_errors(ray_local, sequence, tmp_path):
    for args, words in [(["--workers", "0"], "--workers must be at least 1"),
                        (["--workers", "-2"], "--workers must be at least 1"),
                        (["--workers", "2", "--ray-address", "not an address"], "is not a Ray address"),
                        (["--ray-address", f"127.0.0.1:{_free_port()}"], "nothing answers there")]:
        code, _, err = run_alearn("bench", sequence, *BENCH, "--out", tmp_path / "out", *args)
        _one_line_error(code, err, words)
    assert not (tmp_path / "out" / "bench.json").exists()
    code, _, err = run_alearn("serve", tmp_path / "lib", "--replicas", "2")
    _one_line_error(code, err, "go with --ray")


def test_a_user_mistake_in_a_worker_is_raised_as_itself(ray_local):
    from adaptive_learner.errors import UserError
    from adaptive_learner.ray_engine import RunPool, check_workers

    with RunPool(2) as pool:
        assert pool.map(check_workers, [(1,), (3,)]) == [None, None]
        with pytest.raises(UserError, match="^--workers must be at least 1, got 0$"):
            pool.map(check_workers, [(1,), (0,), (2,)])


def test_a_worker_that_dies_is_one_line_saying_how_to_resume(ray_local):
    """Not a user's mistake and not a bug: the run is lost, the finished ones are kept (the CLI prints
    RunLost as one line, exit 1)."""
    import os

    from adaptive_learner.errors import RunLost
    from adaptive_learner.ray_engine import RunPool

    with RunPool(2) as pool:
        with pytest.raises(RunLost, match=r"^the Ray worker of run runs/x ended without a result .*run the same "
                                          r"command again to resume$"):
            pool.map(os._exit, [(3,)], labels=["runs/x"])


def test_without_ray_installed_workers_is_one_line_error(sequence, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    code, _, err = run_alearn("bench", sequence, *BENCH, "--out", tmp_path / "out", "--workers", "2")
    _one_line_error(code, err, "pip install 'adaptive-learner[ray]'")
    code, _, err = run_alearn("serve", tmp_path / "lib", "--ray")
    _one_line_error(code, err, "pip install 'adaptive-learner[ray]'")


def test_serve_with_ray_answers_through_ray_serve(ray_local, tmp_path):
    pytest.importorskip("ray.serve")
    httpx = pytest.importorskip("httpx")
    from server_common import AUTH, TRAIN, serve_config, wait_job

    from adaptive_learner.learner import Learner
    from adaptive_learner.ray_engine import start_serve
    from adaptive_learner.training import TrainConfig

    lib = make_toy_library(tmp_path / "lib", *TRAIN)
    served = start_serve(serve_config(lib), replicas=1)  # port 0: a free one
    try:
        with httpx.Client(base_url=served.url, timeout=120) as client:
            health = client.get("/healthz").json()
            assert health["status"] == "ok" and (health["adapters"], health["tasks"]) == (1, 1)
            texts = ["superb wonderful lovely", "bad dull terrible boring"]
            r = client.post("/v1/predict", json={"inputs": texts, "task": "toy"})
            assert r.status_code == 200, r.text
            want = Learner(lib, create=False, train=TrainConfig(max_length=64)).predict(texts, "toy")
            got = r.json()["predictions"]
            assert [(p["label"], p["adapter"]) for p in got] == [(w.label, w.adapter) for w in want]
            assert [p["confidence"] for p in got] == pytest.approx([w.confidence for w in want], abs=1e-4)
            bad = client.post("/v1/predict", json={"inputs": ["a"] * 9})
            assert bad.status_code == 413 and bad.json()["error"]["limit"] == "max_inputs"
            # a learn job through the shared job manager (a dry run: decides, writes nothing)
            form = {"description": "Is it a good review?", "name": "toy2", "dry_run": "true", "max_length": "64"}
            r = client.post("/v1/learn", data=form, files={"file": ("reviews.csv", open(FIXTURES / "toy_sentiment.csv",
                                                                                       "rb"))}, headers=AUTH)
            assert r.status_code == 202, r.text
            job = wait_job(client, r.json()["id"], give_up_s=300)
            assert job["state"] == "succeeded" and job["dry_run"], job
            assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job["id"]]
    finally:
        served.stop()
    try:  # the app is gone (the proxy of the module's Ray may still answer, with a 404)
        assert httpx.get(served.url + "/healthz", timeout=5).status_code != 200
    except httpx.HTTPError:
        pass
