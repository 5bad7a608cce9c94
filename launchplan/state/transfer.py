"""Moving runs between stores: one run as a JSON document (`cei state export` / `import`, a CI
artifact), or every run from one database to another (`cei state migrate`).

A document holds everything the store knows of the run (the run, its nodes, every resource it
ever made, its history, processes, elastic state, requests and SSH keys) and nothing secret:
its dicts were scrubbed when stored, and a run key's private half is only there sealed under
CEI_STATE_KEY. Locks and leases are never moved. An import is one transaction: the run is
there whole or not at all.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, get_args, get_origin, get_type_hints

from launchplan.errors import RunExistsError, RunLockedError, UsageError
from launchplan.state.codec import encode, now
from launchplan.state.database import Connection
from launchplan.state.records import (
    ElasticRecord,
    EventRecord,
    NodeRecord,
    ProcessRecord,
    RequestRecord,
    ResourceRecord,
    RunKeyRecord,
    RunRecord,
)
from launchplan.state.schema import SCHEMA_VERSION
from launchplan.state.store import Store, check_run_name

EXPORT_KIND = "cei-run"
EXPORT_VERSION = 1

# Each list of a document: its record type, its table, and which of its fields are JSON.
# Resource and request ids are the database's own: an import gets new ones.
_PARTS: dict[str, tuple[type, str, frozenset[str]]] = {
    "nodes": (NodeRecord, "nodes", frozenset({"cloud", "outputs", "programs"})),
    "resources": (ResourceRecord, "resources", frozenset({"cloud"})),
    "events": (EventRecord, "events", frozenset({"data"})),
    "processes": (ProcessRecord, "processes", frozenset({"definition"})),
    "elastic": (ElasticRecord, "elastic", frozenset({"spec", "decision"})),
    "requests": (RequestRecord, "requests", frozenset({"args", "result"})),
    "keys": (RunKeyRecord, "run_keys", frozenset()),
}
_COLUMN = {"index": "idx"}  # NodeRecord.index is stored as idx
_ASSIGNED = {"resources": "id", "requests": "id"}


def export_run(store: Store, name: str) -> dict[str, Any]:
    """The run `name` as a document (see the module docstring)."""
    run = store.get_run(name)
    return {
        "v": EXPORT_VERSION, "kind": EXPORT_KIND, "schema": SCHEMA_VERSION, "exported": now(),
        "run": asdict(run),
        "nodes": [asdict(r) for r in store.nodes(name)],
        "resources": [asdict(r) for r in store.resources(name)],
        "events": [asdict(r) for r in store.events(name)],
        "processes": [asdict(r) for r in store.processes(name)],
        "elastic": [asdict(r) for r in store.elastic_services(name)],
        "requests": [asdict(r) for r in store.requests(name)],
        "keys": [asdict(r) for r in store.run_keys(name)],
    }


def import_run(store: Store, document: Any) -> RunRecord:
    """Add the run a document holds to `store`; RunExistsError if it has one of that name,
    UsageError naming what is wrong with a document that is not an export."""
    run, parts = _check(document)
    with store._write(run.name) as db:
        if db.execute("SELECT 1 AS found FROM runs WHERE name = ?", (run.name,)).rows:
            raise RunExistsError(f"the store already has a run named {run.name!r}; terminate "
                                 "or rename one of them first")
        _insert(db, "runs", {**asdict(run), "launch": encode(run.launch)})
        for part, records in parts.items():
            _, table, json_fields = _PARTS[part]
            for record in records:
                row = {_COLUMN.get(k, k): encode(v, cloud=k == "cloud") if k in json_fields else v
                       for k, v in asdict(record).items() if k != _ASSIGNED.get(part)}
                _insert(db, table, row)
    return run


@dataclass(frozen=True)
class Copied:
    """What `copy_runs` did with one run: copied, or why not."""

    run: str
    copied: bool
    reason: str = ""


def copy_runs(source: Store, target: Store, names: Iterable[str] | None = None,
              adapt: Callable[[dict[str, Any]], None] | None = None) -> list[Copied]:
    """Copy runs (all, or `names`) from `source` into `target`; each under its source lock so
    that what is copied is consistent. A run `target` already has, or one another process
    is changing, is left (and said so). `adapt` may amend each document before it is added.
    """
    outcomes = []
    for name in names if names is not None else [r.name for r in source.list_runs()]:
        if target.find_run(name) is not None:
            outcomes.append(Copied(name, False, "the target already has a run of that name"))
            continue
        try:
            with source.locked(name):
                document = export_run(source, name)
                if adapt is not None:
                    adapt(document)
                import_run(target, document)
        except (RunExistsError, RunLockedError) as exc:
            outcomes.append(Copied(name, False, str(exc)))
            continue
        outcomes.append(Copied(name, True))
    return outcomes


def _insert(db: Connection, table: str, row: dict[str, Any]) -> None:
    db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
               tuple(row.values()))


def _check(document: Any) -> tuple[RunRecord, dict[str, list[Any]]]:
    """The records of a document, each belonging to its run; UsageError if it is not one."""
    if not isinstance(document, dict) or document.get("kind") != EXPORT_KIND:
        raise UsageError("not a cei run export (expected a JSON object with "
                         f'"kind": "{EXPORT_KIND}", as `cei state export` writes)')
    if document.get("v") != EXPORT_VERSION:
        raise UsageError(f"cei run export version {document.get('v')!r} is not one this cei "
                         f"reads ({EXPORT_VERSION})")
    run = _record(RunRecord, document.get("run"), "run")
    check_run_name(run.name, kept=True)  # a kept earlier run (NAME@N) moves like any other
    parts: dict[str, list[Any]] = {}
    for part, (cls, _, _) in _PARTS.items():
        items = document.get(part, [])
        if not isinstance(items, list):
            raise UsageError(f"cei run export: {part!r} must be a list")
        parts[part] = [_record(cls, item, f"{part}[{i}]") for i, item in enumerate(items)]
        strays = sorted({r.run for r in parts[part]} - {run.name})
        if strays:
            raise UsageError(f"cei run export of {run.name!r}: {part} of other runs "
                             f"({', '.join(strays)})")
    return run, parts


def _record(cls: type, value: Any, where: str) -> Any:
    """`value` as a `cls` record, every field of the type its annotation says."""
    if not isinstance(value, dict):
        raise UsageError(f"cei run export: {where} must be an object")
    hints = get_type_hints(cls)
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise UsageError(f"cei run export: {where} has unknown fields: {', '.join(unknown)}")
    for name, item in value.items():
        if not _fits(item, hints[name]):
            raise UsageError(f"cei run export: {where}.{name} must be {_shown(hints[name])}, "
                             f"not {type(item).__name__}")
    try:
        return cls(**value)
    except TypeError as exc:
        raise UsageError(f"cei run export: {where}: {exc}") from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type of a record field (str, int, float, dict, unions)."""
    options = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        base = get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if base in (str, dict, list) and isinstance(value, base):
            return True
    return False


def _shown(hint: Any) -> str:
    options = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " or ".join("null" if o is type(None) else (get_origin(o) or o).__name__
                       for o in options)


