"""`cei import TOP.conf`: a cloudinit.d plan converted into a cei plan."""

from __future__ import annotations

from pathlib import Path

import click

from launchplan.cli.common import json_option
from launchplan.cli.output import counted, emit_json, error, warn
from launchplan.errors import EXIT_USAGE, UsageError


@click.command(name="import")
@click.argument("top", metavar="TOP.conf", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the cei plan to this file (default: standard output). Program "
                   "paths in it are relative to its directory.")
@click.option("--cloud", metavar="NAME",
              help="Put every launched service on this cloud: 'local' (the embedded local "
                   "cloud, to try an old plan at once) or a profile the import makes.")
@click.option("--check", is_flag=True,
              help="Only check that the plan imports (and passes cei's checks); write nothing.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT when it exists.")
@json_option
def import_plan(top: Path, output: Path | None, cloud: str | None, check: bool, force: bool,
                as_json: bool) -> int:
    """Convert a cloudinit.d plan (TOP.conf, its level files and deps files) into one cei plan.

    \b
    Levels keep their order, services their names and replica counts; deps become each
    service's config, ${svc.key} references to earlier services become templates, env.NAME
    becomes env('NAME') (read at launch, never copied), and iaas settings become cloud
    profiles (ec2 and EC2-compatible endpoints: driver ec2; libcloud-NAME: driver libcloud;
    hostname: an existing host). Each service runs with compat: cloudinitd, so its programs
    find bootconf.json and bootenv.sh and leave their outputs in bootout.json as before.
    Comments in the plan say where each piece came from; keys cei does not support are
    listed as warnings.

    \b
    Examples:
      cei import old/top.conf --check
      cei import old/top.conf -o shop.yml --cloud local && cei launch shop.yml

    Exit status 0 when imported (warnings allowed); 2 when the plan is refused, with every
    problem as FILE.conf:LINE: message.
    """
    from launchplan.importer.problems import ImportRefused
    from launchplan.importer.run import import_plan as convert

    if output is not None and output.exists() and not (force or check):
        raise UsageError(f"{output} exists; use --force to overwrite it")
    if as_json and output is None and not check:
        raise UsageError("--json reports on the import: give -o PLAN.yml (or --check)")
    try:
        result = convert(top, None if check else output, cloud)
    except ImportRefused as refused:
        if as_json:
            emit_json({"top": str(top), "imported": False,
                       "errors": [str(p) for p in refused.problems]})
        else:
            for problem in refused.problems:
                error(str(problem))
            click.echo(f"{top}: not imported ({len(refused.problems)} problems)", err=True)
        return EXIT_USAGE
    imported = result.imported
    if output is not None and not check:
        output.write_text(result.text, encoding="utf-8")
    elif not check:
        click.echo(result.text, nl=False)
    if as_json:
        emit_json({"top": str(top), "imported": True,
                   "output": None if check or output is None else str(output),
                   "levels": imported.levels, "services": imported.services,
                   "warnings": [str(w) for w in result.warnings]})
        return 0
    for problem in result.warnings:
        warn(str(problem))
    counts = (f"{counted(imported.levels, 'level')}, {counted(imported.services, 'service')}, "
              f"{counted(len(result.warnings), 'warning')}")
    if check:
        click.echo(f"{top}: importable ({counts})")
    elif output is not None:
        click.echo(f"wrote {output} ({counts}); next: cei validate {output}")
    return 0
