"""How a library change reaches the disk: the writer lock, applying a committed plan, and recovery.

A transaction stages its files and the new manifest under ``LIB/.txn/<id>/``, then writes
``plan.json``: that write is the commit point. Applying a plan only renames (no new bytes are
written after the commit), so a full disk cannot stop it half-way; a crash part-way is finished
by ``recover`` the next time the library is opened or written. Staging without a plan was never
committed and is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from .. import testhooks
from ..errors import LibraryError
from ..fileio import atomic_write_json, fsync_dir, read_json

MANIFEST = "manifest.json"


def apply_plan(lib: Path, txn: Path) -> None:
    """Apply a committed transaction; safe to run again after a crash part-way through."""
    from .check import plan_paths

    plan = read_json(txn / "plan.json")
    removals, installs = plan_paths(plan)  # refuses a plan that points outside adapters/ and data/
    for rel in removals:
        target = lib / rel
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        testhooks.write_point(f"removed {rel}")
    # install the deepest paths first, so a staged directory never swallows a sibling file
    for rel in sorted(installs, key=lambda r: -r.count("/")):
        staged, target = txn / "files" / rel, lib / rel
        if not staged.exists():
            continue  # installed before a crash
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and staged.is_dir():
            trash = txn / "old" / rel
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, trash)
            testhooks.write_point(f"moved aside {rel}")
        os.replace(staged, target)
        fsync_dir(target.parent)
        testhooks.write_point(f"installed {rel}")
    if plan.get("manifest") == "staged":
        if (txn / MANIFEST).exists():  # else: it was moved in before a crash
            os.replace(txn / MANIFEST, lib / MANIFEST)
            fsync_dir(lib)
    else:  # a plan written by an older version carries the manifest itself
        atomic_write_json(lib / MANIFEST, plan["manifest"])
    testhooks.write_point("manifest replaced")
    drop_txn(txn)


def recover(lib: Path) -> None:
    """Roll committed transactions forward and discard uncommitted ones (caller holds the lock)."""
    for tmp in lib.glob(f".{MANIFEST}.*.tmp"):  # a manifest write cut short (its rename never happened)
        tmp.unlink(missing_ok=True)
    root = lib / ".txn"
    if not root.is_dir():
        return
    for txn in sorted(root.iterdir()):
        if (txn / "plan.json").is_file():
            try:
                read_json(txn / "plan.json")
            except (ValueError, UnicodeDecodeError):
                drop_txn(txn)  # plan itself never completed: not committed
                continue
            apply_plan(lib, txn)
        elif txn.is_dir():
            drop_txn(txn)
        else:
            txn.unlink(missing_ok=True)


def drop_txn(txn: Path) -> None:
    """Delete a transaction's folder, and ``.txn`` itself once empty (a library at rest has none)."""
    shutil.rmtree(txn, ignore_errors=True)
    try:
        txn.parent.rmdir()
    except OSError:
        pass  # another transaction's folder is still there, or it is gone already


def committed(lib: Path) -> bool:
    """Whether a committed plan waits in ``LIB/.txn`` (a writer is applying it, or crashed while doing so)."""
    root = lib / ".txn"
    return root.is_dir() and any((t / "plan.json").is_file() for t in root.iterdir())


def recover_on_open(p: Path) -> None:
    """Finish a committed change (waiting for a live writer to end it) and drop abandoned staging.

    Uncommitted staging may belong to a writer still at work, so it is removed only when the lock
    is free; a reader never waits on a writer that is merely training.
    """
    root = p / ".txn"
    if not root.is_dir() or not any(root.iterdir()) or not os.access(p, os.W_OK):
        return
    pending = committed(p)
    try:
        with flock(p, timeout=60.0 if pending else 0.0, quiet=not pending):
            recover(p)
    except LibraryError:
        if pending:
            raise


def write_error(path: Path, exc: OSError, committed: bool) -> LibraryError:
    """The one-line error for a failed write (disk full, read-only), saying what state the library is in."""
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if committed:
        return LibraryError(f"cannot finish writing library {path}: {what}{where}; the change was committed "
                            f"and will be completed the next time the library is opened with space and write access")
    return LibraryError(f"cannot write to library {path}: {what}{where}; nothing was changed")


LOCK_TIMEOUT_ENV = "ADAPTIVE_LEARNER_LOCK_TIMEOUT"


def lock_timeout(timeout: float | None = None) -> float:
    """Seconds a writer waits for another one: ``timeout``, else ``$ADAPTIVE_LEARNER_LOCK_TIMEOUT``, else 600."""
    if timeout is not None:
        return timeout
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(raw) if raw.strip() else 600.0
    except ValueError:
        raise LibraryError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


_HELD: dict[str, int] = {}  # locks this process holds (re-entrant: learn holds it around its transaction)


@contextlib.contextmanager
def flock(path: Path, timeout: float, quiet: bool = False) -> Iterator[None]:
    """Hold the library's advisory writer lock (re-entrant within a process); wait up to ``timeout`` s."""
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
                    raise LibraryError(f"library {path} is locked by another process ({_holder(lock_path)}); "
                                       f"gave up after {timeout:g} s") from None
                if not waited and not quiet:
                    print(f"waiting for the lock on {path} ({_holder(lock_path)} is writing) ...", file=sys.stderr)
                    waited = True
                time.sleep(0.2)
        _note_holder(fh)
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


def _note_holder(fh: object) -> None:
    """Write who holds the lock into the lock file, for the message a waiting process prints."""
    try:
        fh.seek(0)  # type: ignore[attr-defined]
        fh.truncate()  # type: ignore[attr-defined]
        fh.write(f"pid {os.getpid()}: {' '.join(os.path.basename(a) for a in sys.argv[:2])}\n")  # type: ignore
        fh.flush()  # type: ignore[attr-defined]
    except OSError:
        pass  # the note is a courtesy; the lock itself is what matters


def _holder(lock_path: Path) -> str:
    try:
        return (lock_path.read_text().strip().splitlines() or ["another process"])[0][:120]
    except OSError:
        return "another process"


def fsync_tree(p: Path) -> None:
    """Flush a staged file, or every file under a staged directory, to disk."""
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())

