"""A task's head in the product: fitted beside its trained adapter from the backbone and the held-out split,
and kept in the library beside the task's profile."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...prompting import Encoded
from .choice import DEFAULT_VIEW_RULE, DEFAULT_VIEWS, check_head_options, decide_head
from .model import FeatureHead
from .views import default_layer, encoder_views, prompt_features, views_for


def fit_task_head(host: Any, adapter: str, items: Sequence[Encoded], cfg: Any, layer: int | None = None,
                  encoder: str | None = None, views: Sequence[str] | None = None, view_rule: str | None = None,
                  calibrate: str | None = None) -> tuple[FeatureHead | None, dict[str, Any]]:
    """Fit a task's head beside its trained adapter and choose their mix on the held-out examples
    that early stopping used (:func:`~adaptive_learner.training.trainer.split_validation` with the
    same config gives the same split). ``encoder``: the sentence encoder whose views the head may add
    among ``views`` (:func:`views_for`, :func:`choose_views` by ``view_rule``; None: the backbone's features
    alone). The decisions: :func:`decide_head`. ``views``, ``view_rule``, ``calibrate``: None takes ``cfg``'s
    ``head_views``, ``head_view_rule``, ``head_calibrate`` (:class:`TrainConfig`; their defaults where ``cfg``
    has none). Nothing held out (a task too small to spare examples, or no early stopping): the head is fitted
    on every example and mixed as the rule says without evidence (:func:`~.choice.no_evidence_mix`). Returns the head
    refitted on every example (None when the adapter alone is best, or the examples hold one label) and a
    report for the library's history."""
    import time

    if views is None:
        views = check_head_options(getattr(cfg, "head_views", ",".join(DEFAULT_VIEWS)), "min", "none")
    view_rule = getattr(cfg, "head_view_rule", DEFAULT_VIEW_RULE) if view_rule is None else view_rule
    calibrate = getattr(cfg, "head_calibrate", "none") if calibrate is None else calibrate

    from ..trainer import split_validation

    t0 = time.perf_counter()
    train, val = split_validation(items, cfg)
    if len({it.label for it in train}) < 2:
        return None, {"mix": 1.0, "reason": "fewer than two labels among the examples: adapter alone"}
    arrays = head_arrays(host, adapter, train, val, layer, encoder, views)
    head, report = decide_head(**arrays, n_labels=len(items[0].choices), rule=getattr(cfg, "head_mix", "gated"),
                               view_rule=view_rule, calibrate=calibrate)
    if "views" in report:
        report["views"]["encoder"] = encoder
    if head is not None and head.views:
        head.encoder = encoder
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return head, report


def head_arrays(host: Any, adapter: str, train: Sequence[Encoded], val: Sequence[Encoded], layer: int | None = None,
                encoder: str | None = None, views: Sequence[str] = DEFAULT_VIEWS) -> dict[str, Any]:
    """What :func:`decide_head` reads, as its keyword arguments: the backbone's features of the training and
    held-out parts (at ``layer``, default :func:`default_layer`), their labels, the adapter's label scores on
    the held-out part, and the views of ``encoder`` (None: none) that the examples allow among ``views``."""
    from ...scoring import score

    pad = host.backbone.tokenizer.pad_token_id
    with host.base() as model:
        layer = default_layer(model) if layer is None else layer
        f_train, f_val = prompt_features(model, train, layer, pad), prompt_features(model, val, layer, pad)
    s_val: list[np.ndarray] = []
    if val:
        with host.using(adapter) as model:
            model.eval()
            s_val = score(model, val, pad)
    allowed = views_for(list(train) + list(val), tuple(views)) if encoder is not None else ()
    v_train: dict[str, np.ndarray] = {}
    v_val: dict[str, np.ndarray] = {}
    if allowed:
        from ...features import text_encoder

        enc = text_encoder(encoder)
        v_train = dict(zip(allowed, encoder_views(allowed, enc, train)))
        v_val = (dict(zip(allowed, encoder_views(allowed, enc, val))) if val
                 else {v: np.zeros((0, a.shape[1]), dtype=np.float32) for v, a in v_train.items()})
    return {"f_train": f_train, "f_val": f_val, "y_train": [it.label for it in train],
            "y_val": [it.label for it in val], "s_val": s_val, "layer": layer, "v_train": v_train, "v_val": v_val}


# ---------------------------------------------------------------- in the library (beside the task's profile)
def head_files(task: str) -> tuple[str, str]:
    """File names of a task's head inside its adapter's data folder (named like its profile)."""
    from ...router.store import task_files

    return task_files("head", task)


def stage_head(tx: Any, adapter: str, task: str, head: FeatureHead | None) -> None:
    """Stage ``task``'s head under ``adapter`` (None: the task has none), dropping any older one."""
    from ...router.store import drop_profile

    old = tx.manifest["tasks"].get(task, {}).get("adapter")
    # a file written again is replaced by the install, never listed for removal as well (a plan
    # applied again after a crash would remove the installed file)
    for a in {old, adapter} - ({adapter} if head is not None else set()):
        if a and a in tx.manifest["adapters"]:
            drop_profile(tx, a, task, kind="head")
    if head is not None:
        tensors_name, meta_name = head_files(task)
        tx.write_tensors(adapter, tensors_name, head.tensors())
        tx.write_json(adapter, meta_name, head.meta())


def load_head(library: Any, task: str) -> FeatureHead | None:
    """The stored head of ``task`` (None: the adapter alone answers it)."""
    adapter = library.adapter_of(task)
    tensors_name, meta_name = head_files(task)
    if f"data/{adapter}/{tensors_name}" not in library.adapters[adapter].get("files", {}):
        return None
    tensors, meta = library.read_tensors(adapter, tensors_name), library.read_json(adapter, meta_name)
    if tensors is None or meta is None:
        return None
    return FeatureHead.from_stored(meta, tensors)
