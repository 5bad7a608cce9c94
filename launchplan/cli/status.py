"""`cei status [RUN]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launchplan.cli.common import json_option, open_store
from launchplan.cli.output import emit_json
from launchplan.cli.statusview import STATUS_SUMMARY_NODES, show_run
from launchplan.errors import EXIT_FAILED, EXIT_OK, CeiError, UsageError

if TYPE_CHECKING:
    from launchplan.levels.nodehealth import NodeHealth
    from launchplan.state import Store


@click.command()
@click.argument("run_name", metavar="[RUN]", required=False)
@click.option("--cached", is_flag=True,
              help="Report stored states only; do not run ready programs.")
@click.option("--parallel", type=click.IntRange(min=1), default=64, show_default=True,
              help="How many nodes are checked at once.")
@click.option("--junit", "junit_path", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JUnit XML report to FILE: a suite per level, a case per node and "
                   "check (state, cloud, ready).")
@click.option("--all", "every_node", is_flag=True,
              help=f"Show every node, one row each (above {STATUS_SUMMARY_NODES} nodes the "
                   "default is a row per service and the failed nodes by name).")
@json_option
def status(run_name: str | None, cached: bool, parallel: int, junit_path: Path | None,
           every_node: bool, as_json: bool) -> int:
    """Show RUN's nodes and check their health (default: the most recent run).

    Each ready node is asked of its cloud whether it still runs, and its ready program runs
    once more over SSH, unless --cached. Exit status 0 only when every node is healthy, 1
    otherwise; CI jobs can poll it, and --junit shows each check in CI's test tab. Above
    a few hundred nodes the screen shows a summary per service (--all: every node); --json
    always lists every node.
    """
    from launchplan.levels.states import RUN_TERMINATED, RUN_TERMINATING, TERMINATED

    if junit_path is not None:
        from launchplan.cli import junit

        junit.prepare(junit_path)
    store = open_store()
    try:
        if run_name is None:
            runs = store.list_runs()
            if not runs:
                raise UsageError("there are no runs yet; launch one with `cei launch PLAN`")
            run_name = max(runs, key=lambda r: r.created).name
        run = store.get_run(run_name)
    except CeiError as exc:
        if junit_path is not None:
            junit.write_error(junit_path, f"cei status {run_name or ''}".rstrip(), "status",
                              str(exc))
        raise
    health = _health(store, run.name, cached, parallel)
    retired = []
    if run.status not in (RUN_TERMINATED, RUN_TERMINATING):  # nodes replaced or scaled away
        retired = [h.node for h in health if h.state == TERMINATED]
        health = [h for h in health if h.state != TERMINATED]
    healthy = bool(health) and all(h.healthy for h in health)
    elastic = _elastic(store, run.name, health)
    holder = store.lease_holder(run.name)
    controller = None if holder is None else {"pid": holder.pid, "host": holder.host}
    if junit_path is not None:
        junit.write(junit_path, f"cei status {run.name}", junit.health_suites(run.name, health))
    if as_json:
        emit_json({"run": run.name, "plan": run.plan, "status": run.status,
                   "healthy": healthy, "checked": "cached" if cached else "live",
                   "nodes": [h.to_json() for h in health], "retired": retired,
                   "elastic": elastic, "controller": controller})
        return EXIT_OK if healthy else EXIT_FAILED
    show_run(run.name, run.status, health, healthy, elastic, controller, every_node)
    return EXIT_OK if healthy else EXIT_FAILED


def _health(store: Store, run: str, cached: bool, parallel: int) -> list[NodeHealth]:
    """Each node's health: stored (importing nothing of SSH, clouds or plans), or live."""
    if cached:
        from launchplan.levels.nodehealth import stored_health

        return [stored_health(node) for node in store.nodes(run)]
    from launchplan.levels.events import discard
    from launchplan.levels.health import check_run
    from launchplan.levels.runtime import RunContext

    return check_run(RunContext(store, run, discard), parallel)


def _elastic(store: Store, run: str, health: list[NodeHealth]) -> list[dict[str, Any]]:
    """Per elastic service: its bounds, desired and healthy counts, and the last decision."""
    out = []
    for record in store.elastic_services(run):
        decision = record.decision
        out.append({
            "service": record.service, "policy": record.spec.get("policy"),
            "min": record.min, "desired": record.desired, "max": record.max,
            "healthy": sum(h.healthy for h in health if h.service == record.service),
            "decision": decision.get("reason", ""), "decided": decision.get("time"),
            "failures": record.failures, "backoff_until": record.backoff_until,
        })
    return out
