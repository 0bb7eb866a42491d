"""``alearn serve``: an HTTP service that answers inputs with the adapter library and keeps learning.

One package, one concern per file:

    config.py    ServeConfig, Limits, BatchSettings, JobSettings (dataclasses)
    protocol.py  the API's contract: pydantic request and response models
    serving.py   what a request does, testable without HTTP (ServingEngine: predict, reload, library)
    batching.py  dynamic batching of concurrent predict requests
    model_process.py  the engine in a spawned process (``--model-process``), JSON over a pipe
    learning.py  a learn request read and checked, its upload stored
    jobs.py      learn jobs in spawned worker processes (worker.py runs ``Learner.learn``)
    api.py       the FastAPI routes (thin), body caps, request metrics
    errors.py    the one JSON error shape; metrics.py: Prometheus metrics
    runner.py    run it in the foreground or on a background thread

FastAPI, uvicorn and prometheus-client come with the ``serve`` extra.
"""

from .config import BatchSettings, JobSettings, Limits, ServeConfig

__all__ = ["BatchSettings", "JobSettings", "Limits", "ServeConfig"]
