"""Where runs train and score: ``--device auto|cpu|cuda[:N]``; a run is the same run whatever device made it."""

import json
from dataclasses import replace

import pytest
import torch

from adaptive_learner.backbone import device_name, resolve_device
from adaptive_learner.errors import UserError
from adaptive_learner.evaluation.bench import run_key
from adaptive_learner.evaluation.harness import RunConfig, prepare_tasks

from conftest import alearn
from test_bench import repeated  # noqa: F401,F811  (a fixture)


def test_auto_takes_a_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # MPS only when named
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # one process per GPU under accelerate launch
    assert resolve_device("auto") == "cuda:1"
    assert resolve_device("CPU") == "cpu" and device_name("cpu") == "cpu"


@pytest.mark.parametrize("spec", ["banana", "cuda:x", "tpu", ""])
def test_a_bad_device_is_one_clear_error(spec, monkeypatch):
    if spec == "":
        assert resolve_device(spec) in ("cpu", "cuda")  # empty means auto
        return
    with pytest.raises(UserError, match="device"):
        resolve_device(spec)


def test_a_missing_gpu_is_named_not_crashed_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="only 1 CUDA GPU"):
        resolve_device("cuda:3")


def test_cli_device_errors_are_one_line(capsys, toy_sequence, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (["run", toy_sequence, "--backbone", "tiny-random", "--device", "banana", "--out", str(tmp_path / "r")],
                 ["bench", toy_sequence, "--backbone", "tiny-random", "--device", "cuda", "--out", str(tmp_path / "b")],
                 ["predict", "hello", "--library", str(tmp_path / "lib"), "--device", "cuda:0"]):
        code, out, err = alearn(capsys, *args)
        assert code == 2 and "device" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "b").exists()


def test_the_device_is_recorded_but_is_not_part_of_a_runs_identity(repeated, toy_sequence):
    cfg, res, out = repeated
    rc = RunConfig(sequence=toy_sequence, strategy="naive", backbone="tiny-random", max_train=24, max_test=6)
    tasks = prepare_tasks(rc)
    assert run_key(replace(rc, device="cuda:1"), tasks) == run_key(rc, tasks)
    doc = json.loads((out / "seed0-order0" / "naive" / "results.json").read_text())
    assert doc["device"] == "cpu" and doc["config"]["device"] == "auto"
    # the same bench asked to run on the CPU explicitly reuses every finished run
    f = out / "seed1-order1" / "naive" / "results.json"
    before = f.stat().st_mtime_ns
    from adaptive_learner.evaluation.bench import run_bench
    again = run_bench(replace(cfg, device="cpu"), out)
    assert f.stat().st_mtime_ns == before
    assert [r["metrics"] for r in again.runs] == [r["metrics"] for r in res.runs]
    assert {r["device"] for r in again.runs} == {"cpu"}
    assert "Runs made on: cpu (12)." in (out / "bench.md").read_text()


def test_bench_runs_on_ray_ask_for_a_share_of_the_gpus():
    from adaptive_learner.ray_engine import MAX_RUNS_PER_GPU, gpu_share

    assert gpu_share("cpu", 2, 8) == 0.0 and gpu_share("auto", 2, 0) == 0.0  # CPU runs, or no GPU: none
    assert gpu_share("cuda", 2, 1) == 0.5 and gpu_share("auto", 8, 8) == 1.0 and gpu_share("cuda", 1, 4) == 1.0
    assert gpu_share("cuda", 16, 1) == 1.0 / MAX_RUNS_PER_GPU  # never more than a few runs time-slicing one GPU


def test_serve_replicas_ask_ray_for_their_gpu_share():
    pytest.importorskip("ray.serve")
    from adaptive_learner.ray_engine import _deployment

    deployment = _deployment(3, {}, 0.25)  # Ray hides the GPUs from a replica that asks for none
    assert deployment.ray_actor_options["num_gpus"] == 0.25 and deployment.num_replicas == 3
    assert _deployment(1, {}).ray_actor_options["num_gpus"] == 0.0


def test_a_numbered_gpu_with_ray_workers_is_one_line(capsys, toy_sequence, tmp_path):
    pytest.importorskip("ray")
    code, out, err = alearn(capsys, "bench", toy_sequence, "--backbone", "tiny-random", "--workers", "2",
                            "--device", "cuda:1", "--out", str(tmp_path / "b"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "device" in err  # no GPU here: the device check speaks first; with one, the pool's own check:
    from adaptive_learner.ray_engine import RunPool
    with pytest.raises(UserError, match="Ray gives each run its GPU"):
        RunPool(2, None, "cuda:1")


def test_the_heads_settings_are_not_part_of_a_runs_identity(repeated, toy_sequence):
    """No strategy of a run reads the head's settings: runs made before they existed are still recognised."""
    from adaptive_learner.evaluation.bench import finished_run

    cfg, res, out = repeated
    rc = RunConfig(sequence=toy_sequence, strategy="naive", backbone="tiny-random", max_train=24, max_test=6)
    tasks = prepare_tasks(rc)
    assert run_key(replace(rc, train=replace(rc.train, head_mix="held-out", head=False)), tasks) == run_key(rc, tasks)
    assert run_key(replace(rc, train=replace(rc.train, lr=1e-4)), tasks) != run_key(rc, tasks)
    run = out / "seed0-order0" / "naive"
    key = json.loads((run / "bench-key.json").read_text())
    assert "head" not in key["config"]["train"] and "head_mix" not in key["config"]["train"]
    key["config"]["train"]["head"] = True  # as written before the head's settings were left out
    (run / "bench-key.json").write_text(json.dumps(key))
    done_rc = RunConfig.from_dict(json.loads((run / "results.json").read_text())["config"])
    assert finished_run(done_rc, prepare_tasks(done_rc), run) is not None
