"""``router``: reuse an adapter or create one as the router decides; evaluated with and without task ids.

On each task the router compares the task (description, k examples, labels; and a trial of the
short-listed adapters) with every task seen so far. A reused adapter is trained further under the
forgetting regularisers: by default EWC and replay (``training/forgetting.py``, options
``ewc_*``/``replay_*``), or the factories in ``options["regularisers"]``, each called as
``factory(adapter, task, gain)`` before every training of an adapter (``gain``: the router's
confidence when reusing, 1.0 for a new adapter) and returning a ``Regulariser`` or a list of them;
a factory with an ``after(adapter, regularisers)`` method is told when the training ended.

The accuracy matrix is measured with the task id given. ``finish_info`` adds the final row with the
task id inferred: every test input is routed to a task by its backbone features and scored with
that task's prompt, labels and adapter (scored by task, prompt prefix shared), plus the routing accuracy.
A new adapter starts from peft's fresh initialisation (``router_init=fresh``, the default) or as a
copy of the router's best candidate (``router_init=nearest``: forward transfer from the library,
the candidate itself is not changed; see ``router/warm_start.py`` for why it is not the default).
Options: ``router`` (calibrated | softmax-threshold), ``router_k``, ``router_layer``,
``router_trial`` (default true), ``router_forgetting`` (default true), ``router_init``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..adapters import BASE
from ..features import FeatureConfig, input_text
from ..prompting import Encoded
from ..router.evidence import TaskProfile
from ..router.inference import answer_routed
from ..router.service import LibraryRouter
from ..router.trial import run_answer_trial, run_trial
from ..router.warm_start import DEFAULT_INIT, check_init, warm_start_source
from ..tasks.spec import TaskData
from ..training.trainer import adapter_learned
from .base import Strategy, register


class _DefaultForgetting:
    """EWC + replay from ``training/forgetting.py``, with state kept in memory between tasks."""

    def __init__(self, options: dict[str, Any], seed: int, max_length: int) -> None:
        from ..training.forgetting import ForgettingOptions

        opts = dict(options)
        opts.setdefault("replay_max_length", max_length)
        self.options = ForgettingOptions.from_mapping(opts, seed=seed)
        self.memory: dict[str, Any] = {}

    def __call__(self, adapter: str, task: TaskData, gain: float) -> list[Any]:
        from ..training.forgetting import make_forgetting_regularisers

        return make_forgetting_regularisers(self.memory, adapter, self.options, task, gain=gain)

    def after(self, adapter: str, regs: Sequence[Any]) -> None:
        from ..training.forgetting import store_forgetting_state

        store_forgetting_state(self.memory, adapter, regs)


@register("router")
class RouterStrategy(Strategy):
    """Reuse-or-create by the calibrated router (or the softmax-threshold baseline)."""

    may_reuse = True  # False: every task gets a new adapter, whatever the router advises (per-task-warm)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options
        layer = o.get("router_layer")
        feats = FeatureConfig(k=int(o.get("router_k", 32)), layer=None if layer is None else int(layer),
                              seed=ctx.train.seed)
        self.router = LibraryRouter(ctx.host, str(o.get("router", "calibrated")), feats)
        self.use_trial = str(o.get("router_trial", True)).lower() not in ("0", "false", "no")
        self.init = check_init(str(o.get("router_init", DEFAULT_INIT)))
        self.factories = list(o.get("regularisers") or [])
        if not self.factories and str(o.get("router_forgetting", True)).lower() not in ("0", "false", "no"):
            self.factories = [_DefaultForgetting(o, ctx.train.seed, ctx.train.max_length)]
        self.profiles: list[TaskProfile] = []
        self.by_task: dict[str, str] = {}
        self.tasks: dict[str, TaskData] = {}
        self.decisions: list[dict[str, Any]] = []

    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        trial, answers = self._trial(task) if self.use_trial else (None, None)
        # a revisited task is its own best candidate
        decision = self.router.decide(task, self.profiles, trial, answer_trial=answers)
        advised = decision.action
        if not self.may_reuse:
            decision.action = "new"
        init_from = None
        if decision.action == "reuse":
            adapter, gain = decision.adapter, decision.confidence
        else:
            init_from = warm_start_source(self.init, decision, self.version)
            adapter, gain = self.new_adapter(self._fresh(task.name), init_from=init_from), 1.0
            decision.adapter = adapter
        regs = [r for f in self.factories for r in _as_list(f(adapter, task, gain))]
        rep = self.train(adapter, items, regs, desc=f"router {task.name} -> {adapter} ({decision.action})")
        for f in self.factories:
            if hasattr(f, "after"):
                f.after(adapter, regs)
        self.by_task[task.name] = adapter
        self.tasks[task.name] = task
        profile = TaskProfile(task.name, adapter, self.router.profile(task, self.ctx.train.max_length),
                              adapter_learned(rep))
        self.profiles = [p for p in self.profiles if p.task != task.name] + [profile]
        self.decisions.append({**decision.to_json(), "family": task.spec.family, "init_from": init_from,
                               "regularisers": [getattr(r, "name", type(r).__name__) for r in regs],
                               **({} if self.may_reuse else {"router_advised": advised})})

    def _trial(self, task: TaskData):
        examples = self.router.probe_examples(task)

        def trial(adapters: Sequence[str]) -> dict[str, dict[str, float]]:
            trained = [a for a in adapters if a in self.version]
            return run_trial(self.ctx.host, task.spec, examples, trained, self.ctx.train.max_length,
                             self.ctx.eval_batch_size)

        def answers(candidates: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
            asked = [(a, self.tasks[t].spec) for a, t in candidates if a in self.version and t in self.tasks]
            return run_answer_trial(self.ctx.host, task.spec, examples, asked, self.ctx.train.max_length,
                                    self.ctx.eval_batch_size, seed=self.ctx.train.seed)
        return trial, answers

    def _fresh(self, task: str) -> str:
        name, k = f"lora-{task}"[:60], 2
        while name in self.version:
            name, k = f"lora-{task}"[:56] + f"-{k}", k + 1
        return name

    def adapter_for(self, task: str) -> str:
        return self.by_task.get(task, BASE)

    def state_dict(self) -> dict[str, Any]:
        """What ``alearn run --resume`` must keep (the router itself is rebuilt from the options)."""
        memory = next((f.memory for f in self.factories if isinstance(f, _DefaultForgetting)), None)
        return {"version": self.version, "reports": self.reports, "by_task": self.by_task, "tasks": self.tasks,
                "profiles": self.profiles, "decisions": self.decisions, "forgetting_memory": memory,
                "heads": self.heads, "head_reports": self.head_reports}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        memory = state.pop("forgetting_memory", None)
        vars(self).update(state)
        for f in self.factories:
            if isinstance(f, _DefaultForgetting) and memory is not None:
                f.memory = memory

    def finish_info(self) -> dict[str, Any]:
        """The decisions, and the final row with task ids inferred per input (both in results.json)."""
        return {"router": {"kind": self.router.kind, "features": self.router.features.to_dict(),
                           "decisions": self.decisions, "task_inferred": self.inferred_eval()}}

    def inferred_eval(self) -> dict[str, Any]:
        """Accuracy on each learned task's test split when every input's task is inferred (each input answered
        as the routed task is with its id given: its adapter, mixed with its head where it has one)."""
        if not self.profiles:
            return {}
        specs = {t: d.spec for t, d in self.tasks.items()}
        per_task, routed_ok, routed_task_ok, n_all = {}, 0, 0, 0
        for name, data in self.tasks.items():
            texts = [input_text(e.fields, data.spec) for e in data.test]
            if not texts:
                continue
            answers = answer_routed(self.ctx.host, self.router, self.profiles, specs, texts,
                                    self.ctx.train.max_length, self.ctx.eval_batch_size, open_set=False,
                                    head_of=self.heads.get)
            # right when the input got its task's adapter and answer space (verbalizers) and the right answer
            same = [specs[a.task].verbalizers == data.spec.verbalizers for a in answers]
            ok = [s and a.label == e.label for s, a, e in zip(same, answers, data.test)]
            right_route = [s and a.adapter == self.by_task[name] for s, a in zip(same, answers)]
            per_task[name] = {"accuracy": float(np.mean(ok)), "routing_accuracy": float(np.mean(right_route)),
                              "n": len(texts), "correct": [int(x) for x in ok]}  # per example, for paired tests
            routed_ok += sum(right_route)
            routed_task_ok += sum(a.task == name for a in answers)
            n_all += len(texts)
        accs = [v["accuracy"] for v in per_task.values()]
        return {"per_task": per_task, "avg_acc": float(np.mean(accs)) if accs else None,
                "routing_accuracy": routed_ok / n_all if n_all else None,
                "routing_task_accuracy": routed_task_ok / n_all if n_all else None}


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]
