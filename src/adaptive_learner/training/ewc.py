"""Elastic weight consolidation scoped to the one LoRA adapter being trained (online EWC).

The Fisher information is diagonal and covers that adapter's trainable LoRA parameters only: the
frozen backbone and every other adapter are outside it. It is estimated after each task, one
example at a time (squared gradients of the example's label log-likelihood), either from the true
labels (``labels="true"``: the task's training examples, the same examples the replay buffer keeps)
or from labels sampled from the model's own distribution over the label verbalizers
(``labels="sampled"``, the true Fisher of the classifier). The examples are a seeded sample of the
task just learned, or of any other source passed as ``examples`` (``forgetting.py`` passes the
replay buffer, i.e. true labels of every task the adapter serves). Online accumulation (Schwarz et al.
2018): ``F <- gamma * F + F_task``; the anchor is the adapter's weights when training on the next
task begins, i.e. the weights saved in the library. While training a new task the loss gains

    0.5 * lambda * gain * sum_i F_i (theta_i - anchor_i) ** 2

where ``gain`` scales the strength for that one task (e.g. by the router's confidence that the new
task is related to the adapter's old ones). With ``normalise`` each task's Fisher is divided by
its mean before accumulation, so ``lambda`` means the same thing across models and adapter sizes.

The Fisher is stored with the adapter in the library as ``data/<adapter>/ewc.safetensors`` with
adapter-independent keys (the adapter's name removed, as in peft's own saved files), so it follows
the adapter under any name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import LibraryError
from ..prompting import Encoded
from ..scoring import score
from .regularisers import Regulariser
from .trainer import label_loss

EWC_FILE = "ewc.safetensors"
_TASKS_KEY = "__ewc_tasks__"  # how many tasks have been folded into the Fisher


@dataclass
class EWCConfig:
    """Strength, decay and estimation settings of online EWC."""

    strength: float = field(default=1.0, metadata={"help": "lambda: weight of the EWC penalty in the loss"})
    decay: float = field(default=0.9, metadata={"help": "gamma: how much of the old Fisher survives each new task"})
    gain: float = field(default=1.0, metadata={"help": "per-task multiplier of lambda (e.g. the router's confidence)"})
    samples: int = field(default=32, metadata={"help": "examples per task used to estimate the Fisher"})
    labels: str = field(default="true", metadata={"help": "'true' (gold labels) or 'sampled' (from the model)"})
    normalise: bool = field(default=True, metadata={"help": "scale each task's Fisher to mean 1 before adding"})
    seed: int = field(default=0, metadata={"help": "seed of the example sample and of sampled labels"})

    def __post_init__(self) -> None:
        from ..errors import UserError

        if self.labels not in ("true", "sampled"):
            raise UserError(f"EWC labels must be 'true' or 'sampled', got {self.labels!r}")
        if self.strength < 0 or self.gain < 0 or not 0 <= self.decay <= 1 or self.samples < 1:
            raise UserError("EWC needs strength >= 0, gain >= 0, 0 <= decay <= 1 and samples >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def portable_name(param: str, adapter: str) -> str:
    """A parameter name without the adapter's name (``...lora_A.<adapter>.weight`` -> ``...lora_A.weight``)."""
    return re.sub(rf"\.(lora_[A-Za-z_]+)\.{re.escape(adapter)}\.", r".\1.", param)


def local_name(portable: str, adapter: str) -> str:
    """The inverse of ``portable_name`` for adapter ``adapter``."""
    return re.sub(r"\.(lora_[A-Za-z_]+)\.", rf".\1.{adapter}.", portable, count=1)


def fisher_sample(items: Sequence[Encoded], n: int, seed: int) -> list[Encoded]:
    """Up to ``n`` items chosen with a fixed seed (deterministic for the same items)."""
    if len(items) <= n:
        return list(items)
    idx = np.random.RandomState(seed).choice(len(items), size=n, replace=False)
    return [items[i] for i in sorted(idx)]


def estimate_fisher(host: Any, adapter: str, items: Sequence[Encoded], labels: str = "true",
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of ``adapter``'s trainable parameters: mean over ``items`` of squared gradients
    of each example's label log-likelihood (gold or sampled label), one example per backward pass."""
    if not items:
        raise ValueError("no examples to estimate the Fisher from")
    host.activate(adapter)
    model, params = host.model, host.trainable(adapter)
    device = next(model.parameters()).device
    pad_id = host.backbone.tokenizer.pad_token_id
    rng = np.random.RandomState(seed)
    fisher = {n: torch.zeros_like(p, device="cpu") for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic model
    try:
        for it in items:
            if labels == "sampled":
                logp = score(model, [it], pad_id, 1)[0]
                p = np.exp(logp - logp.max())
                it = Encoded(it.prompt, it.choices, int(rng.choice(len(p), p=p / p.sum())), it.task)
            for p in params.values():
                p.grad = None
            loss = label_loss(model, [it], pad_id, device)[0]
            # label_loss is the mean over label tokens; the log-likelihood of the label is its sum
            (loss * len(it.choices[it.label])).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float().cpu() ** 2
    finally:
        for p in params.values():
            p.grad = None
        model.train(was_training)
    return {n: f / len(items) for n, f in fisher.items()}


class EWC(Regulariser):
    """Online EWC on the adapter being trained; holds that adapter's accumulated Fisher."""

    name = "ewc"

    def __init__(self, cfg: EWCConfig | None = None, fisher: dict[str, torch.Tensor] | None = None,
                 tasks: int = 0, examples: Callable[[], Sequence[Encoded]] | None = None) -> None:
        self.cfg = cfg or EWCConfig()
        self.examples = examples  # where the Fisher examples come from (default: the task's own items)
        self.fisher = fisher  # portable names -> tensor, or None before the first task
        self.tasks = tasks
        self._local: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # local name -> (fisher, anchor)
        self.adapter: str | None = None
        self.history: list[float] = []  # penalty value at each step of the current task

    @classmethod
    def from_tensors(cls, cfg: EWCConfig | None, tensors: dict[str, torch.Tensor] | None,
                     examples: Callable[[], Sequence[Encoded]] | None = None) -> "EWC":
        """Rebuild from the safetensors dict written by ``to_tensors`` (None: a fresh adapter)."""
        if not tensors:
            return cls(cfg, examples=examples)
        tensors = dict(tensors)
        tasks = int(tensors.pop(_TASKS_KEY, torch.tensor(1)).item())
        return cls(cfg, {k: v.float() for k, v in tensors.items()}, tasks, examples)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The state to store in the library (empty before the first task)."""
        if self.fisher is None:
            return {}
        return {**self.fisher, _TASKS_KEY: torch.tensor(self.tasks, dtype=torch.int64)}

    def begin(self, host: Any, adapter: str) -> None:
        """Anchor at the adapter's current weights; check the Fisher covers exactly its parameters."""
        self.adapter = adapter
        self._local = {}
        if self.fisher is None:
            return
        params = host.trainable(adapter)
        want = {portable_name(n, adapter) for n in params}
        if set(self.fisher) != want:
            raise LibraryError(f"the stored EWC Fisher of adapter {adapter} does not match its parameters "
                               f"({len(self.fisher)} tensors vs {len(want)}); was the LoRA configuration changed?")
        for n, p in params.items():
            f = self.fisher[portable_name(n, adapter)].to(p.device, p.dtype)
            self._local[n] = (f, p.detach().clone())

    def penalty(self, params: dict[str, torch.nn.Parameter]) -> torch.Tensor | None:
        """``0.5 * lambda * gain * sum F (theta - anchor)^2``; None before the adapter's first task."""
        if not self._local or self.cfg.strength == 0 or self.cfg.gain == 0:
            return None
        total = sum((f * (params[n] - a) ** 2).sum() for n, (f, a) in self._local.items())
        out = 0.5 * self.cfg.strength * self.cfg.gain * total
        self.history.append(float(out.detach()))  # to report how strong the penalty was against the loss
        return out

    def end(self, host: Any, adapter: str, items: Sequence[Encoded]) -> None:
        """Estimate the Fisher on the task just learned and fold it into the accumulated one."""
        source = self.examples() if self.examples is not None else items
        sample = fisher_sample(list(source) or list(items), self.cfg.samples, self.cfg.seed + self.tasks)
        new = estimate_fisher(host, adapter, sample, self.cfg.labels, self.cfg.seed + self.tasks)
        new = {portable_name(n, adapter): f for n, f in new.items()}
        if self.cfg.normalise:
            mean = torch.stack([f.sum() for f in new.values()]).sum() / sum(f.numel() for f in new.values())
            if mean > 0:
                new = {k: f / mean for k, f in new.items()}
        if self.fisher is None:
            self.fisher = new
        else:
            self.fisher = {k: self.cfg.decay * self.fisher[k] + new[k] for k in new}
        self.tasks += 1
        self._local = {}
