"""Run the app: in the foreground (``alearn serve``) or on a background thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
from typing import Any

from ..errors import UserError
from .config import ServeConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one clear line when the address cannot be had (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def _uvicorn_server(app: Any, config: ServeConfig) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=config.log_level, access_log=config.log_level == "debug",
                                         timeout_graceful_shutdown=10))


def serve(config: ServeConfig) -> None:
    """Load the library and answer HTTP until interrupted (``alearn serve``)."""
    from .api import create_app

    config.check()
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = bind(config.host, config.port)  # before the model loads: a busy port fails at once
    app = create_app(config)
    host, port = sock.getsockname()[:2]
    logging.getLogger("adaptive_learner.server").info("serving %s on http://%s:%s (docs at /docs)",
                                                      config.library, host, port)
    # the model thread runs Python between its kernels and holds the interpreter lock; the event loop, which
    # reads the requests that make the next batch, waits for it up to the switch interval at each step of each
    # request. Python's 5 ms is kept: 0.5 ms measured no better on the 2-core CPU (BENCHMARKS.md, session 21);
    # a GPU, where the model thread is nearly all Python, is where to measure it again
    sys.setswitchinterval(config.batching.switch_ms / 1000)
    _uvicorn_server(app, config).run(sockets=[sock])


class BackgroundServer:
    """The app served on a thread of this process, on a free loopback port (tests, benchmarks)."""

    def __init__(self, app: Any, config: ServeConfig) -> None:
        self.sock = bind(config.host, config.port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{config.host}:{self.port}"
        self.server = _uvicorn_server(app, config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       name="alearn-server", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread ended before it started")
            self.thread.join(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
