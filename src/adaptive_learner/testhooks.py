"""Test-only hooks that make the library's write points observable. Never set these in normal use.

Two environment variables, both unset by default (then every hook is a no-op):

``ADAPTIVE_LEARNER_TEST_TRACE=<file>``
    append the name of each write point to ``<file>`` as it is reached, so a crash test knows
    which write a process was in when it was killed;
``ADAPTIVE_LEARNER_TEST_SLOW_WRITES=<seconds>``
    sleep that long at each write point (and half-way through each atomic file write), so a
    test can deliver SIGKILL while a file is staged, half-written, committed or being installed.
"""

from __future__ import annotations

import os
import time

TRACE_ENV = "ADAPTIVE_LEARNER_TEST_TRACE"
SLOW_ENV = "ADAPTIVE_LEARNER_TEST_SLOW_WRITES"


def active() -> bool:
    """Whether any test hook is switched on."""
    return bool(os.environ.get(TRACE_ENV) or os.environ.get(SLOW_ENV))


def write_point(name: str) -> None:
    """Mark a write point: record it in the trace file and pause, when the test variables ask for it."""
    trace = os.environ.get(TRACE_ENV)
    if trace:
        # one write() per line with O_APPEND: it reaches the kernel before any kill can land after it
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (name.replace("\n", " ") + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    slow = os.environ.get(SLOW_ENV)
    if slow:
        time.sleep(float(slow))
