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


@pytest.fixture(scope="session")
def pair_task():
    from adaptive_learner.tasks import load_file_task

    return load_file_task(FIXTURES / "toy_pairs.jsonl", "pairs", "Do the two phrases mean the same?",
                          ["first", "second"], "same", family="paraphrase")


@pytest.fixture(scope="session")
def toy_sequence(tmp_path_factory):
    """A two-task sequence file: the toy sentiment task, then the toy pair task."""
    p = tmp_path_factory.mktemp("seq") / "toy2.yaml"
    p.write_text(f"name: toy2\ntasks:\n"
                 f"  - name: toy\n    data: {FIXTURES / 'toy_sentiment.csv'}\n"
                 f"    description: Is the review positive or negative?\n    family: sentiment\n"
                 f"  - name: pairs\n    data: {FIXTURES / 'toy_pairs.jsonl'}\n"
                 f"    description: Do the two phrases mean the same?\n"
                 f"    text_columns: [first, second]\n    label_column: same\n")
    return str(p)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny-model work runs fastest on one thread (two contend badly on a busy 2-core machine); a module
    uses it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TOY = str(FIXTURES / "toy_sentiment.csv")


def alearn(capsys, *args) -> tuple[int, str, str]:
    """``run_alearn`` with the signature the CLI tests use (pytest's capsys is not needed: output is captured)."""
    return run_alearn(*args)


def run_alearn(*args) -> tuple[int, str, str]:
    """Run the ``alearn`` entry point in this process; return (exit code, stdout, stderr)."""
    import contextlib
    import io
    import sys

    from adaptive_learner import cli

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["alearn", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def tree_digest(path: Path) -> str:
    """One hash of every file under ``path`` (names and bytes; the lock file aside)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name != ".lock"):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def make_toy_library(lib: Path, *train_args: str, description: str = "Positive?") -> Path:
    """A library holding the toy task, learned through ``alearn learn`` on the tiny backbone."""
    code, _, err = run_alearn("learn", "--library", lib, "--backbone", "tiny-random", "--data", TOY,
                              "--description", description, "--name", "toy", *train_args)
    assert code == 0, err
    return lib
