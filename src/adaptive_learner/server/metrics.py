"""Prometheus metrics of one server: requests, latency, batch sizes, learn jobs.

Each app has its own registry, so several servers in one process (the tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The counters and histograms the routes and the batcher update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("alearn_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("alearn_request_latency_seconds", "time to answer a request, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("alearn_batch_requests", "predict requests answered by one batch",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_inputs = Histogram("alearn_batch_inputs", "inputs scored by one batch",
                                      buckets=BATCH_BUCKETS, registry=self.registry)
        self.predictions = Counter("alearn_predictions", "inputs answered, by whether the task was routed",
                                   ["routed"], registry=self.registry)
        self.jobs = Counter("alearn_jobs", "learn jobs that ended, by final state", ["state"], registry=self.registry)
        self.jobs_running = Gauge("alearn_jobs_running", "learn jobs queued or running", registry=self.registry)
        self.reloads = Counter("alearn_library_reloads", "times a changed library was read again",
                               registry=self.registry)
        self.model_starts = Gauge("alearn_model_process_starts", "model processes started, the first included "
                                  "(0: the model runs in the HTTP process)", registry=self.registry)

    def observe_batch(self, requests: int, inputs: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_inputs.observe(inputs)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
