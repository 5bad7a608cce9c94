"""`cei launch PLAN`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from launchplan.cli.annotations import summary_line
from launchplan.cli.common import (
    Tee,
    claim_run,
    json_option,
    load,
    make_reporter,
    open_store,
    run_interruptibly,
    var_option,
    vars_file_option,
)
from launchplan.cli.duration import Duration, format_duration
from launchplan.cli.output import emit_json, error
from launchplan.errors import EXIT_TIMEOUT, CeiError

if TYPE_CHECKING:
    from launchplan.levels.launch import LaunchResult
    from launchplan.levels.teardown import TerminateResult


@click.command()
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--name", "run_name", metavar="RUN", envvar="CEI_RUN_NAME", show_envvar=True,
              help="Name of the run (default: the plan's name, made unique).")
@var_option
@vars_file_option
@click.option("--parallel", type=click.IntRange(min=1), default=64, show_default=True,
              help="How many nodes of a level start at once.")
@click.option("--on-failure", type=click.Choice(["keep", "terminate"]), default="keep",
              show_default=True,
              help="keep: leave a failed run up for inspection; terminate: tear it all down.")
@click.option("--deadline", type=Duration(), metavar="DURATION",
              help="The whole launch must finish within DURATION (90s, 10m, 1h30m); past it, "
                   "in-flight steps stop as on Ctrl-C and cei exits 3.")
@click.option("--junit", "junit_path", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JUnit XML report to FILE for CI test tabs: a suite per level, a "
                   "case per node and program. Written even when the launch fails.")
@json_option
def launch(plan_path: Path, run_name: str | None, variables: tuple[str, ...],
           vars_files: tuple[Path, ...], parallel: int, on_failure: str,
           deadline: float | None, junit_path: Path | None, as_json: bool) -> int:
    """Launch PLAN: boot each level's nodes in parallel, run their boot programs over SSH,
    wait for their ready programs, then go on to the next level.

    \b
    Examples:
      cei launch plans/three-tier.yml
      cei launch plans/hello.yml --name smoke --var greeting=hi --on-failure terminate
      cei launch plan.yml --json | jq -c 'select(.event == "summary")'
    In CI (docs/ci.md):
      CEI_RUN_NAME=ci-$BUILD cei launch plan.yml --deadline 10m \\
          --on-failure terminate --junit reports/cei-launch.xml

    The last line is a summary; with GITHUB_ACTIONS=true it is a ::notice or ::error
    workflow command, so that the job's annotations show it.

    Exit status: 0 all services ready, 1 a service failed, 2 invalid plan or usage,
    3 timed out (a program's timeout or --deadline), 130 interrupted (what was made is
    recorded: `cei terminate RUN`).
    """
    from launchplan.levels.launch import Launcher
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.states import RUN_FAILED
    from launchplan.levels.teardown import Terminator

    started = time.monotonic()
    if junit_path is not None:  # the report's code loads only when one is asked for
        from launchplan.cli import junit

        junit.prepare(junit_path)
    try:
        plan = load(plan_path, variables, vars_files)
        store = open_store()
        name = claim_run(store, plan, run_name, variables, vars_files,
                         "terminate it first (cei terminate {name}) or choose another --name")
    except CeiError as exc:  # nothing launched, but CI's test tab still says why
        if junit_path is not None:
            junit.write_error(junit_path, f"cei launch {plan_path}", "launch", str(exc))
        raise

    view = make_reporter(as_json, f"cei launch {name}")
    report = None
    if junit_path is not None:
        from launchplan.cli.junit_launch import LaunchReport

        report = LaunchReport(junit_path, name, plan.name)
    launcher = Launcher(RunContext(store, name, Tee(view, report) if report else view), plan,
                        parallel=parallel)

    def on_first() -> None:
        if not as_json:
            error("interrupted: finishing in-flight steps and recording what was made "
                  "(Ctrl-C again to exit at once)")

    def on_deadline() -> None:
        why = f"the launch deadline of {format_duration(deadline or 0)} passed"
        if not as_json:
            error(f"{why}: stopping in-flight steps and recording what was made")
        launcher.time_out(why)

    try:
        try:
            result = run_interruptibly(
                launcher.launch, launcher.interrupt, on_first,
                deadline=None if deadline is None else started + deadline,
                on_deadline=on_deadline)
        finally:
            if report is not None:
                report.close()
        teardown = None
        if result.status == RUN_FAILED and on_failure == "terminate":
            teardown = Terminator(RunContext(store, name, view)).terminate()
    finally:
        view.close()

    ok, line = _outcome(name, result, teardown, len(store.nodes(name)))
    details = "\n".join(f"{f.node}: {f.message}" for f in result.failures)
    if as_json:
        emit_json({"event": "summary", "run": name, "status": result.status,
                   "exit_code": result.exit_code, "elapsed": round(result.elapsed, 3),
                   "failures": [{"node": f.node, "message": f.message, "timeout": f.timeout}
                                for f in result.failures],
                   "terminated": teardown is not None and not teardown.remaining})
    else:
        for failure in result.failures:
            error(f"{failure.node}: {failure.message}")
    summary_line(ok, f"cei launch {name}", line, details, err=as_json or not ok)
    return result.exit_code


def _outcome(name: str, result: LaunchResult, teardown: TerminateResult | None,
             nodes: int) -> tuple[bool, str]:
    """Whether the launch succeeded, and the line that says so and what to do next."""
    if result.status == "ready":
        return True, (f"run {name} is ready: {nodes} nodes in {result.elapsed:.1f}s. "
                      f"Next: cei status {name}; cei terminate {name}")
    if result.status == "interrupted":
        return False, (f"run {name} interrupted; what was created is recorded. "
                       f"Clean up with: cei terminate {name}")
    what = "timed out" if result.exit_code == EXIT_TIMEOUT else "failed"
    if teardown is None:
        return False, (f"run {name} {what} after {result.elapsed:.1f}s; nodes are kept for "
                       f"inspection: cei status {name}; cei terminate {name}")
    if teardown.remaining:
        ids = ", ".join(r.resource_id for r in teardown.remaining)
        return False, (f"run {name} {what} after {result.elapsed:.1f}s and its teardown is "
                       f"incomplete; remaining: {ids}. Retry: cei terminate {name}")
    return False, f"run {name} {what} after {result.elapsed:.1f}s and was torn down."
