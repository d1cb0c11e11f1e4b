"""Shared pytest configuration for the whole pyramid.

Kept deliberately light: no fixture here imports the Kubernetes client, starts a server or touches
the network. The heavy, session-scoped fixtures live next to the tests that need them
(`tests/integration/operator/conftest.py` brings up the local control plane and the operator).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root directory."""
    return REPO_ROOT
