"""Checkpoints inside one training call, so an interrupted run continues from its last saved step.

A long task (thousands of examples, a slow CPU) can take hours; the run's checkpoint after each task
(``evaluation/checkpoint.py``) would then lose all of it. ``StepCheckpoint`` writes, every ``every_s``
seconds of training, what the training loop needs to go on exactly where it stopped: the adapter's
weights, AdamW's moments, the schedule's position, the batch-order and dropout RNG states, the
held-out curve and the best weights early stopping kept, and the counters of the report. A resumed
call gives the same weights and losses as an uninterrupted one (``tests/test_step_resume.py``).

The state is ``DIR/partial.safetensors`` (tensors) and then ``DIR/partial.json`` (the rest, and the
sha256 of the tensors), both written atomically, the JSON last. It is recognised by the run's
identity, the task it belongs to, the call within that task (a strategy may train more than once per
task), the adapter, the training config and a hash of the batch plan; anything else is ignored and
training starts from its first step. Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_file

STATE = "partial.json"
TENSORS = "partial.safetensors"
FORMAT = 1


def plan_hash(plan: list[list[int]], n_items: int) -> str:
    """Identifies the batch plan (and so the data order) of one training call."""
    return hashlib.sha256(json.dumps([n_items, plan]).encode()).hexdigest()[:16]


class StepCheckpoint:
    """Where and how often one task's training calls save their progress.

    ``identity``: what makes two runs the same (``run_identity`` of the run's config); ``task``: the
    index of the task being learned. The harness makes one per task; each ``train_adapter`` call takes
    the next call number from it (``begin_call``).
    """

    def __init__(self, directory: Path, identity: Any, task: int, every_s: float = 120.0,
                 config: dict[str, Any] | None = None) -> None:
        self.dir, self.identity, self.task, self.every_s = Path(directory), identity, int(task), float(every_s)
        self.config = config  # the run's whole config, kept beside the state (``alearn run --resume``)
        self.calls = 0
        self._last = time.monotonic()

    def begin_call(self) -> int:
        self.calls += 1
        self._last = time.monotonic()
        return self.calls

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def _key(self, call: int, adapter: str, cfg: dict[str, Any], plan: str) -> dict[str, Any]:
        return {"format": FORMAT, "identity": self.identity, "task": self.task, "call": call, "adapter": adapter,
                "train": cfg, "plan": plan}

    def save(self, key: tuple[int, str, dict[str, Any], str], state: dict[str, Any],
             tensors: dict[str, torch.Tensor]) -> None:
        """Write one call's state: ``tensors`` first, then the JSON naming them (with ``state``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / TENSORS
        atomic_write_bytes(path, save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
        doc = {**self._key(*key), "config": self.config, "state": state, "sha256": sha256_file(path)}
        atomic_write_json(self.dir / STATE, json.loads(json.dumps(doc)))
        self._last = time.monotonic()

    def load(self, key: tuple[int, str, dict[str, Any], str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The saved (state, tensors) of exactly this call, or None."""
        doc = read_state(self.dir)
        if doc is None:
            return None
        want = json.loads(json.dumps(self._key(*key)))
        if any(doc.get(k) != v for k, v in want.items()):
            return None
        path = self.dir / TENSORS
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != doc.get("sha256"):
            return None
        return doc["state"], load_tensors(data)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The JSON of a saved step state in ``directory`` (None: none, or unreadable)."""
    path = Path(directory) / STATE
    if not path.is_file():
        return None
    try:
        doc = read_json(path)
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def pending(directory: Path, identity: Any, task: int) -> bool:
    """Whether ``directory`` holds a step state of this run for task ``task``."""
    doc = read_state(directory)
    return doc is not None and doc.get("identity") == json.loads(json.dumps(identity)) and doc.get("task") == task


def clear(directory: Path) -> None:
    """Remove a step state (the JSON first, so a half-removed one is never read)."""
    (Path(directory) / STATE).unlink(missing_ok=True)
    (Path(directory) / TENSORS).unlink(missing_ok=True)


def capture(params: dict[str, torch.Tensor], best: dict[str, torch.Tensor] | None, opt: torch.optim.Optimizer,
            sched: Any, rng: np.random.RandomState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What a training loop's tensors hold (weights, best weights kept, AdamW's moments, the RNG states)
    and the optimizer's, schedule's and batch-order RNG's other state as JSON."""
    tensors: dict[str, torch.Tensor] = {f"param/{n}": p for n, p in params.items()}
    if best is not None:
        tensors.update({f"best/{n}": t for n, t in best.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    kind, keys, pos, has_gauss, gauss = rng.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt/{i}/{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    doc = {"optimizer": {"param_groups": sd["param_groups"], "state_keys": {str(i): sorted(st) for i, st in
                                                                          sd["state"].items()}},
           "schedule": sched.state_dict(), "rng": [kind, int(pos), int(has_gauss), float(gauss)]}
    return doc, tensors


def restore(doc: dict[str, Any], tensors: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
            opt: torch.optim.Optimizer, sched: Any, rng: np.random.RandomState) -> dict[str, torch.Tensor] | None:
    """Put ``capture``'s state back; returns the best weights kept (None: none yet)."""
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"param/{n}"])
    o = doc["optimizer"]
    state = {int(i): {k: tensors[f"opt/{i}/{k}"] for k in keys} for i, keys in o["state_keys"].items()}
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in o["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    sched.load_state_dict(doc["schedule"])
    kind, pos, has_gauss, gauss = doc["rng"]
    rng.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(tensors["rng.torch"])
    return {n: tensors[f"best/{n}"].clone() for n in params} if doc.get("best") is not None else None
