"""Crash safety: SIGKILL a writer of the library at random moments; reopening gives the state before or after.

The trials run in one driver process (tests/crash_driver.py) that imports torch once and forks a
child per writer; each child runs ``alearn``'s own ``main()``. The long version (many more kills, and
real ``alearn`` processes) is ``benchmarks/reliability_long.py``.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


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
