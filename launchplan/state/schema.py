"""The store's tables, as versioned migrations that both backends run.

MIGRATIONS[v] is the SQL that brings a database at schema version v to v + 1 (0 is an empty
database). It is plain SQL that SQLite and PostgreSQL both accept: BIGINT and DOUBLE PRECISION
(64 bits in both; SQLite gives them the affinities its older REAL and INTEGER columns have),
`{autoid}` for a key the database assigns, and `{text}` for text that sorts by code point on
both (SQLite's BINARY collation; PostgreSQL's "C", not the database's locale). `migrate` runs
what a database lacks in one transaction holding the schema's lock, so two processes (or
machines) upgrading at once are safe: the second finds the work done.
"""

from __future__ import annotations

from launchplan.errors import CeiError
from launchplan.state.database import SCHEMA_LOCK, Database

_V1 = (
    """CREATE TABLE runs (
        name {text} PRIMARY KEY,
        plan {text} NOT NULL,
        plan_path {text} NOT NULL,
        status {text} NOT NULL,
        created {text} NOT NULL,
        updated {text} NOT NULL)""",
    """CREATE TABLE nodes (
        run {text} NOT NULL,
        node {text} NOT NULL,
        service {text} NOT NULL,
        idx BIGINT NOT NULL,
        level BIGINT NOT NULL,
        level_name {text} NOT NULL,
        driver {text} NOT NULL,
        cloud {text} NOT NULL,
        state {text} NOT NULL,
        resource_id {text},
        token {text},
        address {text},
        port BIGINT,
        hostname {text},
        ssh_user {text},
        ssh_key {text},
        host_key {text},
        host_key_fingerprint {text},
        outputs {text} NOT NULL,
        programs {text} NOT NULL,
        last_error {text},
        updated {text} NOT NULL,
        PRIMARY KEY (run, node))""",
    """CREATE TABLE resources (
        id {autoid},
        run {text} NOT NULL,
        node {text} NOT NULL,
        driver {text} NOT NULL,
        cloud {text} NOT NULL,
        token {text} NOT NULL,
        resource_id {text},
        state {text} NOT NULL,
        created {text} NOT NULL,
        updated {text} NOT NULL)""",
    "CREATE INDEX resources_run ON resources (run, resource_id)",
    """CREATE TABLE events (
        run {text} NOT NULL,
        seq BIGINT NOT NULL,
        time {text} NOT NULL,
        kind {text} NOT NULL,
        node {text},
        data {text} NOT NULL,
        PRIMARY KEY (run, seq))""",
    """CREATE TABLE locks (
        run {text} PRIMARY KEY,
        pid BIGINT NOT NULL,
        starttime BIGINT,
        host {text} NOT NULL,
        acquired {text} NOT NULL)""",
)

# Version 2 (issue 4): the dispatcher's processes.
_V2 = (
    """CREATE TABLE processes (
        run {text} NOT NULL,
        name {text} NOT NULL,
        definition {text} NOT NULL,
        engine {text} NOT NULL,
        node {text},
        state {text} NOT NULL,
        pid BIGINT,
        exit_code BIGINT,
        restarts BIGINT NOT NULL DEFAULT 0,
        round BIGINT NOT NULL DEFAULT 0,
        last_error {text},
        created {text} NOT NULL,
        updated {text} NOT NULL,
        PRIMARY KEY (run, name))""",
)

# Version 3 (issue 7): how a run was launched, the desired state of its elastic services,
# requests to its controller, and the controller's lease.
_V3 = (
    "ALTER TABLE runs ADD COLUMN launch {text} NOT NULL DEFAULT '{{}}'",
    """CREATE TABLE elastic (
        run {text} NOT NULL,
        service {text} NOT NULL,
        level BIGINT NOT NULL,
        spec {text} NOT NULL,
        min BIGINT NOT NULL,
        desired BIGINT NOT NULL,
        max BIGINT NOT NULL,
        decision {text} NOT NULL,
        last_action DOUBLE PRECISION,
        failures BIGINT NOT NULL DEFAULT 0,
        backoff_until DOUBLE PRECISION,
        updated {text} NOT NULL,
        PRIMARY KEY (run, service))""",
    """CREATE TABLE requests (
        id {autoid},
        run {text} NOT NULL,
        kind {text} NOT NULL,
        target {text},
        args {text} NOT NULL,
        state {text} NOT NULL,
        result {text} NOT NULL,
        created {text} NOT NULL,
        updated {text} NOT NULL)""",
    "CREATE INDEX requests_run ON requests (run, state)",
    """CREATE TABLE leases (
        run {text} PRIMARY KEY,
        pid BIGINT NOT NULL,
        starttime BIGINT,
        host {text} NOT NULL,
        acquired {text} NOT NULL,
        expires DOUBLE PRECISION NOT NULL)""",
)

# Version 4 (issue 12): run locks expire unless renewed, so a lock whose holder's machine died
# can be taken over; and the SSH keys a second machine needs to reach a run's nodes.
_V4 = (
    "ALTER TABLE locks ADD COLUMN expires DOUBLE PRECISION",
    """CREATE TABLE run_keys (
        run {text} NOT NULL,
        name {text} NOT NULL,
        public_key {text} NOT NULL,
        sealed_key {text},
        host {text} NOT NULL,
        created {text} NOT NULL,
        PRIMARY KEY (run, name))""",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {0: _V1, 1: _V2, 2: _V3, 3: _V4}
SCHEMA_VERSION = len(MIGRATIONS)


def statements(version: int, autoid: str, text: str) -> list[str]:
    """The SQL of MIGRATIONS[version] in a dialect (its `autoid` and `text` column types)."""
    return [sql.format(autoid=autoid, text=text) for sql in MIGRATIONS[version]]


def migrate(db: Database) -> int:
    """Bring `db` to SCHEMA_VERSION (a no-op when it is there); returns the version found.

    Refuses a database newer than this cei, whose tables it might misread. A database that is
    up to date is only read, without taking the schema's lock.
    """
    if db.current_version() == SCHEMA_VERSION:
        return SCHEMA_VERSION
    with db.transaction(SCHEMA_LOCK) as conn:
        found = version = db.schema_version(conn)
        if version > SCHEMA_VERSION:
            raise CeiError(
                f"the state database {db.location.label} has schema version {version}, newer "
                f"than this cei understands ({SCHEMA_VERSION}); upgrade cei")
        while version < SCHEMA_VERSION:
            for sql in statements(version, db.autoid, db.text):
                conn.execute(sql)
            version += 1
            db.set_schema_version(conn, version)
    return found
