"""LoRA adapters on the frozen backbone, through peft: create, activate, save, load, delete.

One ``peft.PeftModel`` holds every adapter in memory; ``BASE`` selects the untouched backbone.
Adapters are saved in exactly peft's ``save_pretrained`` layout, so ``PeftModel.from_pretrained``,
vLLM (``--lora-modules``) and LoRAX load them as they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer

from .backbone import Backbone
from .errors import UserError

BASE = "__base__"


@dataclass
class LoraSettings:
    """LoRA hyperparameters (peft ``LoraConfig``)."""

    r: int = field(default=8, metadata={"help": "rank of the update"})
    alpha: int = field(default=16, metadata={"help": "scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "module names; None = peft's default for the architecture, else all-linear"})
    layers: int | None = field(default=None, metadata={
        "help": "adapt only the top N decoder layers (peft's layers_to_transform); None: every layer. Training "
                "then stops its backward pass at the lowest adapted layer"})

    def to_peft(self, model: Any) -> LoraConfig:
        targets: Any = self.target_modules
        if targets is None:
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP
            targets = MAP.get(model.config.model_type, "all-linear")
        top: dict[str, Any] = {}
        if self.layers is not None:
            n = model.config.num_hidden_layers
            if not 1 <= self.layers <= n:
                raise UserError(f"LoRA layers must be between 1 and the backbone's {n} layers, not {self.layers}")
            if isinstance(targets, str):
                raise UserError(f"LoRA on the top layers only needs the target modules by name, not {targets!r}")
            top = {"layers_to_transform": list(range(n - self.layers, n))}
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM", **top)


class AdapterHost:
    """The backbone with any number of named LoRA adapters, one of them active."""

    def __init__(self, backbone: Backbone, lora: LoraSettings | None = None) -> None:
        self.backbone = backbone
        self.lora = lora or LoraSettings()
        self.peft: PeftModel | None = None

    @property
    def names(self) -> list[str]:
        return [] if self.peft is None else [n for n in self.peft.peft_config]

    @property
    def model(self) -> Any:
        """The model to call: the peft wrapper once an adapter exists, else the bare backbone."""
        return self.peft if self.peft is not None else self.backbone.model

    def create(self, name: str, seed: int = 0, init_from: str | None = None) -> None:
        """Add an adapter and make it active and trainable: a fresh one (seeded initialisation), or,
        with ``init_from``, a copy of that adapter's weights (warm start; the source is left as it was)."""
        if init_from is not None and init_from not in self.names:
            raise KeyError(f"cannot start {name!r} from {init_from!r}: no such adapter in memory")
        cfg = self.lora.to_peft(self.backbone.model)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if self.peft is None:
                self.peft = get_peft_model(self.backbone.model, cfg, adapter_name=name)
            else:
                self.peft.add_adapter(name, cfg)
        if init_from is not None:
            self.load_state(name, {n.replace(f".{init_from}.", f".{name}."): p
                                   for n, p in self.trainable(init_from).items()})
        self.activate(name)

    def activate(self, name: str) -> None:
        """Make ``name`` the active adapter; only its LoRA weights require grad."""
        assert self.peft is not None, "no adapter yet"
        self.peft.set_adapter(name)
        for pname, p in self.peft.named_parameters():
            p.requires_grad_(".lora_" in pname and f".{name}." in pname)

    def trainable(self, name: str) -> dict[str, torch.nn.Parameter]:
        """The LoRA parameters of one adapter, by peft's parameter name."""
        assert self.peft is not None
        return {n: p for n, p in self.peft.named_parameters() if ".lora_" in n and f".{name}." in n}

    def state(self, name: str) -> dict[str, torch.Tensor]:
        """A detached copy of one adapter's weights."""
        return {n: p.detach().clone() for n, p in self.trainable(name).items()}

    def load_state(self, name: str, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable(name)
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    @contextlib.contextmanager
    def base(self) -> Iterator[Any]:
        """The untouched backbone, for the zero-shot row and base-model statistics.

        Every LoRA layer's own switch is turned off and back as it was. peft's ``disable_adapter()``
        does the same and more on every call (a status walk over the whole model, and re-setting which
        weights require grad on the way out); routing calls this per batch (BENCHMARKS.md, "Routing
        without peft's switch"). Any other kind of peft layer takes peft's own path.
        """
        if self.peft is None:
            yield self.backbone.model
            return
        layers = [m for m in self.peft.modules() if isinstance(m, BaseTunerLayer)]
        if not all(isinstance(m, LoraLayer) and not m.merged for m in layers):
            with self.peft.disable_adapter():
                yield self.peft
            return
        was = [m._disable_adapters for m in layers]
        for m in layers:
            m._disable_adapters = True
        try:
            yield self.peft
        finally:
            for m, w in zip(layers, was):
                m._disable_adapters = w

    @contextlib.contextmanager
    def using(self, name: str | None) -> Iterator[Any]:
        """The model with adapter ``name`` active (``None``/``BASE``: the backbone).

        Already active: nothing is switched (peft's ``set_adapter`` walks every module, about 10 ms a call on
        a GPU, and scoring asks per batch; BENCHMARKS.md, session 21); which weights require grad is left
        as it is, which only training, not this context, relies on."""
        if name in (None, BASE):
            with self.base() as m:
                yield m
        elif self.peft is not None and self.peft.active_adapter == name:
            yield self.peft
        else:
            prev = self.peft.active_adapter if self.peft is not None else None
            self.activate(name)
            try:
                yield self.peft
            finally:
                if prev and prev in self.names:
                    self.peft.set_adapter(prev)

    def save(self, name: str, directory: Path) -> None:
        """Write one adapter to ``directory`` in peft's layout (adapter_config.json + adapter_model.safetensors)."""
        assert self.peft is not None
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=directory.parent))
        try:
            self.peft.save_pretrained(tmp, selected_adapters=[name], safe_serialization=True)
            # peft writes a non-"default" adapter into a subfolder named after it
            src = tmp / name if (tmp / name / "adapter_config.json").exists() else tmp
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(src, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self, name: str, directory: Path) -> None:
        """Load an adapter saved in peft's layout under ``name`` (replacing one of that name)."""
        if name in self.names:
            self.delete(name)
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.backbone.model, str(directory), adapter_name=name,
                                                  is_trainable=True)
        else:
            self.peft.load_adapter(str(directory), adapter_name=name, is_trainable=True)
        self.activate(name)

    def delete(self, name: str) -> None:
        """Remove an adapter from memory."""
        if self.peft is None or name not in self.names:
            return
        if len(self.names) == 1:
            # peft cannot delete the last adapter: unwrap the backbone instead
            self.backbone.model = self.peft.unload()
            self.peft = None
            return
        other = next(n for n in self.names if n != name)
        self.peft.set_adapter(other)
        self.peft.delete_adapter(name)

    def count_trainable(self, name: str) -> int:
        return sum(p.numel() for p in self.trainable(name).values())

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.lora)
