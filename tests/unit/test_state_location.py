"""Where the store lives: CEI_STATE URLs, and a password in one refused with where to put it."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchplan.errors import UsageError
from launchplan.state.location import POSTGRESQL, SQLITE, parse_location


def test_unset_is_sqlite_in_cei_home(tmp_path: Path) -> None:
    for url in (None, ""):
        location = parse_location(url, tmp_path)
        assert (location.kind, location.path) == (SQLITE, tmp_path / "cei.db")


def test_sqlite_url_names_an_absolute_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    location = parse_location(f"sqlite://{tmp_path}/shared.db", Path("/unused"))
    assert (location.kind, location.path) == (SQLITE, tmp_path / "shared.db")
    assert parse_location(f"sqlite:///{tmp_path}/x.db", Path("/")).path == tmp_path / "x.db"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_location("sqlite:///~/y.db", Path("/")).path == tmp_path / "y.db"
    with pytest.raises(UsageError, match="absolute file path"):
        parse_location("sqlite://relative.db", tmp_path)


def test_postgresql_url_passes_its_parameters_through(tmp_path: Path) -> None:
    url = ("postgresql://cei@db.example:5433/runs?sslmode=verify-full"
           "&sslrootcert=/etc/ca.pem&passfile=/home/ci/.pgpass")
    location = parse_location(url, tmp_path)
    assert (location.kind, location.conninfo, location.label) == (POSTGRESQL, url, url)
    assert parse_location("postgres://cei@h/db", tmp_path).kind == POSTGRESQL


@pytest.mark.parametrize("url", [
    "postgresql://cei:s3cret-pw@db.example:5432/runs",
    "postgresql://cei@db.example:5432/runs?password=s3cret-pw",
])
def test_a_password_in_the_url_is_refused_with_where_to_put_it(tmp_path: Path, url: str
                                                                ) -> None:
    with pytest.raises(UsageError) as refused:
        parse_location(url, tmp_path)
    message = str(refused.value)
    assert "s3cret-pw" not in message
    for place in ("PGPASSWORD", "~/.pgpass", "passfile"):
        assert place in message


@pytest.mark.parametrize("url, problem", [
    ("mysql://cei@h/db", "unknown state URL"),
    ("postgresql://cei@h/db?bogus=1", "not a valid PostgreSQL URL"),
    ("postgresql://cei@h", "names no database"),
])
def test_bad_urls_get_one_clear_message(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_location(url, tmp_path)


def test_an_unknown_scheme_does_not_echo_a_password(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        parse_location("mysql://cei:hunter2@h/db", tmp_path)
    assert "hunter2" not in str(refused.value) and "cei:***@h" in str(refused.value)
