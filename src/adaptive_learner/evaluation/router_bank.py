"""Features of the catalog tasks computed once, for the router's benchmark and its calibration.

A ``TaskBank`` holds, per task: backbone features of the ``profile`` training examples (what a
library stores), of a ``pool`` of other training examples (what a repeated or related task brings
when it arrives, k at a time), of ``test`` examples (single inputs to route), and the embeddings of
the description, of each rewording, and of the label set. Building it costs one early-exit forward
per example; it is saved as safetensors + JSON, so the decision experiments (thousands of them)
run without the backbone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..features import FeatureExtractor, TaskFeatures, input_text, pair_structure
from ..fileio import atomic_write_bytes, atomic_write_json
from ..tasks.spec import TaskData, stratified_take

# Each catalog task's instruction said differently (for the "reworded description" cases).
REWORDINGS: dict[str, list[str]] = {
    "sst2": ["Tell me if this sentence from a film review is favourable or unfavourable.",
             "Label the opinion in this line about a movie: good or bad?"],
    "imdb": ["Read this user review of a film and say whether the reviewer liked it.",
             "Was the person who wrote this long movie review pleased or disappointed?"],
    "rotten_tomatoes": ["Decide if this short excerpt from a film critic is a thumbs up or a thumbs down.",
                        "Does this movie critic's blurb recommend the film or pan it?"],
    "mrpc": ["Check whether the second news sentence is a paraphrase of the first.",
             "Are these two newswire sentences equivalent in meaning?"],
    "stsb": ["Judge whether the two sentences mean roughly the same thing.",
             "Do these sentences express a similar idea? Reply yes or no."],
    "rte": ["Can the hypothesis be inferred from the text? Yes or no.",
            "If the passage is true, must the statement also be true?"],
    "cb": ["Does the premise entail the hypothesis, contradict it, or neither?",
           "Is the hypothesis supported by, contradicted by, or unrelated to the premise?"],
    "boolq": ["Answer the yes/no question using the passage.",
              "Based on the text, is the answer to this question true or false?"],
    "trec": ["Classify this question by the type of answer it expects.",
             "Is this question asking for a person, a place, a number, a definition, an entity or an abbreviation?"],
    "sms_spam": ["Flag this text message if it is unsolicited junk.",
                 "Decide whether this phone message is spam."],
    "bbc_news": ["Assign this news story to its section: business, entertainment, politics, sport or tech.",
                 "What subject area does this BBC article belong to?"],
}


@dataclass
class TaskBank:
    """Precomputed features of one task."""

    task: str
    family: str
    profile: TaskFeatures  # what a library stores (training examples, original description)
    pool: np.ndarray  # (m, d) other training examples: a new request for this task brings k of them
    test: np.ndarray  # (t, d) test inputs, for per-input routing
    descriptions: np.ndarray  # (1 + rewordings, e): the original first
    test_texts: list[str] = field(default_factory=list)
    pool_inputs: np.ndarray | None = None  # (m, e) sentence embeddings of the pool's inputs (content signal)
    pool_structure: np.ndarray | None = None  # (m, 2) pair tasks: how each pool example's fields relate
    test_inputs: np.ndarray | None = None  # (t, e) sentence embeddings of the test inputs (routing's text view)

    def request(self, rows: np.ndarray, variant: int) -> TaskFeatures:
        """The features a new-task request brings: some pool examples and one description variant."""
        p = self.profile
        ex = self.pool[rows] if len(rows) else None
        inputs = self.pool_inputs[rows] if self.pool_inputs is not None and len(rows) else None
        structure = self.pool_structure[rows] if self.pool_structure is not None and len(rows) else None
        desc = self.descriptions[variant] if p.description is not None else None
        return TaskFeatures(self.task, ex, desc, p.labels, None, p.n_labels, p.n_fields, list(p.label_names),
                            list(p.verbalizers), inputs, p.label_vecs, structure)


def bank_rows(task: TaskData, profile_n: int, pool_n: int, seed: int) -> tuple[list, list]:
    """The training examples a bank takes for a task: (profile rows, pool rows). A small task is split
    in half between the two."""
    rows = stratified_take(task.train, profile_n + pool_n, seed + 1)
    n_prof = min(profile_n, len(rows) // 2)
    return rows[:n_prof], rows[n_prof:]


def build_bank(extractor: FeatureExtractor, tasks: Sequence[TaskData], profile_n: int = 128, pool_n: int = 64,
               test_n: int = 64, seed: int = 0) -> dict[str, TaskBank]:
    """Compute the bank for every task (its examples: ``bank_rows``)."""
    out = {}
    for t in tqdm(tasks, desc="router features"):
        prof_rows, pool_rows = bank_rows(t, profile_n, pool_n, seed)
        profile = extractor.task_features(t.spec, prof_rows)
        pool_texts = [input_text(e.fields, t.spec) for e in pool_rows]
        pool = extractor.input_features(pool_texts)
        pool_inputs = extractor.input_embeddings(pool_texts) if profile.inputs is not None else None
        pool_structure = pair_structure(extractor.encoder, t.spec, pool_rows)
        if profile.structure is None:  # the bank keeps every signal, whether or not a router uses it
            profile.structure = pair_structure(extractor.encoder, t.spec, prof_rows)
        test_rows = stratified_take(t.test, test_n, seed + 2)
        texts = [input_text(e.fields, t.spec) for e in test_rows]
        test = extractor.input_features(texts)
        test_inputs = extractor.input_embeddings(texts) if profile.inputs is not None else None
        variants = [t.spec.description] + REWORDINGS.get(t.name, [])
        descs = extractor.encoder.encode(variants)
        out[t.name] = TaskBank(t.name, t.spec.family, profile, pool, test, descs, texts, pool_inputs, pool_structure,
                               test_inputs)
    return out


def add_structure(bank: dict[str, TaskBank], tasks: Sequence[TaskData], encoder: Any, profile_n: int = 128,
                  pool_n: int = 64, seed: int = 0) -> bool:
    """Give a bank built before the ``structure`` signal its arrays, from the same examples ``build_bank``
    took (the sentence encoder only, no backbone). True when anything was added."""
    added = False
    for t in tasks:
        b = bank.get(t.name)
        if b is None or b.profile.structure is not None or len(t.spec.input_fields) < 2:
            continue
        prof_rows, pool_rows = bank_rows(t, profile_n, pool_n, seed)
        if len(prof_rows) != b.profile.n_examples or len(pool_rows) != len(b.pool):
            raise ValueError(f"{t.name}: the bank was built from other examples; build it again")
        b.profile.structure = pair_structure(encoder, t.spec, prof_rows)
        b.pool_structure = pair_structure(encoder, t.spec, pool_rows)
        added = True
    return added


def add_test_inputs(bank: dict[str, TaskBank], encoder: Any, max_tokens: int) -> bool:
    """Give a bank built before routing's text view the test inputs' sentence embeddings, from its stored
    test texts (the sentence encoder only). True when anything was added."""
    added = False
    for b in bank.values():
        if b.test_inputs is None and b.profile.inputs is not None and len(b.test_texts) == len(b.test):
            b.test_inputs = encoder.encode(list(b.test_texts), max_tokens=max_tokens)
            added = True
    return added


def save_bank(bank: dict[str, TaskBank], path: Path, meta: dict[str, Any]) -> None:
    """Write the bank as ``<path>.safetensors`` and ``<path>.json``."""
    from safetensors.torch import save as safetensors_bytes

    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {"meta": meta, "tasks": {}}
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    for name, b in bank.items():
        for key, arr in b.profile.tensors().items():
            tensors[f"{name}/profile/{key}"] = arr
        tensors[f"{name}/pool"] = as_t(b.pool)
        tensors[f"{name}/test"] = as_t(b.test)
        tensors[f"{name}/descriptions"] = as_t(b.descriptions)
        if b.pool_inputs is not None:
            tensors[f"{name}/pool_inputs"] = as_t(b.pool_inputs)
        if b.pool_structure is not None:
            tensors[f"{name}/pool_structure"] = as_t(b.pool_structure)
        if b.test_inputs is not None:
            tensors[f"{name}/test_inputs"] = as_t(b.test_inputs)
        info["tasks"][name] = {"family": b.family, "profile": b.profile.meta(), "test_texts": b.test_texts}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".safetensors"), safetensors_bytes(tensors))
    atomic_write_json(path.with_suffix(".json"), info)


def load_bank(path: Path) -> tuple[dict[str, TaskBank], dict[str, Any]]:
    """Read a bank written by ``save_bank``."""
    tensors = load_file(str(path.with_suffix(".safetensors")))
    info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    bank = {}
    for name, t in info["tasks"].items():
        prof = {k.split("/")[-1]: v for k, v in tensors.items() if k.startswith(f"{name}/profile/")}
        bank[name] = TaskBank(name, t["family"], TaskFeatures.from_stored(t["profile"], prof),
                              tensors[f"{name}/pool"].numpy(), tensors[f"{name}/test"].numpy(),
                              tensors[f"{name}/descriptions"].numpy(), list(t.get("test_texts", [])),
                              tensors[f"{name}/pool_inputs"].numpy() if f"{name}/pool_inputs" in tensors else None,
                              tensors[f"{name}/pool_structure"].numpy() if f"{name}/pool_structure" in tensors else None,
                              tensors[f"{name}/test_inputs"].numpy() if f"{name}/test_inputs" in tensors else None)
    return bank, info["meta"]
