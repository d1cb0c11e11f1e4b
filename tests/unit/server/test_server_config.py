"""Settings come from the operator's env contract and from flags; flags win."""

from __future__ import annotations

from pathlib import Path

import pytest
from modeldeploy_server.config import Settings, load_settings
from pydantic import ValidationError

DIGEST = "AB" * 32


def test_operator_env_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODEL_NAME": "iris",
        "STORAGE_URI": "s3://models/iris/",
        "MODEL_FORMAT": "skops",
        "MODEL_SHA256": DIGEST,
        "MODEL_DIR": "/mnt/models",
        "PVC_ROOT": "/mnt/pvc",
        "MODELDEPLOY_TRACK": "canary",
        "TERMINATION_LOG": "/tmp/term",
        "PORT": "9000",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings([])
    assert s.model_name == "iris"
    assert s.storage_uri == "s3://models/iris/"
    assert s.model_format == "skops"
    assert s.model_sha256 == DIGEST.lower()
    assert s.track == "canary"
    assert s.port == 9000
    assert s.termination_log == Path("/tmp/term")
    assert s.version == DIGEST.lower()[:12]  # MODEL_VERSION unset: digest prefix


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "from-env")
    monkeypatch.setenv("PORT", "9000")
    s = load_settings(["--model-name", "from-flag", "--format", "sklearn", "--predict-proba"])
    assert s.model_name == "from-flag"
    assert s.port == 9000
    assert s.predict_proba is True


def test_defaults() -> None:
    s = Settings()
    assert s.port == 8080
    assert s.model_dir == Path("/mnt/models")
    assert s.version == "stable"  # no digest: the track
    assert s.access_log is False
    assert s.fast_forest is True


def test_fast_forest_off_by_env_or_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAST_FOREST", "false")
    assert load_settings([]).fast_forest is False
    assert load_settings(["--fast-forest"]).fast_forest is True
    monkeypatch.delenv("FAST_FOREST")
    assert load_settings(["--no-fast-forest"]).fast_forest is False


@pytest.mark.parametrize(
    "args",
    [
        ["--model-sha256", "abc"],
        ["--port", "70000"],
        ["--model-name", "a/b"],
        ["--max-batch-size", "0"],
    ],
)
def test_invalid_settings_are_refused(args: list[str]) -> None:
    with pytest.raises(ValidationError):
        load_settings(args)


def test_trusted_types_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKOPS_TRUSTED_TYPES", "a.B, c.D ,")
    assert load_settings([]).trusted_types == ("a.B", "c.D")
