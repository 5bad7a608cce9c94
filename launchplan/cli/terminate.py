"""`cei terminate RUN` and `cei clean RUN`."""

from __future__ import annotations

import click

from launchplan.cli.common import json_option, make_reporter, open_store, run_interruptibly
from launchplan.cli.output import emit_json, error, warn


def _teardown(run_name: str, as_json: bool, programs: bool, parallel: int) -> int:
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.teardown import Terminator

    store = open_store()
    run = store.get_run(run_name)
    reporter = make_reporter(as_json, f"cei {'terminate' if programs else 'clean'} {run.name}")
    ctx = RunContext(store, run.name, reporter)
    terminator = Terminator(ctx, parallel=parallel)
    try:
        result = run_interruptibly(lambda: terminator.terminate(programs=programs),
                                   ctx.interrupt, lambda: None)
    finally:
        reporter.close()
    if as_json:
        emit_json({"event": "summary", "run": run.name, "status": result.status,
                   "exit_code": result.exit_code, "destroyed": result.destroyed,
                   "remaining": [r.__dict__ for r in result.remaining],
                   "warnings": result.warnings})
        return result.exit_code
    for message in result.warnings:
        warn(message)
    if result.remaining:
        error(f"teardown of {run.name} incomplete; these resources may remain:")
        for r in result.remaining:
            click.echo(f"  {r.driver} {r.resource_id} ({r.node or 'unknown node'}): {r.message}",
                       err=True)
        click.echo(f"run `cei terminate {run.name}` again once the cause is fixed", err=True)
    else:
        click.echo(f"run {run.name} terminated ({result.destroyed} resources destroyed)")
    return result.exit_code


_parallel = click.option("--parallel", type=click.IntRange(min=1), default=64,
                         show_default=True, help="How many nodes of a level stop at once.")


@click.command()
@click.argument("run_name", metavar="RUN")
@_parallel
@json_option
def terminate(run_name: str, parallel: int, as_json: bool) -> int:
    """Tear RUN down: levels in reverse order, each node's terminate program (best effort:
    its failure is logged and never stops the destroy), then every resource the run ever made
    is destroyed by id and the clouds are swept by the run's tag.

    Safe to repeat: a second terminate of a finished teardown exits 0. Exit status 4 lists
    what may remain.
    """
    return _teardown(run_name, as_json, programs=True, parallel=parallel)


@click.command()
@click.argument("run_name", metavar="RUN")
@_parallel
@json_option
def clean(run_name: str, parallel: int, as_json: bool) -> int:
    """Destroy and sweep RUN's resources without running terminate programs."""
    return _teardown(run_name, as_json, programs=False, parallel=parallel)
