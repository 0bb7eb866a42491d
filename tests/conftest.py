"""Shared fixtures: the tiny random backbone (built in code) and small task files. No network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point the model/data cache at an empty temp dir so no test can download or read the user's cache."""
    monkeypatch.setenv("ADAPTIVE_LEARNER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_backbone():
    from adaptive_learner.backbone import load_backbone

    return load_backbone("tiny-random")


@pytest.fixture()
def fresh_backbone():
    """A tiny backbone a test may wrap with adapters without affecting other tests."""
    from adaptive_learner.backbone import load_backbone

    return load_backbone("tiny-random")


@pytest.fixture(scope="session")
def toy_task():
    from adaptive_learner.tasks import load_file_task

    return load_file_task(FIXTURES / "toy_sentiment.csv", "toy", "Is the review positive or negative?",
                          family="sentiment")


@pytest.fixture()
def fast_train():
    from adaptive_learner.training import TrainConfig

    return TrainConfig(steps=30, batch_size=8, lr=1e-2, max_length=64, seed=0, early_stop=False)
