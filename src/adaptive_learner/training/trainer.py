"""Train one LoRA adapter: loss on the label tokens only, dynamic padding, AdamW, seeded, a progress bar."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..prompting import Encoded
from ..scoring import choice_logits, choice_scores, score, tail_logits
from .regularisers import Regulariser
from .resume import StepCheckpoint, capture, plan_hash, restore


OBJECTIVES = ("choices", "lm")
SCHEDULES = ("constant", "linear")
MONITORS = ("loss", "accuracy")  # what early stopping watches on the held-out examples


@dataclass
class TrainConfig:
    """Optimisation budget and hyperparameters for one task.

    By default a task trains until it is learned: a stratified part of its training examples is
    held out, the adapter is scored on it every ``eval_every`` steps, training stops after
    ``patience`` evaluations without improvement (or at ``steps``), and the best checkpoint is kept.
    ``early_stop=False`` trains exactly ``steps`` steps on every example.
    """

    steps: int = field(default=300, metadata={"help": "optimizer steps per task: the cap with early stopping, "
                                                      "else exactly this many"})
    batch_size: int = field(default=8, metadata={"help": "examples per step (before replay is mixed in)"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    lora_plus_ratio: float = field(default=1.0, metadata={
        "help": "LoRA+ (Hayou et al. 2024, peft's create_loraplus_optimizer): the B matrices train at this many "
                "times `lr` (the A matrices at `lr`); 1: plain LoRA, one rate for both"})
    warmup_steps: int = field(default=5, metadata={"help": "steps of linear warm-up"})
    schedule: str = field(default="constant", metadata={
        "help": "after warm-up: constant, or linear (decay to 0 at `steps`)"})
    objective: str = field(default="choices", metadata={
        "help": "choices: cross-entropy over the task's labels, each scored as the classifier scores it (its "
                "distinguishing token, or the mean log-likelihood of a multi-token label); lm: the gold verbalizer's "
                "tokens over the whole vocabulary"})
    choice_sample: int = field(default=0, metadata={
        "help": "choices objective, labels of several tokens: at most this many labels per example in a step's "
                "loss, the gold one and others drawn at random each step (a sampled softmax: a step's cost grows "
                "with the labels it reads); 0: every label"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm"})
    max_length: int = field(default=256, metadata={"help": "max tokens per example (prompt head+tail kept)"})
    max_batch_tokens: int = field(default=512, metadata={
        "help": "token positions per forward: a longer batch is split into micro-batches whose gradients add up "
                "to the same update (bounds activation memory)"})
    early_stop: bool = field(default=True, metadata={"help": "hold out validation examples and stop when "
                                                             "they stop improving (best checkpoint kept)"})
    val_fraction: float = field(default=0.2, metadata={"help": "fraction of the training examples held out"})
    val_max: int = field(default=64, metadata={"help": "at most this many held-out examples"})
    eval_every: int = field(default=10, metadata={"help": "steps between validation scores"})
    patience: int = field(default=4, metadata={"help": "validation scores without improvement before stopping"})
    monitor: str = field(default="accuracy", metadata={
        "help": "what counts as improvement on the held-out examples: accuracy (higher; at equal accuracy the "
                "lower loss is kept) or loss (lower by min_delta); the best weights are kept"})
    min_delta: float = field(default=0.01, metadata={
        "help": "a held-out loss counts as lower when it is at least this much below the best so far (once "
                "every held-out example is right, the loss keeps creeping down as the model grows confident)"})
    head: bool = field(default=True, metadata={
        "help": "also fit a linear head on the frozen backbone's features and mix it with the adapter, by a weight "
                "decided on the held-out examples (training/head/; used by Learner.learn and alearn learn)"})
    head_mix: str = field(default="gated", metadata={
        "help": "how the head's weight is decided: gated (an equal mix unless the held-out examples tell the "
                "adapter and the head apart, then the better alone), held-out (the mix with the best held-out "
                "accuracy) or a number in [0, 1] (the adapter's weight)"})
    head_views: str = field(default="text,pair", metadata={
        "help": "the sentence encoder's views the head may add to the backbone's features, comma-separated: "
                "pair (how two fields relate), text (the input as one text); empty: none"})
    head_view_rule: str = field(default="gated", metadata={
        "help": "how the head chooses among them: gated (the pair view by the lowest cross-validated log loss, "
                "the text view only where the cross-validated answers with it are clearly better: McNemar at "
                "5%), min (the lowest cross-validated log loss) or one-se"})
    head_calibrate: str = field(default="none", metadata={
        "help": "temperatures fitted before the mix: none, head (the head's, to its cross-validated answers) "
                "or both (also the adapter's, to its held-out answers)"})
    ema: float = field(default=0.0, metadata={
        "help": "decay of an exponential moving average of the adapter's weights (per step, warmed up as "
                "min(ema, (1+t)/(10+t))): the held-out checks score the average and early stopping keeps it, "
                "as do tasks with nothing held out at their end; 0: off, the weights of the last step"})
    lr_retries: int = field(default=0, metadata={
        "help": "when the kept weights did not learn the task (held-out verdict: learned_verdict), train again "
                "from the same start at half the rate, at most this many times; the attempt with the best held-out "
                "score is kept (0: never)"})
    seed: int = field(default=0, metadata={"help": "seed of batch order, validation split and dropout"})
    pack: bool = field(default=False, metadata={
        "help": "run a batch's prompts after their shared prefix as one padding-free sequence (block-diagonal "
                "causal mask) instead of a padded batch, when that saves at least a fifth of the positions "
                "(scoring.PACK_MIN_SAVING): the same loss and gradients; pays on mixed-task (replay) batches"})

    def __post_init__(self) -> None:
        from .head import check_head_options, check_mix_rule

        check_mix_rule(self.head_mix)
        check_head_options(self.head_views, self.head_view_rule, self.head_calibrate)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema!r}")
        if self.choice_sample < 0 or self.choice_sample == 1:
            raise ValueError(f"choice_sample must be 0 (every label) or at least 2, got {self.choice_sample!r}")
        if self.lr_retries < 0:
            raise ValueError(f"lr_retries must be >= 0, got {self.lr_retries!r}")
        if not self.lora_plus_ratio > 0:
            raise ValueError(f"lora_plus_ratio must be > 0, got {self.lora_plus_ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From ``to_dict`` output; keys of other versions are ignored."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# training settings added after step states were saved (training/resume.py), with the value those states had: left
# out of a saved step's key at that value, so a run stopped inside a task by an earlier release resumes there
STEP_KEY_ADDED_LATER = {"choice_sample": 0, "lora_plus_ratio": 1.0}


def checkpoint_config(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as a saved step's key holds it (``STEP_KEY_ADDED_LATER``)."""
    return {k: v for k, v in cfg.to_dict().items()
            if not (k in STEP_KEY_ADDED_LATER and v == STEP_KEY_ADDED_LATER[k])}


MIN_VALIDATION = 8  # fewer held-out examples than this: nothing held out (see FIT_LOSS)
# A task too small to hold examples out (early stopping on, fewer than MIN_VALIDATION to spare) has no held-out
# accuracy to stop on; it stops once its training examples are fitted: one evaluation's worth of steps
# (``eval_every``) after the mean training loss over the last epoch (at least ``eval_every`` steps) first falls
# below FIT_LOSS, or at ``steps``. Past that point the adapter answers its examples alike and more steps changed
# no test answer beyond noise (BENCHMARKS.md, "Few-shot tasks"; session 27: ``patience`` evaluations' worth, 30
# steps more on four tasks of 32 examples, changed the answers by +0.4 points [-0.5, +1.4]); before session 25
# such a task trained all ``steps``.
FIT_LOSS = 0.01


@dataclass
class TrainReport:
    """What one training call did."""

    steps: int
    examples: int
    tokens: int
    seconds: float
    final_loss: float
    losses: list[float]
    positions: int = 0  # token positions computed: padding included, each batch's shared prefix once
    validation: list[dict[str, float]] = field(default_factory=list)  # {step, accuracy, loss} per evaluation
    best_step: int | None = None  # the step whose weights were kept (early stopping)
    stopped: str = "steps"  # why training ended: steps (the cap), patience, or fitted (nothing held out: FIT_LOSS)
    val_majority: float | None = None  # share of the most common label among the held-out examples
    val_size: int = 0
    lr: float | None = None  # the learning rate of the kept weights (``TrainConfig.lr_retries`` may lower it)
    # each training attempt ({lr, steps, seconds, best_step, accuracy, learned}) when there were retries; the
    # counters above (steps, examples, tokens, positions, seconds) then add up every attempt, the rest is the kept one's
    attempts: list[dict[str, Any]] = field(default_factory=list)


def learned_verdict(accuracy: float, majority: float, n: int, z: float = 1.645) -> bool | None:
    """Whether a held-out accuracy shows the task was learned: the lower end of its one-sided 95% Wilson
    interval lies above the majority-class rate, or the accuracy removed at least half of the majority
    rate's errors (``accuracy >= (1 + majority) / 2``). The second condition is for imbalanced tasks:
    31 of 32 against a majority of 28 of 32 (sms_spam) is not clear of the rate at 95% on 32 examples
    (nothing short of 32 of 32 would be), yet the task is learned (0.99 on its test split), and judged
    not learned its adapter would not be offered for reuse. Where the majority rate is at most one half,
    at 32 examples the second condition implies the first. None when there are no held-out examples."""
    if n <= 0:
        return None
    if majority < accuracy and accuracy >= (1.0 + majority) / 2:
        return True
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return bool(centre - half > majority)


def adapter_learned(rep: "TrainReport") -> bool | None:
    """Whether the adapter itself learned its task: ``learned_verdict`` on the held-out accuracy of the
    weights early stopping kept. None without held-out examples (nothing to judge by)."""
    if not rep.val_size or rep.val_majority is None or rep.best_step is None:
        return None
    kept = kept_point(rep)
    return learned_verdict(float(kept["accuracy"]), rep.val_majority, rep.val_size) if kept else None


def worth_retrying(rep: "TrainReport") -> bool:
    """Whether ``TrainConfig.lr_retries`` trains again after ``rep``: the kept weights did not learn the task
    (:func:`adapter_learned` False; unknown, with nothing held out, is not retried)."""
    return adapter_learned(rep) is False


def kept_point(rep: "TrainReport") -> dict[str, float] | None:
    """The validation curve's point of the weights early stopping kept (None: no such point)."""
    return next((v for v in rep.validation if v["step"] == rep.best_step), None)


def improvement(monitor: str, min_delta: float, best: dict[str, float] | None,
                point: dict[str, float]) -> tuple[bool, bool]:
    """Early stopping's rule for one held-out score ``point`` ({accuracy, loss}) against the ``best``
    kept so far: (keep these weights, reset patience). ``monitor`` loss: the held-out loss dropped by
    ``min_delta``. accuracy: the held-out accuracy rose; the same accuracy with a lower loss keeps the
    weights but does not reset patience (a few dozen examples tie often and saturate at 1.0 on easy
    tasks: the loss breaks ties, it does not prolong training). ``benchmarks/stopping_rules.py``
    replays recorded curves through this same function."""
    if best is None:
        return True, True
    if monitor == "loss":
        better = point["loss"] < best["loss"] - min_delta
        return better, better
    if point["accuracy"] > best["accuracy"]:
        return True, True
    return point["accuracy"] == best["accuracy"] and point["loss"] < best["loss"], False


def split_validation(items: Sequence[Encoded], cfg: TrainConfig) -> tuple[list[Encoded], list[Encoded]]:
    """(train, validation): a label-stratified ``val_fraction`` (at most ``val_max``) held out, seeded.
    Empty validation when early stopping is off or the task is too small to spare it. Items of several
    tasks (a joint run) are split task by task, each task holding out its own part as it would alone."""
    tasks = list(dict.fromkeys(it.task for it in items))
    if len(tasks) > 1:
        train: list[Encoded] = []
        val: list[Encoded] = []
        for t in tasks:
            tr, va = split_validation([it for it in items if it.task == t], cfg)
            train.extend(tr)
            val.extend(va)
        return train, val
    n_val = min(cfg.val_max, int(round(cfg.val_fraction * len(items))))
    if not cfg.early_stop or n_val < MIN_VALIDATION or len(items) - n_val < MIN_VALIDATION:
        return list(items), []
    rng = np.random.RandomState(cfg.seed + 7919)
    by_label: dict[int, list[int]] = {}
    for i in rng.permutation(len(items)):
        by_label.setdefault(items[i].label, []).append(int(i))
    # proportional quotas, rounded so they add up to n_val; every label keeps a training example
    quota = {k: int(len(v) * n_val / len(items)) for k, v in by_label.items()}
    for k in sorted(by_label, key=lambda k: -(len(by_label[k]) * n_val / len(items) - quota[k])):
        if sum(quota.values()) >= n_val:
            break
        quota[k] += 1
    held = {i for k, v in by_label.items() for i in v[: min(quota[k], len(v) - 1)]}
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def validate(model: Any, items: Sequence[Encoded], pad_id: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy over the choices' scores) on held-out items; items of several tasks
    give the mean over tasks of each task's figure (as AvgAcc weighs them), not the pooled one."""
    return validate_tasks(model, items, pad_id)[:2]


def validate_tasks(model: Any, items: Sequence[Encoded],
                   pad_id: int) -> tuple[float, float, dict[str, float]]:
    """``validate``'s (accuracy, loss), and each task's held-out accuracy."""
    was_training = model.training
    model.eval()
    try:
        scores = score(model, items, pad_id)
    finally:
        model.train(was_training)
    right: dict[str, list[float]] = {}
    nll: dict[str, list[float]] = {}
    for s, it in zip(scores, items):
        right.setdefault(it.task, []).append(float(int(np.argmax(s)) == it.label))
        nll.setdefault(it.task, []).append(float(np.logaddexp.reduce(s) - s[it.label]))
    per_task = {t: float(np.mean(v)) for t, v in right.items()}
    acc = float(np.mean(list(per_task.values())))
    loss = float(np.mean([np.mean(v) for v in nll.values()]))
    return acc, loss, per_task


def batches_for(n_items: int, lengths: Sequence[int], cfg: TrainConfig, rng: np.random.RandomState) -> list[list[int]]:
    """``cfg.steps`` batches of indices: epochs of shuffled items, length-bucketed within windows."""
    out: list[list[int]] = []
    window = cfg.batch_size * 16
    while len(out) < cfg.steps:
        perm = rng.permutation(n_items)
        epoch: list[list[int]] = []
        for start in range(0, n_items, window):
            chunk = sorted(perm[start: start + window], key=lambda i: lengths[i])
            epoch.extend(chunk[j: j + cfg.batch_size] for j in range(0, len(chunk), cfg.batch_size))
        rng.shuffle(epoch)
        out.extend(b for b in epoch if b)
    return [list(map(int, b)) for b in out[: cfg.steps]]


def micro_batches(batch: Sequence[Encoded], max_tokens: int, objective: str = "lm") -> list[list[Encoded]]:
    """Split a batch, in order, into chunks of at most ``max_tokens`` padded positions (one item at least).
    An item's row: its prompt and gold label, or under the ``choices`` objective with multi-token labels its
    prompt and every label (:func:`~adaptive_learner.scoring.choice_scores`)."""
    chunks: list[list[Encoded]] = []
    cur: list[Encoded] = []
    width = 0
    for it in batch:
        packed = objective == "choices" and any(len(c) > 1 for c in it.choices)
        n = len(it.prompt) + (sum(map(len, it.choices)) if packed else len(it.choices[it.label]))
        if cur and (len(cur) + 1) * max(width, n) > max_tokens:
            chunks.append(cur)
            cur, width = [], 0
        cur.append(it)
        width = max(width, n)
    if cur:
        chunks.append(cur)
    return chunks


def sample_choices(batch: Sequence[Encoded], k: int, rng: np.random.RandomState) -> list[Encoded]:
    """Each item with more than ``k`` labels of which one has several tokens, narrowed to its gold label and
    ``k - 1`` others drawn without replacement (their order kept, the label index moved with them); the rest as
    they are. The ``choices`` objective over a sample of the labels (``TrainConfig.choice_sample``)."""
    out = []
    for it in batch:
        n = len(it.choices)
        if n <= k or all(len(c) == 1 for c in it.choices):
            out.append(it)
            continue
        others = rng.choice([j for j in range(n) if j != it.label], size=k - 1, replace=False)
        keep = sorted([it.label, *others.tolist()])
        out.append(replace(it, choices=[it.choices[j] for j in keep], label=keep.index(it.label)))
    return out


def loss_units(item: Encoded, objective: str) -> int:
    """What :func:`label_loss` averages ``item``'s part over: one item under ``choices``, its gold label's tokens
    under ``lm``."""
    return 1 if objective == "choices" else len(item.choices[item.label])


def single_token(batch: Sequence[Encoded]) -> bool:
    """Every choice of every item is one token (the ``choices`` objective applies)."""
    return all(len(c) == 1 for it in batch for c in it.choices)


def label_loss(model: Any, batch: list[Encoded], pad_id: int, device: torch.device,
               share_prefix: bool = True, objective: str = "choices", pack: bool = False
               ) -> tuple[torch.Tensor, int, int]:
    """The training loss of a batch; logits computed only where needed.

    ``choices``: cross-entropy of the gold label against the task's other labels, over the scores the
    classifier decides by: with single-token choices from the prompt's last position alone, with no pull
    on the rest of the vocabulary; with multi-token choices over each label's (mean or summed) token
    log-likelihood, every label after the prompt in one packed row (:func:`~adaptive_learner.scoring.choice_scores`;
    where the model cannot take that, ``lm``). ``lm``: cross-entropy of the gold verbalizer tokens over the
    whole vocabulary, averaged over those tokens.
    The prompt prefix shared by the whole batch runs once (:func:`~adaptive_learner.scoring.tail_logits`);
    ``pack``: the rest runs as one padding-free sequence.
    Returns the loss, the examples' tokens, and the token positions actually computed.
    """
    if objective == "choices" and single_token(batch):
        seqs = [b.prompt for b in batch]
        if len({len(b.choices) for b in batch}) == 1:
            # the output layer applied to the choice tokens' rows alone
            logits, positions = choice_logits(model, seqs, [[c[0] for c in b.choices] for b in batch], pad_id,
                                              device, share_prefix=share_prefix, pack=pack)
            gold = torch.as_tensor([b.label for b in batch], device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits, gold)
            return loss, sum(len(s) + 1 for s in seqs), positions
        tail = tail_logits(model, seqs, pad_id, device, 1, share_prefix=share_prefix, pack=pack)
        losses = [-torch.log_softmax(tail.logits[row, -1, [c[0] for c in b.choices]], dim=-1)[b.label]
                  for row, b in enumerate(batch)]
        return torch.stack(losses).mean(), sum(len(s) + 1 for s in seqs), tail.positions
    if objective == "choices":  # multi-token labels: every label's score from one forward, the prompt run once
        packed = choice_scores(model, batch, pad_id, device, share_prefix=share_prefix)
        if packed is not None:
            scores, positions = packed
            losses = [-torch.log_softmax(sc, dim=-1)[b.label] for sc, b in zip(scores, batch)]
            return torch.stack(losses).mean(), sum(len(b.prompt) + sum(map(len, b.choices)) for b in batch), positions
    seqs = [b.prompt + b.choices[b.label] for b in batch]
    lens = [len(b.choices[b.label]) for b in batch]
    keep = max(lens) + 1
    tail = tail_logits(model, seqs, pad_id, device, keep, share_prefix=share_prefix, pack=pack)
    losses = []
    for row, n in enumerate(lens):
        pred = tail.logits[row, keep - n - 1: keep - 1, :]
        tgt = tail.input_ids[row, -n:]
        losses.append(torch.nn.functional.cross_entropy(pred, tgt, reduction="sum"))
    if objective == "choices":  # its fallback: each item's gold tokens, the items weighted alike as in choices
        return torch.stack([x / n for x, n in zip(losses, lens)]).mean(), sum(len(s) for s in seqs), tail.positions
    return torch.stack(losses).sum() / sum(lens), sum(len(s) for s in seqs), tail.positions


def param_groups(params: dict[str, torch.nn.Parameter], cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups for one adapter's ``params``: with ``cfg.lora_plus_ratio`` != 1 the B matrices
    (peft's ``lora_B``) at that many times ``cfg.lr``, as peft's ``create_loraplus_optimizer`` groups them (which
    takes a whole model's trainable parameters, where a strategy's other adapters may be)."""
    if cfg.lora_plus_ratio == 1.0:
        return [{"params": list(params.values())}]
    b = [p for n, p in params.items() if "lora_B" in n]
    return [{"params": [p for n, p in params.items() if "lora_B" not in n]},
            {"params": b, "lr": cfg.lr * cfg.lora_plus_ratio}]


def _schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(0, cfg.warmup_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if cfg.schedule == "linear":
            return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))
        return 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def ema_decay(decay: float, step: int) -> float:
    """The moving average's decay after optimizer step ``step`` (1-based): ``decay``, lower while few steps
    have been averaged (tf.train.ExponentialMovingAverage's ``num_updates`` rule), so the start's weights
    fade out within the first steps."""
    return min(decay, (1 + step) / (10 + step))


def _swap(params: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    """Exchange the values of ``params`` and ``other`` in place."""
    with torch.no_grad():
        for n, p in params.items():
            held = p.detach().clone()
            p.copy_(other[n])
            other[n].copy_(held)


def train_adapter(host: Any, adapter: str, items: Sequence[Encoded], cfg: TrainConfig,
                  regularisers: Sequence[Regulariser] = (), desc: str | None = None,
                  accelerator: Any = None, on_step: Callable[[int, Any], None] | None = None,
                  checkpoint: StepCheckpoint | None = None) -> TrainReport:
    """Train the adapter ``adapter`` of ``host`` on ``items`` with the given regularisers.

    With early stopping (``cfg.early_stop``) a part of ``items`` is held out (:func:`split_validation`),
    scored before training and every ``cfg.eval_every`` steps; training ends after ``cfg.patience``
    scores without improvement (``cfg.monitor``: a held-out loss ``cfg.min_delta`` below the best, or a
    higher held-out accuracy), or at ``cfg.steps``, and the adapter is left at the best weights; a task too
    small to hold any out stops once its training examples are fitted (``FIT_LOSS``). With an
    ``accelerate.Accelerator``, the model and optimizer are prepared by it and each process trains on
    its shard of every batch (data parallel); gradients are averaged by it. ``on_step(step, model)``,
    when given, is called after every optimizer step with the model in eval mode and gradients off.
    ``checkpoint``: save the loop's state every ``checkpoint.every_s`` seconds, and continue from a state
    saved by an interrupted call of the same run, task, adapter, config and data (``training/resume.py``);
    the weights and losses are those of an uninterrupted call. Not with several processes.
    ``cfg.ema`` > 0: an exponential moving average of the weights (:func:`ema_decay`) is what the held-out
    checks score and what is kept (without held-out examples: the average at the last step).
    ``cfg.lr_retries`` > 0: when the kept weights did not learn the task (:func:`worth_retrying`),
    the adapter goes back to its starting weights and trains again at half the rate (each retry is a call of
    its own for ``checkpoint``), and the attempt whose kept held-out point is better (:func:`improvement`) is
    kept. Not with several processes (the model is prepared once).
    """
    if not items:
        raise ValueError("no training examples")
    host.activate(adapter)
    params = host.trainable(adapter)
    retries = cfg.lr_retries if accelerator is None or accelerator.num_processes == 1 else 0
    start = {n: p.detach().clone() for n, p in params.items()} if retries else None
    torch.manual_seed(cfg.seed)  # before the regularisers' begin, which may sample (generated replay)
    for r in regularisers:
        r.begin(host, adapter)
    rep = _train_attempt(host, adapter, items, cfg, regularisers, desc, accelerator, on_step, checkpoint)
    rep.lr = cfg.lr
    tried = [rep]
    for k in range(retries):
        if not worth_retrying(rep):
            break
        kept = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        torch.manual_seed(cfg.seed)
        lr = cfg.lr * 0.5 ** (k + 1)
        again = _train_attempt(host, adapter, items, replace(cfg, lr=lr), regularisers,
                               f"{desc or f'train {adapter}'} (lr {lr:g})", accelerator, on_step, checkpoint)
        again.lr = lr
        tried.append(again)
        if improvement(cfg.monitor, cfg.min_delta, kept_point(rep), kept_point(again))[0]:
            rep = again
        else:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(kept[n])
    for r in regularisers:
        r.end(host, adapter, items)
    if len(tried) > 1:
        rep.attempts = [{"lr": t.lr, "steps": t.steps, "seconds": round(t.seconds, 2), "best_step": t.best_step,
                         "accuracy": (kept_point(t) or {}).get("accuracy"), "learned": adapter_learned(t),
                         "kept": t is rep} for t in tried]
        rep.steps, rep.examples, rep.tokens, rep.positions = (sum(getattr(t, f) for t in tried) for f in
                                                               ("steps", "examples", "tokens", "positions"))
        rep.seconds = sum(t.seconds for t in tried)
    return rep


def _train_attempt(host: Any, adapter: str, items: Sequence[Encoded], cfg: TrainConfig,
                   regularisers: Sequence[Regulariser], desc: str | None, accelerator: Any,
                   on_step: Callable[[int, Any], None] | None, checkpoint: StepCheckpoint | None) -> TrainReport:
    """One training run of ``train_adapter`` at ``cfg.lr``, from the adapter's current weights (the
    regularisers' ``begin`` and ``end`` are the caller's)."""
    model = host.model
    params = host.trainable(adapter)
    device = next(model.parameters()).device
    rng = np.random.RandomState(cfg.seed)
    train_items, val_items = split_validation(items, cfg)
    opt = torch.optim.AdamW(param_groups(params, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _schedule(opt, cfg)
    plan = batches_for(len(train_items), [len(it.prompt) for it in train_items], cfg, rng)
    if accelerator is not None:
        model, opt = accelerator.prepare(model, opt)
        device = accelerator.device
    pad_id = host.backbone.tokenizer.pad_token_id
    curve: list[dict[str, float]] = []
    best: dict[str, float] | None = None  # the curve's point of the kept weights
    best_step, best_state, since_best = 0, None, 0
    fitted_at: int | None = None  # without held-out examples: the step the training examples were first fitted
    fit_window = max(cfg.eval_every, -(-len(train_items) // cfg.batch_size))  # an epoch, at least eval_every steps
    stop_when_fitted = cfg.early_stop and not val_items
    ema = {n: p.detach().clone() for n, p in params.items()} if cfg.ema > 0 else None

    def check(step: int) -> bool:
        """Score the held-out items; remember the weights when they are better (``improvement``). True
        when patience has run out. With ``ema``: the average's weights are scored and remembered."""
        nonlocal best, best_step, best_state, since_best
        if ema is not None:
            _swap(params, ema)
        try:
            acc, loss, per_task = validate_tasks(model, val_items, pad_id)
        finally:
            if ema is not None:
                _swap(params, ema)
        curve.append({"step": step, "accuracy": round(acc, 4), "loss": round(loss, 4)})
        if len(per_task) > 1:  # a joint run: each task's own held-out accuracy beside their mean
            curve[-1]["tasks"] = {t: round(a, 4) for t, a in per_task.items()}
        keep, reset = improvement(cfg.monitor, cfg.min_delta, best, curve[-1])
        if keep:
            best, best_step = curve[-1], step
            best_state = {n: (p if ema is None else ema[n]).detach().clone() for n, p in params.items()}
        since_best = 0 if reset else since_best + 1
        return since_best >= cfg.patience

    losses: list[float] = []
    n_ex = n_tok = n_pos = 0
    start, before = 0, 0.0  # steps done and seconds spent by an interrupted call this one continues
    if checkpoint is not None and accelerator is not None and accelerator.num_processes > 1:
        checkpoint = None
    if checkpoint is not None:
        key = (checkpoint.begin_call(), adapter, checkpoint_config(cfg), plan_hash(plan, len(train_items)))

        def save_state(step: int) -> None:
            doc, tensors = capture(params, best_state, opt, sched, rng)
            tensors.update({f"ema/{n}": t for n, t in (ema or {}).items()})
            checkpoint.save(key, {**doc, "step": step, "losses": losses, "counts": [n_ex, n_tok, n_pos],
                                  "curve": curve, "best": best, "best_step": best_step, "since_best": since_best,
                                  "fitted_at": fitted_at, "seconds": before + time.perf_counter() - t0}, tensors)

        saved = checkpoint.load(key)
        if saved is not None:
            state, tensors = saved
            best_state = restore(state, tensors, params, opt, sched, rng)
            if ema is not None:
                ema = {n: tensors[f"ema/{n}"].clone() for n in params}
            start, before, losses = int(state["step"]), float(state["seconds"]), list(state["losses"])
            n_ex, n_tok, n_pos = state["counts"]
            curve, best, best_step, since_best = state["curve"], state["best"], state["best_step"], state["since_best"]
            fitted_at = state.get("fitted_at")
    if val_items and start == 0:
        check(0)
    model.train()
    stopped = "steps"
    t0 = time.perf_counter()
    bar = tqdm(plan[start:], desc=desc or f"train {adapter}", leave=False, initial=start, total=len(plan),
               disable=accelerator is not None and not accelerator.is_local_main_process)
    for step, idx in enumerate(bar, start=start + 1):
        batch = [train_items[i] for i in idx]
        for r in regularisers:
            batch = r.mix(batch, rng)
        if cfg.choice_sample and cfg.objective == "choices":
            batch = sample_choices(batch, cfg.choice_sample, rng)
        if accelerator is not None:
            batch = batch[accelerator.process_index:: accelerator.num_processes] or batch[:1]
        opt.zero_grad(set_to_none=True)
        # micro-batches: each chunk's mean loss weighted by its share of what the loss averages over (items under
        # choices, the gold labels' tokens under lm), so the accumulated gradient is the full batch's; the
        # regularisers' penalties join the last backward
        chunks = micro_batches(batch, cfg.max_batch_tokens, cfg.objective)
        n_label = sum(loss_units(b, cfg.objective) for b in batch)
        loss_value = 0.0
        for k, chunk in enumerate(chunks):
            part, tokens, positions = label_loss(model, chunk, pad_id, device, objective=cfg.objective,
                                                 pack=cfg.pack)
            part = part * (sum(loss_units(b, cfg.objective) for b in chunk) / n_label)
            loss_value += part.item()
            n_tok += tokens
            n_pos += positions
            last = k == len(chunks) - 1
            if last:
                for r in regularisers:
                    extra = r.penalty(params)
                    if extra is not None:
                        part = part + extra
            if accelerator is None:
                part.backward()
            elif last:
                accelerator.backward(part)
            else:
                with accelerator.no_sync(model):
                    accelerator.backward(part)
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            d = ema_decay(cfg.ema, step)
            with torch.no_grad():
                for n, p in params.items():
                    ema[n].lerp_(p.detach(), 1.0 - d)
        losses.append(loss_value)
        n_ex += len(batch)
        if on_step is not None:  # e.g. a learning curve scored on test examples (benchmarks/learnability.py)
            model.eval()
            with torch.no_grad():
                on_step(step, model)
            model.train()
        post = {"loss": f"{np.mean(losses[-10:]):.3f}"}
        if val_items and (step % cfg.eval_every == 0 or step == len(plan)):
            done = check(step)
            post["val_acc"] = f"{curve[-1]['accuracy']:.3f}"
            post["kept"] = f"step {best_step}"
            bar.set_postfix(post)
            if done:
                stopped = "patience"
                break
        if stop_when_fitted:
            if fitted_at is None and step >= fit_window and np.mean(losses[-fit_window:]) < FIT_LOSS:
                fitted_at = step
            if fitted_at is not None:
                post["fitted"] = f"step {fitted_at}"
                if step >= fitted_at + cfg.eval_every:
                    bar.set_postfix(post)
                    stopped = "fitted"
                    break
        bar.set_postfix(post)
        if checkpoint is not None and step < len(plan) and checkpoint.due():
            save_state(step)
    bar.close()
    model.eval()
    if best_state is None and ema is not None:
        best_state = ema  # nothing held out: the average at the last step
    if best_state is not None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(best_state[n])
    seconds = before + time.perf_counter() - t0
    final = float(np.mean(losses[-10:])) if losses else float("nan")
    return TrainReport(len(losses), n_ex, n_tok, seconds, final, losses, n_pos, curve,
                       best_step if val_items else None, stopped, held_out_majority(val_items), len(val_items))


def held_out_majority(val_items: Sequence[Encoded]) -> float | None:
    """The held-out majority-class rate (a joint run: the mean of each task's); None when nothing is held out."""
    if not val_items:
        return None
    groups = [[it.label for it in val_items if it.task == t] for t in dict.fromkeys(it.task for it in val_items)]
    return float(np.mean([max(Counter(g).values()) / len(g) for g in groups]))
