"""`cei process run|list|kill|wait|reconcile`: processes on a run's engine agents."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launchplan.cli.common import json_option, open_store
from launchplan.cli.output import emit_json, error, warn

if TYPE_CHECKING:
    from launchplan.dispatch.dispatcher import Dispatcher, ReconcileReport
    from launchplan.state import ProcessRecord


@click.group()
def process() -> None:
    """Run processes on a run's execution engines (services with `agent`).

    \b
    Every command first reconciles: each engine node's agent is asked what runs; the processes
    of a node that no longer answers are rescheduled onto another engine node by their restart
    policy (never: failed; always/abnormal: placed elsewhere, round + 1).

    \b
    Examples:
      cei process run demo job.yml --name job1
      cei process list demo --json
      cei process wait demo job1 --for exited --timeout 60
      cei process kill demo job1
    """


@contextmanager
def _dispatcher(run_name: str) -> Iterator[Dispatcher]:
    from launchplan.dispatch.dispatcher import Dispatcher
    from launchplan.levels.events import discard
    from launchplan.levels.runtime import RunContext

    store = open_store()
    run = store.get_run(run_name)
    with Dispatcher(RunContext(store, run.name, discard)) as dispatcher:
        yield dispatcher


def _report_text(report: ReconcileReport) -> None:
    for node, why in report.lost.items():
        warn(f"engine node {node} lost: {why}")
    for item in report.rescheduled:
        where = f"onto {item['to']}" if item["to"] else "waiting for a free slot"
        warn(f"process {item['process']} rescheduled from {item['from']} {where} "
             f"(round {item['round']})")
    for name in report.failed:
        warn(f"process {name} failed with its node (restart never)")


def _summary(record: ProcessRecord) -> str:
    where = f"on {record.node}" if record.node else "on no node"
    pid = f" pid {record.pid}" if record.pid else ""
    return f"{record.name} {record.state} {where}{pid}"


def _act_on_one(run_name: str, as_json: bool,
                act: Callable[[Dispatcher], ProcessRecord]) -> int:
    """Reconcile, do one thing to one process, and report that process as it is now."""
    with _dispatcher(run_name) as dispatcher:
        report = _reconciled(dispatcher, as_json)
        record = act(dispatcher)
        view = next(v for v in dispatcher.views() if v.record.name == record.name)
    if as_json:
        emit_json({"run": run_name, "process": view.to_json(), "reconcile": report})
    else:
        click.echo(f"process {_summary(record)}")
    return 0


def _reconciled(dispatcher: Dispatcher, as_json: bool) -> dict[str, Any]:
    report = dispatcher.reconcile()
    if not as_json:
        _report_text(report)
    return report.to_json()


@process.command("run")
@click.argument("run_name", metavar="RUN")
@click.argument("definition_path", metavar="DEFINITION",
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--engine", metavar="SERVICE",
              help="Engine service to place it on (default: the run's only service with agent).")
@click.option("--name", metavar="NAME", help="Process name (overrides the definition's name).")
@click.option("--queue", is_flag=True,
              help="With no free slot, wait for one (recorded `waiting`) instead of failing; "
                   "`cei watch` places it when a slot appears (a `need` policy adds engines).")
@json_option
def run_process(run_name: str, definition_path: Path, engine: str | None, name: str | None,
                queue: bool, as_json: bool) -> int:
    """Place the process of DEFINITION (YAML) on the least loaded engine node with a free slot.

    \b
    A definition (see docs/agents.md):
      name: job1
      exec: /bin/sleep          # or  module: pkg.mod:callable  (+ args, pythonpath)
      argv: ["600"]
      env: {MODE: test}
      cwd: /tmp
      restart: abnormal         # never | always | abnormal
      min_restart_interval: 2
      queue: true               # like --queue

    Exit status: 0 placed (or queued), 1 no engine node has a free slot, 2 invalid
    definition.
    """
    from launchplan.dispatch.definition import load_definition

    definition = load_definition(definition_path, name)
    return _act_on_one(run_name, as_json, lambda d: d.run_process(definition, engine, queue))


@process.command("list")
@click.argument("run_name", metavar="RUN")
@json_option
def list_processes(run_name: str, as_json: bool) -> int:
    """List RUN's processes as their agents report them: state, node, pid, restarts, exit
    code and the tail of stderr."""
    with _dispatcher(run_name) as dispatcher:
        report = _reconciled(dispatcher, as_json)
        views = dispatcher.views()
    if as_json:
        emit_json({"run": run_name, "processes": [v.to_json() for v in views],
                   "reconcile": report})
        return 0
    if not views:
        click.echo(f"run {run_name} has no processes (cei process run {run_name} DEF.yml)")
        return 0
    rows = [("NAME", "STATE", "NODE", "PID", "RESTARTS", "ROUND", "EXIT", "RESTART")]
    for view in views:
        r = view.to_json()
        rows.append((r["name"], r["state"], r["node"] or "-", str(r["pid"] or "-"),
                     str(r["restarts"]), str(r["round"]),
                     "-" if r["exit_code"] is None else str(r["exit_code"]), r["restart"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                      strict=True)).rstrip())
    for view in views:
        if view.record.last_error:
            click.echo(f"{view.record.name}: {view.record.last_error}")
        if view.record.state != "running" and view.stderr_tail.strip():
            tail = "\n  ".join(view.stderr_tail.strip().splitlines()[-5:])
            click.echo(f"{view.record.name} stderr (tail):\n  {tail}")
    return 0


@process.command("kill")
@click.argument("run_name", metavar="RUN")
@click.argument("name", metavar="NAME")
@json_option
def kill_process(run_name: str, name: str, as_json: bool) -> int:
    """Terminate process NAME of RUN for good: SIGTERM to its process group, SIGKILL after a
    grace period; it is neither restarted nor rescheduled."""
    return _act_on_one(run_name, as_json, lambda d: d.kill(name))


@process.command("wait")
@click.argument("run_name", metavar="RUN")
@click.argument("name", metavar="NAME")
@click.option("--for", "until", type=click.Choice(["running", "exited"]), default="running",
              show_default=True, help="The state to wait for.")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait at most.")
@json_option
def wait_process(run_name: str, name: str, until: str, timeout: float, as_json: bool) -> int:
    """Wait until process NAME of RUN is running (or has exited), reconciling as it polls.

    Exit status: 0 the state was reached, 1 the process failed or was terminated (or, waiting
    for running, exited), 3 timed out.
    """
    with _dispatcher(run_name) as dispatcher:
        report = _reconciled(dispatcher, as_json)
        dispatcher.get(name)
        status, record = dispatcher.wait(name, until, timeout)
        view = next(v for v in dispatcher.views() if v.record.name == record.name)
    if as_json:
        emit_json({"run": run_name, "process": view.to_json(), "for": until,
                   "reached": status == 0, "exit_code": status, "reconcile": report})
        return status
    outcome: Callable[[str], None] = click.echo if status == 0 else error
    if status == 3:
        outcome(f"timed out after {timeout:g}s: {_summary(record)}")
    else:
        outcome(_summary(record) + (f": {record.last_error}"
                                    if status and record.last_error else ""))
    return status


@process.command("reconcile")
@click.argument("run_name", metavar="RUN")
@json_option
def reconcile(run_name: str, as_json: bool) -> int:
    """Only reconcile RUN: check every engine node and reschedule the processes of lost ones."""
    with _dispatcher(run_name) as dispatcher:
        report = _reconciled(dispatcher, as_json)
    if as_json:
        emit_json({"run": run_name, "reconcile": report})
    elif not (report["lost"] or report["rescheduled"] or report["failed"]):
        click.echo(f"run {run_name}: every engine node answers")
    return 0
