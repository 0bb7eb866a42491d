"""``replay``: one LoRA adapter reused over all tasks, protected by replay only (buffer, generated or both).

``replay_source=generated`` (or ``both``) adds LAMOL-style pseudo-examples written by the model.
"""

from .base import register
from .ewc_replay import EWCReplay


@register("replay")
class ReplayOnly(EWCReplay):
    """``ewc-replay`` with EWC switched off."""

    use_ewc = False
