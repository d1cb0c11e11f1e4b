"""The canary arithmetic: how many of spec.replicas each track runs, and what share of traffic that
gives. Pure integer math, tested with hypothesis, because an off-by-one here silently sends the
wrong share of production traffic to an unproven model.

Rules, in priority order:

1. the tracks add up to ``total`` exactly (the scale subresource and the HPA see the truth);
2. the canary gets the nearest whole number of pods to ``total * percent / 100`` (half rounds up,
   as Argo Rollouts' basic canary does);
3. when ``total >= 2``: at least one canary pod while ``percent > 0`` and at least one stable pod
   while ``percent < 100``.

With ``total == 1`` rules 1 and 3 cannot both hold, and adding a pod beyond what the user pays for
would break rule 1, so the single pod goes to whichever track rule 2 picks (canary from 50 %).
The status and the Ready message say so.
"""

from __future__ import annotations

from typing import NamedTuple


class Split(NamedTuple):
    stable: int
    canary: int


def split_replicas(total: int, percent: int | None) -> Split:
    """``percent`` None means no canary track at all."""
    if total < 0:
        raise ValueError(f"total replicas must be >= 0, got {total}")
    if percent is None:
        return Split(total, 0)
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within 0..100, got {percent}")
    # Integer form of floor(total * percent / 100 + 1/2): no float rounding surprises.
    canary = (2 * total * percent + 100) // 200
    if total >= 2:
        if percent > 0:
            canary = max(canary, 1)
        if percent < 100:
            canary = min(canary, total - 1)
    return Split(total - canary, canary)


def cannot_honour(total: int, percent: int | None) -> bool:
    """True when rule 3 had to give way (a single replica and a percent strictly inside 0..100)."""
    return percent is not None and total == 1 and 0 < percent < 100


def effective_percent(ready: int, ready_total: int) -> float:
    """A track's share of ready pods in percent, one decimal; 0 when nothing is ready."""
    if ready_total <= 0:
        return 0.0
    return round(100.0 * ready / ready_total, 1)
