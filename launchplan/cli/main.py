"""The `cei` command. Subcommands load lazily so `cei --help` stays fast."""

from __future__ import annotations

import gc
import importlib
import sys

import click

from launchplan import __version__

# command name -> (module, attribute, one-line help shown without importing the module)
_COMMANDS = {
    "launch": ("launchplan.cli.launch", "launch", "Launch a plan: boot its levels in order."),
    "status": ("launchplan.cli.status", "status", "Show a run's nodes and check their health."),
    "terminate": ("launchplan.cli.terminate", "terminate",
                  "Tear a run down: levels in reverse, every resource destroyed."),
    "clean": ("launchplan.cli.terminate", "clean",
              "Destroy and sweep a run's resources without running terminate programs."),
    "list": ("launchplan.cli.runs", "list_runs", "List the runs in the store."),
    "history": ("launchplan.cli.runs", "history",
                "Show a run's events and every resource it made."),
    "logs": ("launchplan.cli.logs", "logs",
             "Print or follow the output of a run's programs, node by node."),
    "validate": ("launchplan.cli.validate", "validate", "Check a plan without launching anything."),
    "render": ("launchplan.cli.validate", "render",
               "Print the user-data and config a plan's nodes would receive."),
    "clouds": ("launchplan.cli.clouds", "clouds",
               "Check what a plan needs from its clouds (cei clouds check PLAN), read-only."),
    "watch": ("launchplan.cli.watch", "watch",
              "Keep a run's elastic services alive: replace lost nodes, scale by policy."),
    "scale": ("launchplan.cli.control", "scale", "Set a service's desired node count."),
    "repair": ("launchplan.cli.control", "repair",
               "Replace failed or lost nodes and boot them again."),
    "process": ("launchplan.cli.process", "process",
                "Run, list, kill and wait for processes on a run's engine agents."),
    "import": ("launchplan.cli.importer", "import_plan",
               "Convert a cloudinit.d plan (top.conf and its level files) into a cei plan."),
    "demo": ("launchplan.cli.demo", "demo",
             "Demos: the sliding-window transform streamed through engines and a broker."),
    "unlock": ("launchplan.cli.unlock", "unlock",
               "Clear a stale lock of a run (its holder's machine died) after confirmation."),
    "state": ("launchplan.cli.state", "state",
              "Move runs between stores: migrate, export and import; make a CEI_STATE_KEY."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attr, _ = entry
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state", "state_url", metavar="URL", envvar="CEI_STATE",
              help="Where runs are recorded: sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                   "(default: $CEI_STATE, else SQLite in $CEI_HOME). No password in it: "
                   "PGPASSWORD or ~/.pgpass.")
@click.version_option(__version__, prog_name="cei")
def cli(state_url: str | None) -> None:
    """cei boots launch plans: ordered levels of services on clouds.

    \b
    A plan is a YAML file of levels; each level's nodes boot in parallel, run their boot
    program over SSH, and pass their outputs to the templates of later levels.

    \b
    Quick tour (the embedded local cloud needs no account):
      cei validate plans/three-tier.yml
      cei launch plans/three-tier.yml --name demo
      cei status demo
      cei terminate demo

    State lives in $CEI_HOME (default ~/.cei), or in the PostgreSQL database of --state
    ($CEI_STATE) that several machines share (docs/state.md). Exit status: 0 success,
    1 a service failed or is unhealthy, 2 usage error or invalid plan, 3 timed out,
    4 teardown incomplete, 130 interrupted.
    """


def main() -> None:
    """Entry point: every cei error becomes one message and its exit status, never a traceback."""
    from launchplan.cli.common import close_stores, settle_stores
    from launchplan.cli.output import run_cli

    code = settle_stores(run_cli(cli))
    close_stores()
    # What is still alive lives until the process ends: spare the collector's passes over
    # all of it while the interpreter shuts down (0.1-0.2 s of CPU after a launch of 10 to
    # 50 nodes, bench/bench_fanout.py). Nothing needs them: the stores are closed above,
    # every file by its owner, and atexit and weakref.finalize hooks still run.
    gc.freeze()
    sys.exit(code)
