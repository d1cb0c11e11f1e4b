"""A small closed-loop HTTP/1.1 load generator for loopback benchmarks.

Written on raw asyncio sockets with httptools (already installed through uvicorn[standard]) rather
than httpx or aiohttp, because on a 2-core machine the client shares the CPU with the server and a
heavyweight client would measure itself. Each of ``concurrency`` connections keeps one request in
flight over keep-alive; a run stops at ``max_requests`` or ``duration_s``, whichever comes first,
and only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    # Per request: latency minus the model call's share that the server reported in its
    # Server-Timing header (only servers that send one), i.e. HTTP + decoding + queueing.
    overheads: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float, of: list[float] | None = None) -> float:
        values = self.latencies if of is None else of
        if not values:
            return float("nan")
        xs = sorted(values)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``request()`` sends and awaits one full response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[int] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.predict_s: float | None = None  # from the last response's Server-Timing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.done and not self.done.done():
                self.done.set_exception(exc)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing" and value.startswith(b"predict;dur="):
            self.predict_s = float(value[len(b"predict;dur=") :]) / 1000

    def on_message_complete(self) -> None:
        if self.done and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.predict_s = None
        self.transport.write(raw)
        return await self.done


def build_request(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connect(port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
    return proto


async def run_load(
    port: int,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    warmup_s: float = 1.0,
    headers: dict[str, str] | None = None,
) -> Result:
    """Closed loop: warm up, then measure until the request or time budget runs out."""
    raw = build_request(port, path, body, headers)
    result = Result()
    conns = [await _connect(port) for _ in range(concurrency)]
    state = {"measuring": False, "stop": False, "issued": 0}

    async def worker(i: int) -> None:
        conn = conns[i]
        while not state["stop"]:
            if state["measuring"]:
                if state["issued"] >= max_requests:
                    return
                state["issued"] += 1
            t0 = time.perf_counter()
            try:
                status = await conn.request(raw)
            except (ConnectionError, httptools.HttpParserError):
                result.errors += 1
                conn = conns[i] = await _connect(port)
                continue
            if state["measuring"]:
                latency = time.perf_counter() - t0
                result.latencies.append(latency)
                if conn.predict_s is not None:
                    result.overheads.append(latency - conn.predict_s)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status != 200:
                    result.errors += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup_s)
    state["measuring"] = True
    started = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=duration_s)
    state["stop"] = True
    result.elapsed = time.perf_counter() - started
    if pending:
        await asyncio.wait(pending, timeout=10)
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result
