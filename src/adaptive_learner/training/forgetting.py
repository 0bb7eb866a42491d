"""Forgetting control for a reused adapter: EWC and replay built from stored state, and stored back.

The factories every caller uses (strategies, the router, ``Learner.learn``)::

    opts = ForgettingOptions.from_mapping({"ewc_strength": 1.0, "replay_ratio": 0.25})
    regs = make_forgetting_regularisers(store, adapter, opts, task, gain=1.0)
    train_adapter(host, adapter, items, cfg, regs)
    store_forgetting_state(target, adapter, regs)

``store`` is where the adapter's state was kept: an ``AdapterLibrary`` (files
``data/<adapter>/ewc.safetensors`` and ``data/<adapter>/replay.json``), a plain ``dict`` (in memory,
as the benchmark strategies use) or None (a fresh adapter). ``target`` is a library
``Transaction`` (so the state commits atomically with the adapter's weights) or the same ``dict``.
``gain`` scales EWC's strength for this one task (e.g. the router's confidence that ``task`` is
related to what the adapter already serves). With both on, the regularisers are ordered replay
first, so EWC's Fisher can be estimated from the updated buffer (``ewc_fisher_from="buffer"``: true
labels of every task the adapter serves) instead of the new task's examples (``"task"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

from ..errors import UserError
from ..prompting import Encoded
from ..tasks.spec import TaskData
from .ewc import EWC, EWC_FILE, EWCConfig
from .regularisers import Regulariser
from .replay import REPLAY_FILE, Replay, ReplayBuffer, ReplayConfig


@dataclass
class ForgettingOptions:
    """Which protections to use and their settings."""

    ewc: bool = field(default=True, metadata={"help": "penalise drift of parameters important to earlier tasks"})
    replay: bool = field(default=True, metadata={"help": "mix examples of earlier tasks into training batches"})
    ewc_fisher_from: str = field(default="task", metadata={"help": "'task' (new task's examples) or 'buffer'"})
    ewc_cfg: EWCConfig = field(default_factory=EWCConfig, metadata={"help": "EWC settings"})
    replay_cfg: ReplayConfig = field(default_factory=ReplayConfig, metadata={"help": "replay settings"})

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], ewc: bool = True, replay: bool = True,
                     seed: int | None = None) -> "ForgettingOptions":
        """Build from flat keys: ``ewc_<field>`` (EWCConfig), ``replay_<field>`` (ReplayConfig),
        ``ewc_fisher_from``; other keys are ignored (they belong to other components)."""
        ewc_kw, rep_kw = _prefixed(options, "ewc_", EWCConfig), _prefixed(options, "replay_", ReplayConfig)
        if seed is not None:
            ewc_kw.setdefault("seed", seed)
            rep_kw.setdefault("seed", seed)
        fisher_from = str(options.get("ewc_fisher_from", "task"))
        if fisher_from not in ("task", "buffer"):
            raise UserError(f"ewc_fisher_from must be 'task' or 'buffer', got {fisher_from!r}")
        return cls(ewc=ewc, replay=replay, ewc_fisher_from=fisher_from, ewc_cfg=EWCConfig(**ewc_kw),
                   replay_cfg=ReplayConfig(**rep_kw))

    def to_dict(self) -> dict[str, Any]:
        return {"ewc": self.ewc, "replay": self.replay, "ewc_fisher_from": self.ewc_fisher_from,
                "ewc_cfg": self.ewc_cfg.to_dict(), "replay_cfg": self.replay_cfg.to_dict()}


def _prefixed(options: Mapping[str, Any], prefix: str, cls: type) -> dict[str, Any]:
    names = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not key.startswith(prefix) or key == "ewc_fisher_from":
            continue
        name = key[len(prefix):]
        if name not in names:
            raise UserError(f"unknown option {key!r}; {prefix}* options: "
                            + ", ".join(prefix + n for n in names))
        default = getattr(cls(), name)
        out[name] = coerce_option(key, value, type(default))
    return out


def coerce_option(key: str, value: Any, kind: type) -> Any:
    """A strategy option's value as ``kind`` (a switch: 1/0, true/false, yes/no); else one ``UserError`` line."""
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"option {key}: cannot read {value!r} as {kind.__name__}") from None


def make_forgetting_regularisers(store: Any, adapter: str, options: ForgettingOptions, task: TaskData,
                                 gain: float = 1.0) -> list[Regulariser]:
    """The regularisers protecting ``adapter`` while it learns ``task``: [Replay][, EWC], from ``store``."""
    fisher, buffer = load_forgetting_state(store, adapter)
    regs: list[Regulariser] = []
    replay = None
    if options.replay:
        replay = Replay(options.replay_cfg, buffer, task)
        regs.append(replay)
    if options.ewc:
        examples = None
        if options.ewc_fisher_from == "buffer" and replay is not None:
            examples = _buffer_items(replay, options.replay_cfg.max_length)
        cfg = replace(options.ewc_cfg, gain=options.ewc_cfg.gain * gain)
        regs.append(EWC.from_tensors(cfg, fisher, examples))
    return regs


def _buffer_items(replay: Replay, max_length: int) -> Callable[[], Sequence[Encoded]]:
    """The replay buffer's examples, encoded with the tokenizer of the host being trained."""
    return lambda: replay.buffer.encoded(replay.tokenizer, max_length)


def load_forgetting_state(store: Any, adapter: str) -> tuple[dict | None, ReplayBuffer | None]:
    """The stored Fisher tensors and replay buffer of ``adapter`` (None where there are none)."""
    if store is None:
        return None, None
    if isinstance(store, dict):
        state = store.get(adapter, {})
        buf = state.get("replay")
        return state.get("ewc"), ReplayBuffer.from_json(buf) if buf is not None else None
    if adapter not in store.adapters:
        return None, None
    buf = store.read_json(adapter, REPLAY_FILE)
    return store.read_tensors(adapter, EWC_FILE), ReplayBuffer.from_json(buf) if buf is not None else None


def store_forgetting_state(target: Any, adapter: str, regs: Sequence[Regulariser]) -> None:
    """Write the state of ``regs`` (after training) to a library transaction or an in-memory dict."""
    for r in regs:
        if isinstance(r, EWC) and r.fisher is not None:
            _put(target, adapter, EWC_FILE, "ewc", r.to_tensors(), tensors=True)
        elif isinstance(r, Replay):
            _put(target, adapter, REPLAY_FILE, "replay", r.buffer.to_json(), tensors=False)


def _put(target: Any, adapter: str, filename: str, key: str, value: Any, tensors: bool) -> None:
    if isinstance(target, dict):
        target.setdefault(adapter, {})[key] = value
    elif tensors:
        target.write_tensors(adapter, filename, value)
    else:
        target.write_json(adapter, filename, value)
