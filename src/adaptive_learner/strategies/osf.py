"""``osf``: peft's Orthogonal Subspace Fine-tuning (Nayak et al. 2025, "Sculpting Subspaces:
Constrained Full Fine-Tuning in LLMs for Continual Learning"): one model fine-tuned over the
sequence, each task in the subspace orthogonal to the directions kept from before.

Wrapped, as peft's documentation advises for a sequence of tasks ("Training Advice for Continual
Learning"): for each task the current weights are wrapped with ``get_peft_model(model,
OSFConfig(effective_rank=...))``, which splits every targeted weight by SVD into its top
``effective_rank`` singular directions (frozen) and the rest (``U_low S_low V_low``, trained, with
gradients projected away from the frozen directions); after training, ``merge_and_unload`` writes
the update into the weights, and the next task recomputes the SVD on them. The preserved rank
follows the docs' budget allocation for a known number of tasks n: task t (0-based) preserves
``t/n`` of each matrix's smaller dimension (the first task trains all but its top direction: peft
needs ``effective_rank >= 1``; the docs' code sample, ``(t + 1)/n``, would leave the last task
nothing to train). Everything else is peft's default: ``OSFConfig``'s target modules for the
architecture (all attention and MLP projections for Llama), ``init_weights=True``.
Options: ``osf_schedule`` (``progressive``, the default, or ``fixed``: the same preserved rank for
every task), ``osf_effective_rank`` (for ``fixed``; default None: peft's 50%) and ``osf_lr_scale``.

How it does not fit this project, precisely:
- OSF is full fine-tuning in factored form, not an adapter: the trainable factors of a matrix with
  smaller dimension m hold ``k (rows + cols + 1)`` numbers for trainable rank ``k = m -
  effective_rank`` (about twice the matrix itself on the first task), so it trains, and changes,
  the backbone's own weights. The frozen backbone stays untouched because this strategy fine-tunes
  a copy of it (twice the model in memory). It has no adapter a library could store or vLLM/LoRAX
  could serve, so it exists only as a strategy of ``alearn run``/``bench`` (``adapters``: 0;
  trainable params: the first task's, the largest).
- peft advises learning rates of 1e-5 to 1e-4 for OSF, far below the LoRA rate every strategy
  shares (2e-3). On smollm2-135m the top of that range is too high as well: at 2e-3 and at 1e-4
  OSF's held-out accuracy on sst2 fell to chance (0.500) from the first check and early stopping kept
  step 0; at 1e-5 it reached 0.875 at step 10 and 0.969 at step 20 (BENCHMARKS.md, session 19). So
  OSF trains at ``osf_lr_scale`` (default 0.005) times the run's learning rate: 1e-5 at the default
  2e-3, the bottom of peft's range, and the ``--lr-search`` grid 1e-3..4e-3 becomes 5e-6..2e-5.
  The rate used is in the run's results (``osf.lr``).
- A checkpoint (``alearn run --resume``) holds every weight it changed, not a small adapter.
It trains with this project's trainer (the label loss, early stopping on held-out examples) and is
scored by the same rank scoring as every strategy, on the merged weights.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..prompting import Encoded
from ..scoring import score
from ..tasks.spec import TaskData
from .base import Strategy, register, require_peft

NAME = "seq"  # the OSF adapter's name (peft warns when it contains its prefix "osf_")
SCHEDULES = ("progressive", "fixed")
LR_SCALE = 0.005  # OSF's rate relative to the run's (LoRA) rate: 2e-3 -> 1e-5, the bottom of peft's advised range


class OSFHost:
    """What the trainer needs from a host, over one OSF-wrapped model: its trainable factors."""

    def __init__(self, model: Any, backbone: Any) -> None:
        self.model = self.peft = model
        self.backbone = backbone

    def activate(self, name: str) -> None:
        """Only OSF's low-rank factors of ``name`` require grad (peft has frozen the rest)."""
        for pname, p in self.model.named_parameters():
            p.requires_grad_(".osf_svd_params." in pname and f".{name}." in pname)

    def trainable(self, name: str) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if ".osf_svd_params." in n and f".{name}." in n}


@register("osf")
class OSF(Strategy):
    """One copy of the backbone, fine-tuned task after task in orthogonal subspaces (peft's OSF)."""
    answers_with_head = False  # one rewritten model: no task adapter for the head option

    option_prefixes = ("osf_",)

    @classmethod
    def check_requirements(cls) -> None:
        require_peft("osf", "OSFConfig")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.schedule = str(ctx.options.get("osf_schedule", "progressive"))
        if self.schedule not in SCHEDULES:
            raise UserError(f"osf_schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        rank = ctx.options.get("osf_effective_rank")
        if rank is not None and (not isinstance(rank, (int, float)) or isinstance(rank, bool) or rank <= 0):
            raise UserError(f"osf_effective_rank must be a positive count or a fraction in (0, 1], got {rank!r}")
        self.fixed_rank = rank
        scale = ctx.options.get("osf_lr_scale", LR_SCALE)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
            raise UserError(f"osf_lr_scale must be a positive number, got {scale!r}")
        self.lr = float(ctx.train.lr) * float(scale)
        self.model: Any = None  # the fine-tuned copy of the backbone, once the first task is learned
        self.done = 0
        self.preserved: list[int | float | None] = []  # effective_rank of each task's OSFConfig
        self.trained: list[int] = []  # trainable parameters of each task
        self.changed: list[str] = []  # names of the weights OSF writes into

    def preserved_rank(self, t: int) -> int | float | None:
        """The ``effective_rank`` of task ``t``'s wrap: ``t/n`` of each matrix (at least 1 direction)."""
        if self.schedule == "fixed":
            return self.fixed_rank
        frac = t / self.ctx.n_tasks
        return frac if frac > 0 else 1

    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        from peft import OSFConfig, get_peft_model

        base = self.model if self.model is not None else copy.deepcopy(self.ctx.host.backbone.model)
        rank = self.preserved_rank(self.done)
        wrapped = get_peft_model(base, OSFConfig(effective_rank=rank, task_type="CAUSAL_LM"), adapter_name=NAME)
        host = OSFHost(wrapped, self.ctx.host.backbone)
        self.trained.append(sum(p.numel() for p in host.trainable(NAME).values()))
        self.changed = sorted({n.split(".osf_svd_params.")[0].replace("base_model.model.", "", 1) + ".weight"
                               for n in host.trainable(NAME)})
        self.train(NAME, items, desc=f"osf {task.name}", host=host, cfg=replace(self.ctx.train, lr=self.lr))
        self.model = wrapped.merge_and_unload()
        self.model.eval()
        self.preserved.append(rank)
        self.done += 1

    def score(self, task: str, items: Sequence[Encoded]) -> list[np.ndarray]:
        if self.model is None:
            return super().score(task, items)  # nothing learned yet: the backbone
        return score(self.model, items, self.ctx.tokenizer.pad_token_id, self.ctx.eval_batch_size)

    def eval_key(self, task: str) -> Any:
        return ("osf", self.done)  # one model for every task

    @property
    def adapters(self) -> list[str]:
        return []  # no adapter: OSF changes the (copied) backbone's weights

    def trainable_params(self) -> int:
        return max(self.trained, default=0)

    def state_dict(self) -> dict[str, Any]:
        """What ``alearn run --resume`` keeps: the counters and every weight OSF changed."""
        weights = {} if self.model is None else {n: self.model.get_parameter(n).detach() for n in self.changed}
        return {"done": self.done, "preserved": self.preserved, "trained": self.trained, "changed": self.changed,
                "reports": self.reports, "version": self.version, "weights": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the fine-tuned copy from the backbone and the saved weights."""
        weights = state.pop("weights")
        vars(self).update(state)
        if weights:
            self.model = copy.deepcopy(self.ctx.host.backbone.model)
            with torch.no_grad():
                for n, t in weights.items():
                    self.model.get_parameter(n).copy_(t)
            self.model.eval()

    def finish_info(self) -> dict[str, Any]:
        """The schedule, the learning rate, each task's preserved rank and trainable parameters (results.json)."""
        return {"osf": {"schedule": self.schedule, "lr": self.lr, "effective_rank": self.preserved,
                        "trainable_params": self.trained, "weights_changed": len(self.changed)}}
