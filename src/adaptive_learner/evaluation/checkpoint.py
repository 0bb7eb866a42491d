"""Checkpoints of a run after each task, so ``alearn run --resume DIR`` continues an interrupted sequence.

After task i the run writes ``DIR/checkpoint-<i>.safetensors`` (every adapter's weights, the
strategy's tensors and the RNG states) and then ``DIR/checkpoint.json`` (config, the partial matrix,
the zero-shot row, timings, the strategy's other state, and the sha256 of that safetensors file).
Both writes are atomic and the JSON is written last, so it always names a complete checkpoint.

A strategy's state is its attributes (``vars``, the context aside): numbers, strings, lists and
dicts of them, tensors, numpy arrays and dataclasses defined in this package. A strategy holding
anything else provides ``state_dict()`` / ``load_state_dict(state)`` in the same terms. Nothing here
unpickles: tensors come from safetensors, the rest from JSON, and a dataclass is rebuilt only from
a class of this package that is already imported.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..errors import UserError
from ..fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from ..tasks.files import user_path
from ..training import resume as step_state
from .config import RunConfig, run_identity

STATE_FILE = "checkpoint.json"
FORMAT = 1


class NotCheckpointable(UserError):
    """A strategy keeps state this module cannot write (it should define ``state_dict``)."""


def encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON, its tensors moved into ``tensors`` under keys derived from ``key``."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        key = key if key not in tensors else f"{key}#{len(tensors)}"
        if isinstance(obj, np.ndarray):
            tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
            return {"__ndarray__": key}
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, (list, tuple)):
        items = [encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise NotCheckpointable(f"{key}: a dict with non-string keys")
        return {"__dict__": {k: encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}}
    if dataclasses.is_dataclass(obj) and type(obj).__module__.startswith("adaptive_learner."):
        fields = {f.name: encode(getattr(obj, f.name), f"{key}.{f.name}", tensors)
                  for f in dataclasses.fields(obj) if f.init}
        return {"__dataclass__": f"{type(obj).__module__}:{type(obj).__qualname__}", "fields": fields}
    raise NotCheckpointable(f"{key}: cannot save a {type(obj).__name__}")


def decode(doc: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``encode``."""
    if isinstance(doc, list):
        return [decode(v, tensors) for v in doc]
    if not isinstance(doc, dict):
        return doc
    if "__tensor__" in doc:
        return tensors[doc["__tensor__"]]
    if "__ndarray__" in doc:
        return tensors[doc["__ndarray__"]].numpy()
    if "__tuple__" in doc:
        return tuple(decode(v, tensors) for v in doc["__tuple__"])
    if "__dict__" in doc:
        return {k: decode(v, tensors) for k, v in doc["__dict__"].items()}
    if "__dataclass__" in doc:
        return _dataclass(doc["__dataclass__"])(**{k: decode(v, tensors) for k, v in doc["fields"].items()})
    raise ValueError(f"unknown checkpoint entry {sorted(doc)}")


def _dataclass(ref: str) -> type:
    module, _, qualname = ref.partition(":")
    cls: Any = sys.modules.get(module) if module.startswith("adaptive_learner.") else None
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise UserError(f"checkpoint names an unknown class {ref!r}")
    return cls


def strategy_state(strategy: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The strategy's state as JSON (tensors into ``tensors``)."""
    if hasattr(strategy, "state_dict"):
        return encode(strategy.state_dict(), "strategy", tensors)
    return encode({k: v for k, v in vars(strategy).items() if k != "ctx"}, "strategy", tensors)


def restore_strategy(strategy: Any, doc: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Put a saved state back into a freshly made strategy of the same kind."""
    state = decode(doc, tensors)
    if hasattr(strategy, "load_state_dict"):
        strategy.load_state_dict(state)
    else:
        vars(strategy).update(state)


def _rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    tensors["rng.torch"] = torch.get_rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_py = random.getstate()
    return {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_py]}


def _set_rng_state(doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    kind, pos, has_gauss, gauss = doc["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = doc["python"]
    random.setstate((version, tuple(internal), gauss_py))


def save_checkpoint(out: Path, state: dict[str, Any], host: Any, strategy: Any) -> None:
    """Write the checkpoint after task ``state['done']``: tensors first, then the JSON that names them."""
    tensors: dict[str, torch.Tensor] = {}
    adapters = host.names
    for name in adapters:
        for pname, t in host.state(name).items():
            tensors[f"adapter/{name}/{pname}"] = t.cpu().contiguous()
    try:
        kept = strategy_state(strategy, tensors)
    except NotCheckpointable as exc:  # the run goes on; only --resume is lost, and says why
        atomic_write_json(out / STATE_FILE, {"format": FORMAT, "resumable": False, "done": state["done"],
                                             "reason": str(exc)})
        return
    doc = {**state, "format": FORMAT, "adapters": adapters,
           "active": getattr(host.peft, "active_adapter", None) if host.peft is not None else None,
           "strategy": kept, "rng": _rng_state(tensors)}
    weights = out / f"checkpoint-{state['done']}.safetensors"
    atomic_write_bytes(weights, save_tensors(tensors))
    doc["weights"] = {"file": weights.name, "sha256": sha256_file(weights)}
    atomic_write_json(out / STATE_FILE, json.loads(json.dumps(doc, default=_json_default)))
    for old in out.glob("checkpoint-*.safetensors"):  # only after the JSON no longer names them
        if old.name != weights.name:
            old.unlink(missing_ok=True)


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and np.isnan(x):
        return None
    raise TypeError(f"not JSON: {type(x).__name__}")


def read_checkpoint(out: Path) -> dict[str, Any]:
    """The checkpoint JSON of an interrupted run in ``out``, with a clear error when there is none."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        if (Path(out) / "results.json").is_file():
            raise UserError(f"nothing to resume in {out}: that run finished (see its results.json)")
        raise UserError(f"nothing to resume in {out}: no {STATE_FILE} (the run finished no task, "
                        f"or {out} is not a run directory)")
    try:
        doc = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is corrupted: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint this version can read")
    if doc.get("resumable") is False:
        raise UserError(f"the run in {out} cannot be resumed: its strategy keeps state that cannot be saved "
                        f"({doc.get('reason')}); give the strategy state_dict() and load_state_dict()")
    weights = Path(out) / doc["weights"]["file"]
    if not weights.is_file() or sha256_file(weights) != doc["weights"]["sha256"]:
        raise UserError(f"{weights} is missing or does not match its sha256 in {STATE_FILE}")
    return doc


def restore(out: Path, doc: dict[str, Any], host: Any, strategy: Any) -> None:
    """Recreate the adapters and the strategy's state of a checkpoint."""
    tensors = load_tensors((Path(out) / doc["weights"]["file"]).read_bytes())
    for name in doc["adapters"]:
        host.create(name)
        prefix = f"adapter/{name}/"
        host.load_state(name, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if isinstance(doc.get("active"), str) and doc["active"] in host.names:
        host.activate(doc["active"])
    restore_strategy(strategy, doc["strategy"], tensors)
    _set_rng_state(doc["rng"], tensors)


def _floats(a: np.ndarray) -> list[Any]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.atleast_2d(a)]


def save(out: Path, cfg: Any, tasks: list[str], done: int, matrix: np.ndarray, zero_shot: np.ndarray,
         timings: tuple[float, float, float, float], host: Any, strategy: Any,
         learned: list[list[int] | None] | None = None) -> None:
    """The harness's checkpoint after ``done`` tasks (``timings``: training, evaluation and wall seconds
    so far, over every process that worked on the run, and the main process's CPU seconds; ``learned``: each
    stage's task's per-example outcomes right after that stage)."""
    seq = user_path(cfg.sequence)
    state = {"config": cfg.to_dict(), "sequence_file": str(seq.resolve()) if seq.is_file() else None,
             "tasks": tasks, "done": done, "zero_shot": _floats(zero_shot)[0], "matrix": _floats(matrix),
             "timings": {"train": timings[0], "eval": timings[1], "total": timings[2], "cpu": timings[3]},
             "learned_correct": list(learned or [])}
    save_checkpoint(Path(out), state, host, strategy)


def _differences(doc: dict[str, Any], cfg: Any) -> list[str]:
    now, then = cfg.identity(), run_identity(doc["config"])
    return sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))


def exists(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint after some task (readable or not)."""
    return (Path(out) / STATE_FILE).is_file()


def resumable(out: Path, cfg: Any, tasks: list[str]) -> bool:
    """Whether ``out`` holds a readable checkpoint of a run with exactly these settings and tasks, or the
    saved progress of its first task (``training/resume.py``)."""
    if not exists(out):
        return step_state.pending(out, cfg.identity(), 0)
    try:
        doc = read_checkpoint(out)
    except UserError:
        return False
    return doc["tasks"] == tasks and not _differences(doc, cfg)


def resume(out: Path, cfg: Any, tasks: list[str], host: Any, strategy: Any, matrix: np.ndarray,
           learned: list[Any] | None = None) -> tuple[np.ndarray, int, float, float, float, float]:
    """Restore a checkpoint into ``host``, ``strategy``, ``matrix`` and ``learned`` (each finished stage's
    outcomes right after it; None where a checkpoint written before they were kept has none); (zero-shot row,
    tasks done, training, evaluation, wall and CPU seconds so far)."""
    doc = read_checkpoint(out)
    if doc["tasks"] != tasks:
        raise UserError(f"the checkpoint in {out} is for tasks {doc['tasks']}, not {tasks}")
    diffs = _differences(doc, cfg)
    if diffs:
        raise UserError(f"the checkpoint in {out} was made with other settings ({', '.join(diffs)}); "
                        f"resume it with `alearn run --resume {out}` alone")
    restore(out, doc, host, strategy)
    done = int(doc["done"])
    matrix[:done] = np.array(doc["matrix"], dtype=float)[:done]
    if learned is not None:
        kept = list(doc.get("learned_correct") or [])[:done]
        learned[:len(kept)] = [None if x is None else [int(v) for v in x] for x in kept]
    t = doc["timings"]
    # a checkpoint written before the wall (or CPU) time was kept: at least the time spent training and evaluating
    # (CPU: none known)
    return (np.array(doc["zero_shot"], dtype=float), done, t["train"], t["eval"], t.get("total", t["train"] + t["eval"]),
            t.get("cpu", 0.0))


def remove(out: Path) -> None:
    """Delete the checkpoint of a finished run."""
    (Path(out) / STATE_FILE).unlink(missing_ok=True)
    for f in Path(out).glob("checkpoint-*.safetensors"):
        f.unlink(missing_ok=True)


def config_from(out: Path) -> RunConfig:
    """The ``RunConfig`` an interrupted run in ``out`` was started with (a run stopped during its first
    task: the config saved with that task's progress)."""
    first = step_state.read_state(out)
    if not exists(out) and first is not None and first.get("task") == 0 and isinstance(first.get("config"), dict):
        return RunConfig.from_dict(first["config"])
    doc = read_checkpoint(out)
    d = dict(doc["config"])
    if doc.get("sequence_file") and not user_path(d["sequence"]).is_file():
        d["sequence"] = doc["sequence_file"]  # resumed from another directory: the file it named
    return RunConfig.from_dict(d)
