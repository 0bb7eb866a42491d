"""Learn jobs: each runs ``worker.run_job`` in its own spawned process; the server only keeps score.

A pump thread reads the workers' reports (plain dicts on one queue) into the job records, and
notices a worker that died without reporting (killed, out of memory): its job fails with one
line, and the library keeps its last committed state (its transactions see to that). A worker
whose server died ends too (``run_watched``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import JobSettings, Limits
from .errors import limit_error
from .protocol import JobOut, Progress
from .worker import run_job

KEEP_FINISHED = 200  # finished jobs remembered for GET /v1/jobs/{id}
FINAL = ("succeeded", "failed")


@dataclass
class Job:
    """What the server knows of one learn job."""

    id: str
    task: str
    dry_run: bool
    created: float = field(default_factory=time.time)
    state: str = "queued"
    phase: str | None = None
    progress: dict[str, int] | None = None
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    upload_dir: Path | None = None
    process: Any = None
    ending: bool = False

    def out(self) -> JobOut:
        r = self.result or {}
        return JobOut(id=self.id, state=self.state, task=r.get("task", self.task), dry_run=self.dry_run,
                      phase=self.phase, progress=Progress(**self.progress) if self.progress else None,
                      action=r.get("action"), adapter=r.get("adapter"), confidence=r.get("confidence"),
                      explanation=r.get("explanation"), decision=r.get("decision"), init_from=r.get("init_from"),
                      rejected=r.get("rejected"),
                      accuracy_before=r.get("accuracy_before"), accuracy_after=r.get("accuracy_after"),
                      retention=r.get("retention"), train=r.get("train"), error=self.error, created=self.created, started=self.started,
                      finished=self.finished)


def run_watched(job: dict[str, Any], events: Any, server_pid: int, every_s: float = 0.2) -> None:
    """The worker's entry point: ``run_job``, ended at once if the server dies first (SIGKILL, out of memory).

    A job that no server tracks must not go on holding the library's lock, nor commit behind the back
    of a restarted server; ending it mid-change is what the library's transactions are made for."""

    def watch() -> None:
        while os.getppid() == server_pid:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="alearn-server-watch", daemon=True).start()
    yield_to_requests(job.get("nice", 0), job.get("threads", 0))
    run_job(job, events)


def yield_to_requests(nice: int, threads: int) -> None:
    """Lower this (worker) process's priority by ``nice`` and set its torch threads (0: leave them), so
    that training takes the CPU the server's answers leave over rather than the other way round."""
    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def committed_entry(library: Path, job: Job) -> dict[str, Any] | None:
    """The library's record of ``job``'s change, if it was committed (a decision on its task since it started)."""
    import datetime

    from ..library import AdapterLibrary

    if job.started is None:
        return None
    try:
        lib = AdapterLibrary.open(library, verify=False)  # also completes a change committed but not installed
        history = list(lib.history)
    except Exception:  # noqa: BLE001 - the question is a courtesy; the library's own checks stand
        return None
    for e in reversed(history):
        try:
            when = datetime.datetime.strptime(str(e["time"]), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        if e.get("task") == job.task and when >= job.started - 1:  # times are kept to the second
            return e
    return None


class JobManager:
    """Starts learn workers (at most ``limits.max_jobs`` at once) and tracks them."""

    def __init__(self, library: Path, limits: Limits, on_end: Callable[[Job, str], None] | None = None,
                 settings: JobSettings | None = None) -> None:
        self.library = Path(library)
        self.limits = limits
        self.settings = settings or JobSettings()
        self.on_end = on_end
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
        self._events: Any = None
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None

    def submit(self, task: str, source: dict[str, Any], options: dict[str, Any],
               upload_dir: Path | None = None) -> Job:
        """Start a worker for one task (429 naming ``max_jobs`` when enough are running)."""
        with self._lock:
            if self.active() >= self.limits.max_jobs:
                raise limit_error("max_jobs", f"{self.active()} learn job(s) running; the limit is "
                                              f"{self.limits.max_jobs}; try again when one has finished", 429)
            self._start_pump()
            job = Job(id=uuid.uuid4().hex[:16], task=task, dry_run=bool(options.get("dry_run")),
                      phase="starting", upload_dir=upload_dir)
            payload = {"id": job.id, "library": str(self.library), "source": source, "options": options,
                       "nice": self.settings.nice, "threads": self.settings.resolved_threads(),
                       "dtype": self.settings.dtype, "device": self.settings.device}
            proc = self._ctx.Process(target=run_watched, args=(payload, self._events, os.getpid()),
                                     name=f"alearn-job-{job.id}", daemon=True)
            proc.start()
            job.process = proc
            self._jobs[job.id] = job
            self._forget_old()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def active(self) -> int:
        return sum(j.state not in FINAL for j in self._jobs.values())

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop the pump and every worker still running (its library change is all or nothing)."""
        self._stop.set()
        for job in self.all():
            p = job.process
            if p is not None and p.is_alive():
                p.terminate()
                p.join(grace_s)
                if p.is_alive():
                    p.kill()
            if job.state not in FINAL:
                self._end(job, "failed", error="the server stopped before the job finished")
        if self._pump is not None:
            self._pump.join(grace_s)

    # ------------------------------------------------------------------ reports from the workers
    def _start_pump(self) -> None:
        if self._pump is None:
            self._events = self._ctx.Queue()
            self._pump = threading.Thread(target=self._run_pump, name="alearn-jobs", daemon=True)
            self._pump.start()

    def _run_pump(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply(self._events.get(timeout=0.2))
            except queue.Empty:
                pass
            except (EOFError, OSError, ValueError):
                return  # the queue was closed at shutdown
            self._reap()

    def _apply(self, event: dict[str, Any]) -> None:
        with self._lock:
            job = self._jobs.get(str(event.get("id")))
            if job is None or job.state in FINAL:
                return
            if event.get("phase"):
                job.phase = event["phase"]
            if event.get("progress"):
                job.progress = {"step": int(event["progress"]["step"]), "steps": int(event["progress"]["steps"])}
            state = event.get("state")
        if state == "running" and job.started is None:
            job.state, job.started = "running", time.time()
        elif state in FINAL:
            self._end(job, state, event.get("result"), event.get("error"))

    def _reap(self) -> None:
        """A worker that is gone without a final report failed; drain its last words first."""
        for job in self.all():
            p = job.process
            if job.state in FINAL or p is None or p.is_alive():
                continue
            try:
                while True:
                    self._apply(self._events.get(timeout=0.5))
            except queue.Empty:
                pass
            if job.state not in FINAL:
                self._end(job, "failed", error=self._lost(job, p.exitcode))

    def _lost(self, job: Job, exitcode: int | None) -> str:
        """Why a job whose worker vanished failed, and whether its change made it into the library (a worker
        killed after its commit point: the change is in, only the report was lost)."""
        said = f"the worker process ended (exit code {exitcode}) before the job finished"
        entry = None if job.dry_run else committed_entry(self.library, job)
        if entry is None:
            return f"{said}; the library keeps its last committed state"
        return (f"{said}, after its change was committed: task {job.task!r} is in the library "
                f"({entry.get('action', '?')} {entry.get('adapter', '?')}); only the job's report was lost")

    def _end(self, job: Job, state: str, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Finish a job: clean up and count it first, then publish its final state (so a client that
        sees the state also sees the upload gone and the metrics counted)."""
        with self._lock:
            if job.state in FINAL or job.ending:
                return
            job.ending = True
        if job.process is not None:
            job.process.join(1.0)
        if job.upload_dir is not None:
            shutil.rmtree(job.upload_dir, ignore_errors=True)
        if self.on_end is not None:
            self.on_end(job, state)
        with self._lock:
            job.state, job.result, job.error, job.finished, job.phase = state, result, error, time.time(), "done"

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.state in FINAL]
        for j in sorted(done, key=lambda j: j.created)[: max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[j.id]
