"""Decides which children to write: desired manifests versus what the API server holds.

The reconcile loop must be free when nothing changed (an unchanged ModelDeployment causes zero
writes) and must still notice a hand edit. Two checks together give both:

* every desired manifest carries a hash of itself in an annotation; a different hash means the
  ModelDeployment (or the operator's defaults) changed, so the child is applied. This is also what
  makes a *removed* field go away: server-side apply drops fields the manager no longer sends.
* every field the operator sets must still hold its value in the live object (a subset compare
  that ignores fields other managers and API defaulting add). A `kubectl scale` or `kubectl edit`
  of an owned field fails this check and the child is applied again, which takes the field back.

A child that exists but is not controlled by this ModelDeployment is never touched: it is reported
as a conflict, because taking over someone else's Deployment with a forced apply would be worse
than not serving.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import ValidationError

from modeldeploy_operator.api import (
    ANNOTATION_OWNER_UID,
    GROUP,
    LABEL_OWNER_NAME,
    LABEL_OWNER_NAMESPACE,
    parse_spec,
)

HASH_ANNOTATION = f"{GROUP}/applied-hash"

Manifest = dict[str, Any]
Key = tuple[str, str]  # (kind, name)


def key_of(manifest: Manifest) -> Key:
    return manifest["kind"], manifest["metadata"]["name"]


def manifest_hash(manifest: Manifest) -> str:
    """Hash of a desired manifest without its own hash annotation, stable across dict orderings."""
    body = json.loads(json.dumps(manifest))
    annotations = body.get("metadata", {}).get("annotations") or {}
    annotations.pop(HASH_ANNOTATION, None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_hash(manifest: Manifest) -> Manifest:
    """The manifest as applied: a copy carrying its hash annotation."""
    out: Manifest = json.loads(json.dumps(manifest))
    meta = out.setdefault("metadata", {})
    meta.setdefault("annotations", {})[HASH_ANNOTATION] = manifest_hash(manifest)
    return out


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def quantity_value(text: object) -> Decimal | None:
    """A resource quantity's value, so "1000m" and "1" compare equal (the API server rewrites
    quantities into canonical form, which must not look like drift)."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        return None
    m = _QUANTITY.match(str(text))
    if not m or m.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2)]
    except InvalidOperation:
        return None


def _is_zero(value: Any) -> bool:
    # Go's omitempty drops zero values ("" env values, false, 0, empty maps) from the stored object.
    return value in ("", 0, False, None) or value == {} or value == []


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` does not hold what ``desired`` says; fields only in ``live`` are ok."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [] if _is_zero(desired) and live is None else [path or "."]
        out: list[str] = []
        for k, v in desired.items():
            sub = f"{path}.{k}"
            if k not in live:
                if not _is_zero(v):
                    out.append(sub)
                continue
            out += differences(v, live[k], sub)
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [] if not desired and not live else [path]
        out = []
        for i, (d, lv) in enumerate(zip(desired, live, strict=True)):
            out += differences(d, lv, f"{path}[{i}]")
        return out
    if desired == live:
        return []
    if ".resources." in path or path.startswith(".resources."):
        q_desired, q_live = quantity_value(desired), quantity_value(live)
        if q_desired is not None and q_desired == q_live:
            return []
    return [path]


def controlled_by(obj: Manifest, owner_uid: str) -> bool:
    """By controller ownerReference, or for a cluster-scoped child by the owner-uid annotation."""
    meta = obj.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(r.get("controller") and r.get("uid") == owner_uid for r in refs):
        return True
    return bool((meta.get("annotations") or {}).get(ANNOTATION_OWNER_UID) == owner_uid)


def orphan_reason(child: Manifest, owner: Manifest | None) -> str | None:
    """Why a cluster-scoped child (found by its owner labels) must go, or None to keep it: its
    ModelDeployment is gone, is another object of the same name, or no longer wants it."""
    meta = child.get("metadata") or {}
    labels = meta.get("labels") or {}
    who = f"{labels.get(LABEL_OWNER_NAMESPACE)}/{labels.get(LABEL_OWNER_NAME)}"
    if owner is None or (owner.get("metadata") or {}).get("deletionTimestamp"):
        return f"ModelDeployment {who} is gone"
    if not controlled_by(child, str((owner.get("metadata") or {}).get("uid"))):
        return f"ModelDeployment {who} was re-created (another uid)"
    try:
        spec = parse_spec(owner.get("spec") or {})
    except ValidationError:
        return None  # a spec this operator cannot read: keep what exists (status says why)
    if not spec.auth_enabled:
        return f"ModelDeployment {who} no longer has spec.auth"
    return None


@dataclass(frozen=True)
class Action:
    verb: Literal["apply", "delete"]
    kind: str
    name: str
    reason: str
    manifest: Manifest | None = None  # what to apply (with its hash annotation)
    uid: str | None = None  # the live object to delete (a precondition, so a newer one survives)


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # human-readable, one per foreign child

    @property
    def writes(self) -> int:
        return len(self.actions)


def plan(
    desired: list[Manifest],
    observed: dict[Key, Manifest | None],
    owner_uid: str,
) -> Plan:
    """``observed`` maps every possible child (kind, name) to the live object or None."""
    actions: list[Action] = []
    conflicts: list[str] = []
    wanted = {key_of(m) for m in desired}
    for manifest in desired:
        kind, name = key_of(manifest)
        applied = with_hash(manifest)
        live = observed.get((kind, name))
        if live is None:
            actions.append(Action("apply", kind, name, "created", applied))
            continue
        if not controlled_by(live, owner_uid):
            conflicts.append(
                f"{kind} {name} already exists and is not controlled by this ModelDeployment; "
                f"delete or rename it (the operator will not take it over)"
            )
            continue
        live_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
        if live_hash != applied["metadata"]["annotations"][HASH_ANNOTATION]:
            actions.append(Action("apply", kind, name, "spec changed", applied))
            continue
        drift = differences(applied, live)
        if drift:
            shown = ", ".join(d.lstrip(".") for d in drift[:3])
            more = f" and {len(drift) - 3} more" if len(drift) > 3 else ""
            actions.append(Action("apply", kind, name, f"restored {shown}{more}", applied))
    for (kind, name), live in observed.items():
        if (kind, name) in wanted or live is None:
            continue
        if controlled_by(live, owner_uid) and not (live.get("metadata") or {}).get(
            "deletionTimestamp"
        ):
            uid = (live.get("metadata") or {}).get("uid")
            actions.append(Action("delete", kind, name, "no longer in spec", uid=uid))
    return Plan(actions, conflicts)
