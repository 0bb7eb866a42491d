"""What the endpoints do, without HTTP: answer batches of predict requests, read and edit the library.

``ServingEngine`` holds one ``Learner`` (the frozen backbone and the adapters in memory) and is
called from one thread only (the model thread). Before each batch it looks at the committed
manifest: when it changed (a learn job, ``alearn learn`` or ``alearn library rm`` in any process)
the library is opened again through ``AdapterLibrary.open``, which finishes or waits out a commit
in progress and checks every file, so a batch never sees a half-written library; adapters whose
stamp changed are reloaded on their next use, removed ones dropped from memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..errors import LibraryError, UserError
from ..learner import Learner
from ..library import MANIFEST, AdapterLibrary
from ..router.inference import split_fields
from ..tasks.spec import TaskSpec, check_name
from .config import Limits, ServeConfig
from .errors import ApiError, limit_error
from .protocol import (AdapterOut, DeleteOut, EvaluateResponse, LibraryOut, PredictionOut, PredictRequest,
                       PredictResponse, RetentionOut, TaskOut)

log = logging.getLogger("adaptive_learner.server")

PAIR = "|||"
HISTORY = 20  # recent decisions shown by GET /v1/library


def check_predict(req: PredictRequest, limits: Limits) -> None:
    """The server's caps on one request, before it waits for the model: 413 naming the limit, 422 for empties."""
    if len(req.inputs) > limits.max_inputs:
        raise limit_error("max_inputs", f"{len(req.inputs)} inputs in one request; the limit is {limits.max_inputs}")
    for i, inp in enumerate(req.inputs):
        values = [inp] if isinstance(inp, str) else list(inp.values())
        n = sum(len(v) for v in values)
        if n > limits.max_chars:
            raise limit_error("max_chars", f"inputs[{i}] has {n} characters; the limit is {limits.max_chars}")
        if not values or not all(v.strip() for v in values):
            raise ApiError(422, f"inputs[{i}] is empty" if values else f"inputs[{i}] has no fields")


def to_fields(inp: str | dict[str, str], spec: TaskSpec) -> dict[str, str]:
    """One input as the task's fields: a text (pairs as ``a ||| b``) or an object keyed by field names."""
    if isinstance(inp, str):
        return split_fields(inp, spec)
    if set(inp) != set(spec.input_fields):
        raise UserError(f"task {spec.name} takes the fields {spec.input_fields}, got {sorted(inp)}")
    return {f: inp[f].strip() for f in spec.input_fields}


def as_text(inp: str | dict[str, str], spec: TaskSpec | None) -> str:
    """One input as the text ``Learner.predict`` takes: pairs as ``a ||| b``, in the task's field order
    (routed: in the order given)."""
    if isinstance(inp, str):
        return inp
    if spec is None:
        return f" {PAIR} ".join(v.strip() for v in inp.values())
    fields = to_fields(inp, spec)
    return f" {PAIR} ".join(fields[f] for f in spec.input_fields)


Row = tuple[int, int, str]  # (request, input, text)


class LibraryEndpoints:
    """What the library endpoints do: read the committed library and remove an adapter. They need no model, so
    they run where the HTTP runs, in process or not (``model_process.RemoteEngine``)."""

    config: ServeConfig
    path: Path
    _write_lock: threading.Lock

    def library_out(self) -> LibraryOut:
        """The committed library as it is on disk now (adapters, tasks, recent decisions)."""
        lib = AdapterLibrary.open(self.path, verify=False)
        adapters = [AdapterOut(name=n, tasks=list(a.get("tasks", [])), trainable_params=a.get("trainable_params"),
                               updated=a.get("updated")) for n, a in sorted(lib.adapters.items())]
        tasks = []
        for name, t in sorted(lib.tasks.items()):
            spec = t["spec"]
            tasks.append(TaskOut(name=name, adapter=t["adapter"], family=spec.get("family", "unknown"),
                                 input_fields=spec.get("input_fields", []), labels=spec.get("label_names", []),
                                 accuracy=t.get("accuracy")))
        history = [_brief_event(e) for e in lib.history[-HISTORY:]]
        return LibraryOut(path=str(self.path), backbone=lib.backbone.get("name", "?"), version=manifest_version(lib),
                          adapters=adapters, tasks=tasks, history=history)

    def delete_adapter(self, name: str) -> DeleteOut:
        """Remove an adapter, its data and its tasks in one transaction (409 while a writer holds the lock)."""
        check_name(name, "adapter")
        with self._write_lock:
            lib = AdapterLibrary.open(self.path, verify=False)
            if name not in lib.adapters:
                raise ApiError(404, f"no adapter {name!r} in the library; adapters: {sorted(lib.adapters) or 'none'}")
            try:
                with lib.transaction(timeout=self.config.limits.lock_wait_s) as tx:
                    tasks = tx.remove_adapter(name)
                    tx.record({"action": "remove", "adapter": name, "tasks": tasks,
                               "reason": "removed through the server"})
            except LibraryError as exc:
                if "is locked by" in str(exc):
                    raise ApiError(409, f"the library is being written (a learn job holds its lock); try again: "
                                        f"{exc}", limit="lock_wait_s", type_="library_busy") from None
                raise
        return DeleteOut(adapter=name, tasks=tasks)


def manifest_version(lib: AdapterLibrary) -> str:
    """A short digest of the committed manifest: changes with every commit."""
    return hashlib.sha256(json.dumps(lib.manifest, sort_keys=True).encode()).hexdigest()[:12]


class ServingEngine(LibraryEndpoints):
    """The backbone, the adapters in memory, and the committed library they come from."""

    def __init__(self, config: ServeConfig, backbone: Any = None) -> None:
        from ..training import TrainConfig

        self.config = config
        self.path = Path(config.library)
        create = config.backbone is not None or backbone is not None
        self.learner = Learner(self.path, backbone=backbone or config.backbone, create=create,
                               train=TrainConfig(max_length=config.max_length), dtype=config.dtype,
                               device=config.device, score_batch=config.batching.score_batch or None)
        self.version = ""
        self.problem: str | None = None  # why the last reload failed (the last good state is served)
        self._sig: tuple[int, int, int] | None = None
        self._specs: dict[str, TaskSpec] = {}
        self._write_lock = threading.Lock()  # the library's lock is re-entrant within a process
        self.refresh()

    # ------------------------------------------------------------------ the committed library
    @property
    def library(self) -> AdapterLibrary:
        return self.learner.library

    def refresh(self) -> bool:
        """Read the library again if its committed manifest changed; True when it did."""
        sig = _stat(self.path / MANIFEST)
        if sig == self._sig:
            return False
        try:
            lib = AdapterLibrary.open(self.path, self.learner.backbone.identity, verify=True)
        except (UserError, OSError) as exc:
            self._sig, self.problem = sig, str(exc)  # retried when the manifest changes again
            log.warning("library reload failed, serving the last good state: %s", exc)
            return False
        self.learner.library = lib
        self._sig, self.problem = sig, None
        self.version = manifest_version(lib)
        self._specs = {t: lib.task_spec(t) for t in lib.tasks}
        for name in [n for n in self.learner.host.names if n not in lib.adapters]:
            self.learner.forget(name)  # removed from the library: free its memory
        log.info("library version %s: %d adapters, %d tasks", self.version, len(lib.adapters), len(lib.tasks))
        return True

    # ------------------------------------------------------------------ predict
    def answer(self, requests: Sequence[PredictRequest]) -> list[PredictResponse | Exception]:
        """Answer a batch of requests together; a request's own mistake fails that request only."""
        self.refresh()
        try:
            return self._answer(requests)
        except (OSError, LibraryError):
            # an adapter changed between the manifest and its files being read: read the library again
            self._sig = None
            self.refresh()
            return self._answer(requests)

    def _answer(self, requests: Sequence[PredictRequest]) -> list[PredictResponse | Exception]:
        """All routed inputs of the batch go to ``Learner.predict`` at once (routed per input, then scored
        by task, each task's prompt prefix shared); the inputs for each given task at once (one adapter,
        shared prefix)."""
        errors: dict[int, Exception] = {}
        calls: dict[str | None, list[Row]] = {}
        for i, r in enumerate(requests):
            try:
                texts = self._texts(r)
            except ApiError as exc:
                errors[i] = exc
                continue
            calls.setdefault(r.task, []).extend((i, j, t) for j, t in enumerate(texts))
        answers: dict[tuple[int, int], Any] = {}
        for task, rows in calls.items():
            self._predict(task, rows, answers, errors)
        out: list[PredictResponse | Exception] = []
        for i, r in enumerate(requests):
            if i in errors:
                out.append(errors[i])
                continue
            preds = [_prediction(answers[i, j], r.task is None) for j in range(len(r.inputs))]
            out.append(PredictResponse(predictions=preds, library_version=self.version))
        return out

    def _texts(self, r: PredictRequest) -> list[str]:
        if r.task is None:
            return [as_text(inp, None) for inp in r.inputs]
        spec = self._specs.get(r.task)
        if spec is None:
            raise ApiError(422, f"task {r.task!r} is not in the library; known: {sorted(self._specs) or 'none'}")
        texts = []
        for j, inp in enumerate(r.inputs):
            try:
                texts.append(as_text(inp, spec))
                split_fields(texts[-1], spec)
            except UserError as exc:
                raise ApiError(422, f"inputs[{j}]: {exc}") from None
        return texts

    def _predict(self, task: str | None, rows: list[Row], answers: dict[tuple[int, int], Any],
                 errors: dict[int, Exception]) -> None:
        """One ``Learner.predict`` call for ``rows``; if it refuses them, each request alone, so only the
        request at fault gets the error."""
        try:
            preds = self.learner.predict([t for _, _, t in rows], task)
        except UserError as exc:
            by_request: dict[int, list[Row]] = {}
            for row in rows:
                by_request.setdefault(row[0], []).append(row)
            if len(by_request) == 1:
                errors[rows[0][0]] = ApiError(422, str(exc))
                return
            for part in by_request.values():
                self._predict(task, part, answers, errors)
            return
        for (i, j, _), p in zip(rows, preds):
            answers[i, j] = p

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, tasks: Sequence[str] | None = None) -> EvaluateResponse:
        """``alearn evaluate LIB``: each task (default: all) scored again on the test examples kept when it was
        learned, with the adapters as served now (422 naming an unknown task, before anything is scored)."""
        self.refresh()
        unknown = [t for t in tasks or [] if t not in self._specs]
        if unknown:
            raise ApiError(422, f"no task {unknown[0]!r} in the library; known: {sorted(self._specs) or 'none'}")
        results = [RetentionOut(task=r, verdict="no kept examples") if isinstance(r, str) else
                   RetentionOut(**r.to_json()) for r in self.learner.check(tasks)]
        return EvaluateResponse(results=results, lost=sum(r.verdict == "lost" for r in results),
                                library_version=self.version)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports about the model and the library it serves."""
        lib = self.library
        return {"status": "degraded" if self.problem else "ok", "backbone": lib.backbone.get("name", "?"),
                "device": str(self.learner.device), "library_version": self.version, "adapters": len(lib.adapters),
                "tasks": len(lib.tasks), "problem": self.problem}


def _prediction(p: Any, routed: bool) -> PredictionOut:
    """The answer as the API gives it: every field of ``Learner.predict``'s answer but the input text."""
    fields = {k: v for k, v in asdict(p).items() if k != "text"}
    return PredictionOut(routed=routed, **fields)


def _brief_event(e: dict[str, Any]) -> dict[str, Any]:
    keys = ("time", "task", "action", "adapter", "confidence", "reason", "accuracy_before", "accuracy_after",
            "retention", "init_from", "tasks")
    return {k: e[k] for k in keys if k in e}


def _stat(p: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
