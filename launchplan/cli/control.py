"""`cei scale RUN SERVICE N` and `cei repair RUN [SERVICE|NODE]`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from launchplan.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from launchplan.levels.runtime import RunContext
    from launchplan.plan.model import Plan
    from launchplan.state import RequestRecord

_timeout = click.option("--timeout", type=click.FloatRange(min=1), default=900.0,
                        show_default=True, help="Seconds to wait for it to finish.")


@click.command()
@click.argument("run_name", metavar="RUN")
@click.argument("service", metavar="SERVICE")
@click.argument("count", metavar="N", type=click.IntRange(min=0))
@click.option("--force", is_flag=True,
              help="Allow N outside the service's min..max (the bound moves to N), or scale a "
                   "service that is not elastic.")
@_timeout
@var_option
@vars_file_option
@json_option
def scale(run_name: str, service: str, count: int, force: bool, timeout: float,
          variables: tuple[str, ...], vars_files: tuple[Path, ...], as_json: bool) -> int:
    """Set SERVICE's desired node count to N and wait until it has N healthy nodes.

    \b
    N must lie within the service's elastic min..max (--force to leave them). The change
    counts as a scale action: the policy waits out its cooldown before it decides again.
    With `cei watch` running, the request goes to it; otherwise this command does the work
    itself (new nodes get new indexes; a scale-down retires nodes by `retire`, drains their
    processes, runs their terminate program and checks that they are gone).

    \b
    Examples:
      cei scale demo engine 5
      cei scale demo engine 12 --force --json

    Exit status: 0 done, 1 failed, 2 usage (N outside min..max), 3 timed out.
    """
    from launchplan.elastic.desired import check_scale, reached

    store = open_store()
    run = store.get_run(run_name)

    check_scale(store, run.name, service, count, force)
    request = _submit(run.name, "scale", service, {"count": count, "force": force}, as_json,
                      timeout, variables, vars_files, lambda: reached(store, run.name, service))
    return _report(request, as_json, f"{service} has {count} healthy node(s)")


@click.command()
@click.argument("run_name", metavar="RUN")
@click.argument("target", metavar="[SERVICE|NODE]", required=False)
@_timeout
@var_option
@vars_file_option
@json_option
def repair(run_name: str, target: str | None, timeout: float, variables: tuple[str, ...],
           vars_files: tuple[Path, ...], as_json: bool) -> int:
    """Replace RUN's failed or lost nodes (of SERVICE, or the one NODE) and boot them again.

    \b
    Each node is checked (the cloud, then its ready program). A failed or unhealthy node on
    a cloud is replaced by a new node with a new index; one on an existing host is booted
    again under its own name. A NODE named explicitly is replaced even when healthy. The
    nodes of the same and later levels are then told: their context document is rewritten,
    their config rendered again, and their `reconfigure` program run.

    \b
    Examples:
      cei repair demo               # every failed or lost node
      cei repair demo app           # the app service's
      cei repair demo app/1         # this node, healthy or not

    Exit status: 0 repaired (or nothing to repair), 1 a replacement failed, 3 timed out.
    """
    request = _submit(run_name, "repair", target, {}, as_json, timeout, variables,
                      vars_files, None)
    replaced = request.result.get("replaced") or {}
    done = ", ".join(f"{old} -> {new}" for old, new in replaced.items())
    return _report(request, as_json, f"repaired {done}" if done else "nothing to repair")


def _submit(run_name: str, kind: str, target: str | None, args: dict[str, Any],
            as_json: bool, timeout: float, variables: tuple[str, ...],
            vars_files: tuple[Path, ...], done: Callable[[], bool] | None) -> RequestRecord:
    from launchplan.elastic.requests import submit
    from launchplan.levels.runplan import load_run_plan
    from launchplan.levels.runtime import RunContext

    store = open_store()
    run = store.get_run(run_name)
    reporter = make_reporter(as_json, f"cei {kind} {run.name}")
    ctx: RunContext = RunContext(store, run.name, reporter)

    def plan() -> Plan:
        loaded, notes = load_run_plan(run, parse_overrides(variables), vars_files)
        for note in notes:
            warn(note)
        return loaded

    try:
        return run_interruptibly(
            lambda: submit(ctx, kind, target, args, plan, timeout, done), ctx.interrupt,
            lambda: None)
    finally:
        reporter.close()


def _report(request: RequestRecord, as_json: bool, success: str) -> int:
    status = EXIT_OK if request.state == "done" else EXIT_FAILED
    if as_json:
        emit_json({"event": "summary", "run": request.run, "request": request.kind,
                   "state": request.state, "result": request.result, "exit_code": status})
        return status
    if status == EXIT_OK:
        click.echo(success)
    else:
        error(request.result.get("error") or "; ".join(request.result.get("problems", []))
              or f"{request.kind} failed")
    return status
