"""Reading the serving pods' ``/metrics``: the operator's one I/O besides the API server (kube.py).

spec.rollout.analysis judges a canary from the pods' own counters, fetched here straight from
each pod's IP (no Prometheus in between) and reduced by analysis.parse_metrics. One pod that
can't be read must not stop the others from being judged, so failures come back as a sentence
per pod rather than an exception.

http.client, not urllib: urllib honours HTTP_PROXY from the environment, and a pod IP must never
be sent through an egress proxy.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from modeldeploy_operator.analysis import PodCounters, ScrapeError, parse_metrics

# The server's exposition is tens of KiB (at most 100 class labels); a body this large is not it.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# Threads, not asyncio: the scrape runs from reconcile's worker thread, and a rollout has a few
# pods; this many requests in flight bound the wait for a large one without a thread per pod.
MAX_WORKERS: Final = 8
_CHUNK: Final = 64 * 1024


class _UnreadableError(Exception):
    """Why one pod's /metrics could not be read, said as the end of a sentence."""


def _fetch(ip: str, port: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    # http.client takes the bare address and brackets an IPv6 one in the Host header itself.
    conn = http.client.HTTPConnection(ip.strip("[]"), port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        response = conn.getresponse()
        if response.status != 200:
            raise _UnreadableError(
                f"GET /metrics answered HTTP {response.status} {response.reason}"
            )
        body = bytearray()
        # The socket timeout bounds each read; the deadline bounds a body that trickles in
        # (read1: what has arrived, so a trickle is seen between reads, not after 64 KiB).
        while chunk := response.read1(_CHUNK):
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise _UnreadableError(f"/metrics is over {MAX_BODY_BYTES // (1024 * 1024)} MiB")
            if time.monotonic() > deadline:
                raise _UnreadableError(f"/metrics took over {timeout:g} s to arrive")
        return bytes(body)
    finally:
        conn.close()


def _reason(exc: BaseException, port: int, timeout: float) -> str:
    if isinstance(exc, _UnreadableError | ScrapeError):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused on port {port}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer on port {port} ({type(exc).__name__})"
    if isinstance(exc, socket.gaierror):
        return f"not an IP address ({exc.strerror})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _scrape_one(name: str, ip: str, port: int, timeout: float) -> PodCounters | str:
    if not ip:
        return f"pod {name}: no pod IP yet"
    try:
        body = _fetch(ip, port, timeout)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _UnreadableError(f"/metrics is not UTF-8 text (byte {exc.start})") from exc
        return parse_metrics(text)
    except (OSError, http.client.HTTPException, _UnreadableError, ScrapeError) as exc:
        return f"pod {name} ({ip}): {_reason(exc, port, timeout)}"


def scrape_pods(
    targets: Mapping[str, str], *, port: int = 8080, timeout: float = 2.0
) -> dict[str, PodCounters | str]:
    """Each pod's counters (pod name -> pod IP in), or a sentence saying why it has none."""
    if not targets:
        return {}
    with ThreadPoolExecutor(
        max_workers=min(MAX_WORKERS, len(targets)), thread_name_prefix="scrape"
    ) as pool:
        futures = {
            name: pool.submit(_scrape_one, name, ip, port, timeout) for name, ip in targets.items()
        }
        return {name: future.result() for name, future in futures.items()}
