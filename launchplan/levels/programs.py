"""Running boot, ready and terminate programs on a node in its stage directory."""

from __future__ import annotations

import json
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchplan.errors import CeiError, CommandTimeout, Interrupted, ProgramFailed, StepTimeout
from launchplan.levels.masking import Masker
from launchplan.levels.nodelog import NodeLog
from launchplan.levels.outputs import parse_outputs
from launchplan.plan.budgets import OUTPUT_BYTES
from launchplan.plan.model import ProgramSpec
from launchplan.remote import CommandResult, Session, shell_script
from launchplan.remote.local import LocalSession

# how a program ended
PASSED = "passed"
FAILED = "failed"  # exited non-zero (or its outputs were unusable)
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"
ERROR = "error"  # could not be run to an end (SSH failed, ...)
RETRY_DELAY = 2.0  # seconds between the attempts of a boot or terminate program with retries


@dataclass(frozen=True)
class ProgramRun:
    """How one program went, for the run's events (and the JUnit reports built from them).

    The tails are masked already (see levels.masking) and carried only when it did not pass.
    """

    program: str  # boot | ready | ...
    outcome: str  # PASSED | FAILED | TIMEOUT | INTERRUPTED | ERROR
    duration: float
    status: int | None = None  # the last exit status; None when it never ended
    attempts: int = 0
    message: str = ""
    stderr_tail: str = ""
    stdout_tail: str = ""
    outputs: tuple[str, ...] = ()

    def event_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"program": self.program, "outcome": self.outcome,
                                "status": self.status, "duration": round(self.duration, 3),
                                "attempts": self.attempts}
        if self.outcome == PASSED:
            if self.outputs:
                data["outputs"] = list(self.outputs)
        else:
            data.update(message=self.message, stderr_tail=self.stderr_tail,
                        stdout_tail=self.stdout_tail)
        return data


ProgramObserver = Callable[[ProgramRun], None]


class _Tracked:
    """What one program did so far: its attempts and last result."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.started = time.monotonic()
        self.attempts = 0
        self.last: CommandResult | None = None
        self.outputs: tuple[str, ...] = ()

    def saw(self, result: CommandResult) -> CommandResult:
        self.attempts += 1
        self.last = result
        return result

    def ended(self, outcome: str, message: str = "") -> ProgramRun:
        last = self.last
        return ProgramRun(
            self.kind, outcome, time.monotonic() - self.started,
            status=last.status if last else None, attempts=self.attempts,
            message=message.splitlines()[0].rstrip(":") if message else "",
            stderr_tail=last.stderr_tail if last else "",
            stdout_tail=last.stdout_tail if last else "",
            outputs=self.outputs)


def _outcome(exc: CeiError) -> str:
    if isinstance(exc, Interrupted):
        return INTERRUPTED
    if isinstance(exc, StepTimeout):
        return TIMEOUT
    if isinstance(exc, ProgramFailed):
        return FAILED
    return ERROR


class Stage:
    """A node's stage directory (~/.cei/RUN/SERVICE/INDEX) reached through one SSH session, or on
    this machine for `local_exe` services."""

    def __init__(self, session: Session | LocalSession, stage: str, env: Mapping[str, str],
                 log: NodeLog, cancel: threading.Event | None = None,
                 observer: ProgramObserver | None = None, secrets: Sequence[str] = ()) -> None:
        self.session = session
        self.secrets = tuple(secrets)
        self.cancel = cancel
        self.observer = observer
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
        masker = Masker.for_env(program.env, self.secrets)
        self.log.note(masker.text(f"{kind}: {' '.join(argv)}"))
        return argv

    def command_line(self, kind: str, program: ProgramSpec,
                     extra_env: Mapping[str, str] | None = None) -> str:
        """The shell script that runs `program` in the stage (its file uploaded first), for a
        0600 file: its environment is exported by the script, never put in argv."""
        env = {**self.env, **program.env, **(extra_env or {})}
        return shell_script(self.argv(kind, program), cwd=self.path, env=env)

    def run(self, kind: str, program: ProgramSpec, timeout: float | None = None,
            extra_env: Mapping[str, str] | None = None) -> CommandResult:
        """Run `program` once; returns its result whatever the exit status.

        Its secrets (see levels.masking) are masked in the node log and in the result's tails.
        """
        env = {**self.env, **program.env, **(extra_env or {})}
        masker = Masker.for_env(env, self.secrets)
        output = masker.stream(self.log.stream(kind)) if masker else None
        try:
            result = self.session.run_argv(
                self.argv(kind, program), cwd=self.path, env=env,
                timeout=program.timeout if timeout is None else timeout,
                on_output=output or self.log.stream(kind),
                cancel=self.cancel,
            )
        finally:
            if output is not None:
                output.finish()
        if output is not None:
            result = output.result(result)
        self.log.note(f"{kind}: exit status {result.status}")
        return result

    def run_retried(self, kind: str, program: ProgramSpec,
                    tracked: _Tracked | None = None) -> CommandResult:
        """Run `program` until it exits 0, at most 1 + program.retries times, RETRY_DELAY
        apart (an interrupt stops the waiting)."""
        attempts = program.retries + 1
        result = self.run(kind, program)
        for attempt in range(2, attempts + 2):
            if tracked is not None:
                tracked.saw(result)
            if result.status == 0 or attempt > attempts:
                break
            self.log.note(f"{kind}: exit status {result.status}; attempt {attempt} of "
                          f"{attempts} in {RETRY_DELAY:g}s")
            if self.cancel is not None and self.cancel.wait(RETRY_DELAY):
                raise Interrupted(f"{kind} program interrupted between attempts")
            if self.cancel is None:
                time.sleep(RETRY_DELAY)
            result = self.run(kind, program)
        return result

    def check(self, kind: str, program: ProgramSpec) -> ProgramRun:
        """Run `program` once as a check: a non-zero exit is a failed check, not an error."""
        tracked = _Tracked(kind)
        result = tracked.saw(self.run(kind, program))
        if result.status == 0:
            return tracked.ended(PASSED)
        return tracked.ended(FAILED, str(ProgramFailed(kind, result)))

    @contextmanager
    def _observed(self, kind: str) -> Iterator[_Tracked]:
        """Tell the observer how the program in the with-block went, whichever way it ends."""
        tracked = _Tracked(kind)
        try:
            yield tracked
        except CeiError as exc:
            self._tell(tracked.ended(_outcome(exc), str(exc)))
            raise
        self._tell(tracked.ended(PASSED))

    def _tell(self, run: ProgramRun) -> None:
        if self.observer is not None:
            self.observer(run)

    def boot(self, program: ProgramSpec, output_limit: int = OUTPUT_BYTES) -> dict[str, Any]:
        """Run the boot program once and return the outputs it wrote to $CEI_OUTPUT (checked:
        see levels.outputs)."""
        self.session.run_argv(["rm", "-f", self.env["CEI_OUTPUT"]], timeout=30)
        with self._observed("boot") as tracked:
            result = self.run_retried("boot", program, tracked)
            if result.status != 0:
                raise ProgramFailed("boot", result)
            raw = self.session.get(self.env["CEI_OUTPUT"], limit=output_limit + 1)
            outputs = parse_outputs(raw, output_limit)
            tracked.outputs = tuple(sorted(outputs))
        return outputs

    def wait_ready(self, program: ProgramSpec) -> None:
        """Run the ready program until it passes, every `interval`, within its timeout."""
        with self._observed("ready") as tracked:
            self._until_ready(program, tracked)

    def _until_ready(self, program: ProgramSpec, tracked: _Tracked) -> None:
        deadline = time.monotonic() + program.timeout
        last: CommandResult | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                last = tracked.saw(self.run("ready", program, timeout=remaining))
            except CommandTimeout:
                break
            if last.status == 0:
                return
            if self.cancel is not None and self.cancel.is_set():
                raise Interrupted(f"ready program interrupted (last exit status {last.status})")
            time.sleep(min(program.interval, max(0.0, deadline - time.monotonic())))
        message = f"ready program did not pass within {program.timeout:g}s"
        if last is not None:
            tail = (last.stderr_tail or last.stdout_tail).strip()
            message += f" (last exit status {last.status}" + (f": {tail})" if tail else ")")
        raise StepTimeout(message)


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()
