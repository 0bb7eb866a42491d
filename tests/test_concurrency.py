"""Two processes writing one library: the second waits for the lock (or stops with one clear line); no update is lost.

The scenarios run in tests/concurrency_driver.py (one process importing torch once, forking a child
per writer, each running ``alearn``'s own ``main()``); the long version is benchmarks/reliability_long.py.
"""

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaptive_learner.errors import LibraryError
from adaptive_learner.library import AdapterLibrary

HERE = Path(__file__).parent
IDENTITY = {"name": "tiny-random", "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "vocab_size": 260, "fingerprint": "abc"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("concurrency")
    proc = subprocess.run([sys.executable, str(HERE / "concurrency_driver.py"), "--work", str(work / "w"),
                           "--report", str(work / "report.json")], capture_output=True, text=True, timeout=600)
    assert (work / "report.json").exists(), f"driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((work / "report.json").read_text())


def test_two_learns_at_once_both_land(report):
    """Two `alearn learn` (the router deciding each, under the lock, from what the other committed)."""
    s = report["details"][0]["two-new"]
    assert s["codes"] == [0, 0] and s["lost_updates"] == 0 and s["ok"], s
    assert s["waited"], "the second writer should have waited for the first"
    assert set(s["state"]["tasks"]) == {"t0", "t1", "t2"} and not s["state"]["problems"]


def test_two_reuses_of_one_adapter_equal_running_them_one_after_the_other(report):
    s = report["details"][0]["two-reuse"]
    assert s["ok"] and s["lost_updates"] == 0, s
    assert s["orders_differ"], "the check needs the two serial orders to give different weights"
    assert len(s["equals_serial_order"]) == 1


def test_two_processes_creating_one_library(report):
    s = report["details"][0]["create-race"]
    assert s["ok"] and s["state"]["tasks"].keys() == {"t1", "t2"}, s


def test_a_writer_that_cannot_get_the_lock_stops_with_one_clear_line(report):
    s = report["details"][0]["lock-timeout"]
    assert s["ok"] and s["code"] == 2 and s["unchanged"], s
    assert "locked by another process (pid 1: alearn learn)" in s["message"][0] and "gave up after 1 s" in s["message"][0]


def test_readers_never_see_a_half_applied_change(report):
    s = report["details"][0]["reader"]
    assert s["ok"] and s["reads"] > 0 and s["n_errors"] == 0, s


def test_totals(report):
    assert report["concurrent_writers"] >= 6 and report["lost_updates"] == 0 and not report["failed"]


def test_reader_does_not_wait_for_a_training_writer(tmp_path):
    """A writer holds the lock for its whole learn; opening to read (predict, ls) must not wait for it."""
    lib = AdapterLibrary.create(tmp_path / "lib", IDENTITY, {})
    (lib.path / ".txn" / "live-writer" / "files").mkdir(parents=True)  # its uncommitted staging
    with open(lib.path / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another open file description: conflicts like another process
        again = AdapterLibrary.open(lib.path)
        assert again.adapters == {}
        assert (lib.path / ".txn" / "live-writer").exists(), "a live writer's staging must not be deleted"
        with pytest.raises(LibraryError, match="locked by another process"):
            with again.transaction(timeout=0.3):
                pass
    AdapterLibrary.open(lib.path)  # lock free now: abandoned staging is cleaned up
    assert not (lib.path / ".txn" / "live-writer").exists()


def test_lock_timeout_from_the_environment(monkeypatch):
    from adaptive_learner.library.txn import lock_timeout

    assert lock_timeout() == 600.0 and lock_timeout(3) == 3
    monkeypatch.setenv("ADAPTIVE_LEARNER_LOCK_TIMEOUT", "2.5")
    assert lock_timeout() == 2.5
    monkeypatch.setenv("ADAPTIVE_LEARNER_LOCK_TIMEOUT", "soon")
    with pytest.raises(LibraryError, match="not a number"):
        lock_timeout()
