"""Shared test helpers. Integration fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: object, why: str) -> None:
    """Skip when a real part is missing on a developer machine; fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for this test in CI: {why}")
    pytest.skip(why)


@pytest.fixture
def cei_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $CEI_HOME so tests never touch the user's store."""
    home = tmp_path / "cei-home"
    monkeypatch.setenv("CEI_HOME", str(home))
    return home
