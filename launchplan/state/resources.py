"""The store's cloud resources: the intent before a create, the id after it, the end.

These are the records that keep a cloud resource from being lost track of, so each is on disk
when its call returns, whatever the store does for other writes (Database.synced: on SQLite an
fsync of the -wal file at the commit; PostgreSQL commits durably anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from launchplan.state.codec import decode, encode, now
from launchplan.state.database import Connection, Row
from launchplan.state.records import RESOURCE_CREATED, RESOURCE_INTENT, ResourceRecord


class ResourceTables:
    """The resources of the store (see Store)."""

    if TYPE_CHECKING:

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]: ...

        def _run(self, work: Callable[[Connection], Any], synced: bool = False) -> Any: ...

        def _durable(self, work: Callable[[Connection], Any], synced: bool = False) -> Any: ...

    def record_intent(
        self, run: str, node: str, provider: str, cloud: dict[str, Any], token: str
    ) -> int:
        """Commit that `node` is about to be created with idempotency `token`; returns its id.

        On disk before returning, so a crash during the provider call (of cei or of the
        machine) still leaves a trace that terminate can follow (find by token/tag). Never
        kept for later: when the database cannot be reached, StateUnavailableError stops the
        create before it starts.
        """
        stamp = now()
        values = (run, node, provider, encode(cloud, cloud=True), token, RESOURCE_INTENT, stamp,
                  stamp)
        row = self._run(lambda db: db.execute(
            "INSERT INTO resources (run, node, driver, cloud, token, resource_id, state, "
            "created, updated) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?) RETURNING id", values
        ).one(), synced=True)
        return int(row["id"])

    def record_resource_id(self, intent_id: int, resource_id: str) -> None:
        """Attach the cloud's id to an intent as soon as the provider returns it (on disk
        before returning)."""
        params = (resource_id, now(), RESOURCE_INTENT, RESOURCE_CREATED, intent_id)
        if self._durable(lambda db: db.execute(
            "UPDATE resources SET resource_id = ?, updated = ?, "
            "state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ?", params
        ).rowcount, synced=True) == 0:
            raise KeyError(f"no resource intent {intent_id}")

    def set_intent_state(self, intent_id: int, state: str) -> None:
        """Close an intent that never got an id (e.g. "not-created" after a sweep found
        nothing); on disk before returning."""
        if not self._set_state(state, "id = ?", (intent_id,)):
            raise KeyError(f"no resource intent {intent_id}")

    def set_resource_state(self, run: str, resource_id: str, state: str) -> None:
        """Record the state of a resource the cloud reported (e.g. running, terminated); on
        disk before returning."""
        if not self._set_state(state, "run = ? AND resource_id = ?", (run, resource_id)):
            raise KeyError(f"no resource {resource_id!r} in run {run!r}")

    def _set_state(self, state: str, where: str, params: tuple[Any, ...]) -> int:
        """Set the state of the resources `where` names; how many there were."""
        values = (state, now(), *params)
        changed: int = self._durable(lambda db: db.execute(
            f"UPDATE resources SET state = ?, updated = ? WHERE {where}", values
        ).rowcount, synced=True)
        return changed

    def resources(self, run: str) -> list[ResourceRecord]:
        """Every resource the run ever created or meant to create, in creation order."""
        rows = self._read("SELECT * FROM resources WHERE run = ? ORDER BY id", (run,))
        return [
            ResourceRecord(
                id=row["id"],
                run=row["run"],
                node=row["node"],
                driver=row["driver"],
                cloud=decode(row["cloud"]),
                token=row["token"],
                resource_id=row["resource_id"],
                state=row["state"],
                created=row["created"],
                updated=row["updated"],
            )
            for row in rows
        ]
