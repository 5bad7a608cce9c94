"""`cei state migrate`, `cei state export RUN`, `cei state import FILE`, `cei state keygen`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from launchplan.cli.common import json_option, open_store
from launchplan.cli.output import emit_json, warn
from launchplan.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from launchplan.state import Store


@click.group()
def state() -> None:
    """Move runs between stores, and make the key that seals what a second machine needs.

    \b
      cei state migrate --to postgresql://cei@db.example:5432/cei
      cei state export ci-42 -o run.json      # in one CI job
      cei state import run.json               # in another, on another runner
      cei state keygen -o ~/.cei-state.key    # then CEI_STATE_KEY=~/.cei-state.key
    """


@state.command()
@click.option("--from", "source_url", metavar="URL",
              help="The store to copy from (default: --state / $CEI_STATE, else SQLite in "
                   "$CEI_HOME).")
@click.option("--to", "target_url", metavar="URL", required=True,
              help="The store to copy into, e.g. postgresql://USER@HOST:PORT/DB.")
@click.option("--run", "names", metavar="RUN", multiple=True,
              help="Copy only this run (repeatable; default: every run).")
@json_option
def migrate(source_url: str | None, target_url: str, names: tuple[str, ...],
            as_json: bool) -> int:
    """Copy runs (with their nodes, resources, history, processes and keys) from one store
    into another. The source keeps them; point CEI_STATE at the target afterwards.

    Each run is copied under its lock, so one being launched or changed is left out and
    said so (copy it again later: runs already in the target are skipped). Exit status 0
    when every run is in the target, 1 when some could not be copied.
    """
    from launchplan.levels.sites import claim_local_nodes
    from launchplan.state.transfer import copy_runs

    source = open_store(source_url)
    target = open_store(target_url)
    if source.location.key == target.location.key:
        raise UsageError(f"--from and --to are the same store ({source.location.label})")
    for name in names:
        source.get_run(name)
    outcomes = copy_runs(source, target, names or None,
                         adapt=lambda doc: claim_local_nodes(doc, source.home))
    if as_json:
        emit_json({"from": source.location.label, "to": target.location.label,
                   "runs": [o.__dict__ for o in outcomes]})
    else:
        for outcome in outcomes:
            click.echo(f"{outcome.run}: copied" if outcome.copied
                       else f"{outcome.run}: not copied: {outcome.reason}")
        copied = sum(o.copied for o in outcomes)
        click.echo(f"{copied} of {len(outcomes)} run(s) copied from {source.location.label} "
                   f"to {target.location.label}")
    missing = [o for o in outcomes if not o.copied and target.find_run(o.run) is None]
    return EXIT_FAILED if missing else EXIT_OK


@state.command("export")
@click.argument("run_name", metavar="RUN")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the document here (mode 0600) instead of standard output.")
def export(run_name: str, output: Path | None) -> int:
    """Write RUN as one JSON document that `cei state import` reads on another machine (a CI
    artifact): the run, its nodes, resources, history, processes, elastic state and keys,
    never a secret (a run key's private half only sealed under CEI_STATE_KEY)."""
    from launchplan.levels.sites import claim_local_nodes
    from launchplan.state.transfer import export_run

    store = open_store()
    document = export_run(store, store.get_run(run_name).name)
    claim_local_nodes(document, store.home)
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    _write_private(output, text)
    click.echo(f"exported run {run_name} to {output}", err=True)
    return EXIT_OK


@state.command("import")
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
def import_(source: str, as_json: bool) -> int:
    """Add the run a `cei state export` document holds (FILE, or - for standard input) to
    this store, whole or not at all. A run of that name already here is refused (exit 2)."""
    from launchplan.state.transfer import import_run

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        document = json.loads(text)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None
    store = open_store()
    run = import_run(store, document)
    counts = {part: len(document.get(part) or []) for part in ("nodes", "resources", "events")}
    if as_json:
        emit_json({"run": run.name, "status": run.status, **counts})
    else:
        click.echo(f"imported run {run.name} ({run.status}; {counts['nodes']} node(s), "
                   f"{counts['resources']} resource(s), {counts['events']} event(s))")
        _warn_unreachable(store, run.name)
    return EXIT_OK


@state.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the key to this new file (mode 0600) instead of standard output.")
def keygen(output: Path | None) -> int:
    """Make a random key for CEI_STATE_KEY, which seals the run keys kept in the store.

    Give every machine that shares the store the same key: as the value of CEI_STATE_KEY, or
    as the path of this file in it.
    """
    from launchplan.state.sealing import new_key

    key = new_key()
    if output is None:
        click.echo(key)
        return EXIT_OK
    _write_private(output, key + "\n")
    click.echo(f"wrote a new key to {output}; use it with CEI_STATE_KEY={output}", err=True)
    return EXIT_OK


def _write_private(path: Path, text: str) -> None:
    """Create `path` 0600 with `text`; an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; remove it or choose another file") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _warn_unreachable(store: Store, run: str) -> None:
    from launchplan.levels.sites import this_site, unreachable

    here = this_site(store.home)
    elsewhere = {why for n in store.nodes(run)
                 if (why := unreachable(n.driver, n.cloud, here)) is not None}
    for why in sorted(elsewhere):
        warn(f"some nodes of run {run} are {why}: terminate them from there")
