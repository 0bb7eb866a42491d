"""Integrity: every file the manifest references carries its sha256; any change is caught and named.

Each tamper case changes one thing in a copy of a real library (an adapter in peft's layout plus
the router's profile, EWC's Fisher and a replay buffer) and checks three ways of meeting it:
opening the library (the error names the file), ``alearn library verify`` (exit 1, the file named)
and ``alearn predict`` (one clear line, exit 2).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import alearn

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.errors import LibraryError
from adaptive_learner.library import AdapterLibrary

FILES = ["adapters/lora-toy/adapter_model.safetensors", "adapters/lora-toy/adapter_config.json",
         "data/lora-toy/profile-toy.safetensors", "data/lora-toy/profile-toy.json",
         "data/lora-toy/ewc.safetensors", "data/lora-toy/replay.json"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))


TAMPER = {
    "one bit flipped": _flip,
    "truncated to half": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "emptied": lambda p: p.write_bytes(b""),
    "a byte appended": lambda p: p.write_bytes(p.read_bytes() + b"\0"),
    "deleted": lambda p: p.unlink(),
    "replaced by a sibling": lambda p: p.write_bytes(next(f for f in sorted(p.parent.iterdir()) if f != p
                                                         and f.suffix == p.suffix).read_bytes()
                                                    if sum(f.suffix == p.suffix for f in p.parent.iterdir()) > 1
                                                    else p.read_bytes()[::-1]),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_backbone, toy_task):
    path = tmp_path_factory.mktemp("integrity") / "lib"
    lib = AdapterLibrary.create(path, tiny_backbone.identity, {"r": 8, "alpha": 16, "dropout": 0.0,
                                                               "target_modules": None})
    host = AdapterHost(tiny_backbone)
    host.create("lora-toy", seed=3)
    state = host.state("lora-toy")
    with lib.transaction() as tx:
        tx.save_adapter(host, "lora-toy")
        tx.write_tensors("lora-toy", "profile-toy.safetensors", {"mean": torch.arange(8.0)})
        tx.write_json("lora-toy", "profile-toy.json", {"labels": ["negative", "positive"]})
        tx.write_tensors("lora-toy", "ewc.safetensors", {k: v.abs() + 1 for k, v in state.items()})
        tx.write_json("lora-toy", "replay.json", {"items": [[1, 2, 3]], "labels": [0]})
        tx.set_task(toy_task.spec, "lora-toy")
        tx.record({"task": "toy", "action": "new", "adapter": "lora-toy", "reason": "test"})
    host.delete("lora-toy")
    return path


def test_the_manifest_lists_every_file_with_its_sha256(library):
    from adaptive_learner.fileio import sha256_file

    files = json.loads((library / "manifest.json").read_text())["adapters"]["lora-toy"]["files"]
    assert sorted(files) == sorted(FILES)
    assert all(sha256_file(library / rel) == digest for rel, digest in files.items())
    on_disk = {f.relative_to(library).as_posix() for f in library.rglob("*") if f.is_file()
               and f.parts[-2] != ".txn" and f.name not in ("manifest.json", ".lock")}
    assert on_disk == set(FILES)


@pytest.mark.parametrize("how", list(TAMPER))
@pytest.mark.parametrize("rel", FILES)
def test_tampered_file_is_detected_on_open_and_by_verify_and_named(capsys, tmp_path, library, rel, how):
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    TAMPER[how](copy / rel)
    with pytest.raises(LibraryError) as err:
        AdapterLibrary.open(copy)
    assert rel in str(err.value)
    code, _, errout = alearn(capsys, "library", "verify", copy)
    assert code == 1 and rel in errout
    code, _, errout = alearn(capsys, "predict", "--library", copy, "--task", "toy", "a fine film")
    assert code == 2 and rel in errout and "Traceback" not in errout and len(errout.strip().splitlines()) == 1


def _edit(manifest: dict, how: str) -> dict | str | bytes:
    m = json.loads(json.dumps(manifest))
    files = m["adapters"]["lora-toy"]["files"]
    if how == "sha256 edited":
        files[FILES[0]] = "0" * 64
    elif how == "file entry pointing outside":
        files["adapters/lora-toy/../../../etc/passwd"] = files.pop(FILES[1])
    elif how == "absolute file entry":
        files["/etc/passwd"] = files.pop(FILES[1])
    elif how == "adapter named with ..":
        m["adapters"]["../evil"] = m["adapters"].pop("lora-toy")
    elif how == "task pointing to a missing adapter":
        m["tasks"]["toy"]["adapter"] = "ghost"
    elif how == "task spec broken":
        m["tasks"]["toy"]["spec"]["label_names"] = ["only-one"]
    elif how == "adapters not a mapping":
        m["adapters"] = ["lora-toy"]
    elif how == "schema from the future":
        m["schema_version"] = 99
    elif how == "not an object":
        return "[1, 2, 3]"
    elif how == "truncated":
        return json.dumps(manifest)[:200]
    elif how == "emptied":
        return ""
    elif how == "not UTF-8":
        return b"\xff\xfe" + json.dumps(manifest).encode("utf-16-le")
    return m


MANIFEST_CASES = ["sha256 edited", "file entry pointing outside", "absolute file entry", "adapter named with ..",
                  "task pointing to a missing adapter", "task spec broken", "adapters not a mapping",
                  "schema from the future", "not an object", "truncated", "emptied", "not UTF-8"]


@pytest.mark.parametrize("how", MANIFEST_CASES)
def test_tampered_manifest_is_a_clear_error(capsys, tmp_path, library, how):
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    edited = _edit(json.loads((copy / "manifest.json").read_text()), how)
    if isinstance(edited, bytes):
        (copy / "manifest.json").write_bytes(edited)
    else:
        (copy / "manifest.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(LibraryError):
        AdapterLibrary.open(copy)
    for args in (["library", "verify", copy], ["predict", "--library", copy, "--task", "toy", "x"]):
        code, _, err = alearn(capsys, *args)
        assert code != 0 and err.strip() and "Traceback" not in err, (args, err)
    code, _, err = alearn(capsys, "library", "ls", copy)  # listing hashes nothing, but must not crash
    assert (code == 0 if how == "sha256 edited" else code == 2) and "Traceback" not in err


def test_planted_file_is_reported_by_verify(capsys, tmp_path, library):
    """A pickle planted beside the adapter (peft would fall back to it) is reported; open still works."""
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    (copy / "adapters" / "lora-toy" / "adapter_model.bin").write_bytes(b"\x80\x04planted")
    AdapterLibrary.open(copy)  # the listed files are intact, and peft prefers the safetensors file
    code, _, err = alearn(capsys, "library", "verify", copy)
    assert code == 1 and "unexpected file adapters/lora-toy/adapter_model.bin" in err


def test_pending_plan_pointing_outside_the_library_is_refused(tmp_path, library):
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    txn = copy / ".txn" / "evil"
    txn.mkdir(parents=True)
    (txn / "plan.json").write_text(json.dumps({"install": [], "remove": ["../victim.txt"], "manifest": "staged"}))
    with pytest.raises(LibraryError, match="outside adapters/ and data/"):
        AdapterLibrary.open(copy)
    assert victim.read_text() == "keep me"


def test_intact_library_verifies(capsys, library):
    code, out, _ = alearn(capsys, "library", "verify", library)
    assert code == 0 and out.startswith("ok: 6 files")
