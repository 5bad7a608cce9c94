"""Shared test helpers. Integration fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import PostgresServer, find_bindir, start_server

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


def _postgres_server() -> Iterator[PostgresServer]:
    require(find_bindir(), "PostgreSQL is not installed (scripts/system-deps.sh installs it)")
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (see tests/pgserver.py)."""
    yield from _postgres_server()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start again."""
    yield from _postgres_server()


@pytest.fixture
def pg_url(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database of its own on the test server; its password in PGPASSWORD only."""
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: "" (SQLite in $CEI_HOME) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_url")
    return url
