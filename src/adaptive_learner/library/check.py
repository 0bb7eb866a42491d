"""Integrity checks of an adapter library: every file the manifest lists, and every path a plan names.

The manifest records the sha256 of each file it references; a file that is missing, truncated or
changed is reported by name. A manifest or plan is data read from disk, so its paths are checked
before use: only ``adapters/<name>`` and ``data/<name>/<file>`` with valid names, never ``..``,
an absolute path or a separator inside a name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import LibraryError, UserError
from ..fileio import sha256_file
from ..tasks.spec import TaskSpec, check_name

TOP_DIRS = ("adapters", "data")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")  # room for "profile-<64-char task>.safetensors"


def check_file_name(name: str) -> str:
    """Validate a per-adapter data file name: 1-128 letters, digits, '_', '-', '.', no '..', no path parts."""
    if not isinstance(name, str) or not FILE_RE.match(name) or ".." in name:
        raise UserError(f"invalid file name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
                        f"starting with a letter or digit")
    return name


def valid_rel(rel: Any, adapter: str | None = None) -> bool:
    """Whether ``rel`` is ``adapters/<name>[/<file>]`` or ``data/<name>[/<file>]`` (of ``adapter`` if given)."""
    if not isinstance(rel, str) or "\\" in rel:
        return False
    parts = rel.split("/")
    if len(parts) not in (2, 3) or parts[0] not in TOP_DIRS or (adapter is not None and parts[1] != adapter):
        return False
    try:
        check_name(parts[1], "adapter")
        if len(parts) == 3:
            check_file_name(parts[2])
    except UserError:
        return False
    return True


def plan_paths(plan: Any) -> tuple[list[str], list[str]]:
    """The removals and installs of a committed plan, refusing any path outside adapters/ and data/."""
    if not isinstance(plan, dict) or not all(isinstance(plan.get(k), list) for k in ("install", "remove")):
        raise LibraryError("refusing a pending library change: its plan.json is malformed")
    for rel in [*plan["remove"], *plan["install"]]:
        if not valid_rel(rel):
            raise LibraryError(f"refusing a pending library change: path {rel!r} is outside adapters/ and data/")
    return list(plan["remove"]), list(plan["install"])


def check_manifest(manifest: dict[str, Any]) -> list[str]:
    """Problems with the manifest's own entries (names, paths, types, task -> adapter links); no file is read."""
    problems: list[str] = []
    adapters = manifest.get("adapters")
    if not isinstance(adapters, dict):
        return ["`adapters` is not a mapping"]
    for name, info in adapters.items():
        if not valid_rel(f"adapters/{name}") or not isinstance(info, dict) or \
                not isinstance(info.get("files"), dict) or not isinstance(info.get("tasks", []), list):
            problems.append(f"adapter entry {name!r} is malformed")
            continue
        for rel, digest in info["files"].items():
            if not valid_rel(rel, adapter=name) or not isinstance(digest, str):
                problems.append(f"adapter {name!r} lists a path outside its folders: {rel!r}")
    return problems + _check_tasks(manifest, adapters)


def check_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the manifest and the files it lists (missing, truncated or changed)."""
    problems = [f"manifest: {p}" for p in check_manifest(manifest)]
    for name, info in (manifest.get("adapters") or {}).items():
        if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
            continue
        for rel, digest in info["files"].items():
            if not valid_rel(rel, adapter=name):
                continue
            if not (root / rel).is_file():
                problems.append(f"{rel} is missing")
            elif sha256_file(root / rel) != digest:
                problems.append(f"{rel} does not match its sha256 in the manifest (changed or truncated)")
    return problems


def _check_tasks(manifest: dict[str, Any], adapters: dict[str, Any]) -> list[str]:
    tasks = manifest.get("tasks")
    if not isinstance(tasks, dict):
        return ["`tasks` is not a mapping"]
    problems = []
    for task, entry in tasks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("adapter"), str) or entry["adapter"] not in adapters:
            problems.append(f"task {task!r} points to no adapter of the library")
            continue
        try:
            spec = TaskSpec.from_dict(entry.get("spec") if isinstance(entry.get("spec"), dict) else {})
            if spec.name != task:
                raise UserError(f"its spec is named {spec.name!r}")
        except (UserError, TypeError, AttributeError) as exc:
            problems.append(f"task {task!r} has a malformed spec ({exc})")
    if not isinstance(manifest.get("history"), list):
        problems.append("`history` is not a list")
    return problems


def unlisted_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Files under adapters/ or data/ that the manifest does not list (planted or left over)."""
    listed = {rel for info in (manifest.get("adapters") or {}).values() if isinstance(info, dict)
              for rel in (info.get("files") or {})}
    found = []
    for top in TOP_DIRS:
        base = root / top
        if base.is_dir():
            for f in sorted(base.rglob("*")):
                rel = f.relative_to(root).as_posix()
                if not f.is_dir() and rel not in listed:
                    found.append(f"unexpected file {rel} (not in the manifest)")
    return found
