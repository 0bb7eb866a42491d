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
              batch_size: int | None = None, ensure_loaded: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
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


# ---------------------------------------------------------------------------------------------- answers
def answer_mapping(pred: np.ndarray, labels: np.ndarray, n_pred: int, n_labels: int) -> tuple[float, list[int]]:
    """Accuracy of the best many-to-one mapping of predicted (candidate) labels onto the new task's
    labels, and the mapping (for each candidate label, the new label it stands for)."""
    m = np.zeros((n_pred, n_labels))
    np.add.at(m, (np.asarray(pred, dtype=int), np.asarray(labels, dtype=int)), 1)
    return float(m.max(axis=1).sum() / max(len(labels), 1)), [int(j) for j in m.argmax(axis=1)]


def mapping_test(pred: np.ndarray, labels: np.ndarray, n_pred: int, n_labels: int, permutations: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """How well ``pred`` answers ``labels`` through its best mapping, against the same with the labels
    shuffled (the mapping is chosen after the fact, so chance is not 1 / n_labels): mapped accuracy,
    the shuffled mean and a one-sided permutation p-value."""
    acc, mapping = answer_mapping(pred, labels, n_pred, n_labels)
    rng = np.random.RandomState(seed)
    labels = np.asarray(labels)
    null = np.array([answer_mapping(pred, rng.permutation(labels), n_pred, n_labels)[0] for _ in range(permutations)])
    return {"acc": acc, "null": float(null.mean()), "p": float((1 + np.sum(null >= acc - 1e-12)) / (1 + permutations)),
            "mapping": mapping}


def run_answer_trial(host: Any, spec: TaskSpec, examples: Sequence[Example],
                     candidates: Sequence[tuple[str, TaskSpec]], max_length: int, batch_size: int | None = None,
                     ensure_loaded: Callable[[str], None] | None = None, permutations: int = 1000,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """Does a stored adapter already answer the new task, in its own words? The k examples' inputs are
    put to each candidate adapter under its own task's prompt and answers (fields matched by position),
    and its answers are mapped onto the new task's labels (``mapping_test``): what a family shares across
    datasets is the decision, whatever the labels are called ("recommended" / "not recommended" against
    "positive" / "negative"). The backbone alone under the same prompt is measured beside each, so an
    adapter is credited only for what it adds. Candidates taking another number of fields are skipped."""
    tok = host.backbone.tokenizer
    labels = np.array([e.label for e in examples])
    flat, routing, spans = [], [], []
    for adapter, cand in candidates:
        if adapter == BASE or len(cand.input_fields) != len(spec.input_fields) or not examples:
            continue
        if ensure_loaded is not None:
            ensure_loaded(adapter)
        asked = [Example({cf: e.fields[nf] for cf, nf in zip(cand.input_fields, spec.input_fields)}, 0)
                 for e in examples]
        items = encode_examples(tok, cand, asked, max_length)
        for who in (BASE, adapter):
            spans.append((adapter, who, len(flat), len(flat) + len(items), len(cand.label_names)))
            flat += items
            routing += [who] * len(items)
    if not flat:
        return {}
    host.model.eval()
    scores = score(host.model, flat, tok.pad_token_id, batch_size, adapter_names=routing)
    out: dict[str, dict[str, Any]] = {}
    for adapter, who, a, b, n_pred in spans:
        pred = np.array([int(np.argmax(s)) for s in scores[a:b]])
        res = mapping_test(pred, labels, n_pred, len(spec.label_names), permutations, seed)
        key = "base" if who == BASE else "adapter"
        out.setdefault(adapter, {})[key] = res
    return {a: {"answer_acc": r["adapter"]["acc"], "answer_null": r["adapter"]["null"], "answer_p": r["adapter"]["p"],
                "answer_base_acc": r["base"]["acc"], "answer_mapping": r["adapter"]["mapping"]}
            for a, r in out.items()}
