"""``o-lora``: orthogonal-subspace LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language
Model Continual Learning").

Each task gets a new LoRA adapter. While it trains, the earlier adapters stay active but frozen
(peft's multi-adapter forward: their updates are part of the model the new one learns on), and the
loss gains ``lambda1 * sum_i |A_i A_t^T|_1`` over every LoRA layer and earlier task i, pushing the
new A's rows (the subspace it writes into) orthogonal to the earlier ones, plus an optional
``lambda2 * |theta_t|^2``. At test time every adapter is active at once, their updates summed, and
no task id is used: the same weights answer every task. Options: ``olora_lambda1`` (default 0.5,
the paper's value) and ``olora_lambda2`` (default 0).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..adapters import BASE
from ..prompting import Encoded
from ..scoring import score
from ..tasks.spec import TaskData
from ..training.regularisers import Regulariser
from .base import Strategy, register


class Orthogonality(Regulariser):
    """The O-LoRA loss on the adapter being trained, with ``previous`` adapters active and frozen."""

    name = "o-lora"

    def __init__(self, previous: Sequence[str], lambda1: float = 0.5, lambda2: float = 0.0) -> None:
        self.previous = list(previous)
        self.lambda1, self.lambda2 = lambda1, lambda2
        self.pairs: dict[str, list[torch.Tensor]] = {}  # this adapter's A param name -> earlier A's

    def begin(self, host: Any, adapter: str) -> None:
        """Activate earlier adapters with the new one (only the new one trainable); collect their A's."""
        if self.previous:
            host.peft.base_model.set_adapter(self.previous + [adapter])
            _grads_only(host, adapter)
        earlier = [host.state(p) for p in self.previous]
        self.pairs = {}
        for name in host.trainable(adapter):
            if ".lora_A." in name:
                self.pairs[name] = [st[name.replace(f".{adapter}.", f".{p}.")] for p, st in
                                    zip(self.previous, earlier)]

    def penalty(self, params: dict[str, torch.nn.Parameter]) -> torch.Tensor | None:
        """``lambda1 * sum |A_i A_t^T|`` + ``lambda2 * |theta_t|^2``."""
        terms = []
        if self.lambda1 > 0:
            for name, olds in self.pairs.items():
                for a_old in olds:
                    terms.append(self.lambda1 * (a_old @ params[name].T).abs().sum())
        if self.lambda2 > 0:
            terms.append(self.lambda2 * sum((p ** 2).sum() for p in params.values()))
        return torch.stack(terms).sum() if terms else None

    def end(self, host: Any, adapter: str, items: Sequence[Encoded]) -> None:
        host.activate(adapter)  # back to one active adapter


def _grads_only(host: Any, adapter: str) -> None:
    """Only ``adapter``'s LoRA weights require grad (peft's set_adapter unfreezes all active ones)."""
    for pname, p in host.peft.named_parameters():
        p.requires_grad_(".lora_" in pname and f".{adapter}." in pname)


def overlap(host: Any, a: str, b: str) -> float:
    """Mean over LoRA layers of ``|A_a A_b^T|_1``: how far two adapters' subspaces are from orthogonal."""
    sa, sb = host.state(a), host.state(b)
    vals = [float((sa[n] @ sb[n.replace(f".{a}.", f".{b}.")].T).abs().sum()) for n in sa if ".lora_A." in n]
    return float(np.mean(vals)) if vals else 0.0


@register("o-lora")
class OLoRA(Strategy):
    """A new LoRA per task, trained orthogonal to the earlier ones; all of them summed at inference."""
    answers_with_head = False  # a sum of adapters: no task adapter for the head option

    option_prefixes = ("olora_",)  # the run options it reads
    task_id_free = True

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.order: list[str] = []
        self.lambda1 = float(ctx.options.get("olora_lambda1", 0.5))
        self.lambda2 = float(ctx.options.get("olora_lambda2", 0.0))

    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        name = self.new_adapter(f"olora-{len(self.order)}")
        reg = Orthogonality(self.order, self.lambda1, self.lambda2)
        self.train(name, items, [reg], desc=f"o-lora {task.name}")
        self.order.append(name)

    @contextlib.contextmanager
    def summed(self) -> Iterator[Any]:
        """The model with every task's adapter active at once (their updates add up)."""
        host = self.ctx.host
        host.peft.base_model.set_adapter(self.order, inference_mode=True)
        try:
            yield host.peft
        finally:
            host.activate(self.order[-1])

    def score(self, task: str, items: Sequence[Encoded]) -> list[np.ndarray]:
        if not self.order:
            return super().score(task, items)
        with self.summed() as model:
            return score(model, items, self.ctx.tokenizer.pad_token_id, self.ctx.eval_batch_size)

    def adapter_for(self, task: str) -> str:
        return self.order[-1] if self.order else BASE

    def eval_key(self, task: str) -> Any:
        return ("o-lora-sum", len(self.order))  # one model for every task: no task id

    def finish_info(self) -> dict[str, Any]:
        """Settings and the subspace overlap between consecutive adapters, for results.json."""
        pairs = list(zip(self.order, self.order[1:]))
        return {"o_lora": {"lambda1": self.lambda1, "lambda2": self.lambda2,
                           "overlap_consecutive": [round(overlap(self.ctx.host, a, b), 4) for a, b in pairs]}}
