"""The router's state inside an adapter library.

* ``data/<adapter>/profile-<task>.safetensors``: the task's example features and embeddings;
* ``data/<adapter>/profile-<task>.json``: its label names, label count and number of input fields;
* ``manifest.json`` key ``router``: the feature settings every profile was computed with, the
  sentence encoder, and the combiner (coefficients and thresholds) that decisions use.

Everything is written inside the learner's transaction, so a profile exists exactly when its task
does; removing an adapter removes its ``data/<adapter>/`` folder and with it the profiles. Keeping
the combiner in the manifest means a reopened library makes the same decisions even if the
package's default calibration changes.
"""

from __future__ import annotations

from typing import Any

from ..features import FeatureConfig, TaskFeatures
from .calibration import Combiner
from .evidence import TaskProfile

ROUTER_KEY = "router"


def task_files(kind: str, task: str) -> tuple[str, str]:
    """File names of a task's ``kind`` data (profile, head) inside its adapter's data folder
    (within the 64-character limit)."""
    import hashlib

    stem = task if len(task) <= 40 else f"{task[:28]}-{hashlib.sha1(task.encode()).hexdigest()[:11]}"
    return f"{kind}-{stem}.safetensors", f"{kind}-{stem}.json"


def profile_files(task: str) -> tuple[str, str]:
    """File names of a task's profile inside its adapter's data folder."""
    return task_files("profile", task)


def save_profile(tx: Any, adapter: str, feats: TaskFeatures) -> None:
    """Stage a task's profile under ``adapter``, dropping an older one under another adapter."""
    old = tx.manifest["tasks"].get(feats.task, {}).get("adapter")
    if old and old != adapter and old in tx.manifest["adapters"]:
        drop_profile(tx, old, feats.task)
    tensors_name, meta_name = profile_files(feats.task)
    tx.write_tensors(adapter, tensors_name, feats.tensors())
    tx.write_json(adapter, meta_name, feats.meta())


def drop_profile(tx: Any, adapter: str, task: str, kind: str = "profile") -> None:
    """Stage the removal of a task's ``kind`` files (profile, head) from ``adapter``."""
    files = tx.manifest["adapters"][adapter].get("files", {})
    for name in task_files(kind, task):
        rel = f"data/{adapter}/{name}"
        if rel in files:
            del files[rel]
            tx.remove.append(rel)


def load_profiles(library: Any) -> list[TaskProfile]:
    """Every stored task's profile (tasks learned without one are left out)."""
    out = []
    for task, info in sorted(library.tasks.items()):
        adapter = info["adapter"]
        tensors_name, meta_name = profile_files(task)
        meta = library.read_json(adapter, meta_name)
        tensors = library.read_tensors(adapter, tensors_name)
        if meta is None or tensors is None:
            continue
        out.append(TaskProfile(task, adapter, TaskFeatures.from_stored(meta, tensors), info.get("adapter_learned")))
    return out


def router_state(library: Any) -> dict[str, Any] | None:
    """The stored router settings, or None for a library that has none yet."""
    return library.manifest.get(ROUTER_KEY)


def write_router_state(tx: Any, features: FeatureConfig, encoder: str, combiner: Combiner) -> None:
    """Record the settings and combiner once (the first profile fixes them for the library's life)."""
    if ROUTER_KEY not in tx.manifest:
        tx.manifest[ROUTER_KEY] = {"features": features.to_dict(), "encoder": encoder,
                                   "combiner": combiner.to_dict()}
