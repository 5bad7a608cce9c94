"""SSH to nodes (paramiko): pinned host keys, commands with streamed output, SFTP files.

`Session` loads paramiko, which takes a while, only when first asked for: commands that never
reach a node (cei --help, validate, status --cached) do without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launchplan.remote.quoting import shell_command, shell_script
from launchplan.remote.results import CommandResult
from launchplan.remote.target import SSHTarget

if TYPE_CHECKING:
    from launchplan.remote.session import Session

__all__ = ["CommandResult", "SSHTarget", "Session", "shell_command", "shell_script"]


def __getattr__(name: str) -> Any:
    if name == "Session":
        from launchplan.remote.session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
