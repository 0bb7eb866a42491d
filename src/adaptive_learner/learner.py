"""The Python API: a library of adapters on a frozen backbone that learns tasks and answers inputs.

    from adaptive_learner import Learner
    learner = Learner("my-lib", backbone="smollm2-135m")
    outcome = learner.learn(load_catalog_task("sst2"))
    learner.predict(["a gorgeous, witty film"], task="sst2")
    learner.predict(["a gorgeous, witty film"])  # no task: each input is routed to a learned task
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .adapters import BASE, AdapterHost, LoraSettings
from .backbone import DEFAULT_BACKBONE, Backbone, dtype_name, load_backbone, resolve_device, resolve_dtype
from .errors import LibraryError, UserError
from .evaluation.retention import Retention, TaskCheck, load_check, retention, stage_check
from .library import MANIFEST, AdapterLibrary
from .features import FeatureConfig
from .prompting import encode_examples
from .router.inference import answer_routed, split_fields
from .router.service import LibraryRouter
from .router.warm_start import DEFAULT_INIT, check_init, warm_start_source
from .router.store import load_profiles, save_profile, write_router_state
from .scoring import score
from .tasks.spec import Example, TaskData, check_name
from .training import FeatureHead, TrainConfig, TrainReport, fit_task_head, load_head, stage_head, train_adapter
from .training.trainer import adapter_learned, kept_point, learned_verdict
from .training.forgetting import ForgettingOptions, make_forgetting_regularisers, store_forgetting_state

UNKNOWN = "unknown"  # the label of a routed input that belongs to no learned task


@dataclass
class LearnOutcome:
    """What ``learn`` did: the decision, the adapter, and accuracy before/after on the task's test split."""

    task: str
    action: str
    adapter: str
    confidence: float
    explanation: str
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    train: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None  # the router's decision as JSON (None when the user forced it)
    init_from: str | None = None  # the adapter a new one was copied from (None: fresh or reused)
    # on reuse: the adapter's other tasks on their stored test examples, when learned and now (evaluation/retention.py)
    retention: list[Retention] = field(default_factory=list)
    rejected: str | None = None  # with guard: the adapter whose reuse cost another task, left as it was


PREFIX_ADAPTERS = 16  # adapters whose prompt prefixes predict keeps (scoring.PREFIXES_KEPT each)


@dataclass
class Prediction:
    """One answered input."""

    text: str
    task: str
    adapter: str
    label: str
    confidence: float
    route_confidence: float | None = None  # when the task was inferred: the router's posterior for it
    novelty: float | None = None  # when inferred: distance to the nearest learned task over its threshold
    nearest_label: str | None = None  # an input of no learned task (label "unknown"): the nearest task's answer


class Learner:
    """A frozen backbone plus the adapter library at ``path``.

    ``device``: where it trains and scores (``auto``: a CUDA GPU when there is one); ``dtype``: the precision
    the backbone loads in, ``float32`` or ``bfloat16`` (ignored when ``backbone`` is an already loaded
    :class:`Backbone`); neither changes the library's files. ``score_batch``: inputs per scoring forward in
    ``predict`` (default: :func:`~adaptive_learner.scoring.batch_for` the device)."""

    def __init__(self, path: str | Path, backbone: str | Backbone | None = None, lora: LoraSettings | None = None,
                 train: TrainConfig | None = None, create: bool = True,
                 forgetting: ForgettingOptions | None = None, router: str = "calibrated",
                 features: FeatureConfig | None = None, init: str = DEFAULT_INIT, device: str = "auto",
                 dtype: str = "float32", score_batch: int | None = None) -> None:
        self.path = Path(path)
        if score_batch is not None and score_batch <= 0:
            raise UserError(f"the scoring batch must be positive, got {score_batch}")
        self.score_batch = score_batch
        self.device = resolve_device(device)  # auto: a CUDA GPU when there is one; the library is the same either way
        dtype = resolve_dtype(dtype)  # the backbone's precision (float32 or bfloat16); the library is the same either way
        self.router_kind = router
        self.init = check_init(init, "--init")  # where a router-made new adapter starts: nearest | fresh
        self.features = features  # for a new library; an existing one keeps the settings it was built with
        self.train_cfg = train or TrainConfig()
        # EWC + replay state is kept for every adapter and used whenever one is reused
        self.forgetting = forgetting or ForgettingOptions.from_mapping(
            {"replay_max_length": self.train_cfg.max_length}, seed=self.train_cfg.seed)
        exists = (self.path / MANIFEST).exists()
        if not exists and not create:
            raise LibraryError(f"no adapter library at {self.path}")
        if exists:
            # the backbone is fixed when the library is created; read it from the manifest
            stored = AdapterLibrary.open(self.path, verify=True)
            name = stored.backbone["name"]
            if isinstance(backbone, str) and backbone not in (name, None):
                raise LibraryError(f"library {self.path} was built on {name!r}, not {backbone!r}")
            self.backbone = backbone if isinstance(backbone, Backbone) else load_backbone(name, device=self.device, dtype=dtype)
            self.library = AdapterLibrary.open(self.path, self.backbone.identity, verify=False)
            self.lora = LoraSettings(**self.library.manifest.get("lora", {}))
            if lora is not None and lora != self.lora:
                raise LibraryError(f"library {self.path} was built with LoRA settings {_lora_dict(self.lora)}, "
                                   f"not {_lora_dict(lora)}")
        else:
            self.backbone = (backbone if isinstance(backbone, Backbone)
                             else load_backbone(backbone or DEFAULT_BACKBONE, device=self.device, dtype=dtype))
            self.lora = lora or LoraSettings()
            self.lora.to_peft(self.backbone.model)  # a setting the backbone cannot take fails before any file is written
            # exist_ok: another process may create it at the same moment; then both use that one
            self.library = AdapterLibrary.create(self.path, self.backbone.identity, _lora_dict(self.lora),
                                                 exist_ok=True)
            self.lora = LoraSettings(**self.library.manifest.get("lora", {}))
        self.dtype = dtype_name(next(self.backbone.model.parameters()).dtype)  # recorded with each learn
        self.host = AdapterHost(self.backbone, self.lora)
        self._loaded: dict[str, str] = {}  # adapter -> updated stamp loaded
        # prompt prefixes run for predict, by adapter (BASE: the backbone), kept while its loaded weights stay
        self._prefixes: dict[str, list[Any]] = {}
        self._router: tuple[str, LibraryRouter] | None = None
        self._heads: dict[str, tuple[Any, FeatureHead | None]] = {}  # task -> (stored version, head)
        self._profiles: tuple[Any, list[Any]] | None = None  # (stored versions, profiles) for routing

    @property
    def router(self) -> LibraryRouter:
        """The router over this library (rebuilt when the library's stored router settings change)."""
        import json

        key = json.dumps(self.library.manifest.get("router"), sort_keys=True)
        if self._router is None or self._router[0] != key:
            self._router = (key, LibraryRouter.for_library(self.host, self.library, self.router_kind, self.features))
        return self._router[1]

    def decide(self, task: TaskData, only: Sequence[str] | None = None, answer_trial: bool = True):
        """The router's reuse-or-create decision for ``task`` (nothing is trained or written); ``only``:
        as if the library held just these adapters; ``answer_trial``: let stored adapters answer the
        examples when the signals say new (``router.decision``; off: the signals alone)."""
        if not task.train:
            raise UserError(f"task {task.name} has no training examples")
        self.library.reload()
        stored = load_profiles(self.library)  # a task learned again is its own best candidate
        if only is not None:
            keep = set(only)
            stored = [p for p in stored if p.adapter in keep]
        examples = self.router.probe_examples(task)

        def trial(adapters: Sequence[str]) -> dict[str, dict[str, float]]:
            from .router.trial import run_trial

            return run_trial(self.host, task.spec, examples, adapters, self.train_cfg.max_length,
                             ensure_loaded=self.ensure_loaded)

        def ask(candidates: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
            from .router.trial import run_answer_trial

            asked = [(a, self.library.task_spec(t)) for a, t in candidates if a in self.library.adapters]
            return run_answer_trial(self.host, task.spec, examples, asked, self.train_cfg.max_length,
                                    ensure_loaded=self.ensure_loaded, seed=self.train_cfg.seed)
        decision = self.router.decide(task, stored, trial, self.router.probe(task, self.train_cfg.max_length),
                                      ask if answer_trial else None)
        if decision.action == "new":
            decision.adapter = self._fresh_name(task.name)
        return decision

    # ------------------------------------------------------------------ adapters in memory
    def ensure_loaded(self, adapter: str) -> None:
        """Load ``adapter`` from the library into memory unless the current version is already there."""
        stamp = self.library.adapters[adapter].get("updated", "")
        if self._loaded.get(adapter) != stamp or adapter not in self.host.names:
            self.host.load(adapter, self.library.adapter_dir(adapter))
            self._loaded[adapter] = stamp
            self._prefixes.pop(adapter, None)

    def forget(self, adapter: str) -> None:
        """Drop ``adapter`` from memory (deleted from the library)."""
        if adapter in self.host.names:
            self.host.delete(adapter)
        self._loaded.pop(adapter, None)
        self._prefixes.pop(adapter, None)

    def _prefix_store(self, adapter: str | None) -> list[Any]:
        """``adapter``'s kept prompt prefixes (a prefix of smollm2 is ~2 MB): the adapters used last keep theirs."""
        key = adapter or BASE
        store = self._prefixes.pop(key, [])
        self._prefixes[key] = store  # most recent last
        while len(self._prefixes) > PREFIX_ADAPTERS:
            del self._prefixes[next(iter(self._prefixes))]
        return store

    def evaluate(self, task: TaskData, adapter: str | None, limit: int | None = None,
                 head: FeatureHead | None = None) -> float:
        """Accuracy on the task's test split with ``adapter`` (None: the backbone), mixed with ``head``."""
        return _accuracy(self._correct(task.spec, task.test[:limit], adapter, head))

    def _correct(self, spec: Any, examples: Sequence[Example], adapter: str | None,
                 head: FeatureHead | None) -> np.ndarray:
        """1/0 per example: does ``adapter`` (None: the backbone), mixed with ``head``, rank its label first?"""
        answers = self._answers(spec, examples, adapter, head)
        return (answers == np.array([e.label for e in examples], dtype=int)).astype(int)

    def _answers(self, spec: Any, examples: Sequence[Example], adapter: str | None,
                 head: FeatureHead | None) -> np.ndarray:
        """The label index ``adapter`` (None: the backbone), mixed with ``head``, ranks first, per example."""
        items = encode_examples(self.backbone.tokenizer, spec, examples, self.train_cfg.max_length)
        if adapter is not None and adapter in self.library.adapters:
            self.ensure_loaded(adapter)
        return np.array([int(np.argmax(s)) for s in self._scores(adapter, items, head)], dtype=int)

    def check(self, tasks: Sequence[str] | None = None) -> list[Retention | str]:
        """Each task (default: every learned task) scored again on the test examples stored when it was
        learned: a :class:`Retention` (then, now, the paired change), or the task's name where it has no
        stored examples (learned by a release before checks were kept)."""
        self.library.reload()
        names = list(tasks) if tasks is not None else sorted(self.library.tasks)
        for t in names:
            self.task_spec(t)  # every name known before anything is scored
        return [self._recheck(t) or t for t in names]

    def task_spec(self, task: str) -> Any:
        """The spec of a learned task (a user's mistake, one line, when there is none)."""
        if task not in self.library.tasks:
            raise UserError(f"no task {task!r} in library {self.path}; tasks: {sorted(self.library.tasks)}")
        return self.library.task_spec(task)

    def _recheck(self, task: str) -> Retention | None:
        """``task``'s kept examples scored again with its adapter (as in memory) and head; None: none kept."""
        c = load_check(self.library, task)
        if c is None:
            return None
        adapter = self.library.adapter_of(task)
        return retention(c, adapter, self._correct(self.library.task_spec(task), c.examples, adapter,
                                                   self.head_of(task)))

    def score_examples(self, task: str, examples: Sequence[Example], routed: bool = False,
                       abstain: bool = True) -> dict[str, Any]:
        """``task``'s accuracy on labelled ``examples`` (e.g. a user's new test file): with its adapter and
        head, or ``routed`` as inputs without a task id arrive (each input routed by the router; right when
        the answer's label name is the gold one; ``abstain``: an input far from every task counts as
        'unknown', wrong). Returns accuracy, the 1/0 outcomes, and when routed the fraction routed to ``task``."""
        self.library.reload()
        spec = self.task_spec(task)
        gold = [spec.label_names[e.label] for e in examples]
        if not routed:
            adapter = self.library.adapter_of(task)
            said = [spec.label_names[k] for k in self._answers(spec, examples, adapter, self.head_of(task))]
            correct = np.array([a == g for a, g in zip(said, gold)], dtype=int)
            return {"task": task, "adapter": adapter, "examples": len(examples), "accuracy": float(correct.mean()),
                    "per_label": per_label(gold, said, spec.label_names), "correct": correct.tolist()}
        texts = [" ||| ".join(e.fields[f] for f in spec.input_fields) for e in examples]
        answers = self.predict(texts, abstain=abstain)
        said = [p.label for p in answers]
        correct = np.array([a == g for a, g in zip(said, gold)], dtype=int)
        to_task = np.array([p.task == task for p in answers], dtype=float)
        return {"task": task, "routed": True, "examples": len(examples), "accuracy": float(correct.mean()),
                "routed_to_task": float(to_task.mean()),
                "unknown": float(np.mean([p.label == UNKNOWN for p in answers])),
                "routes": dict(sorted(Counter(p.task for p in answers).items())),
                "per_label": per_label(gold, said, spec.label_names), "correct": correct.tolist()}

    def _scores(self, adapter: str | None, items: Sequence[Any], head: FeatureHead | None,
                keep_prefix: bool = False) -> list[np.ndarray]:
        """Per item, the label scores of ``adapter``, mixed with the task's head when it has one
        (``keep_prefix``: the prompt prefix kept between calls; only while the adapter is not training)."""
        pad = self.backbone.tokenizer.pad_token_id
        with self.host.using(adapter) as m:
            scores = score(m, items, pad, self.score_batch,
                           prefixes=self._prefix_store(adapter) if keep_prefix else None)
        return scores if head is None else head.mix_in(self.host, items, scores)

    def _stored_profiles(self) -> list[Any]:
        """Every task's profile, read again only when a task's entry in the manifest changed."""
        key = tuple(sorted((t, i.get("adapter"), i.get("updated", "")) for t, i in self.library.tasks.items()))
        if self._profiles is None or self._profiles[0] != key:
            self._profiles = (key, load_profiles(self.library))
        return self._profiles[1]

    def head_of(self, task: str) -> FeatureHead | None:
        """The task's stored head (None: its adapter answers alone)."""
        adapter = self.library.adapter_of(task)
        key = (task, self.library.adapters[adapter].get("updated", ""), self.library.tasks[task].get("updated", ""))
        cached = self._heads.get(task)
        if cached is None or cached[0] != key:
            cached = (key, load_head(self.library, task))
            self._heads[task] = cached
        return cached[1]

    # ------------------------------------------------------------------ learning
    def learn(self, task: TaskData, force_new: bool = False, reuse: str | None = None,
              adapter_name: str | None = None, eval_limit: int | None = 200, dry_run: bool = False,
              guard: bool = False) -> LearnOutcome:
        """Learn a task: the router decides reuse-or-create (unless forced), then train, and commit
        adapter, spec, profile and history atomically. ``dry_run``: decide only, change nothing.
        ``guard``: when a reuse costs one of the adapter's other tasks accuracy on its kept test examples
        (the paired interval below 0), keep that adapter as it was and keep the weights the task trained there
        as a new adapter of its own instead (no second training)."""
        if not task.train:
            raise UserError(f"task {task.name} has no training examples")
        if reuse is not None and reuse not in self.library.adapters:
            raise UserError(f"--reuse {reuse}: no such adapter; adapters: {sorted(self.library.adapters)}")
        if dry_run and reuse is None and not force_new:
            d = self.decide(task)
            return LearnOutcome(task.name, d.action, d.adapter, d.confidence, d.explanation, decision=d.to_json())
        self._prefixes.clear()  # adapters in memory may train below: no prefix of theirs is kept
        with self.library.locked():
            self.library.reload()
            decision = None
            if reuse is not None:
                if reuse not in self.library.adapters:
                    raise UserError(f"--reuse {reuse}: no such adapter; adapters: {sorted(self.library.adapters)}")
                action, adapter, conf, why = "reuse", reuse, 1.0, f"reuse forced by the user: {reuse}"
            elif force_new or adapter_name is not None:
                adapter = check_name(adapter_name or self._fresh_name(task.name), "adapter")
                action, conf, why = "new", 1.0, "new adapter forced by the user"
            else:
                decision = self.decide(task)
                action, adapter, conf, why = decision.action, decision.adapter, decision.confidence, \
                    decision.explanation
            if dry_run:
                return LearnOutcome(task.name, action, adapter, conf, why)
            before = self.evaluate(task, adapter if action == "reuse" else None, eval_limit)
            items = encode_examples(self.backbone.tokenizer, task.spec, task.train, self.train_cfg.max_length)
            init_from = None
            if action == "reuse":
                self.ensure_loaded(adapter)
            else:
                # a router-made new adapter starts from its best candidate (forward transfer); forced: fresh
                if decision is not None:
                    init_from = warm_start_source(self.init, decision, self.library.adapters)
                if init_from is not None:
                    self.ensure_loaded(init_from)
                self.host.create(adapter, seed=self.train_cfg.seed, init_from=init_from)
            gain = conf if decision is not None else 1.0
            checked = task.test[:eval_limit]
            regs, rep, head, head_report, after_correct = self._train(task, items, action, adapter, gain, checked)
            # the adapter's other tasks on their stored examples: did this task cost them anything?
            kept = self._retention_of(adapter, task.name) if action == "reuse" else []
            rejected = None
            lost = [r for r in kept if r.verdict == "lost"]
            if guard and lost:
                # the weights the reuse trained become a new adapter of this task alone (no second training: its
                # head and test outcomes stay those just measured), and the reused one goes back as stored (its
                # state on disk was never touched)
                rejected = adapter
                adapter, action, init_from = check_name(self._fresh_name(task.name), "adapter"), "new", rejected
                self.host.create(adapter, seed=self.train_cfg.seed, init_from=rejected)
                self._loaded.pop(rejected, None)  # what is in memory is not the stored version: load that
                self.ensure_loaded(rejected)
                self.host.activate(adapter)
                why = (f"reusing {rejected} cost " + ", ".join(f"{r.task} {100 * r.change.mean:+.1f} points"
                                                              for r in lost)
                       + f" on its kept examples: {rejected} left as it was, the weights this task trained there "
                       f"kept as a new adapter {adapter} (guard)")
                regs = self._fresh_state(task, items, adapter)
            after = _accuracy(after_correct)
            train_summary = {"steps": rep.steps, "examples": rep.examples, "seconds": round(rep.seconds, 1),
                             "final_loss": round(rep.final_loss, 4), "regularisers": [r.name for r in regs],
                             "lr": rep.lr, "stopped": rep.stopped, "best_step": rep.best_step,
                             "monitor": self.train_cfg.monitor, "dtype": self.dtype,
                             "validation": rep.validation, "head": head_report,
                             **({"attempts": rep.attempts} if rep.attempts else {}),
                             **held_out_verdict(rep, head_report), "adapter_learned": adapter_learned(rep)}
            profile = self.router.profile(task, self.train_cfg.max_length)
            with self.library.transaction(timeout=0) as tx:
                tx.save_adapter(self.host, adapter, trainable_params=self.host.count_trainable(adapter))
                save_profile(tx, adapter, profile)  # before set_task: it drops a profile the task leaves behind
                stage_head(tx, adapter, task.name, head)  # the same
                if checked:
                    stage_check(tx, adapter, TaskCheck(task.name, list(checked), after_correct.tolist()))
                write_router_state(tx, self.router.features, self.router.extractor.encoder_name, self.router.combiner)
                # adapter_learned: whether the adapter itself learned the task; the router offers no adapter
                # for reuse that learned none of its tasks
                tx.set_task(task.spec, adapter, accuracy=after, n_train=len(task.train),
                            adapter_learned=train_summary["adapter_learned"])
                store_forgetting_state(tx, adapter, regs)
                tx.record({"task": task.name, "action": action, "adapter": adapter, "init_from": init_from,
                           "confidence": conf, "train": train_summary,
                           "reason": why, "accuracy_before": before, "accuracy_after": after,
                           **({"retention": [r.to_json() for r in kept]} if kept else {}),
                           **({"rejected": rejected} if rejected else {}),
                           **({"decision": _brief(decision.to_json())} if decision is not None else {})})
            self._loaded[adapter] = self.library.adapters[adapter].get("updated", "")
            self._prefixes.clear()
        return LearnOutcome(task.name, action, adapter, conf, why, before, after, train_summary,
                            decision.to_json() if decision is not None else None, init_from, kept, rejected)

    def _train(self, task: TaskData, items: Sequence[Any], action: str, adapter: str, gain: float,
               checked: Sequence[Example]
               ) -> tuple[list[Any], TrainReport, FeatureHead | None, dict[str, Any], np.ndarray]:
        """Train ``adapter`` (in memory, active) on ``items`` with its regularisers, fit the task's head, and
        score ``checked`` (the task's test examples) with both: 1/0 per example."""
        # a new adapter starts fresh state; a reused one continues its stored Fisher and buffer
        regs = make_forgetting_regularisers(self.library if action == "reuse" else None, adapter,
                                            self.forgetting, task, gain=gain)
        rep = train_adapter(self.host, adapter, items, self.train_cfg, regs, desc=f"learn {task.name} -> {adapter}")
        head, head_report = fit_task_head(self.host, adapter, items, self.train_cfg,
                                          encoder=self.router.extractor.encoder_name) if self.train_cfg.head \
            else (None, {"mix": 1.0, "reason": "head turned off"})
        return regs, rep, head, head_report, self._correct(task.spec, checked, adapter, head)

    def _fresh_state(self, task: TaskData, items: Sequence[Any], adapter: str) -> list[Any]:
        """The forgetting state of a new adapter that already holds ``task`` (EWC's Fisher at its weights, the
        replay buffer with the task's examples), as if it had been trained there: the state the reuse gathered
        belongs to the adapter's other tasks."""
        regs = make_forgetting_regularisers(None, adapter, self.forgetting, task)
        for r in regs:
            r.begin(self.host, adapter)
        for r in regs:
            r.end(self.host, adapter, items)
        return regs

    def _retention_of(self, adapter: str, learning: str) -> list[Retention]:
        """``adapter``'s stored tasks other than ``learning``, scored again with its weights in memory."""
        kept = (self._recheck(t) for t in self.library.adapters[adapter]["tasks"] if t != learning)
        return [r for r in kept if r is not None]

    def _fresh_name(self, task: str) -> str:
        base = f"lora-{task}"[:60]
        name, k = base, 2
        while name in self.library.adapters:
            name, k = f"{base}-{k}", k + 1
        return name

    # ------------------------------------------------------------------ inference
    def predict(self, texts: Sequence[str], task: str | None = None, abstain: bool = True) -> list[Prediction]:
        """Label each text with ``task``'s adapter. Pair tasks take ``first ||| second``.

        Without ``task``, each text is routed to a learned task by its backbone features, and all
        texts are scored by task (each task's prompt prefix shared). With ``abstain``, an input far from
        every learned task (novelty above 1) gets the label ``unknown``; the nearest task, the label
        it would give (``nearest_label``) and the route confidence are still reported. Without
        ``abstain`` the open-set check is skipped (no sentence embedding per input; ``novelty`` None)."""
        if task is None:
            out = self._predict_routed(texts, open_set=abstain)
            if abstain:
                for p in out:
                    if p.novelty is not None and p.novelty > 1.0:
                        p.nearest_label, p.label = p.label, UNKNOWN
            return out
        spec = self.library.task_spec(task)
        adapter = self.library.adapter_of(task)
        self.ensure_loaded(adapter)
        examples = [Example(split_fields(t, spec), 0) for t in texts]
        items = encode_examples(self.backbone.tokenizer, spec, examples, self.train_cfg.max_length)
        scores = self._scores(adapter, items, self.head_of(task), keep_prefix=True)
        out = []
        for t, s in zip(texts, scores):
            p = np.exp(s - s.max())
            p /= p.sum()
            k = int(np.argmax(p))
            out.append(Prediction(t, task, adapter, spec.label_names[k], float(p[k])))
        return out

    def _predict_routed(self, texts: Sequence[str], open_set: bool = True) -> list[Prediction]:
        profiles = self._stored_profiles()
        if not profiles:
            raise UserError(f"library {self.path} has no learned task to route inputs to; give --task")
        specs = {p.task: self.library.task_spec(p.task) for p in profiles}
        answers = answer_routed(self.host, self.router, profiles, specs, texts, self.train_cfg.max_length,
                                self.score_batch, ensure_loaded=self.ensure_loaded, open_set=open_set,
                                prefixes=self._prefix_store, head_of=self.head_of)
        return [Prediction(a.text, a.task, a.adapter, a.label_name, a.probability, a.route_confidence, a.novelty)
                for a in answers]


def _accuracy(correct: np.ndarray) -> float:
    return float(correct.mean()) if correct.size else float("nan")


def per_label(gold: Sequence[str], said: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per label, in the task's order: its examples (support), the fraction of them answered with it (recall),
    how often it was answered, and the fraction of those answers that were right (precision; None if never)."""
    out = []
    for name in labels:
        support = sum(g == name for g in gold)
        answered = sum(a == name for a in said)
        hits = sum(g == name and a == name for g, a in zip(gold, said))
        out.append({"label": name, "support": support, "answered": answered,
                    "recall": hits / support if support else None,
                    "precision": hits / answered if answered else None})
    return out


def held_out_verdict(rep: TrainReport, head_report: dict[str, Any]) -> dict[str, Any]:
    """Was the task learned? The held-out accuracy of what predicts (the kept adapter, or its mix with the
    head) against the held-out majority-class rate (``learned_verdict``); empty without held-out examples."""
    if not rep.val_size or rep.val_majority is None:
        return {}
    table = head_report.get("held_out") or {}
    mix = head_report.get("mix", 1.0)
    if f"{mix:g}" in table:
        acc = table[f"{mix:g}"]["accuracy"]
    else:
        kept = kept_point(rep)
        if kept is None:
            return {}
        acc = kept["accuracy"]
    return {"held_out_accuracy": round(float(acc), 4), "held_out_majority": round(rep.val_majority, 4),
            "held_out_size": rep.val_size, "learned": learned_verdict(float(acc), rep.val_majority, rep.val_size)}


def _brief(decision: dict[str, Any], top: int = 5) -> dict[str, Any]:
    """A decision for the history: the best few candidates only."""
    return {**decision, "candidates": decision["candidates"][:top]}


def _lora_dict(lora: LoraSettings) -> dict[str, Any]:
    from dataclasses import asdict
    return asdict(lora)
