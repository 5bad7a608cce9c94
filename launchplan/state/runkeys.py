"""The SSH key pairs cei makes for a run, kept so that a second machine can reach its nodes.

The public half is stored as it is. The private half is stored only sealed under
CEI_STATE_KEY (sealing.py); without that key it is not stored at all and stays in the
launching machine's run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from launchplan.errors import StateKeyError
from launchplan.state.codec import now
from launchplan.state.database import Connection, Row
from launchplan.state.holders import Holder
from launchplan.state.records import RunKeyRecord
from launchplan.state.sealing import seal, unseal


class RunKeys:
    """The run-key half of Store (a mixin: it uses the store's transactions)."""

    _me: Holder

    if TYPE_CHECKING:

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]: ...

        def _run(self, work: Callable[[Connection], Any]) -> Any: ...

    def save_run_key(self, run: str, name: str, public_key: str,
                     private_key: str) -> RunKeyRecord:
        """Keep a key pair of the run: the private half sealed, or not at all without a key.

        The first pair saved under a name wins (two processes making one at once agree on it);
        the record returned is the stored one.
        """
        values = (run, name, public_key, seal(private_key), self._me.host, now())
        self._run(lambda db: db.execute(
            "INSERT INTO run_keys (run, name, public_key, sealed_key, host, created) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run, name) DO NOTHING", values))
        record = self.run_key(run, name)
        assert record is not None
        return record

    def run_key(self, run: str, name: str) -> RunKeyRecord | None:
        rows = self._read("SELECT * FROM run_keys WHERE run = ? AND name = ?", (run, name))
        return _run_key_record(rows[0]) if rows else None

    def run_keys(self, run: str) -> list[RunKeyRecord]:
        rows = self._read("SELECT * FROM run_keys WHERE run = ? ORDER BY name", (run,))
        return [_run_key_record(row) for row in rows]


def private_key(record: RunKeyRecord) -> str:
    """The private half of a stored key pair; StateKeyError says why it cannot be had."""
    what = f"the SSH key of run {record.run}"
    if record.sealed_key is None:
        raise StateKeyError(
            f"{what} is only on host {record.host!r}: it was launched without CEI_STATE_KEY, "
            "so its private key was not stored (set CEI_STATE_KEY when launching to share it)")
    return unseal(record.sealed_key, what)


def _run_key_record(row: Row) -> RunKeyRecord:
    return RunKeyRecord(run=row["run"], name=row["name"], public_key=row["public_key"],
                        sealed_key=row["sealed_key"], host=row["host"], created=row["created"])
