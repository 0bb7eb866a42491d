"""Disk full and read-only: a write that fails leaves the earlier state intact and says what happened.

A full disk is simulated by making the n-th file write of a command fail with ENOSPC after half of
its bytes (through the project's one atomic writer, and peft's adapter save), for every n a learn
performs; a read-only library by ``os.access`` reporting it so (root ignores permission bits, so
chmod alone cannot be relied on) and, when not root, by a real ``chmod``.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from adaptive_learner import fileio
from adaptive_learner.adapters import AdapterHost

from conftest import TOY, alearn, make_toy_library, tree_digest
TRAIN = ["--steps", "1", "--max-length", "48", "--batch-size", "4", "--max-train", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")



digest = tree_digest


class DiskFull:
    """The ``fail_at``-th write (0-based) fails with ``code`` after half its bytes; -1 only counts writes."""

    def __init__(self, fail_at: int, code: int = errno.ENOSPC) -> None:
        self.fail_at, self.code, self.writes = fail_at, code, []

    def _hit(self, what: str) -> bool:
        self.writes.append(what)
        return len(self.writes) - 1 == self.fail_at

    def error(self, name: str) -> OSError:
        return OSError(self.code, os.strerror(self.code), name)

    def install(self, monkeypatch) -> "DiskFull":
        real_fdopen, real_save = os.fdopen, AdapterHost.save
        full = self

        class HalfFile:  # the file object fileio.atomic_write_bytes writes its temp file through
            def __init__(self, fh):
                self.fh, self.fail = fh, full._hit(os.readlink(f"/proc/self/fd/{fh.fileno()}"))

            def write(self, data):
                if self.fail:
                    self.fh.write(data[: len(data) // 2])
                    self.fh.flush()
                    raise full.error(str(self.fh.name))
                return self.fh.write(data)

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        class OsProxy:  # fileio's view of os: only fdopen differs
            def __getattr__(self, name):
                return real_fdopen if name == "_real" else getattr(os, name)

            @staticmethod
            def fdopen(fd, *a, **k):
                return HalfFile(real_fdopen(fd, *a, **k))

        def save(host, name, directory):
            if full._hit(f"adapter {name}"):
                Path(directory).mkdir(parents=True, exist_ok=True)
                (Path(directory) / "adapter_model.safetensors").write_bytes(b"\0" * 100)  # half a file
                raise full.error(str(Path(directory) / "adapter_model.safetensors"))
            return real_save(host, name, directory)

        monkeypatch.setattr(fileio, "os", OsProxy())
        monkeypatch.setattr(AdapterHost, "save", save)
        return self


@pytest.fixture(scope="module")
def base_library(tmp_path_factory):
    return make_toy_library(tmp_path_factory.mktemp("disk") / "lib", *TRAIN)


def _learn_args(lib, reuse: bool):
    extra = ["--reuse", "lora-toy"] if reuse else []
    return ["learn", "--library", lib, "--data", TOY, "--description", "Positive again?", "--name", "toy2",
            *TRAIN, *extra]


def _learn(lib: Path, reuse: bool):
    """``alearn learn`` through the Python API (the CLI's main() maps its errors; checked once below)."""
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.learner import Learner
    from adaptive_learner.tasks import load_file_task
    from adaptive_learner.training import TrainConfig

    task = load_file_task(TOY, "toy2", "Positive again?").subsample(8, 200, 0)
    learner = Learner(lib, backbone=load_backbone("tiny-random"),
                      train=TrainConfig(steps=1, batch_size=4, max_length=48, early_stop=False))
    return learner.learn(task, reuse="lora-toy" if reuse else None)


@pytest.mark.parametrize("reuse", [False, True], ids=["new adapter", "reused adapter"])
def test_disk_full_at_every_write_of_a_learn(base_library, tmp_path, monkeypatch, reuse):
    from adaptive_learner.errors import LibraryError
    from adaptive_learner.library import AdapterLibrary

    lib = tmp_path / "lib"
    shutil.copytree(base_library, lib)
    before = digest(lib)
    shutil.copytree(base_library, tmp_path / "count")
    with monkeypatch.context() as m:
        counter = DiskFull(-1).install(m)  # count the writes of one uninterrupted learn
        _learn(tmp_path / "count", reuse)
    assert len(counter.writes) >= 4, counter.writes  # the adapter, its data, the staged manifest, the plan
    if os.environ.get("RELIABILITY_TALLY"):  # for RELIABILITY.md: which writes were made to fail
        with open(os.environ["RELIABILITY_TALLY"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"disk_full_writes": {"reuse" if reuse else "new": counter.writes}}) + "\n")
    for n, what in enumerate(counter.writes):
        with monkeypatch.context() as m:
            DiskFull(n).install(m)
            with pytest.raises(LibraryError) as err:
                _learn(lib, reuse)
        assert "No space left on device" in str(err.value) and "nothing was changed" in str(err.value), what
        assert digest(lib) == before, f"library changed after a full disk at write {n} ({what})"
        assert not (lib / ".txn").exists() and not AdapterLibrary.open(lib).verify()
    assert _learn(lib, reuse).task == "toy2"  # space again: the same learn now works
    assert json.loads((lib / "manifest.json").read_text())["tasks"]["toy2"]


def test_disk_full_is_one_clear_line_from_the_cli(base_library, tmp_path, monkeypatch, capsys):
    lib = tmp_path / "lib"
    shutil.copytree(base_library, lib)
    before = digest(lib)
    with monkeypatch.context() as m:
        DiskFull(0).install(m)
        code, _, err = alearn(capsys, *_learn_args(lib, False))
    assert code == 2 and "No space left on device" in err and "nothing was changed" in err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [err.strip().splitlines()[-1]]
    assert "Traceback" not in err  # (the other stderr lines are the training progress bar)
    assert digest(lib) == before


@pytest.mark.parametrize("code", [errno.EROFS, errno.EDQUOT])
def test_other_write_errors_mid_learn(base_library, tmp_path, monkeypatch, capsys, code):
    lib = tmp_path / "lib"
    shutil.copytree(base_library, lib)
    before = digest(lib)
    with monkeypatch.context() as m:
        DiskFull(1, code).install(m)
        rc, _, err = alearn(capsys, *_learn_args(lib, False))
    assert rc == 2 and os.strerror(code) in err and "nothing was changed" in err and "Traceback" not in err
    assert digest(lib) == before


def _read_only(monkeypatch, lib: Path):
    real = os.access

    def access(path, mode, *a, **k):
        if mode & os.W_OK and Path(path).resolve().is_relative_to(lib.resolve()):
            return False
        return real(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)


def test_read_only_library_is_refused_before_any_work_and_still_reads(base_library, tmp_path, monkeypatch, capsys):
    lib = tmp_path / "lib"
    shutil.copytree(base_library, lib)
    before = digest(lib)
    _read_only(monkeypatch, lib)
    for args in (_learn_args(lib, False), _learn_args(lib, True), ["library", "rm", lib, "lora-toy"]):
        code, out, err = alearn(capsys, *args)
        assert code == 2 and "read-only" in err and "Traceback" not in err, (args, err)
        assert "accuracy" not in out  # it did not train first and fail at the end
    assert digest(lib) == before
    code, out, _ = alearn(capsys, "predict", "--library", lib, "--task", "toy", "lovely")
    assert code == 0 and "lora-toy" in out
    assert alearn(capsys, "library", "verify", lib)[0] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_chmod_read_only_library(base_library, tmp_path, capsys):
    lib = tmp_path / "lib"
    shutil.copytree(base_library, lib)
    before = digest(lib)
    paths = [lib, *lib.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        code, _, err = alearn(capsys, *_learn_args(lib, False))
        assert code == 2 and ("read-only" in err or "Permission denied" in err) and "Traceback" not in err
        assert digest(lib) == before
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_disk_full_while_checkpointing_a_run_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    """A full disk during task 2's checkpoint: task 1's checkpoint is intact and the run resumes from it."""
    from adaptive_learner.evaluation import checkpoint

    (tmp_path / "toy.csv").write_text(Path(TOY).read_text())
    seq = tmp_path / "seq.yaml"
    seq.write_text("tasks:\n" + "".join(f"  - name: t{i}\n    data: toy.csv\n    description: Review {i} good?\n"
                                        for i in range(2)))
    saves = []
    real = checkpoint.save_checkpoint

    def save(out, state, host, strategy):
        saves.append(state["done"])
        if state["done"] == 2:
            with monkeypatch.context() as m:
                DiskFull(0).install(m)  # the first write of this checkpoint hits a full disk
                return real(out, state, host, strategy)
        return real(out, state, host, strategy)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    out = tmp_path / "run"
    args = ["run", seq, "--strategy", "naive", "--backbone", "tiny-random", "--out", out, "--steps", "1",
            "--max-train", "8", "--max-test", "4", "--max-length", "48", "--batch-size", "4"]
    code, _, err = alearn(capsys, *args)
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert checkpoint.read_checkpoint(out)["done"] == 1 and not (out / "results.json").exists()
    monkeypatch.setattr(checkpoint, "save_checkpoint", real)
    code, _, err = alearn(capsys, "run", "--resume", out)
    assert code == 0, err
    assert len(json.loads((out / "results.json").read_text())["matrix"]) == 2
