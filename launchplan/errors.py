"""Error types every layer raises, each carrying the exit status the CLI maps it to.

Exit statuses are a contract (docs/commands.md): 1 failure, 2 usage or invalid plan,
3 timeout, 4 teardown incomplete, 130 interrupted.

Standard library only: the execution-engine agent ships this module to nodes beside itself.
"""

from __future__ import annotations

from typing import Protocol

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_TEARDOWN_INCOMPLETE = 4
EXIT_INTERRUPTED = 130


class CeiError(Exception):
    """Base of every error cei reports to a user; never shown as a traceback."""

    exit_code = EXIT_FAILED


class UsageError(CeiError):
    """Bad command-line input: a malformed --var, a missing file, an unknown run."""

    exit_code = EXIT_USAGE


class PlanError(UsageError):
    """An invalid plan; the message names the file, line and column when they are known."""

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        if not self.file:
            return ""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where + ": "


class PlanErrors(PlanError):
    """Several problems of one plan, reported together like a compiler does (the first
    `shown`; `total` counts them all). Its file and line are the first problem's."""

    def __init__(self, errors: list[PlanError], total: int) -> None:
        first = errors[0]
        super().__init__(first.message, first.file, first.line, first.column)
        self.errors = errors
        self.total = total
        lines = [str(e) for e in errors]
        if total > len(errors):
            lines.append(f"... and {total - len(errors)} more errors")
        self.args = ("\n".join(lines),)

    def __str__(self) -> str:
        return str(self.args[0])


class StoreError(CeiError):
    """The state store cannot be read or written (a read-only or full disk, a damaged or
    busy database); the message names $CEI_HOME and the cause."""


class RunExistsError(UsageError):
    """A run of that name already exists (a second launch of it is refused)."""


class RunLockedError(UsageError):
    """Another cei process is changing this run right now."""


class UnknownRunError(UsageError):
    """No run of that name in the store."""


class StateUnavailableError(CeiError):
    """The state database cannot be reached (a PostgreSQL server that is down or cut off)."""


class StateKeyError(UsageError):
    """CEI_STATE_KEY is missing, malformed, or not the key a stored secret was sealed with."""


class StepTimeout(CeiError):
    """A step (create, SSH, boot, ready, ...) ran past its timeout."""

    exit_code = EXIT_TIMEOUT


class ProviderError(CeiError):
    """A cloud API refused or failed; `transient` says a retry may succeed."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RemoteError(CeiError):
    """Something failed on the SSH path to a node."""


class HostKeyMismatch(RemoteError):
    """The node answered with a host key other than the one cei pinned for it."""


class SSHUnavailable(RemoteError):
    """The node's SSH did not answer (or refused authentication) within the allowed time."""


class CommandTimeout(StepTimeout):
    """A program on a node ran past its timeout and was stopped."""


class Interrupted(CeiError):
    """The user interrupted (Ctrl-C); in-flight work was stopped and recorded."""

    exit_code = EXIT_INTERRUPTED


class ProgramEnd(Protocol):
    """How a program on a node ended (remote.CommandResult)."""

    @property
    def status(self) -> int: ...

    @property
    def stdout_tail(self) -> str: ...

    @property
    def stderr_tail(self) -> str: ...


class ProgramFailed(CeiError):
    """A program exited non-zero; the message carries the tail of its stderr."""

    def __init__(self, kind: str, result: ProgramEnd) -> None:
        tail = (result.stderr_tail or result.stdout_tail).strip()
        message = f"{kind} program exited with status {result.status}"
        if tail:
            message += ":\n" + tail
        super().__init__(message)
        self.result = result


class AgentError(CeiError):
    """The execution-engine agent refused a request (a bad definition, an unknown process, no
    free slot) or could not be started."""


class AgentDown(AgentError):
    """The node answers SSH but no agent answers on its socket."""


class MessagingError(CeiError):
    """A transport URL that cannot be used, or a broker that cannot be reached."""
