"""Test-only hooks that make the library's write points observable. Never set these in normal use.

Two environment variables, both unset by default (then every hook is a no-op):

``ADAPTIVE_LEARNER_TEST_TRACE=<file>``
    append the name of each write point to ``<file>`` as it is reached, so a crash test knows
    which write a process was in when it was killed;
``ADAPTIVE_LEARNER_TEST_SLOW_WRITES=<seconds>``
    sleep that long at each write point (and half-way through each atomic file write), so a
    test can deliver SIGKILL while a file is staged, half-written, committed or being installed;
``ADAPTIVE_LEARNER_TEST_STOP_AT=<n>`` or ``=<name>``
    stop (sleep for minutes) at this process's n-th write point (from 0), or at the first one of that
    name (e.g. ``committed``), so a test kills it at exactly that point however slowly the machine
    schedules it.
"""

from __future__ import annotations

import os
import time

TRACE_ENV = "ADAPTIVE_LEARNER_TEST_TRACE"
SLOW_ENV = "ADAPTIVE_LEARNER_TEST_SLOW_WRITES"
STOP_ENV = "ADAPTIVE_LEARNER_TEST_STOP_AT"
_reached = [0]  # write points this process has passed


def active() -> bool:
    """Whether any test hook is switched on."""
    return bool(os.environ.get(TRACE_ENV) or os.environ.get(SLOW_ENV) or os.environ.get(STOP_ENV))


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
    stop = os.environ.get(STOP_ENV)
    if stop:
        _reached[0] += 1
        if (_reached[0] - 1 == int(stop)) if stop.isdigit() else name == stop:
            time.sleep(600)  # the test kills the process here
    slow = os.environ.get(SLOW_ENV)
    if slow:
        time.sleep(float(slow))
