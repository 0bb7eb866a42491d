"""Ray, the scale-out engine: the one module of the package that imports ``ray``.

``ray`` is imported inside functions only, so the package imports and runs without it (the
``ray`` extra: ``pip install 'adaptive-learner[ray]'``). Two uses:

* ``alearn bench --workers N [--ray-address ADDR]`` (``RunPool``): a bench's runs are independent,
  so each one not already finished in the output directory becomes a Ray task (one CPU; torch and
  OpenMP get cores // N threads), at most N at once. Results come back in the order the sequential
  path runs them, so bench.json and bench.md are the same; finished runs are reused as before.
* ``alearn serve LIBRARY --ray [--replicas N]`` (``start_serve``): the app of ``server.api.create_app``
  as a Ray Serve deployment of N replicas, each loading the backbone and every adapter, behind Ray
  Serve's HTTP proxy on --host/--port. Each replica keeps the app's own dynamic batching. Learn jobs
  go to one actor holding the ``JobManager``, so a job id and the --max-jobs cap mean the same
  whichever replica answers; the library's lock keeps one writer, as without Ray.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import RunLost, UserError

INSTALL_HINT = "pip install 'adaptive-learner[ray]'"
# the environment the package reads, handed to Ray workers (which may have started before it was set)
FORWARDED_PREFIXES = ("ADAPTIVE_LEARNER_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_")
FORWARDED_NAMES = ("XDG_CACHE_HOME", "TMPDIR")  # TMPDIR: where a replica stores a learn upload for the job
APP_NAME = "alearn"
NAMESPACE = "adaptive-learner"
MAX_ONGOING_REQUESTS = 256  # per replica: Ray's default (5) would starve the app's own batching
ADDRESS_HELP = "HOST:PORT (printed by `ray start --head`), ray://HOST:PORT (Ray Client) or auto"


# ---------------------------------------------------------------------- connecting
def _ray(what: str) -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"{what} needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def local_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch / OpenMP threads for each of ``workers`` runs sharing ``cores`` (this machine's): at least 1."""
    return max(1, (cores or local_cores()) // max(1, workers))


def forwarded_env(threads: int | None = None) -> dict[str, str]:
    """The package's environment (cache, Hugging Face settings) and the thread count, for Ray workers."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def check_address(address: str) -> str:
    """A ``--ray-address`` that can be joined: its form, then that something answers there (5 s),
    so that a wrong address is one line rather than a long wait inside ``ray.init``."""
    a = address.strip()
    if a == "auto":
        return a
    rest = a[len("ray://"):] if a.startswith("ray://") else a
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or "/" in rest or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray-address {address!r} is not a Ray address; give {ADDRESS_HELP}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(f"--ray-address {address!r}: nothing answers there ({why}); start the cluster's head "
                        f"with `ray start --head` and give the address it prints") from None
    return a


# Ray Serve gives its HTTP proxy 5 s to report ready (and 10 s per health check) before it kills it and
# starts another: on a busy machine (a learn job training on every core beside it) the proxy never makes
# it and the app fails to start. A local Ray started here inherits these; a user's own settings win.
LOCAL_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0",  # no report home unless the user asks for it
                  # Ray raises its workers' niceness by 15 (19 at most): a bench started at nice 5 beside
                  # other jobs ran its runs at 19, starved; the runs are the work, at the driver's priority
                  "RAY_worker_niceness": "0",
                  "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
                  "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30"}


def local_defaults() -> None:
    """Set ``LOCAL_DEFAULTS`` in this process's environment where the user has not (before ``ray.init``)."""
    for k, v in LOCAL_DEFAULTS.items():
        os.environ.setdefault(k, v)


def connect(address: str | None, num_cpus: int | None, what: str) -> bool:
    """Ray ready in this process: join ``address``, or start a local Ray with ``num_cpus`` CPUs.

    True when this call started or joined it (the caller ends it with ``ray.shutdown()``); False
    when this process was connected already (a test's Ray, a caller's own ``ray.init``)."""
    ray = _ray(what)
    if address is not None:
        address = check_address(address)
    if ray.is_initialized():
        return False
    local_defaults()
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
        else:
            ray.init(address=address, logging_level="WARNING")
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError ...
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        raise UserError(f"cannot {where}: {_first_line(exc)}") from None
    return True


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> Any:
    """SIGTERM raises KeyboardInterrupt (so Ray is taken down as after Ctrl-C) instead of the handler
    ``ray.init`` installs, which aborts the process. Returns the handler it replaced (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def _first_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# more runs than this on one GPU time-slice it badly: 15 small-model runs on one H200 each took
# 1.7-1.9 s a step (BENCHMARKS.md, "The same bench on a GPU")
MAX_RUNS_PER_GPU = 4


def gpu_share(device: str, workers: int, gpus: float) -> float:
    """The GPUs each bench run (or serve replica) asks Ray for. Ray hides every GPU from a task that asks
    for none (``CUDA_VISIBLE_DEVICES`` empty), so runs meant for a GPU must ask: the cluster's GPUs shared by
    the ``workers`` runs at once, at most ``MAX_RUNS_PER_GPU`` on one GPU, at most one GPU each.
    0 on the CPU (``device`` cpu) or where the cluster has no GPU."""
    if device.strip().lower() == "cpu" or gpus <= 0:
        return 0.0
    return min(1.0, max(gpus / max(1, workers), 1.0 / MAX_RUNS_PER_GPU))


def check_workers(workers: int) -> None:
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")


# ---------------------------------------------------------------------- bench runs as Ray tasks
def _in_worker(fn: Callable[..., Any], args: tuple, workers: int, cwd: str, log: str | None) -> Any:
    """One call in a Ray worker: cores // workers threads (of the node it runs on), the driver's
    directory, and its stderr (progress bars, warnings) in the file ``log`` rather than interleaved
    with the other workers' on the driver's terminal."""
    import contextlib

    import torch

    threads = threads_per_worker(workers)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths (a sequence file, a model dir) mean what they meant to the driver
    if log is None:
        return fn(*args)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stderr(f):
        return fn(*args)


class RunPool:
    """Calls of one module-level function as Ray tasks (one CPU each, at most ``workers`` at once; with a
    GPU ``device``, a share of the cluster's GPUs each: ``gpu_share``), their results in the order
    given. Ray starts (or the cluster is joined) on the first call that has work, and ends with
    ``close()`` when it was this pool that started it."""

    def __init__(self, workers: int, address: str | None = None, device: str = "cpu") -> None:
        check_workers(workers)
        if device.strip().lower().startswith("cuda:"):
            raise UserError(f"--device {device} with --workers / --ray-address: Ray gives each run its GPU; "
                            f"give --device cuda (or auto)")
        self.device = device
        _ray("--workers / --ray-address")  # not installed: one line before any run starts
        if address is not None:
            check_address(address)
        self.workers, self.address = workers, address
        self._owned: bool | None = None
        self._pending: list[Any] = []
        self._sigterm: Any = None

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], labels: Sequence[str] | None = None,
            logs: Sequence[str | None] | None = None) -> list[Any]:
        """``[fn(*c) for c in calls]`` on Ray workers; ``labels`` name the calls in progress lines and errors,
        ``logs`` are files for each call's stderr."""
        if not calls:
            return []
        if self._owned is None:
            self._owned = connect(self.address, self.workers if self.address is None else None,
                                  "--workers / --ray-address")
            if self._owned:
                self._sigterm = sigterm_as_interrupt()
        import ray

        labels = list(labels) if labels is not None else [str(i) for i in range(len(calls))]
        logs = list(logs) if logs is not None else [None] * len(calls)
        share = gpu_share(self.device, self.workers, float(ray.cluster_resources().get("GPU", 0)))
        task = ray.remote(num_cpus=1, max_retries=0)(_in_worker).options(
            num_gpus=share, runtime_env={"env_vars": forwarded_env(threads_per_worker(self.workers))})
        cwd = os.getcwd()
        results: dict[int, Any] = {}
        failure: BaseException | None = None
        queue = list(range(len(calls)))
        running: dict[Any, int] = {}
        while queue or running:
            while queue and failure is None and len(running) < self.workers:
                i = queue.pop(0)
                running[task.remote(fn, tuple(calls[i]), self.workers, cwd, logs[i])] = i
            if failure is not None:
                queue.clear()  # after a failure: let the runs in flight finish (they are kept), start no more
            if not running:
                break
            self._pending = list(running)
            [ref], _ = ray.wait(list(running), num_returns=1)
            i = running.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the runs in flight
                failure = failure or _worker_error(exc, labels[i])
                continue
            print(f"ray: {len(results)}/{len(calls)} runs finished ({labels[i]})", file=sys.stderr, flush=True)
        self._pending = []
        if failure is not None:
            raise failure
        return [results[i] for i in range(len(calls))]

    def close(self) -> None:
        """Cancel what is still running (an interrupt) and end Ray if this pool started it."""
        if self._owned is None:
            return
        import ray

        for ref in self._pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        self._pending = []
        if self._owned:
            ray.shutdown()
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)
        self._owned, self._sigterm = None, None

    def __enter__(self) -> "RunPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _worker_error(exc: BaseException, label: str) -> BaseException:
    """The error a worker's run raised, as the sequential path would have raised it where that is a
    user's mistake (one line); a worker that died becomes one line saying how to resume."""
    import ray

    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, UserError):
        return cause
    if isinstance(exc, ray.exceptions.RayTaskError):
        return exc  # a bug: keep the worker's traceback
    return RunLost(f"the Ray worker of run {label} ended without a result ({_first_line(exc)}); finished "
                   f"runs are kept: run the same command again to resume")


# ---------------------------------------------------------------------- alearn serve --ray
class JobsService:
    """The one ``JobManager`` of a Ray Serve deployment, as an actor: every replica's learn and job
    requests come here, so job ids and the --max-jobs cap are shared. Plain data in and out."""

    def __init__(self, library: str, limits: Any, settings: Any = None) -> None:
        from .server.jobs import JobManager

        self.jobs = JobManager(Path(library), limits, settings=settings)

    def submit(self, task: str, source: dict[str, Any], options: dict[str, Any],
               upload_dir: Path | None = None) -> Any:
        from .server.errors import ApiError

        try:
            return _plain(self.jobs.submit(task, source, options, upload_dir))
        except ApiError as exc:  # a refusal (429): sent back as data, raised again in the replica
            return _Refusal(exc.status, exc.message, exc.limit, exc.type, exc.headers)

    def get(self, job_id: str) -> Any:
        job = self.jobs.get(job_id)
        return None if job is None else _plain(job)

    def all(self) -> list[Any]:
        return [_plain(j) for j in self.jobs.all()]

    def active(self) -> int:
        return self.jobs.active()

    def shutdown(self) -> None:
        self.jobs.shutdown()


@dataclass
class _Refusal:
    status: int
    message: str
    limit: str | None
    type: str | None
    headers: dict[str, str] | None


def _plain(job: Any) -> Any:
    """A job without its process handle (which cannot cross processes)."""
    return replace(job, process=None)


class RemoteJobs:
    """``JobManager``'s interface in a replica, answered by the deployment's ``JobsService`` actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self.actor, method).remote(*args), timeout=60)

    def submit(self, task: str, source: dict[str, Any], options: dict[str, Any],
               upload_dir: Path | None = None) -> Any:
        out = self._call("submit", task, source, options, upload_dir)
        if isinstance(out, _Refusal):
            from .server.errors import ApiError

            raise ApiError(out.status, out.message, out.limit, out.type, out.headers)
        return out

    def get(self, job_id: str) -> Any:
        return self._call("get", job_id)

    def all(self) -> list[Any]:
        return self._call("all")

    def active(self) -> int:
        return int(self._call("active"))

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Nothing: the jobs belong to the actor, which ``RayServe.stop`` shuts down."""


def build_replica_app(config: Any, jobs_name: str, threads: int) -> Any:
    """The app of one replica: ``create_app(config)`` with its jobs answered by the shared actor."""
    import ray
    import torch

    from .server.api import create_app

    torch.set_num_threads(threads)
    app = create_app(config)
    jobs = RemoteJobs(ray.get_actor(jobs_name, namespace=NAMESPACE))
    app.state.jobs = jobs  # every route reads request.app.state.jobs
    app.state.metrics.jobs_running.set_function(lambda: float(jobs.active()))
    return app


def _deployment(replicas: int, env: dict[str, str], gpus: float = 0.0) -> Any:
    from ray import serve

    @serve.deployment(name=APP_NAME, num_replicas=replicas, max_ongoing_requests=MAX_ONGOING_REQUESTS,
                      ray_actor_options={"num_cpus": 1, "num_gpus": gpus, "runtime_env": {"env_vars": env}})
    @serve.ingress()
    class AlearnReplica:
        def __init__(self, config: Any, jobs_name: str, threads: int) -> None:
            self.args = (config, jobs_name, threads)

        def __serve_build_asgi_app__(self) -> Any:  # called on the replica, after __init__
            return build_replica_app(*self.args)

    return AlearnReplica


@dataclass
class RayServe:
    """A running deployment: where it answers, and how to end it."""

    url: str
    replicas: int
    jobs_actor: Any
    owned: bool

    def stop(self) -> None:
        _take_down(self.jobs_actor, self.owned)


def _take_down(jobs_actor: Any, owned: bool) -> None:
    """The app first (its replicas use the jobs actor), then the actor and its running jobs, then Ray
    itself when this process started or joined it."""
    import ray
    from ray import serve

    try:
        serve.delete(APP_NAME)
    except Exception:  # noqa: BLE001 - never deployed, or its cluster is gone
        pass
    if jobs_actor is not None:
        try:
            ray.get(jobs_actor.shutdown.remote(), timeout=30)
            ray.kill(jobs_actor)
        except Exception:  # noqa: BLE001 - already gone with its cluster
            pass
    if owned:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def start_serve(config: Any, replicas: int = 1, address: str | None = None,
                on_connect: Callable[[], Any] | None = None) -> RayServe:
    """Deploy the app with ``replicas`` replicas; Ray Serve's HTTP proxy listens on config.host:config.port
    (port 0: a free port). Returns once the replicas have loaded the library. ``on_connect``: called
    once Ray is up, before the deployment starts."""
    from .server.runner import bind

    config.check()
    if replicas < 1:
        raise UserError(f"--replicas must be at least 1, got {replicas}")
    _ray("alearn serve --ray")
    try:
        from ray import serve
    except ImportError as exc:
        raise UserError(f"alearn serve --ray needs Ray Serve ({exc.name} is missing): {INSTALL_HINT}") from None
    if address is not None:
        check_address(address)
    sock = bind(config.host, config.port)  # a busy port or a bad host: one line, before anything starts
    port = sock.getsockname()[1]
    sock.close()
    config = replace(config, port=port)
    if config.backbone is None:
        from .library import AdapterLibrary

        AdapterLibrary.open(config.library, verify=False)  # no library there: one line, not failing replicas
    owned = connect(address, max(local_cores(), replicas) if address is None else None, "alearn serve --ray")
    import ray

    if on_connect is not None:
        on_connect()

    threads = threads_per_worker(replicas)
    env = {**forwarded_env(threads), "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC": "0"}  # job calls: quick, on a local actor
    # Ray hides the GPUs from an actor that asks for none: each replica and the jobs actor (whose learn jobs
    # train) ask for a share of them unless the device is the CPU
    share = gpu_share(config.device, replicas + 1, float(ray.cluster_resources().get("GPU", 0)))
    actor = None
    try:
        serve.start(http_options={"host": config.host, "port": port})
        jobs_name = f"alearn-jobs-{uuid.uuid4().hex[:8]}"
        actor = ray.remote(num_cpus=0, max_concurrency=16)(JobsService).options(
            name=jobs_name, namespace=NAMESPACE, num_gpus=share, runtime_env={"env_vars": env}).remote(
            str(config.library), config.limits, config.jobs)
        ray.get(actor.active.remote(), timeout=120)
        app = _deployment(replicas, env, share).bind(config, jobs_name, threads)
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": config.log_level.upper()})
    except BaseException as exc:
        _take_down(actor, owned)
        if isinstance(exc, (UserError, KeyboardInterrupt)):
            raise
        raise UserError(f"Ray Serve could not start the app: {_serve_error(exc)}") from None
    host = f"[{config.host}]" if ":" in config.host else config.host
    return RayServe(url=f"http://{host}:{port}", replicas=replicas, jobs_actor=actor, owned=owned)


def _serve_error(exc: BaseException) -> str:
    """The replica's own error where Serve's message carries it (e.g. a library that cannot be opened)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    for line in reversed(lines):
        if "Error:" in line and not line.startswith(("File ", "ray.")):
            return line[:300]
    return _first_line(exc)


def serve_forever(config: Any, replicas: int = 1, address: str | None = None) -> None:
    """``alearn serve --ray``: deploy, answer until Ctrl-C or SIGTERM, then take the deployment down."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        served = start_serve(config, replicas, address, on_connect=sigterm_as_interrupt)
        print(f"serving {config.library} on {served.url} with {replicas} Ray Serve replica(s) (docs at /docs); "
              f"Ctrl-C stops", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            served.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
