"""Pieces the commands share: options, the store, reporters, interruptible work."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from launchplan.errors import EXIT_INTERRUPTED, UsageError
from launchplan.levels.events import Event

if TYPE_CHECKING:
    from launchplan.plan.model import Plan
    from launchplan.state import Store

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Write JSON (NDJSON events for long commands) instead of text.")
_SECRET_VARS = "cei.secret_vars"


def _remember_secret_vars(ctx: click.Context, _param: click.Parameter,
                          value: tuple[str, ...]) -> None:
    ctx.meta[_SECRET_VARS] = value


def var_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--var KEY=VALUE and --secret-var KEY=VALUE (the same, its value masked in logs, events
    and output and never stored); parse_overrides() reads both."""
    command = click.option(
        "--secret-var", multiple=True, metavar="KEY=VALUE", expose_value=False,
        callback=_remember_secret_vars,
        help="Set a plan variable whose value is secret: masked in logs, events and JSON, "
             "never stored (repeatable).")(command)
    return click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
                        help="Set a plan variable (repeatable); overrides --vars-file.")(command)
vars_file_option = click.option("--vars-file", "vars_files", multiple=True,
                                type=click.Path(dir_okay=False, path_type=Path),
                                help="YAML file of variables (repeatable, later files win).")


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


class Tee:
    """Hands every event to several reporters: the view, and say a JUnit report."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def __call__(self, event: Event) -> None:
        for reporter in self.reporters:
            reporter(event)


# Stores this command opened: what they could not write yet is written before it exits.
_opened: list[Store] = []
STATE_WAIT_ENV = "CEI_STATE_WAIT"
DEFAULT_STATE_WAIT = 120.0  # seconds a command waits for the database to record what it did


def open_store(url: str | None = None) -> Store:
    """The store `url` names, by default that of `--state` / $CEI_STATE (else SQLite in
    $CEI_HOME)."""
    from launchplan.state import Store, default_home

    if url is None:
        context = click.get_current_context(silent=True)
        url = context.find_root().params.get("state_url") if context is not None else None
    store = Store(default_home(), url or "")
    _opened.append(store)
    return store


def close_stores() -> None:
    """Close the stores this command opened, as it exits: SQLite folds its -wal file back
    into cei.db, which a user may copy alone."""
    while _opened:
        _opened.pop().close()


def settle_stores(exit_code: int) -> int:
    """Before exiting, write what the state database missed while it was unreachable (the
    ids of nodes created meanwhile), waiting up to $CEI_STATE_WAIT seconds for it to be back.
    Returns the exit status: a failure if anything stayed unwritten."""
    from launchplan.cli.output import error, warn
    from launchplan.errors import EXIT_FAILED

    for store in _opened:
        waiting = store.pending_writes
        if not waiting:
            continue
        wait = _state_wait()
        warn(f"the state database {store.location.label} is unreachable: waiting up to "
             f"{wait:g}s (${STATE_WAIT_ENV}) to record {waiting} change(s) made so far "
             "(Ctrl-C gives up)")
        try:
            left = store.flush_pending(wait)
        except KeyboardInterrupt:
            left = store.pending_writes
            exit_code = EXIT_INTERRUPTED
        if left:
            error(f"{left} change(s) could not be recorded in {store.location.label}; "
                  "`cei terminate RUN` still finds every node the run made by its tag")
            exit_code = exit_code or EXIT_FAILED
        else:
            click.echo(f"the state database is back: recorded {waiting} change(s)", err=True)
    return exit_code


def _state_wait() -> float:
    from launchplan.cli.output import warn

    text = os.environ.get(STATE_WAIT_ENV)
    if not text:
        return DEFAULT_STATE_WAIT
    try:
        return max(0.0, float(text))
    except ValueError:
        warn(f"${STATE_WAIT_ENV}={text!r} is not a number of seconds; waiting "
             f"{DEFAULT_STATE_WAIT:g}s")
        return DEFAULT_STATE_WAIT


def free_run_name(store: Store, base: str) -> str:
    """`base` (a plan's name), or `base-N` with the first N whose run is not live."""
    from launchplan.levels.states import RUN_TERMINATED

    candidate, n = base, 1
    while (run := store.find_run(candidate)) is not None and run.status != RUN_TERMINATED:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def claim_run(store: Store, plan: Plan, name: str | None, variables: tuple[str, ...],
              vars_files: tuple[Path, ...], refusal: str) -> str:
    """Record a new run of `plan` and return its name (given, or the plan's made unique):
    the one way every command that launches (launch, demo) claims a run.

    The plan must be launchable first (check_launchable): nothing is recorded otherwise.

    A live run of that name is refused with `refusal` (a format string that may use {name});
    a terminated one is kept, with its history and logs, as NAME@N (`cei history NAME --all`,
    `cei list --all`). The store keeps how the run was launched, so later commands render its
    new nodes the same way.
    """
    from launchplan.errors import RunExistsError
    from launchplan.levels.runplan import launch_settings
    from launchplan.levels.states import RUN_TERMINATED

    check_launchable(plan)
    name = name or free_run_name(store, plan.name)
    existing = store.find_run(name)
    if existing is not None:
        if existing.status != RUN_TERMINATED:
            raise RunExistsError(f"run {name!r} already exists ({existing.status}); "
                                 + refusal.format(name=name))
        store.archive_run(name)
    store.create_run(name, plan.name, str(plan.path.resolve()),
                     launch=launch_settings(plan, parse_overrides(variables), vars_files))
    return name


def make_reporter(as_json: bool, title: str,
                  live: Callable[[str], Reporter] | None = None) -> Reporter:
    """NDJSON, a live view on a terminal (`live`, default the launch view), or plain lines."""
    from launchplan.cli.output import JsonReporter, PlainReporter

    if as_json:
        return JsonReporter()
    if sys.stdout.isatty():
        if live is not None:
            return live(title)
        from launchplan.cli.view import LiveView

        return LiveView(title)
    return PlainReporter()


def parse_overrides(variables: tuple[str, ...]) -> dict[str, str]:
    """The command's --var and --secret-var values, by name."""
    from launchplan.plan import parse_var

    return dict(parse_var(text) for text in (*variables, *_secret_vars()))


def secret_names() -> set[str]:
    """The names given with --secret-var to the command being run."""
    from launchplan.plan import parse_var

    return {parse_var(text)[0] for text in _secret_vars()}


def _secret_vars() -> tuple[str, ...]:
    ctx = click.get_current_context(silent=True)
    return tuple(ctx.meta.get(_SECRET_VARS, ())) if ctx is not None else ()


def load(path: Path, variables: tuple[str, ...], vars_files: tuple[Path, ...]) -> Plan:
    from launchplan.plan import load_plan

    if not path.exists():
        raise UsageError(f"no such plan file: {path}")
    return load_plan(path, parse_overrides(variables), vars_files, secrets=secret_names())


def check_launchable(plan: Plan) -> None:
    """Before anything is created: every node renders (with placeholders for outputs) and
    this machine has what the plan needs (SSH keys); PlanErrors otherwise."""
    from launchplan.errors import PlanErrors
    from launchplan.plan import machine_problems, render_all

    render_all(plan)
    missing = machine_problems(plan)
    if missing:
        raise PlanErrors(missing, len(missing))


def run_interruptibly(work: Callable[[], T], interrupt: Callable[[], None],
                      on_first: Callable[[], None], deadline: float | None = None,
                      on_deadline: Callable[[], None] | None = None) -> T:
    """Run `work` in a thread so Ctrl-C is always heard.

    The first Ctrl-C calls `interrupt` (stop new work, cut in-flight steps short, record what
    was made); a second exits at once with 130. Either way what was created is in the store.
    At `deadline` (time.monotonic()), if the work still runs, `on_deadline` is called once:
    it stops the work the way `interrupt` does.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # re-raised in the main thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="cei-work", daemon=True)
    presses = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            on_first()
            interrupt()
        else:
            sys.stderr.write("\ninterrupted again: exiting now; `cei terminate` finds what "
                             "was created\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    previous = signal.signal(signal.SIGINT, handler)
    previous_term = signal.signal(signal.SIGTERM, handler)
    try:
        thread.start()
        while thread.is_alive():
            left = 0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic()))
            thread.join(left)
            if deadline is not None and on_deadline is not None and time.monotonic() >= deadline:
                deadline = None
                on_deadline()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
