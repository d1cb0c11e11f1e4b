"""A load generator that runs *inside* the cluster, in a pod of the server image.

The e2e tests must send traffic through the Service the way a client in the cluster would: through
kube-proxy's load balancing, so the canary share and dropped requests are measured where users meet
them. A port-forward from the host would pin one pod and hide both. The image has only the
standard library of Python guaranteed, so this file uses nothing else. It prints one JSON line.

usage: python3 loadgen.py URL BODY_JSON --rate R --duration S | --count N [--concurrency C]

BODY_JSON may be a JSON list of bodies: request i then sends body i mod len, so the traffic mixes
them in a fixed proportion (e.g. one iris class per body).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("body")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0 = as fast)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (with --rate)")
    parser.add_argument("--count", type=int, default=0, help="total requests (instead of duration)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    parsed = json.loads(args.body)
    bodies = (
        [json.dumps(b).encode() for b in parsed]
        if isinstance(parsed, list)
        else [args.body.encode()]
    )
    lock = threading.Lock()
    tracks: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    # When each transport failure happened (wall clock, to set beside pod events), the first 50.
    failed_at: list[str] = []
    ok = 0
    sent = 0
    total = args.count if args.count else int(args.rate * args.duration)
    start = time.monotonic()

    def next_slot() -> tuple[int, float] | None:
        nonlocal sent
        with lock:
            if sent >= total:
                return None
            index = sent
            sent += 1
        return index, (start + index / args.rate if args.rate else 0.0)

    def worker() -> None:
        nonlocal ok
        while (slot := next_slot()) is not None:
            index, due = slot
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            request = urllib.request.Request(
                args.url,
                data=bodies[index % len(bodies)],
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=args.timeout) as response:
                    payload = response.read()
                    track = response.headers.get("X-Modeldeploy-Track", "unknown")
                with lock:
                    ok += 1
                    tracks[track] += 1
                    answers[payload.decode()[:200]] += 1
            except urllib.error.HTTPError as exc:
                with lock:
                    errors[f"http {exc.code}: {exc.read().decode()[:200]}"] += 1
            except Exception as exc:
                with lock:
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                    if len(failed_at) < 50:
                        failed_at.append(time.strftime("%H:%M:%S", time.gmtime()))

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = {
        "sent": sent,
        "ok": ok,
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "failed_at": failed_at,
        "tracks": dict(tracks),
        "answers": dict(answers.most_common(5)),
        "seconds": round(time.monotonic() - start, 2),
    }
    print("LOADGEN " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
