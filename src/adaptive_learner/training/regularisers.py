"""The interface through which forgetting control enters training.

A regulariser may add examples to each batch (replay) and a term to the loss (EWC). Training calls
the hooks in order; strategies pass a list of regularisers. No class tower: subclass this once.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..prompting import Encoded


class Regulariser:
    """No-op base: override the hooks you need."""

    name = "none"

    def begin(self, host: Any, adapter: str) -> None:
        """Called before the first step with the host and the adapter being trained."""

    def mix(self, batch: list[Encoded], rng: np.random.RandomState) -> list[Encoded]:
        """Return the batch to train on (replay adds examples of earlier tasks)."""
        return batch

    def penalty(self, params: dict[str, torch.nn.Parameter]) -> torch.Tensor | None:
        """An extra loss term over the adapter's trainable parameters (EWC), or None."""
        return None

    def end(self, host: Any, adapter: str, items: Sequence[Encoded]) -> None:
        """Called after the last step (e.g. to update Fisher information or a buffer)."""
