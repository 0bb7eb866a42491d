"""adaptive-learner: a frozen LLM that learns a stream of tasks through a library of LoRA adapters.

The flow of one task: ``tasks`` (spec and data) -> ``features`` (how the router sees it) ->
``router`` (reuse or create) -> ``training`` (LoRA with regularisers) -> ``library`` (on disk)
-> ``evaluation`` (accuracy matrix and transfer metrics).
"""

__version__ = "0.1.0"

__all__ = ["Learner", "__version__"]


def __getattr__(name: str):
    # imported lazily so that `import adaptive_learner` (and `alearn --help`) stays quick
    if name == "Learner":
        from .learner import Learner

        return Learner
    raise AttributeError(name)
