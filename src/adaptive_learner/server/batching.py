"""Dynamic batching for the embedded server: requests that arrive together are answered together.

Why our own (60 lines) rather than a library's: Ray Serve's ``@serve.batch`` needs a running Ray
cluster and a Serve deployment around it, and LitServe brings its own server loop and batches
requests for one model, with no notion of one request holding several inputs or of adapters.
Here a batch is a list of whole requests; the function it calls (``ServingEngine.answer``)
groups their inputs by task and adapter.

One consumer task takes the first waiting request, gathers more for at most ``max_wait_ms`` or
until ``max_inputs`` inputs are in, and runs the batch on the single model thread. While a batch
runs, new requests queue up, so under load batches fill without waiting at all.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from .config import BatchSettings

Req = TypeVar("Req")

BatchFn = Callable[[Sequence[Any]], Sequence[Any]]  # one result (or exception) per request


@dataclass
class _Pending(Generic[Req]):
    request: Req
    size: int
    future: asyncio.Future


class Batcher(Generic[Req]):
    """Gathers concurrent requests into batches and runs ``fn`` on each batch in ``executor``."""

    def __init__(self, fn: BatchFn, executor: Executor, settings: BatchSettings,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self.fn = fn
        self.executor = executor
        self.settings = settings
        self.on_batch = on_batch  # (requests, inputs) of every batch run, for the metrics
        self._queue: asyncio.Queue[_Pending[Req]] | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, request: Req, size: int) -> Any:
        """Answer one request (``size`` inputs) as part of a batch; raises what ``fn`` returned for it."""
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        await self._queue.put(_Pending(request, size, fut))
        return await fut

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._gather(await self._queue.get())
            await self._execute(batch)

    async def _gather(self, first: _Pending[Req]) -> list[_Pending[Req]]:
        batch, size = [first], first.size
        if not self.settings.enabled:
            return batch  # one request at a time: the comparison mode
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        assert self._queue is not None
        while size < self.settings.max_inputs:
            if self._queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            size += item.size
        return batch

    async def _execute(self, batch: list[_Pending[Req]]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client that went away is not answered
        if not live:
            return
        if self.on_batch is not None:
            self.on_batch(len(live), sum(p.size for p in live))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.fn, [p.request for p in live])
        except Exception as exc:  # the whole batch failed: every request gets the error
            results = [exc] * len(live)
        for p, r in zip(live, results):
            if p.future.done():
                continue
            if isinstance(r, BaseException):
                p.future.set_exception(r)
            else:
                p.future.set_result(r)
