"""The micro-batcher coalesces waiting requests into one model call and isolates failures.

Ordering is forced with events rather than sleeps: the first model call blocks until every other
request is queued, so the test knows exactly what the second call must contain.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from modeldeploy_server.batcher import MicroBatcher

pytestmark = pytest.mark.anyio

Array = np.ndarray[Any, Any]


class Recorder:
    """A fake model call: doubles its input, records batch sizes, can be held on its first call."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, x: Array, methods: tuple[str, ...]) -> list[Array]:
        self.calls.append(x.shape[0])
        self.entered.set()
        self.release.wait(timeout=30)
        if np.isnan(x).any():
            raise ValueError("NaN in batch")
        return [x[:, 0] * 2 for _ in methods]


async def test_waiting_requests_share_one_call() -> None:
    rec = Recorder(hold_first=True)
    b = MicroBatcher(rec, max_batch_rows=1024, max_wait_s=0)
    b.start()
    try:
        first = asyncio.create_task(b.submit(np.array([[1.0]]), ("predict",)))
        await asyncio.to_thread(rec.entered.wait, 30)
        rest = [
            asyncio.create_task(b.submit(np.array([[float(i)], [float(i)]]), ("predict",)))
            for i in range(2, 12)
        ]
        await asyncio.sleep(0)  # let every submit enqueue before the first call returns
        rec.release.set()
        results = await asyncio.gather(first, *rest)
    finally:
        await b.stop()
    assert rec.calls == [1, 20]  # one call alone, then all ten waiting requests together
    assert results[0].outputs[0].tolist() == [2.0]
    for i, res in enumerate(results[1:], start=2):
        assert res.outputs[0].tolist() == [2.0 * i, 2.0 * i]  # each caller gets its own rows back


async def test_batches_respect_max_rows_and_keep_incompatible_jobs_apart() -> None:
    rec = Recorder(hold_first=True)
    b = MicroBatcher(rec, max_batch_rows=4, max_wait_s=0)
    b.start()
    try:
        first = asyncio.create_task(b.submit(np.ones((1, 1)), ("predict",)))
        await asyncio.to_thread(rec.entered.wait, 30)
        jobs = [asyncio.create_task(b.submit(np.ones((2, 1)), ("predict",))) for _ in range(3)]
        proba = asyncio.create_task(b.submit(np.ones((1, 1)), ("predict_proba",)))
        await asyncio.sleep(0)
        rec.release.set()
        await asyncio.gather(first, *jobs, proba)
    finally:
        await b.stop()
    assert rec.calls == [1, 4, 2, 1]


async def test_one_bad_request_does_not_fail_its_neighbours() -> None:
    rec = Recorder(hold_first=True)
    b = MicroBatcher(rec, max_batch_rows=1024, max_wait_s=0)
    b.start()
    try:
        first = asyncio.create_task(b.submit(np.ones((1, 1)), ("predict",)))
        await asyncio.to_thread(rec.entered.wait, 30)
        good = asyncio.create_task(b.submit(np.array([[3.0]]), ("predict",)))
        bad = asyncio.create_task(b.submit(np.array([[np.nan]]), ("predict",)))
        await asyncio.sleep(0)
        rec.release.set()
        assert (await good).outputs[0].tolist() == [6.0]
        with pytest.raises(ValueError, match="NaN in batch"):
            await bad
        await first
    finally:
        await b.stop()


async def test_observe_sees_every_call() -> None:
    seen: list[tuple[int, int]] = []
    b = MicroBatcher(
        Recorder(),
        max_batch_rows=8,
        max_wait_s=0,
        observe=lambda rows, jobs, _s, _m, _o: seen.append((rows, jobs)),
    )
    b.start()
    try:
        await b.submit(np.ones((3, 1)), ("predict",))
    finally:
        await b.stop()
    assert seen == [(3, 1)]


class ThreadRecorder:
    """A fake model call that records which thread ran it and takes ``seconds`` each time."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.threads: list[int] = []

    def __call__(self, x: Array, methods: tuple[str, ...]) -> list[Array]:
        self.threads.append(threading.get_ident())
        if self.seconds:
            threading.Event().wait(self.seconds)
        return [x[:, 0] for _ in methods]


async def lone_requests(rec: ThreadRecorder, **options: float) -> None:
    """Three requests one after another, each alone in the queue."""
    b = MicroBatcher(rec, max_batch_rows=64, max_wait_s=0, **options)
    b.start()
    try:
        for _ in range(3):
            await b.submit(np.ones((1, 1)), ("predict",))
    finally:
        await b.stop()


async def test_a_lone_request_to_a_quick_model_runs_on_the_loop() -> None:
    rec = ThreadRecorder()
    await lone_requests(rec)
    loop_thread = threading.get_ident()
    # The first call is timed in the worker; once known to be quick, lone calls stay inline.
    assert rec.threads[0] != loop_thread
    assert rec.threads[1:] == [loop_thread, loop_thread]


async def test_a_slow_model_never_blocks_the_loop() -> None:
    rec = ThreadRecorder(seconds=0.03)
    await lone_requests(rec, inline_max_s=0.02)
    assert threading.get_ident() not in rec.threads


async def test_concurrent_requests_are_predicted_in_the_worker() -> None:
    rec = ThreadRecorder()
    b = MicroBatcher(rec, max_batch_rows=64, max_wait_s=0.05)
    b.start()
    try:
        await b.submit(np.ones((1, 1)), ("predict",))  # timed: the model is quick
        for _ in range(3):
            await asyncio.gather(*(b.submit(np.ones((1, 1)), ("predict",)) for _ in range(4)))
    finally:
        await b.stop()
    # After the first concurrent batch every call is a batch of several, so never inline.
    assert threading.get_ident() not in rec.threads[2:]
