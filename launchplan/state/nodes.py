"""The store's nodes: one row per node of a run, written without reading it back.

A launch writes each node about ten times (its reservation, every state, its address, keys,
outputs): none of those writes returns the stored row, so none costs a read and a decode of
its JSON columns. Reserving a level's nodes is one statement (save_nodes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from launchplan.state.codec import decode, encode, now
from launchplan.state.database import Connection, Database, Row
from launchplan.state.records import NODE_STATES, NodeRecord

# Columns of `nodes` in NodeRecord field order ("index" is an SQL keyword, stored as idx).
NODE_FIELDS = tuple(f.name for f in fields(NodeRecord))
NODE_COLUMNS = tuple("idx" if name == "index" else name for name in NODE_FIELDS)
_NODE_JSON = frozenset({"cloud", "outputs", "programs"})
_NODE_UPDATABLE = frozenset(NODE_FIELDS) - {"run", "node", "updated"}
_NODE_KEY = ("run", "node")
# Nodes per INSERT of save_nodes: 22 parameters each stays far below the parameter limits of
# SQLite (32766) and PostgreSQL (65535).
SAVE_BATCH = 500


class NodeTables:
    """The nodes of the store (see Store)."""

    _node_writes: int
    _nodes_cache: dict[str, tuple[tuple[int, int], list[NodeRecord]]]
    _cache_lock: threading.Lock

    if TYPE_CHECKING:

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]: ...

        def _durable(self, work: Callable[[Connection], Any], synced: bool = False) -> Any: ...

        def _settle(self) -> None: ...

        def _usable(self) -> Database: ...

    def save_node(self, record: NodeRecord) -> NodeRecord:
        """Insert or replace the node (by run and node name); returns it as stored (secrets
        scrubbed, `updated` stamped), built from what was written."""
        values = _node_values(record, now())
        self._save_rows([values])
        return _node_record(dict(zip(NODE_COLUMNS, values, strict=True)))

    def save_nodes(self, records: Sequence[NodeRecord]) -> None:
        """save_node for many nodes (a level's reservation): SAVE_BATCH to a statement, each
        atomic by itself, instead of a commit per node. A node named twice is saved as last
        given."""
        stamp = now()
        rows = list({(r.run, r.node): _node_values(r, stamp) for r in records}.values())
        for start in range(0, len(rows), SAVE_BATCH):
            self._save_rows(rows[start:start + SAVE_BATCH])

    def _save_rows(self, rows: list[list[Any]]) -> None:
        one = f"({', '.join('?' * len(NODE_COLUMNS))})"
        assignments = ", ".join(f"{c} = excluded.{c}" for c in NODE_COLUMNS if c not in _NODE_KEY)
        sql = (f"INSERT INTO nodes ({', '.join(NODE_COLUMNS)}) "
               f"VALUES {', '.join([one] * len(rows))} "
               f"ON CONFLICT ({', '.join(_NODE_KEY)}) DO UPDATE SET {assignments}")
        params = tuple(value for row in rows for value in row)
        self._node_writes += 1
        self._durable(lambda db: db.execute(sql, params))

    def update_node(self, run: str, node: str, **changes: Any) -> None:
        """Change some fields of a stored node; unknown field names raise ValueError, a node
        that is not stored KeyError. Nothing is read back: get_node reads it."""
        unknown = sorted(set(changes) - _NODE_UPDATABLE)
        if unknown:
            raise ValueError(f"unknown node field(s): {', '.join(unknown)}")
        if "state" in changes and changes["state"] not in NODE_STATES:
            raise ValueError(f"unknown node state {changes['state']!r}")
        columns = ["updated", *("idx" if name == "index" else name for name in changes)]
        sql = (f"UPDATE nodes SET {', '.join(f'{c} = ?' for c in columns)} "
               "WHERE run = ? AND node = ?")
        params = (now(), *(_stored(name, value) for name, value in changes.items()), run, node)
        self._node_writes += 1
        if self._durable(lambda db: db.execute(sql, params).rowcount) == 0:
            raise KeyError(f"no node {node!r} in run {run!r}")

    def nodes(self, run: str) -> list[NodeRecord]:
        """The run's nodes in launch order (level, service, index).

        Kept from the last read while no node was written here and the database says nothing
        at all was committed by another connection (Database.data_version; SQLite can tell,
        PostgreSQL cannot, so there they are always read): a controller reads them every
        tick, and decoding every row each time was most of what a tick cost.
        """
        self._settle()
        changes = self._usable().data_version()
        version = None if changes is None else (changes, self._node_writes)
        with self._cache_lock:
            cached = self._nodes_cache.get(run)
        if version is not None and cached is not None and cached[0] == version:
            return list(cached[1])
        rows = self._read(
            "SELECT * FROM nodes WHERE run = ? ORDER BY level, service, idx, node", (run,)
        )
        records = [_node_record(row) for row in rows]
        if version is not None:
            with self._cache_lock:
                self._nodes_cache[run] = (version, records)
        return list(records)

    def get_node(self, run: str, node: str) -> NodeRecord:
        """One node of a run; KeyError when the run has no such node."""
        rows = self._read("SELECT * FROM nodes WHERE run = ? AND node = ?", (run, node))
        if not rows:
            raise KeyError(f"no node {node!r} in run {run!r}")
        return _node_record(rows[0])


def _stored(name: str, value: Any) -> Any:
    """A node field's value as its column holds it (dicts as JSON, secrets scrubbed)."""
    return encode(value, cloud=name == "cloud") if name in _NODE_JSON else value


def _node_values(record: NodeRecord, stamp: str) -> list[Any]:
    """The node's row in NODE_COLUMNS order, `updated` set to `stamp`."""
    if record.state not in NODE_STATES:
        raise ValueError(f"unknown node state {record.state!r}")
    return [_stored(name, stamp if name == "updated" else getattr(record, name))
            for name in NODE_FIELDS]


def _node_record(row: Row) -> NodeRecord:
    values: dict[str, Any] = {}
    for name, column in zip(NODE_FIELDS, NODE_COLUMNS, strict=True):
        value = row[column]
        values[name] = decode(value) if name in _NODE_JSON else value
    return NodeRecord(**values)
