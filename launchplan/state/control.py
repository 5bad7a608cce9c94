"""The controller's tables: elastic services' desired state, requests, and the lease.

A mixin of Store (it uses the store's connection and transactions): one room for what `cei
watch`, `cei scale` and `cei repair` share, apart from runs, nodes and resources.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from launchplan.errors import RunLockedError
from launchplan.state.codec import decode, encode, now
from launchplan.state.database import Connection, Row
from launchplan.state.holders import Holder
from launchplan.state.locks import holder_live
from launchplan.state.records import (
    REQUEST_PENDING,
    REQUEST_STATES,
    ElasticRecord,
    LeaseRecord,
    RequestRecord,
)

_ELASTIC_FIELDS = tuple(f.name for f in fields(ElasticRecord))
_ELASTIC_JSON = {"spec", "decision"}
_ELASTIC_UPDATABLE = frozenset(_ELASTIC_FIELDS) - {"run", "service", "updated"}


class ControlTables:
    """Elastic state, requests and leases of the store (see Store)."""

    _me: Holder

    if TYPE_CHECKING:

        def _write(self, lock: str) -> AbstractContextManager[Connection]: ...

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]: ...

        def _run(self, work: Callable[[Connection], Any]) -> Any: ...

        def _durable(self, work: Callable[[Connection], Any]) -> Any: ...

        def _upsert(self, table: str, columns: Sequence[str], values: Sequence[Any],
                    key: tuple[str, ...], keep: tuple[str, ...] = ()) -> Row: ...

        def _update(self, table: str, changes: dict[str, Any], where: dict[str, Any]
                    ) -> Row | None: ...

    # -- elastic services -------------------------------------------------------------------

    def save_elastic(self, record: ElasticRecord) -> ElasticRecord:
        """Insert or replace a service's elastic state."""
        values = []
        for name in _ELASTIC_FIELDS:
            value = getattr(record, name)
            if name in _ELASTIC_JSON:
                value = encode(value)
            elif name == "updated":
                value = now()
            values.append(value)
        return _elastic_record(self._upsert("elastic", _ELASTIC_FIELDS, values,
                                            key=("run", "service")))

    def update_elastic(self, run: str, service: str, **changes: Any) -> ElasticRecord:
        """Change some fields of a service's elastic state; KeyError if it has none."""
        unknown = sorted(set(changes) - _ELASTIC_UPDATABLE)
        if unknown:
            raise ValueError(f"unknown elastic field(s): {', '.join(unknown)}")
        columns = {name: encode(value) if name in _ELASTIC_JSON else value
                   for name, value in changes.items()}
        row = self._update("elastic", columns, {"run": run, "service": service})
        if row is None:
            raise KeyError(f"service {service!r} of run {run!r} is not elastic")
        return _elastic_record(row)

    def find_elastic(self, run: str, service: str) -> ElasticRecord | None:
        rows = self._read("SELECT * FROM elastic WHERE run = ? AND service = ?", (run, service))
        return _elastic_record(rows[0]) if rows else None

    def elastic_services(self, run: str) -> list[ElasticRecord]:
        """The run's elastic services in level order."""
        rows = self._read("SELECT * FROM elastic WHERE run = ? ORDER BY level, service", (run,))
        return [_elastic_record(row) for row in rows]

    # -- requests ---------------------------------------------------------------------------

    def add_request(self, run: str, kind: str, target: str | None,
                    args: dict[str, Any]) -> RequestRecord:
        """Queue a request for the run's controller (committed at once)."""
        stamp = now()
        values = (run, kind, target, encode(args), REQUEST_PENDING, stamp, stamp)
        return _request_record(self._run(lambda db: db.execute(
            "INSERT INTO requests (run, kind, target, args, state, result, created, updated) "
            "VALUES (?, ?, ?, ?, ?, '{}', ?, ?) RETURNING *", values).rows[0]))

    def get_request(self, request_id: int) -> RequestRecord:
        rows = self._read("SELECT * FROM requests WHERE id = ?", (request_id,))
        if not rows:
            raise KeyError(f"no request {request_id}")
        return _request_record(rows[0])

    def requests(self, run: str) -> list[RequestRecord]:
        """Every request of the run, oldest first."""
        rows = self._read("SELECT * FROM requests WHERE run = ? ORDER BY id", (run,))
        return [_request_record(row) for row in rows]

    def pending_requests(self, run: str) -> list[RequestRecord]:
        """The run's requests not yet taken up, oldest first."""
        rows = self._read("SELECT * FROM requests WHERE run = ? AND state = ? ORDER BY id",
                          (run, REQUEST_PENDING))
        return [_request_record(row) for row in rows]

    def finish_request(self, request_id: int, state: str, result: dict[str, Any]) -> None:
        if state not in REQUEST_STATES:
            raise ValueError(f"unknown request state {state!r}")
        self._update("requests", {"state": state, "result": encode(result)}, {"id": request_id})

    # -- the controller lease ---------------------------------------------------------------

    def lease_holder(self, run: str) -> LeaseRecord | None:
        """The run's lease if a live holder has it (None: free, expired, or its holder died)."""
        record = self.lease_record(run)
        return record if record is not None and _lease_live(record, self._me) else None

    def acquire_lease(self, run: str, ttl: float) -> LeaseRecord:
        """Take the run's controller lease for `ttl` seconds (renew it before then).

        RunLockedError names the holder when another live process has it; a lease whose holder
        died (this host) or expired (another host) is taken over.
        """
        me = self._me
        with self._write(run) as db:
            row = db.execute("SELECT * FROM leases WHERE run = ?", (run,)).one()
            if row is not None:
                held = _lease_record(row)
                if Holder(held.host, held.pid, held.starttime) != me and _lease_live(held, me):
                    raise RunLockedError(
                        f"a controller already acts on run {run!r}: {Holder.of(row).describe()} "
                        f"since {held.acquired} (stop it, or wait for its lease to expire)")
            db.execute("DELETE FROM leases WHERE run = ?", (run,))
            db.execute(
                "INSERT INTO leases (run, pid, starttime, host, acquired, expires) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run, me.pid, me.starttime, me.host, now(), time.time() + ttl),
            )
        record = self.lease_record(run)
        assert record is not None
        return record

    def renew_lease(self, run: str, ttl: float) -> bool:
        """Extend this process's lease; False when it no longer holds it (taken over)."""
        me = self._me
        with self._write(run) as db:  # not while another takes an expired lease over
            changed = db.execute(
                "UPDATE leases SET expires = ? WHERE run = ? AND pid = ? AND host = ? "
                "AND COALESCE(starttime, -1) = ?",
                (time.time() + ttl, run, me.pid, me.host,
                 -1 if me.starttime is None else me.starttime),
            ).rowcount
        return changed == 1

    def release_lease(self, run: str) -> None:
        me = self._me
        self._durable(lambda db: db.execute(
            "DELETE FROM leases WHERE run = ? AND pid = ? AND host = ?", (run, me.pid, me.host)))

    def lease_record(self, run: str) -> LeaseRecord | None:
        """The run's lease row as it is, live or not (what `cei unlock` shows)."""
        rows = self._read("SELECT * FROM leases WHERE run = ?", (run,))
        return _lease_record(rows[0]) if rows else None

    def break_lease(self, record: LeaseRecord) -> bool:
        """Delete the lease `record` shows, if it is still that one (not since taken again)."""
        deleted: int = self._run(lambda db: db.execute(
            "DELETE FROM leases WHERE run = ? AND pid = ? AND host = ? AND acquired = ?",
            (record.run, record.pid, record.host, record.acquired)).rowcount)
        return deleted == 1


def _lease_live(record: LeaseRecord, me: Holder) -> bool:
    return holder_live(Holder(record.host, record.pid, record.starttime), record.expires, me)


def _elastic_record(row: Row) -> ElasticRecord:
    values = {name: row[name] for name in _ELASTIC_FIELDS}
    for name in _ELASTIC_JSON:
        values[name] = decode(values[name])
    return ElasticRecord(**values)


def _request_record(row: Row) -> RequestRecord:
    return RequestRecord(
        run=row["run"], id=row["id"], kind=row["kind"], target=row["target"],
        args=decode(row["args"]), state=row["state"], result=decode(row["result"]),
        created=row["created"], updated=row["updated"])


def _lease_record(row: Row) -> LeaseRecord:
    return LeaseRecord(run=row["run"], pid=row["pid"], starttime=row["starttime"],
                       host=row["host"], acquired=row["acquired"], expires=row["expires"])
