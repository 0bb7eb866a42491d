"""The settings of ``alearn serve``: where it listens, who may change the library, and its limits."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

TOKEN_ENV = "ALEARN_TOKEN"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass
class Limits:
    """Caps that keep one client from exhausting the server; each is named in the error it causes."""

    max_inputs: int = field(default=64, metadata={"help": "inputs per predict request (413 beyond)"})
    max_chars: int = field(default=4000, metadata={"help": "characters per input (413 beyond)"})
    max_body_bytes: int = field(default=2 * 1024 * 1024, metadata={"help": "bytes of a JSON request body (413)"})
    max_upload_bytes: int = field(default=10 * 1024 * 1024, metadata={"help": "bytes of a learn upload (413)"})
    max_jobs: int = field(default=1, metadata={"help": "learn jobs running at once (429 beyond)"})
    lock_wait_s: float = field(default=5.0, metadata={"help": "seconds a delete waits for the writer lock (409)"})

    def check(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


@dataclass
class BatchSettings:
    """Dynamic batching: how long a batch waits for company, and how large it may grow."""

    enabled: bool = field(default=True, metadata={"help": "False: one request at a time (for comparison)"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest wait for more requests to join a batch"})
    max_inputs: int = field(default=64, metadata={"help": "inputs that close a batch at once"})
    score_batch: int = field(default=0, metadata={"help": "inputs per scoring forward (0: 8 on a CPU, 32 on a GPU)"})
    switch_ms: float = field(default=5.0, metadata={"help": "the interpreter's thread switch interval in ms: how "
                                                            "soon requests are read while a batch runs"})

    def check(self) -> None:
        if not 0 <= self.max_wait_ms <= 1000:
            raise UserError(f"--batch-wait-ms must be between 0 and 1000, got {self.max_wait_ms}")
        if self.max_inputs <= 0:
            raise UserError(f"--max-batch must be positive, got {self.max_inputs}")
        if not 0 < self.switch_ms <= 100:
            raise UserError(f"--switch-ms must be above 0 and at most 100, got {self.switch_ms}")
        if self.score_batch < 0:
            raise UserError(f"--score-batch must be 0 (by device) or positive, got {self.score_batch}")


@dataclass
class JobSettings:
    """How a learn job shares the machine with the requests: answering comes first."""

    nice: int = field(default=10, metadata={"help": "OS priority added to a learn job's process (0-19): the "
                                                     "higher, the more CPU stays with answering requests"})
    threads: int = field(default=0, metadata={"help": "torch threads of a learn job (0: half the cores, at least 1)"})
    dtype: str = field(default="float32", metadata={"help": "the backbone's precision in a learn job (the server's)"})
    device: str = field(default="auto", metadata={"help": "where a learn job trains (the server's device)"})

    def check(self) -> None:
        if not 0 <= self.nice <= 19:
            raise UserError(f"--job-nice must be between 0 and 19, got {self.nice}")
        if self.threads < 0:
            raise UserError(f"--job-threads must be 0 (half the cores) or positive, got {self.threads}")

    def resolved_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // 2)


@dataclass
class ServeConfig:
    """Everything ``alearn serve`` needs; plain data, so it can cross to a Ray replica unchanged."""

    library: Path
    host: str = "127.0.0.1"
    port: int = 8000
    backbone: str | None = field(default=None, metadata={"help": "backbone for a new, empty library"})
    dtype: str = field(default="float32", metadata={"help": "the backbone's precision: float32 or bfloat16"})
    device: str = field(default="auto", metadata={"help": "where to score: auto (a CUDA GPU when there is one), "
                                                          "cpu, cuda or cuda:N"})
    token: str | None = field(default=None, metadata={"help": "bearer token for learn and delete"})
    token_all: bool = field(default=False, metadata={"help": "require the token for every /v1 endpoint"})
    max_length: int = field(default=256, metadata={"help": "max tokens per input when scoring"})
    limits: Limits = field(default_factory=Limits)
    batching: BatchSettings = field(default_factory=BatchSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    log_level: str = "info"
    model_process: bool = field(default=False, metadata={
        "help": "score in a process of its own: the HTTP process reads, batches and answers requests while the "
                "model process scores, so neither waits for the other's interpreter lock"})

    def check(self) -> "ServeConfig":
        """Refuse settings that cannot work, with one line naming the option."""
        self.limits.check()
        self.batching.check()
        self.jobs.check()
        if not 0 <= self.port < 65536:
            raise UserError(f"--port must be between 0 and 65535, got {self.port}")
        if self.log_level not in LOG_LEVELS:
            raise UserError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.max_length <= 0:
            raise UserError(f"--max-length must be positive, got {self.max_length}")
        from ..backbone import dtype_name, resolve_device, resolve_dtype

        self.dtype = dtype_name(resolve_dtype(self.dtype))
        self.device = (self.device or "auto").strip().lower()
        resolve_device(self.device)  # one error line for a device this machine lacks; auto is resolved where it loads
        self.jobs.device = self.device
        if self.jobs.dtype != self.dtype:
            raise UserError(f"learn jobs would load the backbone in {self.jobs.dtype}, the server in {self.dtype}")
        if self.token is not None and not self.token.strip():
            self.token = None  # an empty ALEARN_TOKEN means no token
        if self.token_all and self.token is None:
            raise UserError(f"--token-all needs a token: give --token or set {TOKEN_ENV}")
        if self.token is None and not _is_loopback(self.host):
            # not refused: a reverse proxy may guard it; but anyone reaching it may teach and delete
            import warnings
            warnings.warn(f"serving on {self.host} without a token: anyone who can reach it can learn and delete")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ServeConfig":
        """The settings back from ``asdict`` (what crosses to the model process, as JSON)."""
        return cls(**{**d, "library": Path(d["library"]), "limits": Limits(**d["limits"]),
                      "batching": BatchSettings(**d["batching"]), "jobs": JobSettings(**d["jobs"])})

    def public(self) -> dict[str, Any]:
        """The settings without the token (for logs and /healthz)."""
        d = asdict(self)
        d["library"] = str(self.library)
        d["token"] = "set" if self.token else None
        return d


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
