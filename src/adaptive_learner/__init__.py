"""adaptive-learner: a frozen LLM that learns a stream of tasks through a library of LoRA adapters.

The flow of one task: ``tasks`` (spec and data) -> ``features`` (how the router sees it) ->
``router`` (reuse or create) -> ``training`` (LoRA with regularisers) -> ``library`` (on disk)
-> ``evaluation`` (accuracy matrix and transfer metrics).
"""

__version__ = "0.1.0"
