"""`cei clouds check PLAN`: what a plan needs from its clouds, looked up before launching."""

from __future__ import annotations

from pathlib import Path

import click

from launchplan.cli.common import json_option, load, var_option, vars_file_option
from launchplan.cli.output import emit_json, error
from launchplan.errors import EXIT_OK, EXIT_USAGE


@click.group()
def clouds() -> None:
    """Look at the clouds a plan uses, without launching anything."""


@clouds.command()
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@var_option
@vars_file_option
@json_option
def check(plan_path: Path, variables: tuple[str, ...], vars_files: tuple[Path, ...],
          as_json: bool) -> int:
    """Resolve every image, size, network, key pair, credential and SSH route PLAN needs,
    read-only, and report every problem at once.

    Nothing is created or stored. Exit status 0 when all is found, 2 (each problem naming
    its FILE:LINE) otherwise, so a CI job fails before it spends money.
    """
    from launchplan.levels.cloudcheck import check_plan

    plan = load(plan_path, variables, vars_files)
    report = check_plan(plan)
    status = EXIT_USAGE if report.problems else EXIT_OK
    if as_json:
        emit_json({"plan": plan.name, "path": str(plan_path), "ok": not report.problems,
                   "problems": [p.to_json() for p in report.problems],
                   "unchecked": report.unchecked, "clouds": report.clouds})
        return status
    for problem in report.problems:
        error(str(problem))
    for note in report.unchecked:
        click.echo(f"not checked: {note}")
    names = ", ".join(f"{name} ({c['driver']})" for name, c in report.clouds.items())
    if report.problems:
        click.echo(f"{plan_path}: {len(report.problems)} problem(s) with its clouds ({names})",
                   err=True)
    else:
        click.echo(f"{plan_path}: clouds check passed ({names})")
    return status
