"""tcmalloc for the command line, where the system has it (Linux).

Training and scoring allocate and free many large tensors every step; glibc's malloc hands blocks that
large back to the kernel and gets fresh zeroed pages for the next. With tcmalloc preloaded the same runs
are faster and smaller, with bit-identical results (BENCHMARKS.md, session 33, this project's CPU: training
steps 3-16 % faster in four runs, scoring from 2 % slower to 7 % faster, peak RSS 0.2 GB lower). PyTorch's CPU performance guide and
its launcher (``torch.backends.xeon.run_cpu --enable-tcmalloc``) do the same; an allocator can only be
chosen before a process starts, so ``alearn`` starts itself again once with ``LD_PRELOAD`` set.

Nothing happens unless the library is installed (Debian and Ubuntu: ``apt-get install
libtcmalloc-minimal4``). ``ALEARN_MALLOC=system`` keeps glibc's allocator; an ``LD_PRELOAD`` that already
names an allocator is left alone.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

ENV = "ALEARN_MALLOC"  # auto (the default: tcmalloc where installed) | system; set to tcmalloc once relaunched
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib")
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
QUICK = {"--help", "-h", "--version"}  # not worth a second start
LIGHT = {"data", "library"}  # commands that neither train nor score


def find_tcmalloc(dirs: Sequence[str] = LIBRARY_DIRS) -> str | None:
    """The first tcmalloc shared library in ``dirs``, or None."""
    for d in dirs:
        for name in NAMES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


def relaunch_env(argv: Sequence[str], environ: dict[str, str], platform: str = sys.platform,
                 dirs: Sequence[str] = LIBRARY_DIRS) -> dict[str, str] | None:
    """The environment to start this command again with tcmalloc, or None to go on as it is."""
    if platform != "linux" or environ.get(ENV, "auto") != "auto" or not argv or QUICK & set(argv) \
            or argv[0] in LIGHT:
        return None
    preload = environ.get("LD_PRELOAD", "")
    if "malloc" in preload:  # tcmalloc or jemalloc chosen already
        return None
    lib = find_tcmalloc(dirs)
    if lib is None:
        return None
    return {**environ, "LD_PRELOAD": ":".join(p for p in (lib, preload) if p), ENV: "tcmalloc",
            # tcmalloc reports every allocation over 1 GiB on stderr (a large model's embeddings); not a problem
            "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": environ.get("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD",
                                                                 str(1 << 40))}


def relaunch_with_tcmalloc(argv: Sequence[str], module: str = "adaptive_learner.cli") -> None:
    """Replace this process by ``python -m MODULE ARGV`` with tcmalloc preloaded, when :func:`relaunch_env`
    says so; otherwise return."""
    env = relaunch_env(argv, dict(os.environ))
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def loaded_allocator() -> str:
    """``tcmalloc`` or ``jemalloc`` when this process has one loaded, else ``system`` (read from
    ``/proc/self/maps``; ``system`` where there is none)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "system")


if __name__ == "__main__":  # what a relaunched process runs with (the tests' check)
    print(loaded_allocator())
