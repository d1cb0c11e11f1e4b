"""The canary arithmetic: properties over every total and percent, plus the documented edges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modeldeploy_operator.split import cannot_honour, effective_percent, split_replicas

totals = st.integers(min_value=0, max_value=1000)
percents = st.integers(min_value=0, max_value=100)


@given(totals, percents)
def test_tracks_add_up_to_the_total(total: int, percent: int) -> None:
    s = split_replicas(total, percent)
    assert s.stable + s.canary == total
    assert s.stable >= 0
    assert s.canary >= 0


@given(st.integers(min_value=2, max_value=1000), st.integers(min_value=1, max_value=99))
def test_both_tracks_get_a_pod_when_there_are_two_or_more(total: int, percent: int) -> None:
    s = split_replicas(total, percent)
    assert s.canary >= 1
    assert s.stable >= 1


@given(totals, percents)
def test_canary_is_within_one_pod_of_the_exact_share(total: int, percent: int) -> None:
    s = split_replicas(total, percent)
    exact = total * percent / 100
    assert abs(s.canary - exact) <= 1
    if total >= 2 and 0 < percent < 100 and 1 <= exact <= total - 1:
        assert abs(s.canary - exact) <= 0.5  # no clamping needed: nearest whole pod


@given(totals, percents, percents)
def test_more_percent_never_means_fewer_canary_pods(total: int, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert split_replicas(total, lo).canary <= split_replicas(total, hi).canary


@given(totals)
def test_zero_and_hundred_percent_are_single_track(total: int) -> None:
    assert split_replicas(total, 0) == (total, 0)
    assert split_replicas(total, 100) == (0, total)


@given(totals)
def test_no_canary_means_everything_stable(total: int) -> None:
    assert split_replicas(total, None) == (total, 0)


@pytest.mark.parametrize(
    ("total", "percent", "expected"),
    [
        (0, 50, (0, 0)),  # scaled to zero: nothing anywhere
        (1, 10, (1, 0)),  # one pod cannot run both tracks: nearest share wins (stable)
        (1, 49, (1, 0)),
        (1, 50, (0, 1)),  # half rounds up, like Argo Rollouts' basic canary
        (10, 41, (6, 4)),  # Argo's documented example: 41 % of 10 -> 4
        (10, 1, (9, 1)),  # at least one canary pod above 0 %
        (10, 99, (1, 9)),  # at least one stable pod below 100 %
        (5, 20, (4, 1)),
        (3, 34, (2, 1)),
    ],
)
def test_documented_edges(total: int, percent: int, expected: tuple[int, int]) -> None:
    assert tuple(split_replicas(total, percent)) == expected


def test_single_replica_with_canary_is_flagged() -> None:
    assert cannot_honour(1, 10)
    assert not cannot_honour(1, 0)
    assert not cannot_honour(1, 100)
    assert not cannot_honour(2, 10)
    assert not cannot_honour(1, None)


@pytest.mark.parametrize(("total", "percent"), [(-1, 10), (3, 101), (3, -1)])
def test_invalid_input_is_rejected(total: int, percent: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        split_replicas(total, percent)


@given(st.integers(0, 500), st.integers(0, 500))
def test_effective_percent_is_the_share_of_ready_pods(a: int, b: int) -> None:
    p = effective_percent(a, a + b)
    if a + b == 0:
        assert p == 0.0
    else:
        assert 0.0 <= p <= 100.0
        assert abs(p - 100 * a / (a + b)) <= 0.05 + 1e-9  # half the last decimal, plus float error
