"""The trial: how well each candidate adapter already does the new task's k examples.

The base model and every candidate score the examples in one set of peft mixed-adapter batches
(``adapter_names``). The measure is classification cross-entropy over the task's own labels (and
accuracy), not the full-vocabulary loss: any adapter trained on " yes"/" no" answers lowers the
full-vocabulary loss of every yes/no task, whether or not it knows this one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..adapters import BASE
from ..prompting import encode_examples
from ..scoring import score
from ..tasks.spec import Example, TaskSpec


def classification_stats(scores: Sequence[np.ndarray], labels: Sequence[int]) -> tuple[float, float]:
    """Mean cross-entropy over the label choices, and accuracy."""
    ce, hit = [], []
    for s, y in zip(scores, labels):
        s = np.asarray(s, dtype=np.float64)
        logp = s - (s.max() + np.log(np.exp(s - s.max()).sum()))
        ce.append(-logp[y])
        hit.append(int(np.argmax(s)) == y)
    return float(np.mean(ce)), float(np.mean(hit))


def run_trial(host: Any, spec: TaskSpec, examples: Sequence[Example], adapters: Sequence[str], max_length: int,
              batch_size: int = 16, ensure_loaded: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """``trial_gain`` (base CE minus adapter CE, nats) and ``trial_acc_gain`` for each adapter."""
    adapters = [a for a in adapters if a != BASE]
    if not adapters or not examples:
        return {}
    for a in adapters:
        if ensure_loaded is not None:
            ensure_loaded(a)
    items = encode_examples(host.backbone.tokenizer, spec, examples, max_length)
    host.model.eval()  # peft refuses per-row adapter names in training mode (a freshly loaded adapter is in it)
    names = [BASE, *adapters]
    flat = [it for _ in names for it in items]
    routing = [n for n in names for _ in items]
    scores = score(host.model, flat, host.backbone.tokenizer.pad_token_id, batch_size, adapter_names=routing)
    labels = [it.label for it in items]
    n = len(items)
    base_ce, base_acc = classification_stats(scores[:n], labels)
    out = {}
    for j, a in enumerate(adapters, start=1):
        ce, acc = classification_stats(scores[j * n:(j + 1) * n], labels)
        out[a] = {"trial_gain": base_ce - ce, "trial_acc_gain": acc - base_acc}
    return out
