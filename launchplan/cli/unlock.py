"""`cei unlock RUN`: clear a run's stale lock, or its controller's lease, after confirmation."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from launchplan.cli.common import json_option, open_store
from launchplan.cli.output import emit_json
from launchplan.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from launchplan.state import LeaseRecord
    from launchplan.state.holders import Holder
    from launchplan.state.records import LockRecord

    Held = LockRecord | LeaseRecord


@click.command()
@click.argument("run_name", metavar="RUN")
@click.option("--yes", "-y", is_flag=True, help="Clear without asking (needed off a terminal).")
@json_option
def unlock(run_name: str, yes: bool, as_json: bool) -> int:
    """Clear RUN's lock, and its controller's lease, when the cei process that holds them is
    gone for good: its machine died, or it was killed on another host and the lock has not
    expired yet.

    Shows the holder (host, pid, since when, expiry) and asks first. A holder on this host
    that still runs is never cleared: stop it instead. Exit status 0 cleared (or nothing was
    held), 1 not confirmed, 2 refused.
    """
    from launchplan.state.holders import Holder

    store = open_store()
    run = store.get_run(run_name)
    held: list[tuple[str, Held, Callable[[], bool]]] = []
    lock = store.lock_record(run.name)
    if lock is not None:
        held.append(("run lock", lock, lambda: store.break_lock(lock)))
    lease = store.lease_record(run.name)
    if lease is not None:
        held.append(("controller lease", lease, lambda: store.break_lease(lease)))
    if not held:
        if as_json:
            emit_json({"run": run.name, "cleared": []})
        else:
            click.echo(f"run {run.name} is not locked")
        return EXIT_OK
    for what, record, _ in held:
        holder = Holder(record.host, record.pid, record.starttime)
        if holder.here() and holder.alive():
            raise UsageError(f"the {what} of run {run.name} is held by pid {holder.pid} on this "
                             "host, which still runs: stop it (or let it finish) instead")
        if not as_json:
            click.echo(f"{what} of run {run.name}: {_describe(holder, record)}")
    if not yes:
        if as_json or not sys.stdin.isatty():
            raise UsageError("clearing a lock needs confirmation: pass --yes once you are sure "
                             "its holder is gone")
        if not click.confirm("Clear it? Only if that process is gone for good", default=False):
            click.echo("nothing cleared", err=True)
            return EXIT_FAILED
    cleared = []
    for what, _, clear in held:
        if clear():
            cleared.append(what)
        else:
            raise UsageError(f"the {what} of run {run.name} changed since it was shown (its "
                             "holder renewed it, or another took it): nothing more cleared; "
                             f"run `cei unlock {run.name}` again to see who holds it now")
    if as_json:
        emit_json({"run": run.name, "cleared": cleared})
    else:
        click.echo(f"cleared the {' and the '.join(cleared)} of run {run.name}")
    return EXIT_OK


def _describe(holder: Holder, record: Held) -> str:
    if record.expires is None:
        expiry = "never expires by itself"
    elif record.expires > time.time():
        expiry = f"expires in {record.expires - time.time():.0f}s unless renewed"
    else:
        expiry = f"expired {time.time() - record.expires:.0f}s ago"
    where = ("no longer running" if holder.here()
             else "on another host: cannot be checked from here")
    return f"{holder.describe()} since {record.acquired}, {expiry}; {where}"
