"""The backbone in bfloat16 (``--dtype``): one library in either precision, float32 adapters, runs told apart."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from conftest import FIXTURES, alearn, make_toy_library

pytestmark = pytest.mark.usefixtures("one_thread")
LEARN = ["--steps", "3", "--max-length", "64", "--batch-size", "4"]


@pytest.fixture(scope="module")
def float32_library(tmp_path_factory):
    return make_toy_library(tmp_path_factory.mktemp("dtype") / "lib", *LEARN, description="Is the review positive?")


def test_dtype_names_and_bad_values():
    from adaptive_learner.backbone import resolve_dtype
    from adaptive_learner.errors import UserError

    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("Float32") is torch.float32
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    for bad in ("float16", "int8", torch.float16):
        with pytest.raises(UserError, match="unknown dtype"):
            resolve_dtype(bad)


def test_both_precisions_are_one_backbone():
    from adaptive_learner.backbone import load_backbone, same_backbone

    a, b = load_backbone("tiny-random"), load_backbone("tiny-random", dtype="bfloat16")
    assert next(b.model.parameters()).dtype is torch.bfloat16
    assert a.identity["fingerprint_bf16"] == b.identity["fingerprint_bf16"]
    assert "fingerprint" in a.identity and "fingerprint" not in b.identity  # float32's own is float32's alone
    assert same_backbone(a.identity, b.identity)
    other = load_backbone("tiny-random", seed=1, dtype="bfloat16")
    assert not same_backbone(a.identity, other.identity)
    # a library stored before bfloat16 holds only the float32 fingerprint: no shared fingerprint, not the same
    old = {k: v for k, v in a.identity.items() if k != "fingerprint_bf16"}
    assert same_backbone(old, a.identity) and not same_backbone(old, b.identity)


def test_a_float32_library_predicts_and_learns_in_bfloat16(capsys, tmp_path, float32_library):
    lib = tmp_path / "lib"
    shutil.copytree(float32_library, lib)
    code, out32, err = alearn(capsys, "predict", "--library", lib, "--task", "toy", "--json", "great film")
    assert code == 0, err
    code, out16, err = alearn(capsys, "predict", "--library", lib, "--task", "toy", "--json", "--dtype", "bf16",
                              "great film")
    assert code == 0, err
    p32, p16 = json.loads(out32), json.loads(out16)
    assert p16["label"] == p32["label"] and abs(p16["confidence"] - p32["confidence"]) < 0.05
    code, _, err = alearn(capsys, "learn", "--library", lib, "--data", FIXTURES / "toy_pairs.jsonl",
                          "--description", "Do the two phrases mean the same?", "--text-column", "first",
                          "--text-column", "second", "--label-column", "same", "--name", "pairs", "--force-new",
                          "--dtype", "bfloat16", *LEARN)
    assert code == 0, err
    m = json.loads((lib / "manifest.json").read_text())
    assert m["history"][-1]["train"]["dtype"] == "bfloat16" and m["history"][0]["train"]["dtype"] == "float32"
    with safe_open(str(lib / "adapters" / "lora-pairs" / "adapter_model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float32}  # peft keeps the adapter in float32 over a bfloat16 backbone
    code, out, err = alearn(capsys, "library", "verify", lib)
    assert code == 0, err


def test_an_old_library_in_bfloat16_is_one_clear_line(capsys, tmp_path, float32_library):
    lib = tmp_path / "lib"
    shutil.copytree(float32_library, lib)
    m = json.loads((lib / "manifest.json").read_text())
    del m["backbone"]["fingerprint_bf16"]  # as stored before bfloat16
    (lib / "manifest.json").write_text(json.dumps(m))
    code, _, err = alearn(capsys, "predict", "--library", lib, "--task", "toy", "--dtype", "bfloat16", "good")
    assert code == 2 and err.count("\n") == 1 and "use it with --dtype float32" in err
    code, _, err = alearn(capsys, "predict", "--library", lib, "--task", "toy", "good")
    assert code == 0, err


def test_a_bad_dtype_is_one_line_and_writes_nothing(capsys, tmp_path):
    lib = tmp_path / "lib"
    code, _, err = alearn(capsys, "learn", "--library", lib, "--backbone", "tiny-random", "--data",
                          FIXTURES / "toy_sentiment.csv", "--description", "Positive?", "--dtype", "float16", *LEARN)
    assert code == 2 and err.startswith("error: unknown dtype 'float16'") and err.count("\n") == 1
    assert not lib.exists()


def test_a_run_in_bfloat16_is_another_run_and_float32_runs_keep_their_identity():
    from adaptive_learner.evaluation.config import RunConfig, run_identity

    plain = json.loads(json.dumps(RunConfig().to_dict(), default=str))
    stored = {k: v for k, v in plain.items() if k != "dtype"}  # a run stored before the setting existed
    assert run_identity(plain) == run_identity(stored)
    half = json.loads(json.dumps(RunConfig(dtype="bfloat16").to_dict(), default=str))
    assert run_identity(half) != run_identity(plain) and run_identity(half)["dtype"] == "bfloat16"


def test_a_server_in_bfloat16_answers_and_its_learn_jobs_train_in_bfloat16(tmp_path, float32_library):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from server_common import AUTH, copy_library, running, wait_job

    from adaptive_learner.server import JobSettings

    lib = copy_library(float32_library, tmp_path / "lib")
    with running(lib, dtype="bf16", jobs=JobSettings(dtype="bfloat16")) as (client, app):
        assert app.state.engine.learner.dtype == "bfloat16"
        pred = client.post("/v1/predict", json={"inputs": ["lovely"], "task": "toy"})
        assert pred.status_code == 200 and pred.json()["predictions"][0]["adapter"] == "lora-toy"
        form = {"description": "Is it a good review?", "name": "toy2", "force_new": "true", "steps": "2",
                "max_length": "64", "batch_size": "4"}
        r = client.post("/v1/learn", data=form, files={"file": ("reviews.csv", open(FIXTURES / "toy_sentiment.csv", "rb"))},
                        headers=AUTH)
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["state"] == "succeeded", job
    assert json.loads((lib / "manifest.json").read_text())["history"][-1]["train"]["dtype"] == "bfloat16"


def test_server_settings_refuse_a_job_precision_unlike_the_servers(tmp_path):
    from adaptive_learner.errors import UserError
    from adaptive_learner.server import JobSettings, ServeConfig

    with pytest.raises(UserError, match="unknown dtype"):
        ServeConfig(library=tmp_path, dtype="half").check()
    with pytest.raises(UserError, match="learn jobs would load the backbone in float32"):
        ServeConfig(library=tmp_path, dtype="bfloat16").check()
    assert ServeConfig(library=tmp_path, dtype="bf16", jobs=JobSettings(dtype="bfloat16")).check().dtype == "bfloat16"
