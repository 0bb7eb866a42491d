"""The model in a process of its own (``alearn serve --model-process``).

In one process, the model thread runs Python between its kernels (on a GPU nearly all of its time) and holds
the interpreter lock while it does, so the event loop reads the requests that make up the next batch late
and batches stay small (BENCHMARKS.md, session 21: two thirds of a served request's time outside the model
on an H200). Here the HTTP process reads, checks and batches requests and answers them; a spawned process
holds the ``ServingEngine`` (backbone, adapters, router) and scores each batch. They speak JSON over a pipe:
a batch of requests one way, one result per request and the engine's health the other, the same split as
vLLM's engine core or LitServe's workers, with nothing but plain data crossing.

The library endpoints need no model and stay in the HTTP process. If the model process dies (killed, out of
memory), the batch it held gets 503, ``/healthz`` says ``degraded`` with the reason, and the next batch starts
a new one.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from .config import ServeConfig
from .errors import ApiError, as_api_error
from .protocol import PredictRequest
from .serving import LibraryEndpoints

log = logging.getLogger("adaptive_learner.server")

READY_POLL_S = 0.2


class RemoteEngine(LibraryEndpoints):
    """``ServingEngine``'s interface to the app, with the engine itself in a spawned process.

    ``answer`` is called from the one model thread of the app (it blocks on the pipe without holding the
    interpreter lock); ``health`` and ``version`` read what the last reply said, without asking."""

    def __init__(self, config: ServeConfig, start_timeout_s: float = 900.0) -> None:
        self.config = config
        self.path = Path(config.library)
        self._write_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self.start_timeout_s = start_timeout_s
        self._proc: Any = None
        self._conn: Any = None
        self._health: dict[str, Any] = {}
        self.problem: str | None = None
        self.starts = 0
        self._start()

    # ------------------------------------------------------------------ the process
    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
        parent, child = ctx.Pipe(duplex=True)
        plain = asdict(replace(self.config, token=None))  # the model process needs no secret
        plain["library"] = str(plain["library"])
        proc = ctx.Process(target=_main, args=(json.dumps(plain), child), name="alearn-model", daemon=True)
        proc.start()
        child.close()
        end = time.monotonic() + self.start_timeout_s
        while not parent.poll(READY_POLL_S):
            if not proc.is_alive():
                raise UserError(f"the model process exited with code {proc.exitcode} before it was ready "
                                f"(its error is in the log above)")
            if time.monotonic() > end:
                proc.terminate()
                raise UserError(f"the model process was not ready after {self.start_timeout_s:.0f} s")
        try:
            msg = json.loads(parent.recv_bytes())
        except (EOFError, OSError):
            proc.join(5)
            raise UserError(f"the model process exited with code {proc.exitcode} before it was ready") from None
        if not msg.get("ready"):
            proc.join(5)
            raise UserError(msg.get("error") or "the model process could not load the library")
        self._proc, self._conn, self._health = proc, parent, msg["health"]
        self.problem = self._health.get("problem")
        self.starts += 1
        log.info("model process %s ready (pid %s)", self.starts, proc.pid)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self, timeout: float = 10.0) -> None:
        """Ask the model process to stop; terminate it if it does not."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        try:
            conn.send_bytes(b'{"op": "stop"}')
        except (OSError, ValueError):
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        conn.close()

    # ------------------------------------------------------------------ what the app asks
    @property
    def version(self) -> str:
        return str(self._health.get("library_version", ""))

    def health(self) -> dict[str, Any]:
        out = dict(self._health)
        if self.problem:
            out.update(status="degraded", problem=self.problem)
        return out

    def answer(self, requests: Sequence[PredictRequest]) -> list[Any]:
        """One result per request: the response as a dict (the app's response model validates it) or the error."""
        reply = self._call({"op": "answer", "requests": [r.model_dump(mode="json") for r in requests]})
        if isinstance(reply, ApiError):
            return [reply] * len(requests)
        return [_decode(r) for r in reply["results"]]

    def evaluate(self, tasks: Sequence[str] | None = None) -> Any:
        """``ServingEngine.evaluate`` in the model process: the response as a dict, or its error raised."""
        reply = self._call({"op": "evaluate", "tasks": None if tasks is None else list(tasks)})
        result = reply if isinstance(reply, ApiError) else _decode(reply["result"])
        if isinstance(result, BaseException):
            raise result
        return result

    def _call(self, msg: dict[str, Any]) -> Any:
        """Send one message and wait for its reply (a dict; an ``ApiError`` 503 if the process died meanwhile)."""
        with self._call_lock:
            if self._proc is None or not self._proc.is_alive():
                self._restart()
            try:
                self._conn.send_bytes(json.dumps(msg).encode())
                reply = json.loads(self._conn.recv_bytes())
            except (EOFError, OSError) as exc:
                self._proc.join(1)
                self.problem = (f"the model process exited (code {self._proc.exitcode}) while scoring; a new one "
                                f"starts with the next batch")
                log.error("%s (%s)", self.problem, type(exc).__name__)
                self._proc = None
                return ApiError(503, self.problem)
        self._health = reply["health"]
        self.problem = self._health.get("problem")
        return reply

    def _restart(self) -> None:
        if self._conn is not None:
            self._conn.close()
        log.warning("starting the model process again")
        try:
            self._start()
        except UserError as exc:
            self.problem = f"the model process could not be started again: {exc}"
            raise ApiError(503, self.problem) from None


def _encode(r: Any) -> dict[str, Any]:
    if isinstance(r, ApiError):
        return {"api": {"status": r.status, "message": r.message, "limit": r.limit, "type": r.type}}
    if isinstance(r, BaseException):
        return {"internal": f"{type(r).__name__}: {r}"}
    return {"ok": r.model_dump(mode="json")}


def _decode(r: dict[str, Any]) -> Any:
    if "ok" in r:
        return r["ok"]
    if "api" in r:
        e = r["api"]
        return ApiError(e["status"], e["message"], limit=e["limit"], type_=e["type"])
    return RuntimeError(r["internal"])  # answered as a 500 in the one error shape, like an in-process fault


def _main(config_json: str, conn: Any) -> None:
    """The model process: load the engine, then answer batches until told to stop or the pipe closes."""
    from .serving import ServingEngine

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the HTTP process's to handle; it stops this one
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s model process: %(message)s")
    try:
        config = ServeConfig.from_dict(json.loads(config_json))
        engine = ServingEngine(config)
    except UserError as exc:
        conn.send_bytes(json.dumps({"ready": False, "error": str(exc)}).encode())
        return
    except Exception as exc:  # noqa: BLE001 - reported as one line; the traceback goes to the log
        traceback.print_exc(file=sys.stderr)
        conn.send_bytes(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
        return
    conn.send_bytes(json.dumps({"ready": True, "health": engine.health()}).encode())
    while True:
        try:
            msg = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the HTTP process went away
        if msg.get("op") == "evaluate":
            try:
                result: Any = engine.evaluate(msg["tasks"])
            except Exception as exc:  # noqa: BLE001 - crosses back as the error the client sees
                if not isinstance(exc, (ApiError, UserError)):
                    traceback.print_exc(file=sys.stderr)
                result = as_api_error(exc)
            conn.send_bytes(json.dumps({"result": _encode(result), "health": engine.health()},
                                       default=float).encode())
            continue
        if msg.get("op") != "answer":
            return
        # validated once, by the HTTP process that read them
        requests = [PredictRequest.model_construct(**r) for r in msg["requests"]]
        try:
            results: list[Any] = engine.answer(requests)
        except Exception as exc:  # noqa: BLE001 - the whole batch fails, as in process
            traceback.print_exc(file=sys.stderr)
            results = [exc] * len(requests)
        conn.send_bytes(json.dumps({"results": [_encode(r) for r in results], "health": engine.health()},
                                   default=float).encode())
