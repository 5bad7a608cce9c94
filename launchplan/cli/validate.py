"""`cei validate PLAN` and `cei render PLAN [SERVICE]`: look before you launch."""

from __future__ import annotations

import json
from pathlib import Path

import click

from launchplan.cli.common import json_option, load, var_option, vars_file_option
from launchplan.cli.output import counted, emit_json, warn
from launchplan.errors import UsageError

_plan_arg = click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))


@click.command()
@_plan_arg
@var_option
@vars_file_option
@json_option
def validate(plan_path: Path, variables: tuple[str, ...], vars_files: tuple[Path, ...],
             as_json: bool) -> int:
    """Check PLAN without launching anything: schema, references between levels, variables,
    files, and every service rendered with placeholders for outputs not known yet.

    Exit status 0 when valid, 2 with FILE:LINE: message otherwise.
    """
    from launchplan.plan import machine_problems, render_all

    plan = load(plan_path, variables, vars_files)
    nodes = len(render_all(plan))
    for problem in machine_problems(plan):
        warn(f"{problem} (needed to launch, not by the plan)")
    summary = {"plan": plan.name, "path": str(plan_path), "valid": True,
               "levels": len(plan.levels), "services": len(plan.services()), "nodes": nodes}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"{plan_path}: valid ({counted(len(plan.levels), 'level')}, "
                   f"{counted(len(plan.services()), 'service')}, {counted(nodes, 'node')})")
    return 0


@click.command()
@_plan_arg
@click.argument("service", required=False)
@var_option
@vars_file_option
@json_option
def render(plan_path: Path, service: str | None, variables: tuple[str, ...],
           vars_files: tuple[Path, ...], as_json: bool) -> int:
    """Print the user-data and config PLAN's nodes would receive (SERVICE: only that one).

    Outputs of earlier levels are not known before launch and show as placeholders such as
    <db.outputs.token>. The host key cei generates for each node is never shown.
    """
    from launchplan.ctx.hostkeys import generate_host_key
    from launchplan.ctx.userdata import build_userdata, redact_userdata
    from launchplan.plan import render_service
    from launchplan.providers import driver_capabilities

    plan = load(plan_path, variables, vars_files)
    names = [d.name for d in plan.services()]
    if service is not None and service not in names:
        raise UsageError(f"plan {plan.name} has no service {service!r} "
                         f"(services: {', '.join(names)})")
    docs = []
    for name in [service] if service else names:
        for spec in render_service(plan, name, plan.name):
            creates = driver_capabilities(spec.cloud.driver).creates_machines
            host_key = (generate_host_key() if creates and spec.host_key_policy == "pinned"
                        else None)
            userdata = build_userdata(spec.userdata, host_key=host_key) if creates else b""
            docs.append({"node": spec.node, "cloud": spec.cloud.name,
                         "driver": spec.cloud.driver,
                         "userdata": redact_userdata(userdata) if userdata else "",
                         "config": dict(spec.config)})
    if as_json:
        emit_json({"plan": plan.name, "nodes": docs})
        return 0
    for doc in docs:
        click.secho(f"=== {doc['node']} (cloud {doc['cloud']}, driver {doc['driver']})",
                    bold=True)
        click.secho("--- user-data", fg="cyan")
        click.echo(doc["userdata"] or "(none)")
        click.secho("--- config ($CEI_CONFIG)", fg="cyan")
        click.echo(json.dumps(doc["config"], indent=2, sort_keys=True, default=str))
    return 0
