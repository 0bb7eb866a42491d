"""Comparing backbone identities (the dicts ``backbone.identity_of`` makes and a library's manifest stores).

Kept apart from ``backbone.py`` so that reading a library (``alearn library ls/show/verify``) needs
neither torch nor transformers.
"""

from __future__ import annotations

from typing import Any

FINGERPRINTS = ("fingerprint_bf16", "fingerprint")  # the weight fingerprints an identity may hold, most general first


def same_backbone(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two identities describe the same weights (names may differ: a dir and its alias): the same
    architecture and sizes, and every fingerprint both hold equal (at least one)."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
    shared = [k for k in FINGERPRINTS if k in a and k in b]
    return bool(shared) and all(a.get(k) == b.get(k) for k in (*keys, *shared))
