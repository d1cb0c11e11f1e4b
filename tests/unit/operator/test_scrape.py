"""scrape_pods against real HTTP servers on loopback, one "pod" an address, all on one port.

Pods differ by IP and share the server's port, as in a cluster: each fake pod is an
http.server bound to its own loopback address (127.0.0.x, and ::1 where the machine has IPv6)
on a port they share, answering GET /metrics with a recorded scrape, garbage, an error status,
or slowly. Only loopback sockets: a unit test.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from modeldeploy_operator.analysis import PodCounters
from modeldeploy_operator.scrape import scrape_pods

RECORDED = (Path(__file__).parent / "scrapes" / "stable-1.txt").read_bytes()


@dataclass(frozen=True)
class Answer:
    body: bytes = RECORDED
    status: int = 200
    delay: float = 0.0  # before the response starts
    trickle: float = 0.0  # between 1-byte pieces of the body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    answer = Answer()


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        answer = self.server.answer
        assert self.path == "/metrics"
        time.sleep(answer.delay)
        self.send_response(answer.status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if answer.trickle:
            for i in range(len(answer.body)):
                self.wfile.write(answer.body[i : i + 1])
                self.wfile.flush()
                time.sleep(answer.trickle)
        else:
            self.wfile.write(answer.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def pod(ip: str, port: int, answer: Answer) -> Iterator[int]:
    server = (_V6Server if ":" in ip else _Server)((ip, port), _Handler)
    server.answer = answer
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@contextmanager
def pods(answers: dict[str, Answer]) -> Iterator[int]:
    port = free_port()
    with ExitStack() as stack:
        for ip, answer in answers.items():
            stack.enter_context(pod(ip, port, answer))
        yield port


def test_each_pod_is_its_counters_or_a_sentence() -> None:
    answers = {
        "127.0.0.1": Answer(),
        "127.0.0.2": Answer(body=b"hello world\n"),
        "127.0.0.3": Answer(body=b"<html>Not Found</html>", status=404),
    }
    with pods(answers) as port:
        got = scrape_pods(
            {
                "iris-a": "127.0.0.1",
                "iris-b": "127.0.0.2",
                "iris-c": "127.0.0.3",
                "iris-d": "127.0.0.4",  # nothing listens there
                "iris-e": "",
            },
            port=port,
        )
    assert isinstance(got["iris-a"], PodCounters)
    assert got["iris-a"].requests == 45
    assert got["iris-b"] == (
        "pod iris-b (127.0.0.2): not Prometheus text format "
        "(could not convert string to float: 'world')"
    )
    assert got["iris-c"] == "pod iris-c (127.0.0.3): GET /metrics answered HTTP 404 Not Found"
    assert got["iris-d"] == f"pod iris-d (127.0.0.4): connection refused on port {port}"
    assert got["iris-e"] == "pod iris-e: no pod IP yet"


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_an_ipv6_pod() -> None:
    with pods({"::1": Answer()}) as port:
        got = scrape_pods({"iris-v6": "::1"}, port=port)
    assert isinstance(got["iris-v6"], PodCounters)
    assert got["iris-v6"].requests == 45


def test_a_pod_that_does_not_answer_in_time() -> None:
    answers = {
        "127.0.0.1": Answer(delay=1.5),
        "127.0.0.2": Answer(body=b"x" * 40, trickle=0.05),  # each byte in time, not the whole
    }
    with pods(answers) as port:
        got = scrape_pods({"slow": "127.0.0.1", "trickle": "127.0.0.2"}, port=port, timeout=0.5)
    assert got == {
        "slow": "pod slow (127.0.0.1): no answer within 0.5 s",
        "trickle": "pod trickle (127.0.0.2): /metrics took over 0.5 s to arrive",
    }


def test_pods_are_scraped_concurrently() -> None:
    ips = [f"127.0.0.{i}" for i in range(1, 7)]
    with pods({ip: Answer(delay=0.4) for ip in ips}) as port:
        started = time.monotonic()
        got = scrape_pods({f"p{i}": ip for i, ip in enumerate(ips)}, port=port)
        elapsed = time.monotonic() - started
    assert all(isinstance(c, PodCounters) for c in got.values())
    assert elapsed < 6 * 0.4 / 2


def test_no_targets_no_threads() -> None:
    assert scrape_pods({}) == {}


def test_a_body_that_is_not_utf8() -> None:
    with pods({"127.0.0.1": Answer(body=b"\xff\xfe metrics")}) as port:
        got = scrape_pods({"p": "127.0.0.1"}, port=port)
    assert got == {"p": "pod p (127.0.0.1): /metrics is not UTF-8 text (byte 0)"}
