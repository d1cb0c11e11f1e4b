"""``modeldeploy-operator``: runs kopf programmatically with the operator's own registry.

Running kopf through ``kopf.run`` (not the ``kopf run`` CLI) keeps the handler registry explicit and
lets the console script take the few flags an installation needs, with everything else from the
environment (``settings.OperatorSettings``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
# kopf imports whichever of these client libraries is installed, only to recognise their model
# objects in isinstance checks; the operator never hands it one (kube.py speaks plain REST).
# The operator image installs none of them; in a development environment that has them (the
# tests drive the cluster with the official client), this keeps the operator's process the same
# as the image's: the official client alone is ~40 MiB of RSS.
UNUSED_CLIENT_LIBRARIES = ("kubernetes", "kubernetes_asyncio", "pykube")


def keep_unused_clients_out() -> None:
    """Makes ``import kubernetes`` (and the others) fail in this process, as in the image."""
    for name in UNUSED_CLIENT_LIBRARIES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="modeldeploy-operator",
        description="Reconcile ModelDeployments (modeldeploy.io/v1alpha1) into Deployments, "
        "Services and HPAs. Uses KUBECONFIG (or ~/.kube/config) when set, otherwise the "
        "in-cluster ServiceAccount. Tunables come from MODELDEPLOY_* environment variables.",
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; kopf globs such as 'team-*' work); "
        "default: all namespaces",
    )
    p.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        help=f"liveness endpoint URL (default {DEFAULT_LIVENESS}); empty to disable",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument(
        "--log-format", choices=["plain", "full", "json"], default="full", help="log line format"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keep_unused_clients_out()
    # Imported here so `--help` works without a cluster or kopf's import-time cost.
    from modeldeploy_operator.handlers import run_operator

    run_operator(
        namespaces=args.namespace,
        liveness=args.liveness or None,
        verbose=args.verbose,
        quiet=args.quiet,
        log_format=args.log_format,
    )


if __name__ == "__main__":
    main()
