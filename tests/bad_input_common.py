"""What the bad-input property tests share: example counts, a tally for RELIABILITY.md, and fixtures."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, event, settings

SCALE = float(os.environ.get("BAD_INPUT_EXAMPLES", "1"))  # benchmarks/reliability_long.py runs 20x
FAST = settings(max_examples=int(60 * SCALE), deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED: dict[str, int] = {}  # examples tried per property


def count(name: str) -> None:
    """One more input tried by the property ``name``."""
    TRIED[name] = TRIED.get(name, 0) + 1


def outcome(what: str) -> None:
    """Tally an outcome in hypothesis's statistics (``--hypothesis-show-statistics``), inside a property only."""
    from hypothesis.control import currently_in_test_context

    if currently_in_test_context():
        event(what)


@pytest.fixture(autouse=True, scope="module")
def tally():
    """With RELIABILITY_TALLY=<file>, append how many inputs each property tried (for RELIABILITY.md)."""
    yield
    if os.environ.get("RELIABILITY_TALLY"):
        with open(os.environ["RELIABILITY_TALLY"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"bad_inputs": TRIED}) + "\n")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """A catalog name in generated input must fail fast, never try the network."""
    import adaptive_learner.sources as S

    def offline(wheel, dest):
        raise S.SourceError(f"cannot download {wheel.requirement} (offline in tests)")

    monkeypatch.setattr(S, "_download", offline)
