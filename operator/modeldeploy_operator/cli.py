"""``kubectl modeldeploy``: the rollout commands as a person types them.

Installed with the package as ``kubectl-modeldeploy`` (and ``kubectl-md``), so kubectl finds it on
PATH as a plugin: ``kubectl modeldeploy promote|abort|retry|status NAME [-n NAMESPACE]``. A
command is an annotation with a fresh value (``modeldeploy.io/promote=<timestamp>``): the
operator acts on a value it has not handled yet and records it in ``status.rollout.commands``, so
the plugin never touches ``spec`` (a GitOps tool owns it) and plain ``kubectl annotate
--overwrite`` does exactly the same thing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from modeldeploy_operator.api import KIND
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.rollout import COMMAND_ANNOTATIONS

Obj = dict[str, Any]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kubectl modeldeploy",
        description="Drive the progressive rollout of a ModelDeployment (spec.rollout).",
    )
    p.add_argument(
        "command",
        choices=["promote", "abort", "retry", "status"],
        help="promote: skip the remaining steps and promote; abort: send all traffic back to "
        "the previous model; retry: start an aborted rollout again; status: show where it is",
    )
    p.add_argument("name", help="the ModelDeployment")
    p.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    p.add_argument("--context", help="the kubeconfig context to use")
    p.add_argument("--kubeconfig", help="path to the kubeconfig file")
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the operator to take the command (0: don't wait)",
    )
    return p.parse_args(argv)


def describe(body: Obj) -> str:
    """The rollout of one ModelDeployment in a few lines, as `status` prints it."""
    meta, st = body.get("metadata") or {}, body.get("status") or {}
    ro = st.get("rollout")
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    if not ro:
        has = bool((body.get("spec") or {}).get("rollout"))
        return f"{name}: no rollout " + ("recorded yet" if has else "(spec.rollout is not set)")
    effective = (st.get("canary") or {}).get("trafficPercent", 0)
    lines = [
        f"{name}: {ro.get('summary')}  weight {ro.get('weight')}% asked, {effective}% effective",
        f"  {ro.get('message')}",
    ]
    prev = (ro.get("previous") or {}).get("storageUri")
    model = (body.get("spec") or {}).get("model", {}).get("storageUri")
    lines.append(f"  new model {model}" + (f", previous {prev}" if prev else ""))
    if ro.get("failedIntervals"):
        lines.append(f"  failed analysis intervals: {ro['failedIntervals']}")
    for check in ro.get("analysis") or []:
        value = check.get("value")
        shown = f"{value:g}" if isinstance(value, int | float) else "-"
        lines.append(
            f"  {check.get('result', '?'):<12} {check.get('name', '?'):<16} {shown:>10} "
            f"(threshold {check.get('threshold')}): {check.get('message', '')}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from modeldeploy_operator import kubeauth
    from modeldeploy_operator.kube import Kube

    try:
        creds = kubeauth.load(args.kubeconfig, args.context)
    except kubeauth.CredentialsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ns = args.namespace or creds.namespace
    try:
        kube = Kube(creds)
        body = kube.get(KIND, ns, args.name)
        if body is None:
            print(f"error: modeldeployment {ns}/{args.name} not found", file=sys.stderr)
            return 1
        if args.command == "status":
            print(describe(body))
            return 0
        if not (body.get("spec") or {}).get("rollout"):
            print(
                f"error: {ns}/{args.name} has no spec.rollout: there is no rollout to "
                f"{args.command}",
                file=sys.stderr,
            )
            return 1
        token = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        key = COMMAND_ANNOTATIONS[args.command]
        kube.annotate_model_deployment(ns, args.name, {key: token})
        print(f"modeldeployment {ns}/{args.name}: {key}={token}")
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            body = kube.get(KIND, ns, args.name) or {}
            handled = ((body.get("status") or {}).get("rollout") or {}).get("commands") or {}
            if handled.get(args.command) == token:
                print(describe(body))
                return 0
            time.sleep(0.5)
        if args.wait:
            print(
                f"the operator has not taken the command within {args.wait:g}s; "
                "is it running? (`kubectl modeldeploy status` shows when it does)",
                file=sys.stderr,
            )
            return 2
        return 0
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
