"""`cei terminate RUN` (or a sweep of old runs with `--all`) and `cei clean RUN`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

import click

from launchplan.cli.common import json_option, make_reporter, open_store, run_interruptibly
from launchplan.cli.duration import Duration, format_duration
from launchplan.cli.output import emit_json, error, warn
from launchplan.errors import EXIT_OK, EXIT_TEARDOWN_INCOMPLETE, RunLockedError, UsageError

if TYPE_CHECKING:
    from launchplan.levels.teardown import TerminateResult
    from launchplan.state import RunRecord, Store


def _tear_down(store: Store, run_name: str, as_json: bool, programs: bool,
               parallel: int) -> TerminateResult:
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.teardown import Terminator

    run = store.get_run(run_name)
    reporter = make_reporter(as_json, f"cei {'terminate' if programs else 'clean'} {run.name}")
    ctx = RunContext(store, run.name, reporter)
    terminator = Terminator(ctx, parallel=parallel)
    try:
        return run_interruptibly(lambda: terminator.terminate(programs=programs),
                                 ctx.interrupt, lambda: None)
    finally:
        reporter.close()


def _report(result: TerminateResult, as_json: bool, event: str = "summary") -> int:
    if as_json:
        emit_json({"event": event, "run": result.run, "status": result.status,
                   "exit_code": result.exit_code, "destroyed": result.destroyed,
                   "remaining": [r.__dict__ for r in result.remaining],
                   "warnings": result.warnings})
        return result.exit_code
    for message in result.warnings:
        warn(message)
    if result.remaining:
        error(f"teardown of {result.run} incomplete; these resources may remain:")
        for r in result.remaining:
            click.echo(f"  {r.driver} {r.resource_id} ({r.node or 'unknown node'}): {r.message}",
                       err=True)
        click.echo(f"run `cei terminate {result.run}` again once the cause is fixed", err=True)
    else:
        click.echo(f"run {result.run} terminated ({result.destroyed} resources destroyed)")
    return result.exit_code


def _teardown(run_name: str, as_json: bool, programs: bool, parallel: int) -> int:
    return _report(_tear_down(open_store(), run_name, as_json, programs, parallel), as_json)


_parallel = click.option("--parallel", type=click.IntRange(min=1), default=64,
                         show_default=True, help="How many nodes of a level stop at once.")


@click.command()
@click.argument("run_name", metavar="[RUN]", required=False)
@click.option("--if-exists", is_flag=True,
              help="Exit 0 when RUN was never created: for a cleanup step that always runs, "
                   "even after a launch that failed before recording anything.")
@click.option("--all", "sweep", is_flag=True,
              help="Instead of one RUN, every run not yet terminated, narrowed by "
                   "--older-than and --plan: the sweep of runs cancelled jobs left behind.")
@click.option("--older-than", type=Duration(), metavar="DURATION",
              help="With --all: only runs created more than DURATION ago (90m, 2h, 1d).")
@click.option("--plan", "plan_name", metavar="NAME",
              help="With --all: only runs of the plan named NAME.")
@_parallel
@json_option
def terminate(run_name: str | None, if_exists: bool, sweep: bool, older_than: float | None,
              plan_name: str | None, parallel: int, as_json: bool) -> int:
    """Tear RUN down: levels in reverse order, each node's terminate program (best effort:
    its failure is logged and never stops the destroy), then every resource the run ever made
    is destroyed by id and the clouds are swept by the run's tag.

    Safe to repeat: a second terminate of a finished teardown exits 0. Exit status 4 lists
    what may remain.

    \b
    In CI (docs/ci.md):
      cei terminate --if-exists "$CEI_RUN_NAME"             # a step that always runs
      cei terminate --all --older-than 2h --plan smoke      # the nightly sweep
    """
    if sweep:
        if run_name is not None or if_exists:
            raise UsageError("--all selects the runs itself: give no RUN (and no --if-exists)")
        return _sweep(older_than, plan_name, as_json, parallel)
    if older_than is not None or plan_name is not None:
        raise UsageError("--older-than and --plan narrow --all; to terminate one run, give "
                         "only its name")
    if run_name is None:
        raise UsageError("give the RUN to terminate (`cei list` shows them), or --all to "
                         "sweep old runs")
    store = open_store()
    if if_exists and store.find_run(run_name) is None:
        if as_json:
            emit_json({"event": "summary", "run": run_name, "status": "absent",
                       "exit_code": EXIT_OK, "destroyed": 0, "remaining": [], "warnings": []})
        else:
            click.echo(f"no run named {run_name}: nothing to terminate")
        return EXIT_OK
    return _report(_tear_down(store, run_name, as_json, True, parallel), as_json)


def _sweep(older_than: float | None, plan_name: str | None, as_json: bool,
           parallel: int) -> int:
    """Terminate each selected run in turn, with the usual verification of each."""
    from launchplan.levels.states import RUN_TERMINATED

    store = open_store()
    now = time.time()
    runs = [run for run in store.list_runs()
            if run.status != RUN_TERMINATED
            and (plan_name is None or run.plan == plan_name)
            and (older_than is None or now - _created(run) > older_than)]
    which = (f" of plan {plan_name}" if plan_name else "") + (
        f" older than {format_duration(older_than)}" if older_than else "")
    if not as_json:
        click.echo(f"sweeping {len(runs)} runs{which}: {', '.join(r.name for r in runs)}"
                   if runs else f"nothing to sweep: no live run{which}")
    terminated: list[str] = []
    incomplete: list[str] = []
    in_use: dict[str, str] = {}
    for run in runs:
        try:
            result = _tear_down(store, run.name, as_json, programs=True, parallel=parallel)
        except RunLockedError as exc:  # a command is changing it right now: not left behind
            in_use[run.name] = str(exc)
            if not as_json:
                warn(f"{run.name} not swept: {exc}")
            continue
        _report(result, as_json, event="run.terminated")
        (incomplete if result.remaining else terminated).append(run.name)
    code = EXIT_TEARDOWN_INCOMPLETE if incomplete or in_use else EXIT_OK
    if as_json:
        emit_json({"event": "summary", "runs": [r.name for r in runs], "terminated": terminated,
                   "incomplete": incomplete, "in_use": in_use, "exit_code": code})
    elif runs:
        click.echo(f"swept {len(runs)} runs: {len(terminated)} terminated"
                   + (f"; incomplete: {', '.join(incomplete)}" if incomplete else "")
                   + (f"; in use, not swept: {', '.join(in_use)}" if in_use else ""),
                   err=code != EXIT_OK)
    return code


def _created(run: RunRecord) -> float:
    return datetime.fromisoformat(run.created).timestamp()


@click.command()
@click.argument("run_name", metavar="RUN")
@_parallel
@json_option
def clean(run_name: str, parallel: int, as_json: bool) -> int:
    """Destroy and sweep RUN's resources without running terminate programs."""
    return _teardown(run_name, as_json, programs=False, parallel=parallel)
