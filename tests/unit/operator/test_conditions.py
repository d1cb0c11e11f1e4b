"""The reason table: every reason the status logic writes is declared once, ranked, and
documented."""

from __future__ import annotations

import re

from conftest import REPO_ROOT
from modeldeploy_operator import conditions as c

STATUS_SOURCES = ["status.py", "reconcile.py"]


def test_problem_ranks_are_unique_and_only_problems_have_one() -> None:
    problems = [r for r in c.REASONS if r.is_problem]
    ranks = [r.rank for r in problems]
    assert len(set(ranks)) == len(ranks)
    assert {r.name for r in c.REASONS if not r.is_problem} == {
        "Serving",
        "RollingOut",
        "ScaledToZero",
        "RolloutComplete",
        "AsExpected",
        "InvalidSpec",
        "Promoted",
        "RolloutProgressing",
        "RolloutPaused",
        "RolloutPromoting",
        # DataDrift's: about the inputs, never a problem of the ModelDeployment's own
        "FeatureDrift",
        "PredictionDrift",
        "NoDrift",
        "NoProfile",
        "DriftNotMeasured",
    }


def test_only_failed_writes_block_a_rollout() -> None:
    blocking = {r.name for r in c.REASONS if r.blocks_rollout}
    assert blocking == {"ChildConflict", "ApplyFailed"}
    # ...and they outrank every problem a pod can show, because nothing else can happen first
    worst_pod_problem = min(r.rank for r in c.REASONS if r.is_problem and not r.blocks_rollout)  # type: ignore[type-var]
    assert all(r.rank < worst_pod_problem for r in c.REASONS if r.blocks_rollout)  # type: ignore[operator]


def test_names_are_unique_camel_case() -> None:
    names = [r.name for r in c.REASONS]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", n) for n in names)


def test_every_reason_the_code_uses_is_in_the_table() -> None:
    """status.py and reconcile.py refer to reasons as ``c.NAME``: each must be a declared Reason
    in REASONS (a reason missing there would be missing from the docs too)."""
    declared = {r.name for r in c.REASONS}
    src = REPO_ROOT / "operator" / "modeldeploy_operator"
    used = set()
    for name in STATUS_SOURCES:
        used |= set(re.findall(r"\bc\.([A-Z][A-Z_]+)\b", (src / name).read_text()))
    used -= {
        "READY",
        "PROGRESSING",
        "DEGRADED",
        "PROMOTED",
        "DATA_DRIFT",
        "CONDITION_TYPES",
        "WRITTEN_TYPES",
    }
    assert used, "the status code refers to no reason at all?"
    for const in used:
        reason = getattr(c, const)
        assert isinstance(reason, c.Reason), const
        assert reason.name in declared, const


def test_the_docs_table_has_a_row_per_reason() -> None:
    table = c.markdown_table()
    assert table.count("\n") == len(c.REASONS) + 2
    for r in c.REASONS:
        assert f"`{r.name}`" in table


def test_the_crd_admits_every_condition_type_the_operator_writes() -> None:
    """A type missing from the CRD's enum makes every status write of that object a 422."""
    from modeldeploy_operator import crdgen

    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    types = schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
    assert set(types["type"]["enum"]) == set(c.WRITTEN_TYPES)
    src = (REPO_ROOT / "operator" / "modeldeploy_operator" / "status.py").read_text()
    written = set(re.findall(r"\bcond(?:ition)?\(\s*c\.([A-Z_]+)", src))
    assert written, "status.py builds no condition with cond(c.TYPE, ...)?"
    assert {getattr(c, n) for n in written} <= set(c.WRITTEN_TYPES), written
