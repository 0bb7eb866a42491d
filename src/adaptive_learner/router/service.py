"""The router working on a library: features of a new task, the decision, profiles, routing inputs.

``LibraryRouter`` is what ``Learner`` and the ``router`` strategy hold. It reads its settings from
the library when the library has them (so every profile stays comparable), computes the new task's
features, asks the decision rule (calibrated or the softmax-threshold baseline), runs the trial on
the short list through the learner's adapters, and routes raw inputs to tasks.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ..features import FeatureConfig, FeatureExtractor, TaskFeatures
from ..tasks.spec import Example, TaskData, stratified_take
from .baseline import CosineInputRouter, SoftmaxThresholdRouter
from .calibration import Combiner
from .decision import RouteDecision, Router, RouterConfig
from .evidence import TaskProfile
from .routing import InputRouter, RoutedInput, count_fields
from .store import router_state

ROUTERS = ("calibrated", "softmax-threshold")


def make_decider(kind: str, combiner: Combiner | None = None, config: RouterConfig | None = None) -> Any:
    """The decision rule named ``kind``."""
    if kind == "calibrated":
        return Router(combiner or Combiner.load(), config)
    if kind == "softmax-threshold":
        return SoftmaxThresholdRouter()
    raise UserError(f"unknown router {kind!r}; available: {', '.join(ROUTERS)}")


def make_input_router(kind: str, profiles: Sequence[TaskProfile], text_view: bool = True) -> Any:
    """The per-input router that goes with a decision rule (``text_view``: see ``routing._TextView``)."""
    return CosineInputRouter(profiles) if kind == "softmax-threshold" else InputRouter(profiles, text_view=text_view)


class LibraryRouter:
    """Features, decisions and input routing over one set of stored task profiles."""

    def __init__(self, host: Any, kind: str = "calibrated", features: FeatureConfig | None = None,
                 combiner: Combiner | None = None, config: RouterConfig | None = None,
                 stored: dict[str, Any] | None = None) -> None:
        if stored is not None:
            # a library fixes its feature settings and combiner at its first profile
            features = FeatureConfig.from_dict(stored["features"])
            combiner = Combiner.from_dict(stored["combiner"])
        self.kind = kind
        self.extractor = FeatureExtractor(host, features)
        if stored is not None and stored.get("encoder") not in (None, self.extractor.encoder_name):
            self.extractor.encoder_name = stored["encoder"]
        self.combiner = combiner or Combiner.load()
        self.decider = make_decider(kind, self.combiner, config)
        self._input_router: tuple[tuple[str, ...], Any] | None = None

    @classmethod
    def for_library(cls, host: Any, library: Any, kind: str = "calibrated",
                    features: FeatureConfig | None = None, config: RouterConfig | None = None) -> "LibraryRouter":
        """A router using the library's stored settings, or the given/default ones for a new library."""
        return cls(host, kind, features, None, config, stored=router_state(library))

    @property
    def features(self) -> FeatureConfig:
        return self.extractor.config

    def probe_examples(self, task: TaskData) -> list[Example]:
        """The k labelled examples a decision looks at (label-stratified, seeded)."""
        return stratified_take(task.train, self.features.k, self.features.seed)

    def profile_examples(self, task: TaskData) -> list[Example]:
        """The examples whose features are stored as the task's profile."""
        return stratified_take(task.train, self.features.profile_examples, self.features.seed + 1)

    def probe(self, task: TaskData, max_length: int = 256) -> TaskFeatures:
        """The new task's features from k examples (description and labels only below ``min_examples``)."""
        examples = self.probe_examples(task)
        if len(examples) < self.features.min_examples:
            examples = []  # too few to say anything about the distribution: a documented fallback
        return self.extractor.task_features(task.spec, examples, max_length)

    def profile(self, task: TaskData, max_length: int = 256) -> TaskFeatures:
        """The features stored for a learned task."""
        return self.extractor.task_features(task.spec, self.profile_examples(task), max_length)

    def decide(self, task: TaskData, profiles: Sequence[TaskProfile], trial: Callable | None = None,
               probe: TaskFeatures | None = None, answer_trial: Callable | None = None) -> RouteDecision:
        """Reuse or create for ``task`` against ``profiles`` (``answer_trial``: see ``router.decision``)."""
        probe = probe if probe is not None else self.probe(task)
        decision = self.decider.decide(probe, profiles, trial, answer_trial)
        if len(self.probe_examples(task)) < self.features.k:
            decision.explanation += (f" [only {len(self.probe_examples(task))} examples, fewer than k="
                                     f"{self.features.k}: weaker evidence]")
        return decision

    def route(self, texts: Sequence[str], profiles: Sequence[TaskProfile], open_set: bool = True
              ) -> tuple[list[RoutedInput | None], np.ndarray]:
        """Task and adapter for each raw input, and the inputs' backbone features. With ``open_set`` (and
        profiles that store input embeddings) each input's novelty too, from its sentence embedding; single
        texts are routed by that embedding too where the router has a text view (``routing._TextView``)."""
        if not profiles:
            raise UserError("the library has no task profiles to route inputs by; give --task")
        key = tuple(sorted(f"{p.task}@{p.adapter}:{_digest(p.features.examples)}" for p in profiles))
        if self._input_router is None or self._input_router[0] != key:
            self._input_router = (key, make_input_router(self.kind, profiles))
        feats = self.extractor.input_features(list(texts))
        router = self._input_router[1]
        fields = [count_fields(t) for t in texts]
        if not isinstance(router, InputRouter):
            return router.route(feats, fields), feats
        open_set = open_set and any(p.features.inputs is not None for p in router.profiles)
        if open_set or (router.wants_embeddings and 1 in fields):
            embeddings = self.extractor.input_embeddings(texts)
            return router.route(feats, fields, embeddings, texts=texts, open_set=open_set), feats
        return router.route(feats, fields, texts=texts), feats


def _digest(x: np.ndarray | None) -> str:
    import hashlib

    return "none" if x is None else hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:12]
