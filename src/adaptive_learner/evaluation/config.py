"""What one run is: the sequence, strategy, backbone and per-task budget (``RunConfig``).

Its own module so that the harness and the checkpoint both read it and neither imports the other.
"""

from __future__ import annotations

import json

from dataclasses import asdict, dataclass, field
from typing import Any

from ..adapters import LoraSettings
from ..backbone import DEFAULT_BACKBONE
from ..scoring import BATCH
from ..training import TrainConfig

RUNTIME_ONLY = ("device",)  # settings that do not change what a run is (see RunConfig.device)
LEARNER_ONLY = ("head", "head_mix", "head_views", "head_view_rule", "head_calibrate")  # training settings of Learner.learn's head, which no strategy of a run reads
# training settings added after runs were stored, with the value those runs had: a stored run without the key
# is the same run as one with this value
ADDED_LATER = {"monitor": "loss", "ema": 0.0, "lr_retries": 0, "choice_sample": 0, "lora_plus_ratio": 1.0}
# run settings added after runs were stored, with the value those runs had: left out of the identity at that value
RUN_ADDED_LATER = {"dtype": "float32"}
# LoRA settings added after runs were stored, with the value those runs had: left out of the identity at that value
LORA_ADDED_LATER = {"layers": None}


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A run config (``RunConfig.to_dict``, as JSON) without what does not change what the run computes:
    the runtime settings and the head's settings; runs and checkpoints are recognised by this."""
    out = _without_later({k: v for k, v in config.items() if k not in RUNTIME_ONLY}, RUN_ADDED_LATER)
    if isinstance(out.get("train"), dict):
        out["train"] = {**ADDED_LATER, **{k: v for k, v in out["train"].items() if k not in LEARNER_ONLY}}
    if isinstance(out.get("lora"), dict):
        out["lora"] = _without_later(out["lora"], LORA_ADDED_LATER)
    return out


def _without_later(settings: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the keys added later that still hold the value stored runs had."""
    return {k: v for k, v in settings.items() if not (k in later and v == later[k])}


@dataclass
class RunConfig:
    """One run: which sequence, strategy and backbone, and the per-task budget."""

    sequence: str = "seed"
    strategy: str = "per-task"
    backbone: str = DEFAULT_BACKBONE
    max_train: int | None = 256
    max_test: int | None = 100
    eval_batch_size: int = BATCH
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    options: dict[str, Any] = field(default_factory=dict)
    # where it runs (auto: a CUDA GPU when there is one). Not part of what the run *is*: a finished run is
    # reused, and an interrupted one resumed, whatever device made it; results.json records the device.
    device: str = "auto"
    # the backbone's precision (float32 or bfloat16): part of what the run is, since scores change with it
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        scalar = (int, float, str, bool, type(None))
        # options may hold objects (e.g. regulariser factories): only plain values are recorded
        d["options"] = {k: v for k, v in self.options.items()
                        if isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(x, scalar) for x in v))}
        return d

    def to_json(self) -> dict[str, Any]:
        """``to_dict`` as it reads back from JSON (tuples as lists, other values as strings)."""
        return json.loads(json.dumps(self.to_dict(), default=str))

    def identity(self) -> dict[str, Any]:
        """What recognises this run's checkpoints and results (``run_identity``)."""
        return run_identity(self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """From ``to_dict`` output (training settings of other versions are ignored)."""
        return cls(**{**d, "train": TrainConfig.from_dict(d["train"]), "lora": LoraSettings(**d["lora"])})
