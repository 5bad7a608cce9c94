"""`cei watch RUN`: the controller that keeps a run's elastic services healthy and sized."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from launchplan.cli.common import (
    json_option,
    make_reporter,
    open_store,
    parse_overrides,
    run_interruptibly,
    var_option,
    vars_file_option,
)
from launchplan.cli.output import emit_json, error, warn
from launchplan.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from launchplan.cli.common import Reporter
    from launchplan.elastic.controller import TickReport

ONCE_PATIENCE = 20.0  # --once: how long a node may take to send its first heartbeat
ONCE_TIMEOUT = 900.0  # --once: how long what the tick started may take to finish


@click.command()
@click.argument("run_name", metavar="RUN")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between ticks.")
@click.option("--once", is_flag=True,
              help="One tick, then wait for what it started and exit: 0 when every elastic "
                   "service is healthy at its desired count, 1 otherwise (cron, CI).")
@click.option("--parallel", type=click.IntRange(min=1), default=64, show_default=True,
              help="How many nodes are launched or retired at once.")
@var_option
@vars_file_option
@json_option
def watch(run_name: str, interval: float, once: bool, parallel: int,
          variables: tuple[str, ...], vars_files: tuple[Path, ...], as_json: bool) -> int:
    """Keep RUN's elastic services alive: replace lost nodes, scale by their policies.

    \b
    Each tick, for each service with `elastic:` in the plan: judge every node by its
    heartbeats (its agent, or its ready program), replace the lost ones (a new node with a
    new index: db/1 is replaced by db/3), sample the metric, decide by the policy and launch
    or retire nodes. Later levels are told of new peers (context, config, `reconfigure`).
    `cei scale` and `cei repair` hand their requests to a running watch. Only one watch acts
    on a run; a second is refused with the first one's pid and host.

    \b
    Examples:
      cei watch demo                       # until Ctrl-C (finishes the step in flight: 130)
      cei watch demo --once --json         # from cron or CI
      cei watch demo --var db_password=... # variables cei would not store at launch

    New nodes are rendered from the plan file the run was launched from, with the same
    variables. Exit status: 0 stopped because the run was terminated (or --once: all
    healthy), 1 a failure (or --once: not all healthy), 2 usage, 130 interrupted.
    """
    from launchplan.elastic.controller import Controller, RunGone
    from launchplan.levels.runplan import load_run_plan
    from launchplan.levels.runtime import RunContext

    store = open_store()
    run = store.get_run(run_name)
    plan, notes = load_run_plan(run, parse_overrides(variables), vars_files)
    for note in notes:
        warn(note)
    reporter = make_reporter(as_json, f"cei watch {run.name}", live=_live_view)
    ctx = RunContext(store, run.name, reporter)
    controller = Controller(ctx, plan, interval=interval, parallel=parallel,
                            patience=ONCE_PATIENCE if once else None)
    interrupted = []

    def work() -> TickReport | None:
        with controller:
            if once:
                return controller.settle(ONCE_TIMEOUT)
            report = None
            while not controller.stop_requested:
                report = controller.tick()
                ctx.cancel.wait(interval)
            return report

    def on_first() -> None:
        interrupted.append(True)
        if not as_json:
            error("interrupted: finishing the step in flight (Ctrl-C again to exit at once)")

    gone = None
    report = None
    try:
        report = run_interruptibly(work, controller.interrupt, on_first)
    except RunGone as exc:
        gone = str(exc)
    finally:
        reporter.close()
    status = _exit_status(report, once, bool(interrupted))
    if as_json:
        emit_json({"event": "summary", "run": run.name, "exit_code": status,
                   "stopped": gone or ("interrupted" if interrupted else "stop requested"),
                   "services": [s.to_json() for s in report.services] if report else []})
        return status
    if gone:
        click.echo(f"{gone}: nothing left to watch")
    elif interrupted:
        click.echo(f"watch of run {run.name} interrupted; what was in flight is recorded and "
                   f"the next `cei watch {run.name}` finishes or rolls it back", err=True)
    elif report is not None:
        _summary(report)
    return status


def _live_view(title: str) -> Reporter:
    from launchplan.cli.watchview import WatchView

    return WatchView(title)


def _exit_status(report: TickReport | None, once: bool, interrupted: bool) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    if once:
        return EXIT_OK if report is not None and report.settled else EXIT_FAILED
    return EXIT_OK


def _summary(report: TickReport) -> None:
    if report.waiting:
        click.echo(report.waiting)
    for svc in report.services:
        line = (f"{svc.service}: {svc.healthy} healthy of {svc.desired} desired "
                f"(min {svc.min}, max {svc.max}, {svc.policy}) - {svc.reason}")
        (click.echo if svc.settled else error)(line)
