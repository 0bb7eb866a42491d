"""``ewc``: one LoRA adapter reused over all tasks, protected by online EWC only (no replay)."""

from .base import register
from .ewc_replay import EWCReplay


@register("ewc")
class EWCOnly(EWCReplay):
    """``ewc-replay`` with replay switched off."""

    use_replay = False
