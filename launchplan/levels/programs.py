"""Running boot, ready and terminate programs on a node in its stage directory."""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchplan.ctx.environment import encode_document
from launchplan.errors import (
    CeiError,
    CommandTimeout,
    Interrupted,
    ProgramFailed,
    RemoteError,
    StepTimeout,
)
from launchplan.levels.masking import Masker
from launchplan.levels.nodelog import NodeLog
from launchplan.levels.outputs import parse_outputs
from launchplan.plan.budgets import OUTPUT_BYTES
from launchplan.plan.model import ProgramSpec
from launchplan.remote import shell_script
from launchplan.remote.local import LocalSession
from launchplan.remote.results import CommandResult, OutputCallback
from launchplan.remote.staging import StagedFile, Staging

if TYPE_CHECKING:
    from launchplan.remote import Session

# how a program ended
PASSED = "passed"
FAILED = "failed"  # exited non-zero (or its outputs were unusable)
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"
ERROR = "error"  # could not be run to an end (SSH failed, ...)
RETRY_DELAY = 2.0  # seconds between the attempts of a boot or terminate program with retries
FLUSH_TIMEOUT = 120.0  # seconds to write what is staged when no program goes with it


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
    this machine for `local_exe` services.

    What it stages (prepare, program files) goes with the next program run in the same exec
    (see remote.staging), or with flush(): a node is staged and booted in one round trip.

    A relative stage is relative to the login directory, and so are the values in `env` that
    are paths in it: the node makes them absolute for the programs, and the first command
    tells the login directory (the header of every remote command), which `path` and `env`
    then give absolute. Only a stage used before any command asks it (over SFTP).
    """

    def __init__(self, session: Session | LocalSession, stage: str, env: Mapping[str, str],
                 log: NodeLog, cancel: threading.Event | None = None,
                 observer: ProgramObserver | None = None, secrets: Sequence[str] = ()) -> None:
        self.session = session
        self.secrets = tuple(secrets)
        self.cancel = cancel
        self.observer = observer
        self._stage = stage
        self._env = dict(env)
        self._relative = frozenset() if stage.startswith("/") else frozenset(
            name for name, value in env.items()
            if value == stage or value.startswith(stage.rstrip("/") + "/"))
        self._login_dir: str | None = "" if stage.startswith("/") else None
        self.log = log
        self._uploaded: dict[str, str] = {}
        self._pending: dict[str, StagedFile] = {}  # by name: written with the next exec
        self._remove: tuple[str, ...] = ()  # removed before the next program starts

    @property
    def path(self) -> str:
        """The stage directory, absolute."""
        return posixpath.join(self._login(), self._stage)

    @property
    def env(self) -> dict[str, str]:
        """The CEI_* environment of the node's programs, its paths absolute."""
        login = self._login()
        return {name: posixpath.join(login, value) if name in self._relative else value
                for name, value in self._env.items()}

    def _login(self) -> str:
        if self._login_dir is None:
            self._login_dir = self.session.home
        return self._login_dir

    def prepare(self, config: Mapping[str, Any], context: bytes,
                files: Mapping[str, str] | None = None) -> None:
        """Stage the config, the context document (encoded: see ctx.environment) and `files`
        (name -> text), all 0600, with the next program run or flush()."""
        self._put(posixpath.basename(self._env["CEI_CONFIG"]), encode_document(config))
        self._put(posixpath.basename(self._env["CEI_CONTEXT"]), context)
        for name, text in (files or {}).items():
            self._put(name, text.encode())

    def flush(self) -> None:
        """Write what is staged and not yet written, without running a program."""
        if self._pending or self._remove:
            self._exec(None, {}, FLUSH_TIMEOUT, None, None)

    def _put(self, name: str, data: bytes, mode: int = 0o600) -> None:
        self._pending[name] = StagedFile(name, data, mode)

    def argv(self, kind: str, program: ProgramSpec) -> list[str]:
        """The argv that runs `program` in the stage (its file staged with it)."""
        if program.run:
            remote = self._uploaded.get(program.run)
            if remote is None:  # it runs in the stage: ./NAME wherever that is
                name = f"{kind}-{Path(program.run).name}"
                remote = f"./{name}"
                self._put(name, _read(program.run), 0o700)
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
        """The shell script that runs `program` in the stage (its file written first), for a
        0600 file: its environment is exported by the script, never put in argv."""
        argv = self.argv(kind, program)
        self.flush()
        env = {**self.env, **program.env, **(extra_env or {})}
        return shell_script(argv, cwd=self.path, env=env)

    def run(self, kind: str, program: ProgramSpec, timeout: float | None = None,
            extra_env: Mapping[str, str] | None = None, report_limit: int | None = None
            ) -> CommandResult:
        """Run `program` once; returns its result whatever the exit status (with, given
        `report_limit`, at most that many + 1 bytes of $CEI_OUTPUT as its report).

        Its secrets (see levels.masking) are masked in the node log and in the result's tails.
        """
        env = {**self._env, **program.env, **(extra_env or {})}
        masker = Masker.for_env(env, self.secrets)
        output = masker.stream(self.log.stream(kind)) if masker else None
        try:
            result = self._exec(self.argv(kind, program), env,
                                program.timeout if timeout is None else timeout,
                                output or self.log.stream(kind), report_limit)
        finally:
            if output is not None:
                output.finish()
        if output is not None:
            result = output.result(result)
        self.log.note(f"{kind}: exit status {result.status}")
        return result

    def _exec(self, argv: list[str] | None, env: Mapping[str, str], timeout: float,
              on_output: OutputCallback | None, report_limit: int | None) -> CommandResult:
        """One exec: what is staged, then `argv`; the staged files count as written once it
        ran (its exit status does not matter to them)."""
        relative = frozenset(name for name in self._relative if env.get(name) == self._env[name])
        staging = Staging(self._stage, tuple(self._pending.values()), self._remove,
                          self._env["CEI_OUTPUT"] if report_limit is not None else None,
                          report_limit or 0, relative)
        result = self.session.run_staged(staging, argv, env=env, timeout=timeout,
                                         on_output=on_output, cancel=self.cancel)
        self._pending.clear()
        self._remove = ()
        if self._login_dir is None and result.login_dir:
            self._login_dir = result.login_dir
        return result

    def run_retried(self, kind: str, program: ProgramSpec, tracked: _Tracked | None = None,
                    report_limit: int | None = None) -> CommandResult:
        """Run `program` until it exits 0, at most 1 + program.retries times, RETRY_DELAY
        apart (an interrupt stops the waiting); `report_limit` as for run()."""
        attempts = program.retries + 1
        result = self.run(kind, program, report_limit=report_limit)
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
            result = self.run(kind, program, report_limit=report_limit)
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
        """Run the boot program (retried as it says) and return the outputs it wrote to
        $CEI_OUTPUT (checked: see levels.outputs), which the same exec reports; an old
        $CEI_OUTPUT is removed first."""
        self._remove = (self._env["CEI_OUTPUT"],)
        with self._observed("boot") as tracked:
            result = self.run_retried("boot", program, tracked, report_limit=output_limit)
            if result.status != 0:
                raise ProgramFailed("boot", result)
            outputs = parse_outputs(result.report, output_limit)
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


def seen_through(env: Mapping[str, str]) -> bool:
    """Whether a launch saw the node's programs through, from the environment it stored: it
    stores it with its paths absolute (Stage.env) with the boot's outputs; a launch killed
    before, or a boot that failed, leaves them relative to the login directory."""
    return env.get("CEI_STAGE", "").startswith("/")


def _read(path: str) -> bytes:
    """A program file to stage; RemoteError (as an upload raised) when it cannot be read."""
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc}") from exc
