"""Where the store lives: `CEI_STATE` (or `--state`) parsed into a SQLite file or a PostgreSQL
database, refusing a URL that carries a password (the password belongs in libpq's own places).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from launchplan.errors import UsageError

STATE_ENV = "CEI_STATE"
DB_NAME = "cei.db"
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_PG_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD_HELP = (
    "a state URL must not carry the database password (it would show in argv, the "
    "environment of child processes and logs): put it in PGPASSWORD, in ~/.pgpass, or in a "
    "file named by a passfile=PATH parameter of the URL (mode 0600)"
)


@dataclass(frozen=True)
class StateLocation:
    """A parsed state URL: `kind` sqlite (with `path`) or postgresql (with `conninfo`)."""

    kind: str
    label: str  # how messages name it (never holds a password)
    path: Path | None = None
    conninfo: str | None = None

    @property
    def key(self) -> str:
        """Identity of the database, so one process counts nested locks on it once."""
        return str(self.path.resolve()) if self.path is not None else str(self.conninfo)


def state_url() -> str | None:
    """The URL CEI_STATE names, or None (the default SQLite store)."""
    return os.environ.get(STATE_ENV) or None


def parse_location(url: str | None, home: Path) -> StateLocation:
    """The store `url` names; None or "" is SQLite at `home`/cei.db.

    `sqlite:///PATH` is a SQLite file at the absolute path /PATH (`sqlite:///~/x.db` expands
    `~`); `postgresql://USER@HOST:PORT/DB?sslmode=...` is a PostgreSQL database, its
    parameters passed to libpq as they are.
    """
    if not url:
        return StateLocation(SQLITE, str(home / DB_NAME), path=home / DB_NAME)
    if url.startswith("sqlite://"):
        return _sqlite(url)
    if url.startswith(_PG_SCHEMES):
        return _postgresql(url)
    raise UsageError(
        f"unknown state URL {_shown(url)!r}: use sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DATABASE (see docs/state.md)")


def _sqlite(url: str) -> StateLocation:
    text = url[len("sqlite://"):]
    if text.startswith("/"):  # sqlite:///PATH, or SQLAlchemy's sqlite:////PATH
        text = "/" + text.lstrip("/")
    if text.startswith("/~"):
        text = text[1:]
    path = Path(text).expanduser()
    if not path.is_absolute() or path == Path("/"):
        raise UsageError(f"state URL {url!r}: give an absolute file path, as in "
                         "sqlite:///home/me/.cei/cei.db")
    return StateLocation(SQLITE, f"sqlite://{path}", path=path)


def _postgresql(url: str) -> StateLocation:
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Error as exc:
        raise UsageError(f"state URL {_shown(url)!r} is not a valid PostgreSQL URL: "
                         f"{exc}") from None
    if "password" in params:
        raise UsageError(_PASSWORD_HELP)
    if not params.get("dbname"):
        raise UsageError(f"state URL {url!r} names no database: postgresql://USER@HOST:PORT/DB")
    return StateLocation(POSTGRESQL, url, conninfo=url)


def _shown(url: str) -> str:
    """`url` with anything that may be a password (user:password@) cut out, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.partition("@")
    if at and ":" in userinfo:
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return url
