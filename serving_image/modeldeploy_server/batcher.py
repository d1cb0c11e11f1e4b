"""Adaptive micro-batching: coalesce concurrent requests into one model call.

A scikit-learn ``predict`` costs roughly the same for 1 row as for 50 (a forest walks every tree
either way), so under concurrency the cheapest thing is to stack whatever requests are waiting and
call the model once. The batcher never delays a lone request: it runs a batch as soon as the
predict thread is free, and only waits (up to ``max_wait``) when the previous batch showed that
several callers are active, and then only until as many requests as last time have arrived.
Predict runs in one dedicated worker thread so the event loop keeps accepting and decoding.

A request that is alone (the previous batch was alone too and nothing else waits) is predicted
on the event loop itself when the model is quick (recent predicts under ``inline_max_s``): the
hand-off to the worker thread and back costs a few hundred microseconds here, as much as a small
model's whole predict, and there is nothing to overlap with. A slow model never runs inline, so
the loop is never blocked for long (health probes keep answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]
# (X, outputs) -> one result array per output name, each with len(X) rows.
RunFn = Callable[[Array, tuple[str, ...]], list[Array]]
# (rows, requests, seconds, outputs, results) after each successful model call.
ObserveFn = Callable[[int, int, float, tuple[str, ...], list[Array]], None]
# (X, outputs, results) of each successful model call, run on the event loop after the callers'
# results are delivered (drift tracking): off their critical path.
AfterFn = Callable[[Array, tuple[str, ...], list[Array]], None]


@dataclass(slots=True)  # not frozen: built once per request, and frozen __init__ costs more
class BatchResult:
    """One caller's rows of a coalesced model call, and how long that whole call took.

    The seconds travel with the result (not in a context variable) so any transport can report
    the model's share of a request, e.g. as Server-Timing.
    """

    outputs: list[Array]
    seconds: float


@dataclass(slots=True)
class _Job:
    x: Array
    outputs: tuple[str, ...]
    future: asyncio.Future[BatchResult]
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Only stack what numpy can stack without changing meaning: same outputs, columns, dtype.
        self.key = (self.outputs, self.x.shape[1:], self.x.dtype.str)


class MicroBatcher:
    """Queue of pending jobs served by one consumer task and one predict thread."""

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_rows: int,
        max_wait_s: float,
        observe: ObserveFn | None = None,
        after: AfterFn | None = None,
        inline_max_s: float = 0.02,
    ) -> None:
        self._run = run
        self._after = after
        self._max_rows = max_batch_rows
        self._max_wait = max_wait_s
        self._observe = observe
        self._inline_max = inline_max_s
        # Smoothed seconds per model call; None until one call was timed (that one is threaded).
        self._call_s: float | None = None
        self._pending: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None
        self._last_jobs = 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False)

    async def submit(self, x: Array, outputs: tuple[str, ...]) -> BatchResult:
        """Queue ``x`` (2-D, rows first) and wait for its slice of the batched result."""
        if self._task is None:
            raise RuntimeError("batcher not started")
        fut: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(x, outputs, fut))
        self._wakeup.set()
        return await fut

    def _take(self, batch: list[_Job], rows: int) -> int:
        """Move compatible jobs from the queue into ``batch`` in arrival order, up to max rows."""
        key = batch[0].key
        keep: deque[_Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            if job.future.done():  # caller went away (cancelled)
                continue
            if job.key == key and rows + job.x.shape[0] <= self._max_rows:
                batch.append(job)
                rows += job.x.shape[0]
            else:
                keep.append(job)
        self._pending = keep
        return rows

    async def _next_batch(self) -> list[_Job]:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._pending.popleft()
            if not first.future.done():
                break
        batch = [first]
        rows = self._take(batch, first.x.shape[0])
        if self._max_wait > 0 and self._last_jobs > 1:
            deadline = time.monotonic() + self._max_wait
            while len(batch) < self._last_jobs and rows < self._max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                rows = self._take(batch, rows)
        return batch

    def _call(self, x: Array, outputs: tuple[str, ...], n_jobs: int) -> tuple[list[Array], float]:
        started = time.perf_counter()
        out = self._run(x, outputs)
        seconds = time.perf_counter() - started
        prev = self._call_s
        self._call_s = seconds if prev is None else 0.8 * prev + 0.2 * seconds
        if self._observe is not None:
            try:
                self._observe(x.shape[0], n_jobs, seconds, outputs, out)
            except Exception:  # metrics must never fail a prediction
                log.exception("recording batch metrics failed")
        return out, seconds

    def _inline_ok(self, batch: Sequence[_Job], previous_jobs: int) -> bool:
        # Inline blocks the loop, so while it runs no later request is read; they queue up and
        # the next pass sees them together and sends them to the worker as one batch.
        quick = self._call_s is not None and self._call_s < self._inline_max
        return quick and len(batch) == 1 and previous_jobs == 1 and not self._pending

    async def _run_batch(self, batch: Sequence[_Job], inline: bool = False) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
        try:
            if inline:
                out, seconds = self._call(x, batch[0].outputs, 1)
            else:
                out, seconds = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._call, x, batch[0].outputs, len(batch)
                )
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One bad request must not fail its neighbours: retry each alone so only the
            # culprit sees the error.
            for job in batch:
                await self._run_batch([job])
            return
        start = 0
        for job in batch:
            n = job.x.shape[0]
            if not job.future.done():
                job.future.set_result(BatchResult([o[start : start + n] for o in out], seconds))
            start += n
        if self._after is not None:
            # Scheduled behind the callers' wake-ups, so their responses go out first.
            asyncio.get_running_loop().call_soon(self._after_safe, x, batch[0].outputs, out)

    def _after_safe(self, x: Array, outputs: tuple[str, ...], out: list[Array]) -> None:
        assert self._after is not None
        try:
            self._after(x, outputs, out)
        except Exception:  # drift tracking must never fail the server
            log.exception("observing a batch after its responses failed")

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            previous_jobs, self._last_jobs = self._last_jobs, len(batch)
            try:
                await self._run_batch(batch, inline=self._inline_ok(batch, previous_jobs))
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError("server is shutting down"))
                raise
            except Exception as exc:  # never let the consumer die: fail this batch only
                log.exception("batch failed unexpectedly")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
