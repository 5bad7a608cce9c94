"""How `cei status` shows a run on the screen: one row per node, or above
STATUS_SUMMARY_NODES nodes a row per service and the failed nodes by name.

A table of a thousand rows is most of what `status --cached` costs (rich measures every cell
of every row) and more than a terminal shows; a summary says at a glance what the rows would,
and `--all` still prints them. `--json` is always complete, whatever the count.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from launchplan.levels.nodehealth import NodeHealth

# Above this many nodes `cei status` shows a summary per service unless --all is given: a few
# hundred rows still read as a table; past that, no screen shows them and rendering them
# takes longer than the rest of the command.
STATUS_SUMMARY_NODES = 300
OUTPUT_WIDTH = 60  # characters of a node's outputs in its row
FAILURE_LINE = 100  # characters of a failed node's message in the summary


def show_run(name: str, run_status: str, health: list[NodeHealth], healthy: bool,
             elastic: list[dict[str, Any]], controller: dict[str, Any] | None,
             every_node: bool) -> None:
    """Print the run: per node, or per service above STATUS_SUMMARY_NODES (unless
    `every_node`), then the elastic services and the verdict."""
    from rich.console import Console

    console = Console()
    if every_node or len(health) <= STATUS_SUMMARY_NODES:
        _node_table(console, name, run_status, health)
    else:
        _service_summary(console, name, run_status, health, elastic)
    if not health:
        console.print("no nodes recorded for this run")
    console.print("[green]all healthy[/green]" if healthy else "[red]not all healthy[/red]")
    if elastic:
        _elastic_table(console, elastic, controller)


def _node_table(console: Console, name: str, run_status: str,
                health: list[NodeHealth]) -> None:
    from rich.table import Table

    table = Table(title=f"run {name}: {run_status}", title_justify="left")
    for column in ("level", "node", "state", "health", "address", "outputs", "message"):
        table.add_column(column, overflow="fold")
    for h in health:
        outputs = ", ".join(f"{k}={v}" for k, v in sorted(h.outputs.items()))
        table.add_row(h.level, h.node, h.state,
                      "[green]healthy[/green]" if h.healthy else "[red]unhealthy[/red]",
                      h.address or "", outputs[:OUTPUT_WIDTH], _first_line(h.message))
    console.print(table)


def _service_summary(console: Console, name: str, run_status: str, health: list[NodeHealth],
                     elastic: list[dict[str, Any]]) -> None:
    """A row per service (its level, node states, healthy count, an elastic service's
    desired/min/max), then every unhealthy node that failed, by name."""
    from rich.table import Table

    bounds = {e["service"]: f"{e['desired']} ({e['min']}-{e['max']})" for e in elastic}
    services: dict[str, list[NodeHealth]] = {}
    for h in health:
        services.setdefault(h.service, []).append(h)
    table = Table(title=f"run {name}: {run_status}, {len(health)} nodes "
                        f"(a summary per service; --all shows every node)",
                  title_justify="left")
    for column in ("level", "service", "nodes", "states", "healthy", "desired (min-max)"):
        table.add_column(column, overflow="fold")
    for service, members in services.items():
        states = Counter(h.state for h in members)
        well = sum(h.healthy for h in members)
        table.add_row(members[0].level, service, str(len(members)),
                      ", ".join(f"{state} {n}" for state, n in sorted(states.items())),
                      f"[{'green' if well == len(members) else 'red'}]{well}[/]",
                      bounds.get(service, ""))
    console.print(table)
    failed = [h for h in health if not h.healthy and (h.state == "failed" or h.message)]
    if failed:  # one print: rich's cost is per call more than per line
        console.print(f"[red]failed nodes ({len(failed)}):[/red]")
        console.print("\n".join(f"  {h.node} ({h.state}): {_first_line(h.message)[:FAILURE_LINE]}"
                                for h in failed), markup=False, highlight=False)


def _elastic_table(console: Console, elastic: list[dict[str, Any]],
                   controller: dict[str, Any] | None) -> None:
    from rich.table import Table

    who = (f"controller: pid {controller['pid']} on {controller['host']}" if controller
           else "no controller running (cei watch RUN)")
    table = Table(title=f"elastic services ({who})", title_justify="left")
    for column in ("service", "policy", "min", "desired", "healthy", "max", "last decision"):
        table.add_column(column, overflow="fold")
    for e in elastic:
        ok = e["healthy"] == e["desired"]
        table.add_row(e["service"], str(e["policy"]), str(e["min"]), str(e["desired"]),
                      f"[{'green' if ok else 'red'}]{e['healthy']}[/]", str(e["max"]),
                      e["decision"])
    console.print(table)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""
