"""`cei launch PLAN`."""

from __future__ import annotations

from pathlib import Path

import click

from launchplan.cli.common import (
    claim_run,
    json_option,
    load,
    make_reporter,
    open_store,
    run_interruptibly,
    var_option,
    vars_file_option,
)
from launchplan.cli.output import emit_json, error


@click.command()
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--name", "run_name", metavar="RUN",
              help="Name of the run (default: the plan's name, made unique).")
@var_option
@vars_file_option
@click.option("--parallel", type=click.IntRange(min=1), default=64, show_default=True,
              help="How many nodes of a level start at once.")
@click.option("--on-failure", type=click.Choice(["keep", "terminate"]), default="keep",
              show_default=True,
              help="keep: leave a failed run up for inspection; terminate: tear it all down.")
@json_option
def launch(plan_path: Path, run_name: str | None, variables: tuple[str, ...],
           vars_files: tuple[Path, ...], parallel: int, on_failure: str, as_json: bool) -> int:
    """Launch PLAN: boot each level's nodes in parallel, run their boot programs over SSH,
    wait for their ready programs, then go on to the next level.

    \b
    Examples:
      cei launch plans/three-tier.yml
      cei launch plans/hello.yml --name smoke --var greeting=hi --on-failure terminate
      cei launch plan.yml --json | jq -c 'select(.event == "summary")'

    Exit status: 0 all services ready, 1 a service failed, 2 invalid plan or usage,
    3 timed out, 130 interrupted (what was made is recorded: `cei terminate RUN`).
    """
    from launchplan.levels.launch import Launcher
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.states import RUN_FAILED
    from launchplan.levels.teardown import Terminator

    plan = load(plan_path, variables, vars_files)
    store = open_store()
    name = claim_run(store, plan, run_name, variables, vars_files,
                     "terminate it first (cei terminate {name}) or choose another --name")

    reporter = make_reporter(as_json, f"cei launch {name}")
    ctx = RunContext(store, name, reporter)
    launcher = Launcher(ctx, plan, parallel=parallel)

    def on_first() -> None:
        if not as_json:
            error("interrupted: finishing in-flight steps and recording what was made "
                  "(Ctrl-C again to exit at once)")

    try:
        result = run_interruptibly(launcher.launch, launcher.interrupt, on_first)
        teardown = None
        if result.status == RUN_FAILED and on_failure == "terminate":
            teardown = Terminator(RunContext(store, name, reporter)).terminate()
    finally:
        reporter.close()

    if as_json:
        emit_json({"event": "summary", "run": name, "status": result.status,
                   "exit_code": result.exit_code, "elapsed": round(result.elapsed, 3),
                   "failures": [{"node": f.node, "message": f.message}
                                for f in result.failures],
                   "terminated": teardown is not None and not teardown.remaining})
        return result.exit_code
    for failure in result.failures:
        error(f"{failure.node}: {failure.message}")
    if result.status == "ready":
        click.echo(f"run {name} is ready ({result.elapsed:.1f}s). "
                   f"Next: cei status {name}; cei terminate {name}")
    elif result.status == "interrupted":
        click.echo(f"run {name} interrupted; what was created is recorded. "
                   f"Clean up with: cei terminate {name}", err=True)
    elif teardown is not None:
        click.echo(f"run {name} failed and was torn down"
                   + (f"; remaining: {', '.join(r.resource_id for r in teardown.remaining)}"
                      if teardown.remaining else "."), err=True)
    else:
        click.echo(f"run {name} failed; nodes are kept for inspection: cei status {name}; "
                   f"cei terminate {name}", err=True)
    return result.exit_code
