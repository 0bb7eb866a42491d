"""The HTTP routes, thin: each checks access, hands the request to ``serving``/``jobs``, and returns
a ``protocol`` model. Cross-cutting parts sit once, here: body size caps, request ids, metrics,
and the one error shape (``errors.py``). OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .batching import Batcher
from .config import ServeConfig
from .errors import ApiError, error_response, install_error_handlers, internal_error, limit_error
from .jobs import Job, JobManager
from .learning import prepare_job, read_learn_request
from .metrics import Metrics
from .protocol import (DeleteOut, ErrorOut, EvaluateRequest, EvaluateResponse, HealthOut, JobAccepted, JobList,
                       JobOut, LearnRequest, LibraryOut, PredictRequest, PredictResponse)
from .serving import ServingEngine, check_predict

FORM_SLACK = 64 * 1024  # multipart framing and the option fields around an upload
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 422, 429, 503)}


def create_app(config: ServeConfig, engine: Any = None) -> FastAPI:
    """The app over one library (``engine``: an already loaded ``ServingEngine`` or ``RemoteEngine``, else one
    loaded now: in this process, or with ``config.model_process`` in a process of its own)."""
    if engine is None:
        if config.model_process:
            from .model_process import RemoteEngine

            engine = RemoteEngine(config)
        else:
            engine = ServingEngine(config)
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alearn-model")  # torch runs on one thread

    def run_batch(requests: list[PredictRequest]) -> list[Any]:
        before = engine.version
        out = engine.answer(requests)
        if engine.version != before:
            metrics.reloads.inc()
        return out

    def job_ended(job: Job, state: str) -> None:
        metrics.jobs.labels(state).inc()

    jobs = JobManager(config.library, config.limits, on_end=job_ended, settings=config.jobs)
    metrics.jobs_running.set_function(lambda: float(jobs.active()))
    metrics.model_starts.set_function(lambda: float(getattr(engine, "starts", 0)))
    batcher: Batcher[PredictRequest] = Batcher(run_batch, executor, config.batching, metrics.observe_batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.close()
        await asyncio.to_thread(jobs.shutdown)
        executor.shutdown(wait=False)
        if hasattr(engine, "close"):  # the model process, when there is one
            await asyncio.to_thread(engine.close)

    app = FastAPI(title="adaptive-learner", lifespan=lifespan, responses=ERRORS,
                  description="Answers inputs with a library of LoRA adapters and keeps learning new tasks.")
    app.state.config, app.state.engine, app.state.jobs, app.state.metrics = config, engine, jobs, metrics
    app.state.batcher, app.state.executor = batcher, executor
    install_error_handlers(app)
    app.add_middleware(BodyLimit, config=config)
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last: outermost
    _add_routes(app)
    return app


# ---------------------------------------------------------------------- access
def _token_ok(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


# async, though they await nothing: FastAPI runs a plain ``def`` dependency on a worker thread, two thread
# hops per request that wait for the interpreter lock the model thread holds (BENCHMARKS.md, session 21)
async def require_token(request: Request) -> None:
    """Learn and delete: the bearer token, when the server has one."""
    token = request.app.state.config.token
    if token and not _token_ok(request, token):
        raise ApiError(401, "this endpoint needs the server's bearer token (Authorization: Bearer ...)",
                       headers={"WWW-Authenticate": "Bearer"})


async def require_token_if_all(request: Request) -> None:
    """Every other /v1 endpoint: the token only with --token-all."""
    if request.app.state.config.token_all:
        await require_token(request)


# ---------------------------------------------------------------------- routes
def _add_routes(app: FastAPI) -> None:
    open_ = [Depends(require_token_if_all)]
    guarded = [Depends(require_token)]

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=open_)
    async def predict(body: PredictRequest, request: Request) -> Any:
        """Label inputs with a task's adapter; without ``task`` each input is routed to a learned task."""
        state = request.app.state
        check_predict(body, state.config.limits)
        result = await state.batcher.submit(body, len(body.inputs))
        state.metrics.predictions.labels(str(body.task is None).lower()).inc(len(body.inputs))
        return result

    @app.post("/v1/learn", status_code=202, response_model=JobAccepted, dependencies=guarded,
              openapi_extra=_learn_openapi())
    async def learn(request: Request, response: Response) -> Any:
        """Start learning a task (built-in name as JSON, or an uploaded file as multipart); returns a job id."""
        state = request.app.state
        req, upload = await read_learn_request(request, state.config.limits)
        spec = await asyncio.to_thread(prepare_job, req, upload, state.config.library)
        try:
            job = await asyncio.to_thread(state.jobs.submit, spec.task, spec.source, spec.options, spec.upload_dir)
        except BaseException:
            if spec.upload_dir is not None:
                import shutil
                shutil.rmtree(spec.upload_dir, ignore_errors=True)
            raise
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return JobAccepted(id=job.id, state=job.state, url=f"/v1/jobs/{job.id}")

    @app.get("/v1/jobs", response_model=JobList, dependencies=open_)
    async def list_jobs(request: Request) -> Any:
        """Every job the server remembers, oldest first."""
        return JobList(jobs=[j.out() for j in sorted(request.app.state.jobs.all(), key=lambda j: j.created)])

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, dependencies=open_)
    async def get_job(job_id: str, request: Request) -> Any:
        """A job's state, progress (step / steps), decision, accuracy before/after, or its one-line error."""
        job = request.app.state.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id[:40]!r}")
        return job.out()

    @app.get("/v1/library", response_model=LibraryOut, dependencies=open_)
    async def library(request: Request) -> Any:
        """Adapters, tasks and the recent decisions of the committed library."""
        return await asyncio.to_thread(request.app.state.engine.library_out)

    @app.post("/v1/evaluate", response_model=EvaluateResponse, dependencies=guarded)
    async def evaluate(body: EvaluateRequest, request: Request) -> Any:
        """Score learned tasks again on the test examples kept when each was learned (``alearn evaluate``): has
        learning later tasks cost them anything? Runs on the model's thread, between predict batches."""
        state = request.app.state
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(state.executor, state.engine.evaluate, body.tasks)

    @app.delete("/v1/adapters/{name}", response_model=DeleteOut, dependencies=guarded)
    async def delete_adapter(name: str, request: Request) -> Any:
        """Remove an adapter, its data and the tasks it serves (one transaction)."""
        return await asyncio.to_thread(request.app.state.engine.delete_adapter, name)

    @app.get("/healthz", response_model=HealthOut)
    async def healthz(request: Request) -> Any:
        """Liveness and what is being served."""
        return HealthOut(**request.app.state.engine.health(), jobs_running=request.app.state.jobs.active())

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        body, ctype = request.app.state.metrics.render()
        return Response(body, media_type=ctype)


def _learn_openapi() -> dict[str, Any]:
    schema = LearnRequest.model_json_schema()
    form = {**schema, "properties": {**schema["properties"], "file": {"type": "string", "format": "binary"}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "multipart/form-data": {"schema": form}}}}


# ---------------------------------------------------------------------- cross-cutting
class BodyLimit:
    """Refuses a body over its cap (413 naming the limit) before or while it is read."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.limits = config.limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["path"].rstrip("/") == "/v1/learn"
        name = "max_upload_bytes" if upload else "max_body_bytes"
        cap = self.limits.max_upload_bytes + FORM_SLACK if upload else self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(Request(scope), 400, "bad_request", "invalid Content-Length")(scope, receive, send)
                return
            if int(declared) > cap:
                msg = f"the body has {int(declared)} bytes; the limit is {cap}"
                await error_response(Request(scope), 413, "limit_exceeded", msg, name)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                raise limit_error(name, f"the body is over {cap} bytes")
            return message

        await self.app(scope, counted, send)


class RequestMetrics:
    """Outermost: a request id (``X-Request-ID``, and in every error body), the request count and latency by
    route and status, and a 500 in the one error shape for a fault nothing below answered.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs every request
    through a task group and memory streams, Python work on the event loop per request that competes with the
    model thread for the interpreter lock (BENCHMARKS.md, session 21)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Any) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:  # noqa: BLE001 - answered here: past this point the server would log it
                # again and close the connection after the 500, failing a keep-alive client's next request
                if started:
                    raise
                await internal_error(Request(scope), exc)(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
