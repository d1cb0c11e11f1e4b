"""The hack/ scripts' helpers that are program logic rather than process plumbing, so they are
written once in Python instead of as shell text-munging: rendering the `@VAR@` templates under
hack/, picking free loopback ports, reading the project version. Standard library only, so it runs
on the system python3 before the project's venv exists.

usage: python3 hack/lib/util.py render SRC DST [KEY=VALUE...]
       python3 hack/lib/util.py free-ports N
       python3 hack/lib/util.py version
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def render(src: Path, dst: Path, values: dict[str, str]) -> None:
    """Writes `src` with every @VAR@ replaced (from `values`, else the environment) to `dst`.

    A placeholder without a value is an error, not an empty string: a config with a hole in it
    fails later and far less clearly. `dst` is written only when its content changes, because
    kube-proxy exits when its config file is touched even with identical content, and an
    untouched file keeps `up` idempotent.
    """
    text = src.read_text()

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        found = values.get(name, os.environ.get(name))
        if found is None:
            raise SystemExit(f"render {src}: @{name}@ has no value")
        return found

    out = PLACEHOLDER.sub(value, text)
    if dst == Path("-"):
        sys.stdout.write(out)
    elif not dst.exists() or dst.read_text() != out:
        dst.write_text(out)


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 now (all held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def main(argv: list[str]) -> int:
    match argv:
        case ["render", src, dst, *pairs]:
            values = dict(p.split("=", 1) for p in pairs)
            render(Path(src), Path(dst), values)
        case ["free-ports", n]:
            print(" ".join(str(p) for p in free_ports(int(n))))
        case ["version"]:
            print(version())
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
