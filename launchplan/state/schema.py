"""The store's tables and the migrations that bring any older database up to date."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _create_schema_v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE runs (
            name TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            plan_path TEXT NOT NULL,
            status TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL)"""
    )
    conn.execute(
        """CREATE TABLE nodes (
            run TEXT NOT NULL,
            node TEXT NOT NULL,
            service TEXT NOT NULL,
            idx INTEGER NOT NULL,
            level INTEGER NOT NULL,
            level_name TEXT NOT NULL,
            driver TEXT NOT NULL,
            cloud TEXT NOT NULL,
            state TEXT NOT NULL,
            resource_id TEXT,
            token TEXT,
            address TEXT,
            port INTEGER,
            hostname TEXT,
            ssh_user TEXT,
            ssh_key TEXT,
            host_key TEXT,
            host_key_fingerprint TEXT,
            outputs TEXT NOT NULL,
            programs TEXT NOT NULL,
            last_error TEXT,
            updated TEXT NOT NULL,
            PRIMARY KEY (run, node))"""
    )
    conn.execute(
        """CREATE TABLE resources (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run TEXT NOT NULL,
            node TEXT NOT NULL,
            driver TEXT NOT NULL,
            cloud TEXT NOT NULL,
            token TEXT NOT NULL,
            resource_id TEXT,
            state TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL)"""
    )
    conn.execute("CREATE INDEX resources_run ON resources (run, resource_id)")
    conn.execute(
        """CREATE TABLE events (
            run TEXT NOT NULL,
            seq INTEGER NOT NULL,
            time TEXT NOT NULL,
            kind TEXT NOT NULL,
            node TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (run, seq))"""
    )
    conn.execute(
        """CREATE TABLE locks (
            run TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            starttime INTEGER,
            host TEXT NOT NULL,
            acquired TEXT NOT NULL)"""
    )


def _add_processes_v2(conn: sqlite3.Connection) -> None:
    """Version 2: the dispatcher's processes (issue 4)."""
    conn.execute(
        """CREATE TABLE processes (
            run TEXT NOT NULL,
            name TEXT NOT NULL,
            definition TEXT NOT NULL,
            engine TEXT NOT NULL,
            node TEXT,
            state TEXT NOT NULL,
            pid INTEGER,
            exit_code INTEGER,
            restarts INTEGER NOT NULL DEFAULT 0,
            round INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            PRIMARY KEY (run, name))"""
    )


def _add_control_v3(conn: sqlite3.Connection) -> None:
    """Version 3 (issue 7): how a run was launched, the desired state of its elastic services,
    requests to its controller, and the controller's lease."""
    conn.execute("ALTER TABLE runs ADD COLUMN launch TEXT NOT NULL DEFAULT '{}'")
    conn.execute(
        """CREATE TABLE elastic (
            run TEXT NOT NULL,
            service TEXT NOT NULL,
            level INTEGER NOT NULL,
            spec TEXT NOT NULL,
            min INTEGER NOT NULL,
            desired INTEGER NOT NULL,
            max INTEGER NOT NULL,
            decision TEXT NOT NULL,
            last_action REAL,
            failures INTEGER NOT NULL DEFAULT 0,
            backoff_until REAL,
            updated TEXT NOT NULL,
            PRIMARY KEY (run, service))"""
    )
    conn.execute(
        """CREATE TABLE requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT,
            args TEXT NOT NULL,
            state TEXT NOT NULL,
            result TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL)"""
    )
    conn.execute("CREATE INDEX requests_run ON requests (run, state)")
    conn.execute(
        """CREATE TABLE leases (
            run TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            starttime INTEGER,
            host TEXT NOT NULL,
            acquired TEXT NOT NULL,
            expires REAL NOT NULL)"""
    )


# MIGRATIONS[v] brings a database at user_version v to v + 1 (0 is an empty database).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_schema_v1,
    1: _add_processes_v2,
    2: _add_control_v3,
}
SCHEMA_VERSION = len(MIGRATIONS)
