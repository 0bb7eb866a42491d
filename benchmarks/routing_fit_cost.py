"""How long building the per-input router takes, with and without its text view (``routing._TextView``), on a
router-eval bank's profiles: the headline sequence's 6 tasks and every bank task, each timed twice per setting.

    python benchmarks/routing_fit_cost.py runs/router-eval-s30/bank
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from adaptive_learner.evaluation.router_bank import load_bank
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.routing import InputRouter

bank, _ = load_bank(Path(sys.argv[1]))
for lib in (["sst2", "stsb", "trec", "rotten_tomatoes", "sms_spam", "imdb"], sorted(bank)):
    profiles = [TaskProfile(t, f"lora-{bank[t].family}", bank[t].profile) for t in lib]
    for text_view in (False, True, False, True):
        t0 = time.perf_counter()
        InputRouter(profiles, text_view=text_view)
        print(f"{len(lib)} tasks, text view {text_view}: {time.perf_counter() - t0:.2f} s", flush=True)
