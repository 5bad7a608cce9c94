"""`cei demo sliding-window`: launch engines, dispatch the transform, stream a CSV through it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from launchplan.cli.output import emit_json, error, warn
from launchplan.demo import DEMO_PLAN
from launchplan.errors import CeiError, UsageError

if TYPE_CHECKING:
    from launchplan.dispatch.dispatcher import Dispatcher
    from launchplan.state import ProcessRecord, Store

WORKER_RUNNING_WAIT = 60.0


@click.group()
def demo() -> None:
    """Demos of what cei runs on the engines it launches."""


@demo.command("sliding-window")
@click.option("--input", "input_path", required=True, metavar="DATA.csv",
              type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with a header time,VAR1,VAR2,... and one row per time step.")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), required=True,
              metavar="SECONDS", help="Length of the sliding window in seconds.")
@click.option("--output", "output_path", required=True, metavar="OUT.csv",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write time,variable,value,average,count.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The demo plan (default: the one cei ships, "
                                 "launchplan/demo/sliding-window.yml).")
@click.option("--run", "run_name", metavar="RUN",
              help="Reuse RUN (launched earlier with --keep): its transform serves again.")
@click.option("--name", "new_name", metavar="RUN",
              help="Name of the run to launch (default: the plan's name, made unique).")
@click.option("--transport", metavar="URL",
              help="amqp://... or filesystem:///DIR (default: the plan's broker if it started "
                   "one, else the embedded transport in $CEI_HOME/bus).")
@var_option
@vars_file_option
@click.option("--keep", is_flag=True, help="Leave the run up afterwards (reuse with --run).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="OUT.png", help="Plot inputs and averages (needs cei[plot]).")
@json_option
def sliding_window(input_path: Path, window: float, output_path: Path, plan_path: Path | None,
                   run_name: str | None, new_name: str | None, transport: str | None,
                   variables: tuple[str, ...], vars_files: tuple[Path, ...], keep: bool,
                   plot_path: Path | None, as_json: bool) -> int:
    """Stream DATA.csv through a sliding-window average running on a launched engine.

    Launches the demo plan (a broker level when --var broker=rabbitmq, then engine nodes with
    agents), dispatches the transform process to an engine, publishes every value of the CSV
    as its own message in time order, collects one average per value, writes OUT.csv, prints a
    summary, and terminates the run unless --keep. With --run RUN the same transform process
    of that run serves again (told to reset its windows), and the run stays up.

    \b
    Examples:
      cei demo sliding-window --input plans/data/sample.csv --window 10 --output out.csv
      cei demo sliding-window --input data.csv --window 5 --output out.csv --keep --name sw
      cei demo sliding-window --input data.csv --window 20 --output out2.csv --run sw
      cei demo sliding-window ... --var broker=rabbitmq --var engines=3

    Exit status: 0 done, 1 a step failed, 2 bad input or usage, 3 timed out, 130 interrupted.
    """
    from launchplan.demo import stream as sw

    series_vars, messages = sw.read_series(input_path)
    if plot_path is not None and not sw.plot_available():
        raise UsageError("--plot needs matplotlib: pip install 'cei[plot]'")
    if run_name is not None and (new_name or plan_path or variables or vars_files or keep):
        raise UsageError("--run reuses a run as it is: --name, --plan, --var, --vars-file and "
                         "--keep do not apply")
    store = open_store()
    launched = run_name is None
    name = run_name or _launch(store, plan_path or DEMO_PLAN, new_name, variables,
                               vars_files, as_json)
    try:
        summary = _serve(store, name, transport, window, messages, output_path, launched,
                         as_json)
        if plot_path is not None:
            sw.plot(plot_path, series_vars, messages, summary.pop("_outputs"), window)
            summary["plot"] = str(plot_path)
        summary.pop("_outputs", None)
    except BaseException:
        if launched and not keep:
            _terminate(store, name, as_json, quiet=True)
        raise
    summary["kept"] = not launched or keep
    if launched and not keep:
        summary["terminated"] = _terminate(store, name, as_json, quiet=False)
    if as_json:
        emit_json({"event": "summary", **summary})
        return 0
    click.echo(
        f"{summary['messages']} messages through the {window:g}s sliding window in "
        f"{summary['elapsed']:.3f}s ({summary['throughput']:.0f} messages/s) on "
        f"{summary['node']} (transform pid {summary['pid']}, {summary['transport']})")
    click.echo(f"wrote {output_path}" + (f" and {plot_path}" if plot_path else ""))
    if summary["kept"]:
        click.echo(f"run {name} is up: cei demo sliding-window ... --run {name}; "
                   f"cei process list {name}; cei terminate {name}")
    return 0


def _launch(store: Store, plan_path: Path, new_name: str | None, variables: tuple[str, ...],
            vars_files: tuple[Path, ...], as_json: bool) -> str:
    """Launch the demo plan the way `cei launch` does; the run's name once it is ready."""
    from launchplan.levels.launch import Launcher
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.states import RUN_READY

    plan = load(plan_path, variables, vars_files)
    name = claim_run(store, plan, new_name, variables, vars_files,
                     "reuse it with --run {name} or terminate it first")
    reporter = make_reporter(as_json, f"cei demo: launch {name}")
    launcher = Launcher(RunContext(store, name, reporter), plan)
    try:
        result = run_interruptibly(launcher.launch, launcher.interrupt, lambda: None)
    finally:
        reporter.close()
    if result.status != RUN_READY:
        for failure in result.failures:
            error(f"{failure.node}: {failure.message}")
        _terminate(store, name, as_json, quiet=True)
        exc = CeiError(f"the demo plan did not launch ({result.status}); it was torn down")
        exc.exit_code = result.exit_code
        raise exc
    return name


def _terminate(store: Store, name: str, as_json: bool, quiet: bool) -> bool:
    """Tear the demo's run down; True when nothing remains."""
    from launchplan.levels.runtime import RunContext
    from launchplan.levels.teardown import Terminator

    reporter = make_reporter(as_json, f"cei demo: terminate {name}")
    try:
        result = Terminator(RunContext(store, name, reporter)).terminate()
    finally:
        reporter.close()
    if result.remaining:
        warn(f"teardown of {name} incomplete; run `cei terminate {name}`")
    elif not quiet and not as_json:
        click.echo(f"run {name} terminated")
    return not result.remaining


def _transport(store: Store, name: str, given: str | None, dispatcher: Dispatcher,
               worker: ProcessRecord | None) -> str:
    """The transport URL: --transport, else the running transform's, the broker's, or ours."""
    from launchplan.demo.messaging import (
        PASSWORD_ENV,
        MessagingError,
        filesystem_url,
        resolve_url,
        split_password,
        with_password,
    )
    from launchplan.demo.stream import definition_option
    from launchplan.providers import driver_capabilities

    used = definition_option(worker.definition, "--transport") if worker else None
    try:
        url = resolve_url(given) if given else None
    except MessagingError as exc:
        raise UsageError(str(exc)) from None
    if used is not None:
        if url is not None and split_password(url)[0] != split_password(used)[0]:
            raise UsageError(f"run {name}'s transform uses another transport; "
                             "drop --transport to reuse it")
        # a password the transform reads from its environment is not in the stored URL
        return url or with_password(used, os.environ.get(PASSWORD_ENV))
    if url is not None:
        return url
    for node in store.nodes(name):
        broker = node.outputs.get("transport")
        if isinstance(broker, str) and broker:
            return broker
    service = dispatcher.engine_service()
    if not all(driver_capabilities(n.driver).on_this_machine
               for n in dispatcher.engine_nodes(service)):
        raise UsageError("the embedded transport reaches only local-cloud engines (they share "
                         "this machine's files): use --var broker=rabbitmq or --transport URL")
    return filesystem_url(store.home / "bus")


def _serve(store: Store, name: str, transport: str | None, window: float,
           messages: list[Any], output_path: Path, launched: bool,
           as_json: bool) -> dict[str, Any]:
    """Make sure the run's transform runs, stream the data through it, write OUT.csv."""
    from launchplan.demo import stream as sw
    from launchplan.demo.messaging import PASSWORD_ENV, redact_url, split_password
    from launchplan.dispatch.dispatcher import Dispatcher
    from launchplan.levels.events import discard
    from launchplan.levels.runtime import RunContext
    from launchplan.providers import driver_capabilities
    from launchplan.state.records import PROCESS_ACTIVE_STATES

    with Dispatcher(RunContext(store, name, discard)) as dispatcher:
        report = dispatcher.reconcile()
        for node, why in report.lost.items():
            warn(f"engine node {node} lost: {why}")
        worker = store.find_process(name, sw.WORKER_NAME)
        if worker is not None and worker.state not in PROCESS_ACTIVE_STATES:
            worker = None
        if worker is None and not launched:
            warn(f"run {name} has no running transform: dispatching one")
        url = _transport(store, name, transport, dispatcher, worker)
        if worker is None:
            service = dispatcher.engine_service()
            local = all(driver_capabilities(n.driver).on_this_machine
                        for n in dispatcher.engine_nodes(service))
            # a password the user typed goes to the process through the environment only
            password = split_password(url)[1] if transport else None
            if password is not None:
                os.environ[PASSWORD_ENV] = password
            worker = dispatcher.run_process(sw.worker_definition(
                name, url, window, local, password_from_env=password is not None), service)
        status, worker = dispatcher.wait(sw.WORKER_NAME, "running", WORKER_RUNNING_WAIT)
        if status != 0:
            raise CeiError(f"the transform is {worker.state} on {worker.node}"
                           + (f": {worker.last_error}" if worker.last_error else ""))
        result = sw.stream(url, name, messages, window)
        if result.errors:
            raise CeiError(f"the transform rejected {len(result.errors)} messages, the first: "
                           f"{result.errors[0].get('error')}")
        sw.write_output(output_path, messages, result.outputs)
        worker = dispatcher.get(sw.WORKER_NAME)
    return {
        "run": name,
        "messages": len(messages),
        "elapsed": round(result.elapsed, 6),
        "throughput": round(result.throughput, 1),
        "window": window,
        "pid": result.pid,
        "process_pid": worker.pid,
        "node": worker.node,
        "transport": redact_url(url),
        "output": str(output_path),
        "_outputs": result.outputs,
    }
