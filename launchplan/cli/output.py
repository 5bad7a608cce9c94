"""Everything cei prints: errors, JSON documents, and the event reporters of long commands."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import click

from launchplan.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CeiError, PlanErrors
from launchplan.levels.events import SCHEMA_VERSION, Event


def run_cli(group: click.Group) -> int:
    try:
        rv = group.main(prog_name="cei", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away: nothing left to say
        silence(sys.stdout)
        return EXIT_FAILED
    except CeiError as exc:
        for line in str(exc).splitlines() if isinstance(exc, PlanErrors) else [str(exc)]:
            error(line)
        return exc.exit_code
    return int(rv or 0)


def error(message: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow", bold=True) + message, err=True)


def emit_json(doc: Mapping[str, Any], out: TextIO | None = None) -> None:
    """One JSON document per line, with the schema version first."""
    write(json.dumps({"v": SCHEMA_VERSION, **doc}, default=str) + "\n", out)


def write(text: str, out: TextIO | None = None) -> None:
    """Write and flush; a reader that went away (`cei launch --json | head -3`) is no error:
    the command goes on and finishes its work, its further output going nowhere."""
    stream = out or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        silence(stream)


def silence(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at /dev/null (so the interpreter's last flush of
    what is still buffered cannot fail either)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


class JsonReporter:
    """NDJSON: one line per event; the command writes the summary object last."""

    def __call__(self, event: Event) -> None:
        emit_json(event.to_json())

    def close(self) -> None:
        pass


class PlainReporter:
    """Plain lines for logs and pipes: one per state change, timestamped."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        line = describe(event)
        if line:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            write(f"{stamp} {line}\n", self.out)

    def close(self) -> None:
        pass


def counted(number: int | None, word: str) -> str:
    """ "1 level", "3 levels"."""
    return f"{number} {word}{'' if number == 1 else 's'}"


def describe(event: Event) -> str | None:
    """A short human line for an event, or None for events only JSON consumers need."""
    data = event.data
    kind = event.kind
    if kind == "run.started":
        if data.get("operation"):
            return f"{data['operation']} of run {event.run}"
        return (f"launching run {event.run} ({counted(data.get('levels'), 'level')}, "
                f"plan {data.get('path')})")
    if kind == "level.started":
        return f"level {data.get('index')} ({data.get('level')}) starting"
    if kind == "level.finished":
        return f"level {data.get('index')} ({data.get('level')}) {event.state or data.get('state')}"
    if kind == "node.state":
        suffix = f": {event.message.splitlines()[0]}" if event.message else ""
        return f"  {event.node} {event.state}{suffix}"
    if kind == "resource":
        return f"  {event.node or '?'} {event.state} {data.get('driver')} {data.get('resource_id')}"
    if kind == "warning":
        return f"  warning: {event.node + ': ' if event.node else ''}{event.message}"
    if kind == "run.finished":
        return f"run {event.run} {event.state}"
    if kind in ("elastic.decision", "elastic.action", "elastic.backoff"):
        return f"  {data.get('service') or event.node}: {event.message}"
    if kind == "elastic.health":
        return f"  {event.message}"
    if kind == "elastic.request" and event.message:
        number = f" {data['request']}" if data.get("request") else ""
        return f"  request{number} {event.state}: {event.message}"
    return None
