"""Data-parallel training under `accelerate launch` with two CPU processes (gloo), same code path."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name(
    "accelerate").exists(), reason="accelerate CLI not installed")


def test_two_processes_train_in_sync(tmp_path):
    exe = Path(sys.executable).with_name("accelerate")
    cmd = [str(exe) if exe.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(Path(__file__).parent / "distributed_driver.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{i}.safetensors")) for i in range(2))
    assert r0.keys() == r1.keys()
    # gradients were averaged across ranks: both hold the same weights, and training moved them
    assert all(torch.allclose(r0[k], r1[k], atol=1e-6) for k in r0)
    assert any(float(r0[k].abs().sum()) > 0 for k in r0 if "lora_B" in k)
    assert "examples 16" in proc.stdout  # each rank trained on its half of 4 batches of 8
