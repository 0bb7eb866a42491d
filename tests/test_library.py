"""The adapter library: creation, backbone identity, transactions, recovery and integrity."""

import json

import pytest
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.errors import LibraryError
from adaptive_learner.library import MANIFEST, AdapterLibrary, recover

IDENTITY = {"name": "tiny-random", "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "vocab_size": 260, "fingerprint": "abc"}


@pytest.fixture()
def lib(tmp_path):
    return AdapterLibrary.create(tmp_path / "lib", IDENTITY, {"r": 8})


def test_create_and_reopen(lib):
    again = AdapterLibrary.open(lib.path, IDENTITY)
    assert again.manifest["schema_version"] == 1 and again.adapters == {} and again.backbone == IDENTITY


def test_other_backbone_is_refused(lib):
    with pytest.raises(LibraryError, match="refusing"):
        AdapterLibrary.open(lib.path, {**IDENTITY, "fingerprint": "other", "name": "smollm2-135m"})


@pytest.mark.parametrize("content,message", [("{not json", "not valid JSON"), ('{"a": 1}', "missing keys")])
def test_corrupted_manifest_is_reported(lib, content, message):
    (lib.path / MANIFEST).write_text(content)
    with pytest.raises(LibraryError, match=message):
        AdapterLibrary.open(lib.path)


def test_missing_library(tmp_path):
    with pytest.raises(LibraryError, match="no adapter library"):
        AdapterLibrary.open(tmp_path / "nothing")


def test_transaction_commits_adapter_data_and_history(lib, toy_task, fresh_backbone):
    host = AdapterHost(fresh_backbone)
    host.create("a1")
    with lib.transaction() as tx:
        tx.save_adapter(host, "a1")
        tx.write_tensors("a1", "profile.safetensors", {"mean": torch.ones(3)})
        tx.write_json("a1", "meta.json", {"k": 1})
        tx.set_task(toy_task.spec, "a1")
        tx.record({"task": "toy", "action": "new", "adapter": "a1", "reason": "test"})
    again = AdapterLibrary.open(lib.path, IDENTITY)
    assert again.adapter_of("toy") == "a1" and again.history[-1]["action"] == "new"
    assert sorted(p.name for p in again.adapter_dir("a1").iterdir()) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]
    assert torch.equal(again.read_tensors("a1", "profile.safetensors")["mean"], torch.ones(3))
    assert again.read_json("a1", "meta.json") == {"k": 1}
    assert not (lib.path / ".txn").exists() or not any((lib.path / ".txn").iterdir())


def test_failed_transaction_changes_nothing(lib, toy_task):
    before = (lib.path / MANIFEST).read_text()
    with pytest.raises(RuntimeError):
        with lib.transaction() as tx:
            tx.write_json("a1", "meta.json", {"k": 1})
            tx.set_task(toy_task.spec, "a1")
            raise RuntimeError("crash in the middle")
    assert (lib.path / MANIFEST).read_text() == before and not (lib.path / "data").exists()


def test_committed_plan_is_rolled_forward_on_open(lib, toy_task, monkeypatch):
    """A crash after the commit point (plan written) but before it was applied: open finishes it."""
    import adaptive_learner.library.store as L

    monkeypatch.setattr(L, "apply_plan", lambda lib, txn: None)  # "crash" right after plan.json
    with lib.transaction() as tx:
        tx.write_json("a1", "meta.json", {"k": 2})
        tx.set_task(toy_task.spec, "a1")
    monkeypatch.undo()
    assert "toy" not in json.loads((lib.path / MANIFEST).read_text())["tasks"]
    again = AdapterLibrary.open(lib.path)
    assert again.adapter_of("toy") == "a1" and again.read_json("a1", "meta.json") == {"k": 2}


def test_uncommitted_staging_is_discarded(lib):
    stray = lib.path / ".txn" / "deadbeef" / "files" / "data" / "x"
    stray.mkdir(parents=True)
    recover(lib.path)
    assert not (lib.path / ".txn" / "deadbeef").exists()


def test_tampered_file_is_detected_and_named(lib):
    with lib.transaction() as tx:
        tx.write_json("a1", "meta.json", {"k": 1})
    f = lib.data_path("a1", "meta.json")
    f.write_text('{"k": 666}')
    with pytest.raises(LibraryError, match="meta.json"):
        AdapterLibrary.open(lib.path)
    f.unlink()
    assert any("missing" in p for p in AdapterLibrary.open(lib.path, verify=False).verify())


def test_remove_adapter_removes_tasks_and_files(lib, toy_task):
    with lib.transaction() as tx:
        tx.write_json("a1", "meta.json", {"k": 1})
        tx.set_task(toy_task.spec, "a1")
    with lib.transaction() as tx:
        assert tx.remove_adapter("a1") == ["toy"]
    assert lib.adapters == {} and lib.tasks == {} and not lib.data_path("a1", "meta.json").exists()
