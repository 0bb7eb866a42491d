"""The adapter library on disk: a manifest, adapters in peft's layout, and per-adapter data.

Layout::

    LIB/manifest.json           schema, backbone identity, adapters (with file sha256), tasks, history
    LIB/adapters/<name>/        exactly peft's save_pretrained output (loads in peft, vLLM, LoRAX)
    LIB/data/<name>/            router profiles and regulariser state (safetensors, JSON)
    LIB/.lock                   an advisory lock held by the one writer (and who holds it)
    LIB/.txn/<id>/              a transaction being staged; its plan.json is the commit point

Every change goes through ``transaction()``: files and the new manifest are staged under ``.txn``;
writing ``plan.json`` commits; the plan is then applied by renames only (``txn.py``).
Opening a library rolls a committed plan forward and deletes an uncommitted one, so a crash at any
moment leaves the state before the change or the state after it, never a mix. Opening also checks
the manifest's structure and every listed file's sha256 (``check.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .. import testhooks
from ..errors import LibraryError
from ..fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from ..identity import FINGERPRINTS, same_backbone
from .check import check_file_name, check_manifest
from .txn import MANIFEST, apply_plan, committed, drop_txn, lock_timeout, recover, recover_on_open, write_error
from .txn import flock as _flock
from .txn import fsync_tree as _fsync_tree
from ..tasks.spec import TaskSpec, check_name

if TYPE_CHECKING:  # torch only where tensors are read or written: listing and verifying a library need none
    import torch

__all__ = ["MANIFEST", "SCHEMA_VERSION", "AdapterLibrary", "Transaction", "apply_plan", "recover"]

SCHEMA_VERSION = 1


class AdapterLibrary:
    """A directory of LoRA adapters with the tasks they serve and the history of decisions."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest

    # ----------------------------------------------------------------- open / create
    @classmethod
    def create(cls, path: str | Path, backbone: dict[str, Any], lora: dict[str, Any],
               exist_ok: bool = False) -> "AdapterLibrary":
        """Make a new, empty library. If one is there already: open it (``exist_ok``) or refuse.

        The check and the first manifest write happen under the lock, so two processes creating
        the same library at once end with one library (the second opens what the first made).
        """
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise LibraryError(f"{p} exists and is not a directory")
        manifest = {"schema_version": SCHEMA_VERSION, "created": _now(), "backbone": backbone, "lora": lora,
                    "adapters": {}, "tasks": {}, "history": []}
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(f"cannot create library at {p}: {exc.strerror or exc}") from None
        with _flock(p, timeout=60.0):
            made = not (p / MANIFEST).exists()
            if made:
                try:
                    atomic_write_json(p / MANIFEST, manifest)
                except OSError as exc:
                    raise LibraryError(f"cannot create library at {p}: {exc.strerror or exc}") from None
        if not made:
            if not exist_ok:
                raise LibraryError(f"{p} already holds a library")
            return cls.open(p, backbone)
        return cls(p, manifest)

    @classmethod
    def open(cls, path: str | Path, backbone: dict[str, Any] | None = None, verify: bool = True) -> "AdapterLibrary":
        """Open a library, finishing or discarding an interrupted transaction, and check it."""
        p = Path(path)
        if not (p / MANIFEST).is_file():
            raise LibraryError(f"no adapter library at {p} (no {MANIFEST})")
        recover_on_open(p)
        lib = cls(p, _read_manifest(p))
        if backbone is not None and not same_backbone(lib.backbone, backbone):
            if not any(k in lib.backbone and k in backbone for k in FINGERPRINTS):
                # a library stored before bfloat16 holds only the float32 fingerprint
                raise LibraryError(f"library {p} was stored before bfloat16 backbones and records only its "
                                   f"backbone's float32 fingerprint: use it with --dtype float32")
            raise LibraryError(f"library {p} was built on backbone {lib.backbone.get('name')!r} "
                               f"({_fingerprint(lib.backbone)}); refusing to use it with "
                               f"{backbone.get('name')!r} ({_fingerprint(backbone)})")
        if verify:
            problems = lib.verify(extra=False)
            if problems and _writer_was_applying(lib):
                problems = lib.verify(extra=False)  # a change landed while we read: check its result
            if problems:
                hint = "" if os.access(p, os.W_OK) or not committed(p) else \
                    " (an interrupted change is pending: open it once with write access to finish it)"
                raise LibraryError(f"library {p} is damaged: {problems[0]}{hint}")
        return lib

    @classmethod
    def open_or_create(cls, path: str | Path, backbone: dict[str, Any], lora: dict[str, Any]) -> "AdapterLibrary":
        p = Path(path)
        return cls.open(p, backbone) if (p / MANIFEST).exists() else cls.create(p, backbone, lora, exist_ok=True)

    def reload(self) -> None:
        self.manifest = _read_manifest(self.path)

    # ----------------------------------------------------------------- queries
    @property
    def backbone(self) -> dict[str, Any]:
        return self.manifest["backbone"]

    @property
    def adapters(self) -> dict[str, Any]:
        return self.manifest["adapters"]

    @property
    def tasks(self) -> dict[str, Any]:
        return self.manifest["tasks"]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.manifest["history"]

    def adapter_dir(self, name: str) -> Path:
        return self.path / "adapters" / check_name(name, "adapter")

    def data_path(self, adapter: str, filename: str) -> Path:
        return self.path / "data" / check_name(adapter, "adapter") / check_file_name(filename)

    def task_spec(self, task: str) -> TaskSpec:
        if task not in self.tasks:
            raise LibraryError(f"task {task!r} is not in the library; known: {sorted(self.tasks) or 'none'}")
        return TaskSpec.from_dict(self.tasks[task]["spec"])

    def adapter_of(self, task: str) -> str:
        self.task_spec(task)
        return self.tasks[task]["adapter"]

    def read_tensors(self, adapter: str, filename: str) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        p = self.data_path(adapter, filename)
        return load_file(str(p)) if p.exists() else None

    def read_json(self, adapter: str, filename: str) -> Any:
        p = self.data_path(adapter, filename)
        return read_json(p) if p.exists() else None

    def verify(self, extra: bool = True) -> list[str]:
        """Every problem found: a file the manifest lists that is missing, truncated or changed, a
        manifest entry that is malformed, and (``extra``) a file under adapters/ or data/ it does not list."""
        from .check import check_files, unlisted_files

        problems = check_files(self.path, self.manifest)
        return problems + (unlisted_files(self.path, self.manifest) if extra else [])

    # ----------------------------------------------------------------- writing
    @contextlib.contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator["Transaction"]:
        """Stage changes and commit them atomically on exit (nothing is written if the block raises).

        Waits up to ``timeout`` s (default: ``$ADAPTIVE_LEARNER_LOCK_TIMEOUT`` or 600) for another writer."""
        self._check_writable()
        with _flock(self.path, lock_timeout(timeout)):
            recover(self.path)
            self.reload()
            try:
                tx = Transaction(self)
            except OSError as exc:
                raise write_error(self.path, exc, committed=False) from None
            try:
                yield tx
                tx.stage_manifest()
            except BaseException as exc:
                drop_txn(tx.root)
                if isinstance(exc, OSError):
                    raise write_error(self.path, exc, committed=False) from None
                raise
            tx.commit()
        self.reload()

    @contextlib.contextmanager
    def locked(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the writer lock (for a whole learn: decision, training and commit); waits as ``transaction``."""
        self._check_writable()
        with _flock(self.path, lock_timeout(timeout)):
            recover(self.path)  # finish a change a crashed writer committed, before this one starts
            yield

    def _check_writable(self) -> None:
        if not os.access(self.path, os.W_OK):  # before any work: a read-only library fails fast
            raise LibraryError(f"cannot write to library {self.path}: the directory is read-only; nothing was changed")


class Transaction:
    """Changes to one library, staged under ``.txn/<id>`` until ``commit``."""

    def __init__(self, lib: AdapterLibrary) -> None:
        self.lib = lib
        self.id = uuid.uuid4().hex[:12]
        self.root = lib.path / ".txn" / self.id
        (self.root / "files").mkdir(parents=True)
        self.manifest = _deep_copy(lib.manifest)
        self.install: list[str] = []
        self.remove: list[str] = []

    def _stage(self, rel: str) -> Path:
        testhooks.write_point(f"stage {rel}")
        p = self.root / "files" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel not in self.install:
            self.install.append(rel)
        return p

    def _entry(self, adapter: str) -> dict[str, Any]:
        entry = self.manifest["adapters"].setdefault(check_name(adapter, "adapter"),
                                                     {"created": _now(), "tasks": [], "files": {}})
        return entry

    def save_adapter(self, host: Any, name: str, **info: Any) -> None:
        """Stage adapter ``name`` from ``host`` in peft's layout."""
        rel = f"adapters/{check_name(name, 'adapter')}"
        staged = self._stage(rel)
        host.save(name, staged)
        testhooks.write_point(f"staged {rel}")
        entry = self._entry(name)
        entry["files"] = {k: v for k, v in entry["files"].items() if not k.startswith(rel + "/")}
        for f in sorted(staged.iterdir()):
            entry["files"][f"{rel}/{f.name}"] = sha256_file(f)
        entry.update(info, updated=_now())

    def write_tensors(self, adapter: str, filename: str, tensors: dict[str, torch.Tensor]) -> None:
        """Stage a safetensors file of per-adapter data."""
        from safetensors.torch import save as safetensors_bytes

        rel = f"data/{check_name(adapter, 'adapter')}/{check_file_name(filename)}"
        p = self._stage(rel)
        atomic_write_bytes(p, safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
        self._entry(adapter)["files"][rel] = sha256_file(p)

    def write_json(self, adapter: str, filename: str, obj: Any) -> None:
        """Stage a JSON file of per-adapter data."""
        rel = f"data/{check_name(adapter, 'adapter')}/{check_file_name(filename)}"
        p = self._stage(rel)
        atomic_write_json(p, obj)
        self._entry(adapter)["files"][rel] = sha256_file(p)

    def set_task(self, spec: TaskSpec, adapter: str, **info: Any) -> None:
        """Record that ``adapter`` serves ``spec``."""
        entry = self._entry(adapter)
        old = self.manifest["tasks"].get(spec.name)
        if old and old["adapter"] != adapter and old["adapter"] in self.manifest["adapters"]:
            tasks = self.manifest["adapters"][old["adapter"]]["tasks"]
            if spec.name in tasks:
                tasks.remove(spec.name)
        self.manifest["tasks"][spec.name] = {"adapter": adapter, "spec": spec.to_dict(), "updated": _now(), **info}
        if spec.name not in entry["tasks"]:
            entry["tasks"].append(spec.name)

    def record(self, event: dict[str, Any]) -> None:
        """Append a decision (task, action, adapter, reason, ...) to the history."""
        self.manifest["history"].append({"time": _now(), **event})

    def remove_adapter(self, name: str) -> list[str]:
        """Remove an adapter, its data and the tasks it serves; returns those tasks."""
        if name not in self.manifest["adapters"]:
            raise LibraryError(f"no adapter {name!r} in the library")
        tasks = self.manifest["adapters"].pop(name)["tasks"]
        for t in tasks:
            self.manifest["tasks"].pop(t, None)
        self.remove.extend([f"adapters/{name}", f"data/{name}"])
        return list(tasks)

    def stage_manifest(self) -> None:
        """Stage the new manifest and flush every staged file: all new bytes are on disk before the commit."""
        atomic_write_json(self.root / MANIFEST, self.manifest)
        for rel in self.install:
            _fsync_tree(self.root / "files" / rel)
        testhooks.write_point("staged manifest")

    def commit(self) -> None:
        """Write plan.json (the commit point), then install by renames only: no new bytes after the commit."""
        try:
            atomic_write_json(self.root / "plan.json", {"install": self.install, "remove": self.remove,
                                                        "manifest": "staged"})
        except OSError as exc:
            drop_txn(self.root)
            raise write_error(self.lib.path, exc, committed=False) from None
        testhooks.write_point("committed")
        try:
            apply_plan(self.lib.path, self.root)
        except OSError as exc:
            raise write_error(self.lib.path, exc, committed=True) from None


def _fingerprint(identity: dict[str, Any]) -> str | None:
    return next((identity[k] for k in FINGERPRINTS if k in identity), None)


def _writer_was_applying(lib: "AdapterLibrary") -> bool:
    """After a failed check: did a writer change the library while we read it? Then take its result.

    A writer renames files in before it replaces the manifest, so a reader can see new files with
    the old manifest; the plan stays on disk until the manifest is in, so this case is told apart.
    """
    before = lib.manifest
    recover_on_open(lib.path)  # with a committed plan: wait for its writer (or finish a crashed one)
    lib.reload()
    return lib.manifest != before


def _read_manifest(p: Path) -> dict[str, Any]:
    try:
        m = read_json(p / MANIFEST)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LibraryError(f"{p / MANIFEST} is corrupted (not valid JSON: {exc})") from None
    required = {"schema_version": int, "backbone": dict, "adapters": dict, "tasks": dict, "history": list}
    if not isinstance(m, dict):
        raise LibraryError(f"{p / MANIFEST} is corrupted (not a JSON object)")
    if not set(required) <= set(m):
        raise LibraryError(f"{p / MANIFEST} is corrupted (missing keys {sorted(set(required) - set(m))})")
    wrong = [k for k, kind in required.items() if not isinstance(m[k], kind) or isinstance(m[k], bool)]
    if wrong:
        raise LibraryError(f"{p / MANIFEST} is corrupted (wrong type for {', '.join(wrong)})")
    if m["schema_version"] > SCHEMA_VERSION:
        raise LibraryError(f"{p} has schema version {m['schema_version']}; this adaptive-learner reads "
                           f"up to {SCHEMA_VERSION}: upgrade the package")
    problems = check_manifest(m)
    if problems:
        raise LibraryError(f"{p / MANIFEST} is corrupted ({problems[0]})")
    return m


def _deep_copy(obj: Any) -> Any:
    import json
    return json.loads(json.dumps(obj, default=str))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
