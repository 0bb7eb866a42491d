"""Answering inputs that come without a task id: route each one, then score them by task.

Each input goes to a task (and so to its adapter, prompt and labels) by the input router. The
inputs routed to one task are then scored together with that task's adapter active: they share
the task's prompt (instruction and description), which runs once per batch (the shared-prefix path
of ``scoring.py``). ``group=False`` scores every input in one stream of peft mixed-adapter batches
(``adapter_names``) instead, where no prefix is shared (BENCHMARKS "Routed scoring").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..adapters import BASE
from ..errors import UserError
from ..features import PAIR_JOIN
from ..prompting import encode_examples
from ..scoring import score
from ..tasks.spec import Example, TaskSpec
from .evidence import TaskProfile
from .service import LibraryRouter


@dataclass
class RoutedAnswer:
    """One input, the task it was routed to, and the label that task's adapter gives it."""

    text: str
    task: str
    adapter: str
    route_confidence: float
    label: int
    label_name: str
    probability: float
    scores: np.ndarray
    novelty: float | None = None  # distance to the nearest learned task over its threshold (> 1: unknown)


def split_fields(text: str, spec: TaskSpec) -> dict[str, str]:
    """The task's fields from one input (pairs separated by ``|||``)."""
    if not text or not text.strip():
        raise UserError("empty input text")
    parts = text.split(PAIR_JOIN.strip()) if len(spec.input_fields) > 1 else [text]
    if len(parts) != len(spec.input_fields):
        raise UserError(f"task {spec.name} takes {len(spec.input_fields)} fields ({', '.join(spec.input_fields)}); "
                        f"separate them with '{PAIR_JOIN.strip()}'")
    return {f: p.strip() for f, p in zip(spec.input_fields, parts)}


def score_routed(host: Any, items: Sequence[Any], adapters: Sequence[str], tasks: Sequence[str],
                 batch_size: int | None = None, group: bool = True,
                 prefixes: Callable[[str], list[Any]] | None = None) -> list[np.ndarray]:
    """Choice scores of ``items``, each with its own adapter: by task, each task's items with its adapter
    active (prompt prefix shared), or (``group=False``) all in peft mixed-adapter batches. ``prefixes``:
    an adapter's store of prompt prefixes kept between calls (``scoring.score``)."""
    pad = host.backbone.tokenizer.pad_token_id
    if host.peft is None:
        with host.base() as model:
            return score(model, items, pad, batch_size)
    host.model.eval()  # peft refuses per-row adapter names in training mode
    if not group:
        return score(host.model, items, pad, batch_size, adapter_names=list(adapters))
    out: list[np.ndarray | None] = [None] * len(items)
    by_task: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(tasks, adapters)):
        by_task.setdefault(key, []).append(i)
    for (_, adapter), idx in by_task.items():
        with host.using(adapter) as model:
            kept = prefixes(adapter) if prefixes is not None else None
            for i, s in zip(idx, score(model, [items[i] for i in idx], pad, batch_size, prefixes=kept)):
                out[i] = s
    return out  # type: ignore[return-value]


def _mix_heads(host: Any, items: Sequence[Any], scores: list[np.ndarray], tasks: Sequence[str],
               head_of: Callable[[str], Any]) -> list[np.ndarray]:
    """``scores`` with each input's answer mixed with its task's head, where the task has one."""
    out = list(scores)
    for task in sorted(set(tasks)):
        head = head_of(task)
        if head is None:
            continue
        rows = [i for i, t in enumerate(tasks) if t == task]
        for i, mixed in zip(rows, head.mix_in(host, [items[i] for i in rows], [scores[i] for i in rows])):
            out[i] = mixed
    return out


def answer_routed(host: Any, router: LibraryRouter, profiles: Sequence[TaskProfile], specs: dict[str, TaskSpec],
                  texts: Sequence[str], max_length: int, batch_size: int | None = None,
                  ensure_loaded: Callable[[str], None] | None = None, open_set: bool = True,
                  group: bool = True, prefixes: Callable[[str], list[Any]] | None = None,
                  head_of: Callable[[str], Any] | None = None) -> list[RoutedAnswer]:
    """Route every text to a stored task and label it with that task's adapter (``open_set``: also each
    input's novelty, see :class:`~adaptive_learner.router.routing.NoveltyModel`; ``group``: see the module).
    ``head_of``: a task's head (``training/head``; None: the adapter alone); the inputs routed to a task with a
    head get the head's mix, as with the task id given, and ``scores`` are then the mixed log-probabilities."""
    for t in texts:
        if not t or not t.strip():
            raise UserError("empty input text")
    routed, _ = router.route(texts, profiles, open_set=open_set)
    for text, r in zip(texts, routed):
        if r is None:
            raise UserError(f"no learned task takes {text.count(PAIR_JOIN.strip()) + 1} field(s) like {text[:60]!r}")
    items, names = [], []
    for text, r in zip(texts, routed):
        spec = specs[r.task]
        items.extend(encode_examples(host.backbone.tokenizer, spec, [Example(split_fields(text, spec), 0)],
                                     max_length))
        names.append(r.adapter if r.adapter in host.names or ensure_loaded is not None else BASE)
    for a in sorted(set(names) - {BASE}):
        if ensure_loaded is not None:
            ensure_loaded(a)
    scores = score_routed(host, items, names, [r.task for r in routed], batch_size, group, prefixes)
    if head_of is not None:
        scores = _mix_heads(host, items, scores, [r.task for r in routed], head_of)
    out = []
    for text, r, s in zip(texts, routed, scores):
        p = np.exp(s - s.max())
        p /= p.sum()
        k = int(np.argmax(p))
        out.append(RoutedAnswer(text, r.task, r.adapter, r.confidence, k, specs[r.task].label_names[k],
                                float(p[k]), s, r.novelty))
    return out
