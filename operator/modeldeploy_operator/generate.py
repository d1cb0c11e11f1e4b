"""Every checked-in file that is generated from the operator's code, written or checked in one go.

The CRD (from ``api``), the API reference (from the CRD), the RBAC manifest (from ``rbac``) and
the two generated tables of docs/operations.md (RBAC verbs, condition reasons) must never drift
from the code they describe. ``python -m modeldeploy_operator.generate`` rewrites them all from
the repository root; ``--check`` lists the stale ones and exits 1 (the unit tests do the same).

A generated region inside a hand-written page sits between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->``; only the text between the markers is replaced.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from modeldeploy_operator import conditions, crdgen, docgen, rbac

CRD_FILE = Path("crds/modeldeploy.io_modeldeployments.yaml")
API_DOC = Path("docs/api.md")
RBAC_FILE = Path("deploy/rbac.yaml")
OPERATIONS_DOC = Path("docs/operations.md")

WHOLE_FILES: dict[Path, Callable[[], str]] = {
    CRD_FILE: crdgen.render,
    API_DOC: docgen.render,
    RBAC_FILE: rbac.render,
}
REGIONS: dict[Path, dict[str, Callable[[], str]]] = {
    OPERATIONS_DOC: {"rbac": rbac.markdown_table, "reasons": conditions.markdown_table},
}


class RegionMissingError(ValueError):
    """A page lacks the markers of a region it should hold."""


def replace_region(text: str, name: str, content: str) -> str:
    begin, end = f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise RegionMissingError(f"expected exactly one '{begin}' ... '{end}' region")
    return pattern.sub(lambda _: f"{begin}\n{content}{end}", text)


def outputs(root: Path) -> dict[Path, str]:
    """Each generated file's path (relative to ``root``) and the content it should have."""
    out = {path: render() for path, render in WHOLE_FILES.items()}
    for path, regions in REGIONS.items():
        text = (root / path).read_text()
        for name, render in regions.items():
            try:
                text = replace_region(text, name, render())
            except RegionMissingError as e:
                raise RegionMissingError(f"{path}: {e}") from e
        out[path] = text
    return out


def stale(root: Path) -> list[Path]:
    return [
        path
        for path, content in outputs(root).items()
        if not (root / path).exists() or (root / path).read_text() != content
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m modeldeploy_operator.generate",
        description="Regenerate the CRD, docs/api.md, deploy/rbac.yaml and the generated tables "
        "of docs/operations.md from the operator's code.",
    )
    p.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: .)")
    p.add_argument("--check", action="store_true", help="only list stale files; exit 1 if any")
    args = p.parse_args(argv)
    root: Path = args.root
    if args.check:
        old = stale(root)
        for path in old:
            print(f"stale: {path} (run python -m modeldeploy_operator.generate)", file=sys.stderr)
        return 1 if old else 0
    for path, content in outputs(root).items():
        target = root / path
        if not target.exists() or target.read_text() != content:
            target.write_text(content)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
