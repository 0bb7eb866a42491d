"""The adapter library on disk: a manifest, adapters in peft's layout, and per-adapter data.

Layout::

    LIB/manifest.json           schema, backbone identity, adapters (with file sha256), tasks, history
    LIB/adapters/<name>/        exactly peft's save_pretrained output (loads in peft, vLLM, LoRAX)
    LIB/data/<name>/            router profiles and regulariser state (safetensors, JSON)
    LIB/.lock                   an advisory lock held by the one writer
    LIB/.txn/<id>/              a transaction being staged; its plan.json is the commit point

Every change goes through ``transaction()``: files are staged under ``.txn``; writing ``plan.json``
commits; the plan is then applied (renames) and the manifest replaced atomically. Opening a library
rolls a committed plan forward and deletes an uncommitted one, so a crash at any moment leaves the
state before the change or the state after it, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from .backbone import same_backbone
from .errors import LibraryError
from .fileio import atomic_write_json, fsync_dir, read_json, sha256_file
from .tasks.spec import TaskSpec, check_name

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class AdapterLibrary:
    """A directory of LoRA adapters with the tasks they serve and the history of decisions."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest

    # ----------------------------------------------------------------- open / create
    @classmethod
    def create(cls, path: str | Path, backbone: dict[str, Any], lora: dict[str, Any]) -> "AdapterLibrary":
        """Make a new, empty library (the directory must not hold one already)."""
        p = Path(path)
        if (p / MANIFEST).exists():
            raise LibraryError(f"{p} already holds a library")
        if p.exists() and not p.is_dir():
            raise LibraryError(f"{p} exists and is not a directory")
        manifest = {"schema_version": SCHEMA_VERSION, "created": _now(), "backbone": backbone, "lora": lora,
                    "adapters": {}, "tasks": {}, "history": []}
        try:
            p.mkdir(parents=True, exist_ok=True)
            atomic_write_json(p / MANIFEST, manifest)
        except OSError as exc:
            raise LibraryError(f"cannot create library at {p}: {exc.strerror or exc}") from None
        return cls(p, manifest)

    @classmethod
    def open(cls, path: str | Path, backbone: dict[str, Any] | None = None, verify: bool = True) -> "AdapterLibrary":
        """Open a library, finishing or discarding an interrupted transaction, and check it."""
        p = Path(path)
        if not (p / MANIFEST).is_file():
            raise LibraryError(f"no adapter library at {p} (no {MANIFEST})")
        if (p / ".txn").is_dir() and os.access(p, os.W_OK):
            with _flock(p, timeout=60.0):
                recover(p)
        lib = cls(p, _read_manifest(p))
        if backbone is not None and not same_backbone(lib.backbone, backbone):
            raise LibraryError(f"library {p} was built on backbone {lib.backbone.get('name')!r} "
                               f"({lib.backbone.get('fingerprint')}); refusing to use it with "
                               f"{backbone.get('name')!r} ({backbone.get('fingerprint')})")
        if verify:
            problems = lib.verify()
            if problems:
                raise LibraryError(f"library {p} is damaged: {problems[0]}")
        return lib

    @classmethod
    def open_or_create(cls, path: str | Path, backbone: dict[str, Any], lora: dict[str, Any]) -> "AdapterLibrary":
        p = Path(path)
        return cls.open(p, backbone) if (p / MANIFEST).exists() else cls.create(p, backbone, lora)

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
        return self.path / "data" / check_name(adapter, "adapter") / filename

    def task_spec(self, task: str) -> TaskSpec:
        if task not in self.tasks:
            raise LibraryError(f"task {task!r} is not in the library; known: {sorted(self.tasks) or 'none'}")
        return TaskSpec.from_dict(self.tasks[task]["spec"])

    def adapter_of(self, task: str) -> str:
        self.task_spec(task)
        return self.tasks[task]["adapter"]

    def read_tensors(self, adapter: str, filename: str) -> dict[str, torch.Tensor] | None:
        p = self.data_path(adapter, filename)
        return load_file(str(p)) if p.exists() else None

    def read_json(self, adapter: str, filename: str) -> Any:
        p = self.data_path(adapter, filename)
        return read_json(p) if p.exists() else None

    def verify(self) -> list[str]:
        """Every problem found: a file the manifest lists that is missing, truncated or changed."""
        problems = []
        for name, info in self.adapters.items():
            for rel, digest in info.get("files", {}).items():
                f = self.path / rel
                if not f.is_file():
                    problems.append(f"{rel} is missing")
                elif sha256_file(f) != digest:
                    problems.append(f"{rel} does not match its sha256 in the manifest (changed or truncated)")
        return problems

    # ----------------------------------------------------------------- writing
    @contextlib.contextmanager
    def transaction(self, timeout: float = 600.0) -> Iterator["Transaction"]:
        """Stage changes and commit them atomically on exit (nothing is written if the block raises)."""
        with _flock(self.path, timeout):
            recover(self.path)
            self.reload()
            tx = Transaction(self)
            try:
                yield tx
            except BaseException:
                shutil.rmtree(tx.root, ignore_errors=True)
                raise
            tx.commit()
        self.reload()

    @contextlib.contextmanager
    def locked(self, timeout: float = 600.0) -> Iterator[None]:
        """Hold the writer lock (for a whole learn: decision, training and commit)."""
        with _flock(self.path, timeout):
            yield


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
        entry = self._entry(name)
        entry["files"] = {k: v for k, v in entry["files"].items() if not k.startswith(rel + "/")}
        for f in sorted(staged.iterdir()):
            entry["files"][f"{rel}/{f.name}"] = sha256_file(f)
        entry.update(info, updated=_now())

    def write_tensors(self, adapter: str, filename: str, tensors: dict[str, torch.Tensor]) -> None:
        """Stage a safetensors file of per-adapter data."""
        rel = f"data/{check_name(adapter, 'adapter')}/{filename}"
        p = self._stage(rel)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(p))
        self._entry(adapter)["files"][rel] = sha256_file(p)

    def write_json(self, adapter: str, filename: str, obj: Any) -> None:
        """Stage a JSON file of per-adapter data."""
        rel = f"data/{check_name(adapter, 'adapter')}/{filename}"
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

    def commit(self) -> None:
        plan = {"install": self.install, "remove": self.remove, "manifest": self.manifest}
        for rel in self.install:
            _fsync_tree(self.root / "files" / rel)
        atomic_write_json(self.root / "plan.json", plan)  # the commit point
        apply_plan(self.lib.path, self.root)


def apply_plan(lib: Path, txn: Path) -> None:
    """Apply a committed transaction; safe to run again after a crash part-way through."""
    plan = read_json(txn / "plan.json")
    for rel in plan["remove"]:
        target = lib / rel
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    # install the deepest paths first, so a staged directory never swallows a sibling file
    for rel in sorted(plan["install"], key=lambda r: -r.count("/")):
        staged, target = txn / "files" / rel, lib / rel
        if not staged.exists():
            continue  # installed before a crash
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and staged.is_dir():
            trash = txn / "old" / rel
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, trash)
        os.replace(staged, target)
        fsync_dir(target.parent)
    atomic_write_json(lib / MANIFEST, plan["manifest"])
    shutil.rmtree(txn, ignore_errors=True)


def recover(lib: Path) -> None:
    """Roll committed transactions forward and discard uncommitted ones (caller holds the lock)."""
    root = lib / ".txn"
    if not root.is_dir():
        return
    for txn in sorted(root.iterdir()):
        if (txn / "plan.json").is_file():
            try:
                read_json(txn / "plan.json")
            except ValueError:
                shutil.rmtree(txn, ignore_errors=True)  # plan itself never completed: not committed
                continue
            apply_plan(lib, txn)
        else:
            shutil.rmtree(txn, ignore_errors=True)


_HELD: dict[str, int] = {}  # locks this process holds (re-entrant: learn holds it around its transaction)


@contextlib.contextmanager
def _flock(path: Path, timeout: float) -> Iterator[None]:
    lock_path = Path(path) / ".lock"
    key = str(lock_path.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        fh = open(lock_path, "a+")
    except OSError as exc:
        raise LibraryError(f"cannot write to library {path}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + timeout
    waited = False
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LibraryError(f"library {path} is locked by another process; "
                                       f"gave up after {timeout:.0f} s") from None
                if not waited:
                    import sys
                    print(f"waiting for the lock on {path} (another process is writing) ...", file=sys.stderr)
                    waited = True
                time.sleep(0.2)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
    finally:
        try:
            fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            fh.close()


def _read_manifest(p: Path) -> dict[str, Any]:
    try:
        m = read_json(p / MANIFEST)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LibraryError(f"{p / MANIFEST} is corrupted (not valid JSON: {exc})") from None
    required = {"schema_version", "backbone", "adapters", "tasks", "history"}
    if not isinstance(m, dict) or not required <= set(m):
        raise LibraryError(f"{p / MANIFEST} is corrupted (missing keys {sorted(required - set(m or {}))})")
    if m["schema_version"] > SCHEMA_VERSION:
        raise LibraryError(f"{p} has schema version {m['schema_version']}; this adaptive-learner reads "
                           f"up to {SCHEMA_VERSION}: upgrade the package")
    return m


def _fsync_tree(p: Path) -> None:
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _deep_copy(obj: Any) -> Any:
    import json
    return json.loads(json.dumps(obj, default=str))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
