"""Shared pieces of benchmarks/serve_fuzz.py and benchmarks/serve_kill.py: a small library, a real
`alearn serve` subprocess on a free loopback port, and the library's own checks afterwards.

Nothing leaves loopback; the tiny-random backbone downloads nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TOY = FIXTURES / "toy_sentiment.csv"
PAIRS = FIXTURES / "toy_pairs.jsonl"
TRAIN = ["--steps", "3", "--max-length", "64", "--batch-size", "4"]
TOP_LEVEL = {"manifest.json", "adapters", "data", ".lock", ".txn"}  # what a library folder may hold


def alearn(*args: Any, env: dict[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the ``alearn`` CLI in a fresh process (this interpreter)."""
    cmd = [sys.executable, "-m", "adaptive_learner.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def build_library(lib: Path, backbone: str) -> Path:
    """``toy`` (sentiment, one field) and ``pairs`` (two fields), as tests/server_common.py builds them."""
    if (lib / "manifest.json").exists():
        return lib
    steps = [*TRAIN]
    done = alearn("learn", "--library", lib, "--backbone", backbone, "--data", TOY, "--description",
                  "Is the review positive?", "--name", "toy", *steps)
    assert done.returncode == 0, done.stderr[-2000:]
    done = alearn("learn", "--library", lib, "--data", PAIRS, "--description", "Are the two words the same?",
                  "--name", "pairs", "--text-column", "first", "--text-column", "second", "--label-column", "same",
                  "--force-new", *steps)
    assert done.returncode == 0, done.stderr[-2000:]
    return lib


def copy_library(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`alearn serve LIBRARY` as a subprocess in its own session (so a kill reaches only what we aim at),
    with its own empty working and temp folders (to see whether anything is written outside the library)."""

    def __init__(self, library: Path, work: Path, token: str | None = "fuzz-token", *extra: str,
                 log_name: str = "server.log") -> None:
        self.library, self.work, self.token, self.extra = library, work, token, extra
        self.cwd, self.tmp = work / "cwd", work / "tmp"
        self.log = work / log_name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, give_up_s: float = 600) -> "Server":
        for d in (self.cwd, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "adaptive_learner.cli", "serve", str(self.library), "--port", str(self.port),
               "--log-level", "warning", *(["--token", self.token] if self.token else []), *self.extra]
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=fh, stderr=fh, start_new_session=True)
        end = time.monotonic() + give_up_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the server did not answer /healthz within {give_up_s} s")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self, grace_s: float = 30) -> int | None:
        """SIGTERM (a clean shutdown); its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the server process only (its workers are left to fend for themselves)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def log_tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def verify(lib: Path) -> dict[str, Any]:
    """The project's checker (`alearn library verify`, which first finishes or drops an interrupted change,
    as any later process would), plus: nothing at the library's top level but its own files."""
    done = alearn("library", "verify", lib, timeout=600)
    stray = sorted(p.name for p in lib.iterdir() if p.name not in TOP_LEVEL)
    txn = lib / ".txn"
    pending = sorted(p.name for p in txn.iterdir()) if txn.is_dir() else []
    ok = done.returncode == 0 and not stray and not pending
    return {"ok": ok, "exit": done.returncode, "output": (done.stdout + done.stderr).strip()[-500:],
            "stray": stray, "pending_txn": pending}


def manifest(lib: Path) -> dict[str, Any]:
    return json.loads((lib / "manifest.json").read_text())
