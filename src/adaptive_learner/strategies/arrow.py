"""``arrow``: a LoRA adapter per task (trained as ``per-task`` trains it), answered without a task id by
peft's Arrow routing over every adapter learned so far (Ostapenko et al. 2024, "Towards Modular LLMs
by Building and Reusing a Library of LoRAs").

Arrow is peft's, not rewritten here: peft's ``ArrowLoraLinearLayer`` takes, in every LoRA layer, the
top right singular vector of each adapter's update B A as its prototype, scores each token by
``|<token, prototype>|``, keeps the ``top_k`` adapters per token, softmaxes their scores (over
``router_temperature``) and adds their updates with those weights. The routing adapter is built as
``peft.create_arrow_model`` builds it, on the adapters already in memory instead of loading them
from paths: the same compatibility checks (``check_loaded_lora_compatibility_arrow``,
``ensure_adapters_target_linear_layers_only``), then a ``LoraConfig(arrow_config=...)`` adapter named
``arrow_router``, made active for inference (peft's documented way to add experts after creation).
It is added for scoring and removed afterwards, so only task adapters are trained and checkpointed.

Every setting is peft's default (``ArrowConfig``: ``top_k=3``, ``router_temperature=1.0``, no
GenKnowSub, which needs general-knowledge adapters this project does not have), except:
- ``top_k`` is capped at the number of adapters learned so far: with fewer adapters than ``top_k``
  peft's ``torch.topk`` fails, and taking all of them is what ``top_k`` asks for;
- ``rng_seed`` is the run's seed (peft's default ``None`` draws the power iteration's start from the
  global generator): the same run gives the same answers, which paired comparisons rely on.
Options: ``arrow_top_k``, ``arrow_temperature``, ``arrow_rng_seed``.

With the same seed its adapters are exactly ``per-task``'s, so the two differ only in how an
adapter is chosen: by the task id (``per-task``) or by Arrow's per-token routing (``arrow``). Tasks
are still scored with their own prompt and label words; only the adapter is not chosen by task.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..prompting import Encoded
from ..scoring import score
from .base import register, require_peft
from .per_task import PerTask

ROUTER = "arrow_router"  # the adapter name peft's Arrow layers reserve for the router


@register("arrow")
class Arrow(PerTask):
    """Per-task adapters; at inference, peft's Arrow routes every token over all of them."""
    answers_with_head = False  # routing per token over the library: no task adapter for the head option

    option_prefixes = ("arrow_",)
    task_id_free = True

    @classmethod
    def check_requirements(cls) -> None:
        require_peft("arrow", "ArrowConfig", "create_arrow_model")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options
        try:
            self.top_k = int(o.get("arrow_top_k", 3))
            self.temperature = float(o.get("arrow_temperature", 1.0))
            self.rng_seed = int(o.get("arrow_rng_seed", ctx.train.seed))
        except (TypeError, ValueError) as exc:
            raise UserError(f"arrow options: {exc}") from None
        if self.top_k < 1 or not self.temperature > 0:
            raise UserError("arrow_top_k must be >= 1 and arrow_temperature > 0")

    @property
    def experts(self) -> list[str]:
        """The task adapters Arrow routes over, in the order they were learned."""
        return list(self.by_task.values())

    @contextlib.contextmanager
    def routed(self) -> Iterator[Any]:
        """The model with peft's Arrow router over every task adapter active (removed on exit)."""
        from peft import ArrowConfig, LoraConfig
        from peft.tuners.lora.arrow import (check_loaded_lora_compatibility_arrow,
                                            ensure_adapters_target_linear_layers_only)

        host, experts = self.ctx.host, self.experts
        config = ArrowConfig(top_k=min(self.top_k, len(experts)), router_temperature=self.temperature,
                             rng_seed=self.rng_seed)
        config.task_adapter_names, config.gks_adapter_names = list(experts), []
        targets, rank = check_loaded_lora_compatibility_arrow(host.peft, adapter_names=experts)
        ensure_adapters_target_linear_layers_only(host.peft, adapter_names=experts)
        with torch.random.fork_rng():  # the router's own (unused) LoRA weights draw no numbers from the run
            host.peft.add_adapter(adapter_name=ROUTER, peft_config=LoraConfig(arrow_config=config,
                                                                              target_modules=targets, r=rank))
        host.peft.set_adapter(ROUTER)
        try:
            yield host.peft
        finally:
            _remove_router(host, experts[-1])

    def score(self, task: str, items: Sequence[Encoded]) -> list[np.ndarray]:
        if not self.by_task:
            return super().score(task, items)  # nothing learned yet: the backbone
        with self.routed() as model:
            return score(model, items, self.ctx.tokenizer.pad_token_id, self.ctx.eval_batch_size)

    def eval_key(self, task: str) -> Any:
        return ("arrow", tuple(self.experts), tuple(self.version[a] for a in self.experts))  # no task id

    def finish_info(self) -> dict[str, Any]:
        """Arrow's settings, for results.json."""
        return {"arrow": {"top_k": self.top_k, "top_k_used": min(self.top_k, len(self.experts)) or None,
                          "router_temperature": self.temperature, "rng_seed": self.rng_seed, "use_gks": False,
                          "experts": self.experts}}


def _remove_router(host: Any, then_active: str) -> None:
    """Delete the router adapter and the Arrow layers peft attached for it; ``then_active`` becomes active."""
    host.activate(then_active)
    host.peft.delete_adapter(ROUTER)
    for module in host.peft.modules():
        arrows = getattr(module, "lora_arrow", None)
        if arrows is not None and ROUTER in arrows:
            del arrows[ROUTER]
