"""Running boot, ready and terminate programs on a node in its stage directory."""

from __future__ import annotations

import json
import posixpath
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launchplan.errors import CeiError, CommandTimeout, StepTimeout
from launchplan.levels.nodelog import NodeLog
from launchplan.plan.model import ProgramSpec
from launchplan.remote import CommandResult, Session, shell_command
from launchplan.remote.local import LocalSession


class ProgramFailed(CeiError):
    """A program exited non-zero; the message carries the tail of its stderr."""

    def __init__(self, kind: str, result: CommandResult) -> None:
        tail = (result.stderr_tail or result.stdout_tail).strip()
        message = f"{kind} program exited with status {result.status}"
        if tail:
            message += ":\n" + tail
        super().__init__(message)
        self.result = result


class Stage:
    """A node's stage directory (~/.cei/RUN/SERVICE) reached through one SSH session, or on
    this machine for `local_exe` services."""

    def __init__(self, session: Session | LocalSession, stage: str, env: Mapping[str, str],
                 log: NodeLog, cancel: threading.Event | None = None) -> None:
        self.session = session
        self.cancel = cancel
        self.path = stage if stage.startswith("/") else posixpath.join(session.home, stage)
        self.env = dict(env)
        self.log = log
        self._uploaded: dict[str, str] = {}

    def prepare(self, config: Mapping[str, Any], context: Mapping[str, Any],
                files: Mapping[str, str] | None = None) -> None:
        """The stage directory with the config, the context and `files` (name -> text)."""
        self.session.makedirs(self.path, 0o700)
        self.session.put(_json_bytes(config), self.env["CEI_CONFIG"], 0o600)
        self.session.put(_json_bytes(context), self.env["CEI_CONTEXT"], 0o600)
        for name, text in (files or {}).items():
            self.session.put(text.encode(), posixpath.join(self.path, name), 0o600)

    def argv(self, kind: str, program: ProgramSpec) -> list[str]:
        """The argv that runs `program` in the stage (its file uploaded first)."""
        if program.run:
            remote = self._uploaded.get(program.run)
            if remote is None:
                remote = posixpath.join(self.path, f"{kind}-{Path(program.run).name}")
                self.session.upload(program.run, remote, 0o700)
                self._uploaded[program.run] = remote
            argv = [remote, *program.args]
        else:
            assert program.command is not None
            argv = ["/bin/sh", "-c", program.command, kind, *program.args]
        self.log.note(f"{kind}: {' '.join(argv)}")
        return argv

    def command_line(self, kind: str, program: ProgramSpec,
                     extra_env: Mapping[str, str] | None = None) -> str:
        """The shell line that runs `program` in the stage (its file uploaded first)."""
        env = {**self.env, **program.env, **(extra_env or {})}
        return shell_command(self.argv(kind, program), cwd=self.path, env=env)

    def run(self, kind: str, program: ProgramSpec, timeout: float | None = None,
            extra_env: Mapping[str, str] | None = None) -> CommandResult:
        """Run `program` once; returns its result whatever the exit status."""
        env = {**self.env, **program.env, **(extra_env or {})}
        result = self.session.run_argv(
            self.argv(kind, program), cwd=self.path, env=env,
            timeout=program.timeout if timeout is None else timeout,
            on_output=self.log.stream(kind),
            cancel=self.cancel,
        )
        self.log.note(f"{kind}: exit status {result.status}")
        return result

    def boot(self, program: ProgramSpec) -> dict[str, Any]:
        """Run the boot program once and return the outputs it wrote to $CEI_OUTPUT."""
        self.session.run_argv(["rm", "-f", self.env["CEI_OUTPUT"]], timeout=30)
        result = self.run("boot", program)
        if result.status != 0:
            raise ProgramFailed("boot", result)
        return self.outputs()

    def outputs(self) -> dict[str, Any]:
        raw = self.session.get(self.env["CEI_OUTPUT"])
        if raw is None or not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise CeiError(f"the boot program wrote invalid JSON to $CEI_OUTPUT: {exc}") from None
        if not isinstance(value, dict):
            raise CeiError(
                "the boot program must write one JSON object to $CEI_OUTPUT, "
                f"not a {type(value).__name__}"
            )
        return value

    def wait_ready(self, program: ProgramSpec) -> None:
        """Run the ready program until it passes, every `interval`, within its timeout."""
        deadline = time.monotonic() + program.timeout
        last: CommandResult | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                last = self.run("ready", program, timeout=remaining)
            except CommandTimeout:
                break
            if last.status == 0:
                return
            if self.cancel is not None and self.cancel.is_set():
                raise ProgramFailed("ready", last)
            time.sleep(min(program.interval, max(0.0, deadline - time.monotonic())))
        message = f"ready program did not pass within {program.timeout:g}s"
        if last is not None:
            tail = (last.stderr_tail or last.stdout_tail).strip()
            message += f" (last exit status {last.status}" + (f": {tail})" if tail else ")")
        raise StepTimeout(message)


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()
