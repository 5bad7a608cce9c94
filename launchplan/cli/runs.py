"""`cei list` and `cei history RUN`."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import click

from launchplan.cli.common import json_option, open_store
from launchplan.cli.output import emit_json

if TYPE_CHECKING:
    from launchplan.state import RunRecord, Store


@click.command("list")
@click.option("--all", "every", is_flag=True,
              help="Also the earlier runs of reused names, kept as NAME@N.")
@json_option
def list_runs(every: bool, as_json: bool) -> int:
    """List the runs in the store with their status and node states."""
    from launchplan.state.store import ARCHIVE_MARK

    store = open_store()
    runs = sorted((r for r in store.list_runs() if every or ARCHIVE_MARK not in r.name),
                  key=lambda r: r.created)
    states = store.node_states()
    rows: list[dict[str, Any]] = [
        {"run": run.name, "plan": run.plan, "status": run.status, "created": run.created,
         "nodes": states.get(run.name, {})}
        for run in runs]
    if as_json:
        emit_json({"runs": rows})
        return 0
    if not rows:
        click.echo("no runs (launch one with `cei launch PLAN`)")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("run", "plan", "status", "nodes", "created"):
        table.add_column(column)
    for row in rows:
        nodes = ", ".join(f"{state} {n}" for state, n in sorted(row["nodes"].items()))
        table.add_row(row["run"], row["plan"], row["status"], nodes, _when(row["created"]))
    Console().print(table)
    return 0


@click.command()
@click.argument("run_name", metavar="RUN")
@click.option("--all", "every", is_flag=True,
              help="Every run that had this name, oldest first (earlier ones kept as RUN@N).")
@json_option
def history(run_name: str, every: bool, as_json: bool) -> int:
    """Show RUN's event history and every resource it ever created, with its last state.

    A reused name shows its latest run; --all shows the earlier ones too.
    """
    store = open_store()
    runs = store.runs_named(run_name) if every else []
    for run in runs or [store.get_run(run_name)]:
        _history(store, run, as_json)
    return 0


def _history(store: Store, run: RunRecord, as_json: bool) -> None:
    events = store.events(run.name)
    resources = store.resources(run.name)
    if as_json:
        emit_json({
            "run": run.name, "status": run.status, "created": run.created,
            "resources": [{"node": r.node, "driver": r.driver, "resource_id": r.resource_id,
                           "state": r.state, "created": r.created, "updated": r.updated}
                          for r in resources],
            "events": [{"seq": e.seq, "time": e.time, "kind": e.kind, "node": e.node,
                        "data": e.data} for e in events],
        })
        return
    click.echo(f"run {run.name} ({run.status}), plan {run.plan}, created {_when(run.created)}")
    click.echo(f"resources ({len(resources)}):")
    for r in resources:
        click.echo(f"  {r.driver:8} {r.resource_id or '(id never returned)':40} "
                   f"{r.state:12} {r.node}")
    click.echo(f"events ({len(events)}):")
    for e in events:
        detail = e.data.get("state") or e.data.get("message") or ""
        click.echo(f"  {e.seq:5} {_when(e.time)} {e.kind:15} {e.node or '':12} {detail}")


def _when(stamp: object) -> str:
    if isinstance(stamp, (int, float)):
        return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
    return str(stamp)
