"""Crash safety: SIGKILL a writer of the library at random moments; reopening gives the state before or after.

The trials run in one driver process (tests/crash_driver.py) that imports torch once and forks a
child per writer; each child runs ``alearn``'s own ``main()``. The long version (many more kills, and
real ``alearn`` processes) is ``benchmarks/reliability_long.py``. ``alearn run --resume`` is checked
by interrupting a run during its second task and comparing the resumed run with an uninterrupted one.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_alearn

HERE = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigkill_at_random_moments_leaves_before_or_after_state(tmp_path):
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(10**6)))
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(HERE / "crash_driver.py"), "--work", str(tmp_path / "w"),
                           "--trials", "26", "--seed", str(seed), "--report", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert report.exists(), f"seed {seed}: driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(report.read_text())
    bad = [t for t in r["details"] if t["outcome"] not in ("before", "after")]
    assert r["corrupted"] == 0 and not bad, f"seed {seed} (RELIABILITY_SEED={seed} reproduces): {bad}"
    assert r["killed"] >= 20, r
    # every kind of write was interrupted at least once, and both outcomes occurred
    assert {"adapter", "profile", "fisher", "buffer", "manifest", "commit", "install", "remove"} <= set(r["killed_in"]), \
        f"seed {seed}: {r['killed_in']}"
    assert r["outcomes"]["before"] > 0 and r["outcomes"]["after"] > 0
    assert proc.returncode == 0


def _alearn(*args) -> int:
    return run_alearn(*args)[0]


def _final_state(run_dir: Path) -> tuple[dict, bytes]:
    from adaptive_learner.evaluation.checkpoint import STATE_FILE

    doc = json.loads((run_dir / STATE_FILE).read_text())
    return doc, (run_dir / doc["weights"]["file"]).read_bytes()


@pytest.mark.parametrize("strategy", ["per-task", "naive", "mtl", "ewc-replay"])
def test_resume_after_interruption_gives_the_uninterrupted_results(tmp_path, monkeypatch, strategy):
    """Interrupt `alearn run` during task 2 (after task 1's checkpoint), resume it: same matrix, same weights."""
    from adaptive_learner.evaluation import checkpoint
    from adaptive_learner.strategies import REGISTRY

    if strategy not in REGISTRY:
        pytest.skip(f"{strategy} not available")
    (tmp_path / "toy.csv").write_text((HERE / "fixtures" / "toy_sentiment.csv").read_text())
    seq = tmp_path / "seq.yaml"
    seq.write_text("name: s\ntasks:\n" + "".join(f"  - name: t{i}\n    data: toy.csv\n    description: Is review {i} "
                                                 f"positive?\n" for i in range(2)))
    args = [seq, "--strategy", strategy, "--backbone", "tiny-random", "--steps", "2", "--max-train", "12",
            "--max-test", "6", "--max-length", "48", "--batch-size", "4"]
    monkeypatch.setattr(checkpoint, "remove", lambda out: None)  # keep the final checkpoints to compare weights
    assert _alearn("run", *args, "--out", tmp_path / "straight") == 0

    learn, calls = REGISTRY[strategy].learn, []

    def interrupted(self, task, items):
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or a crash) does half-way through the second task
        return learn(self, task, items)

    monkeypatch.setattr(REGISTRY[strategy], "learn", interrupted)
    assert _alearn("run", *args, "--out", tmp_path / "resumed") == 130
    monkeypatch.setattr(REGISTRY[strategy], "learn", learn)
    assert json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())["done"] == 1
    assert not (tmp_path / "resumed" / "results.json").exists()
    assert _alearn("run", "--resume", tmp_path / "resumed") == 0

    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("straight", "resumed"))
    assert a["matrix"] == b["matrix"] and a["zero_shot"] == b["zero_shot"] and a["metrics"] == b["metrics"]
    drop = [{k: v for k, v in r.items() if k != "seconds"} for r in a["train_reports"]]
    assert drop == [{k: v for k, v in r.items() if k != "seconds"} for r in b["train_reports"]]
    (sa, wa), (sb, wb) = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    assert wa == wb, "adapter weights or strategy tensors differ after resuming"
    assert _untimed(sa["strategy"]) == _untimed(sb["strategy"]) and sa["adapters"] == sb["adapters"]


def _untimed(x):
    """A checkpointed state without wall-clock durations (the only thing a resumed run may differ in)."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k != "seconds"}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def test_resume_errors_are_one_clear_line(tmp_path):
    code, _, err = run_alearn("run", "--resume", tmp_path)
    assert code == 2 and "nothing to resume" in err
    (tmp_path / "checkpoint.json").write_text("{broken")
    code, _, err = run_alearn("run", "--resume", tmp_path)
    assert code == 2 and "corrupted" in err and "Traceback" not in err
    code, _, err = run_alearn("run")
    assert code == 2 and "--resume" in err


def test_a_strategy_whose_state_cannot_be_saved_still_runs_and_resume_says_why(tmp_path, monkeypatch):
    from adaptive_learner.strategies import REGISTRY
    from adaptive_learner.strategies.naive import Naive

    class Opaque(Naive):
        def __init__(self, ctx):
            super().__init__(ctx)
            self.helper = object()  # neither data nor a tensor

        def learn(self, task, items):
            if task.name == "t1":
                raise KeyboardInterrupt
            return super().learn(task, items)

    monkeypatch.setitem(REGISTRY, "opaque", Opaque)
    (tmp_path / "toy.csv").write_text((HERE / "fixtures" / "toy_sentiment.csv").read_text())
    seq = tmp_path / "seq.yaml"
    seq.write_text("tasks:\n" + "".join(f"  - name: t{i}\n    data: toy.csv\n    description: Review {i} good?\n"
                                        for i in range(2)))
    out = tmp_path / "run"
    assert _alearn("run", seq, "--strategy", "opaque", "--backbone", "tiny-random", "--out", out, "--steps", "1",
                   "--max-train", "8", "--max-test", "4", "--max-length", "48", "--batch-size", "4") == 130
    code, _, err = run_alearn("run", "--resume", out)
    assert code == 2 and "cannot be resumed" in err and "strategy.helper" in err and "Traceback" not in err
