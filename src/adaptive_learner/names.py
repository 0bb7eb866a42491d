"""Names the CLI lists and checks without importing what they name (the strategies import peft, ~10 s on a
slow machine). ``tests/test_strategies.py`` keeps this list equal to the registry."""

STRATEGY_NAMES = ("arrow", "ewc", "ewc-replay", "mtl", "naive", "o-lora", "osf", "per-task", "per-task-warm",
                  "replay", "router", "zero-shot")
