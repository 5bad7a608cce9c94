"""SSH to nodes (paramiko): pinned host keys, commands with streamed output, SFTP files."""

from launchplan.remote.quoting import shell_command, shell_script
from launchplan.remote.session import CommandResult, Session
from launchplan.remote.target import SSHTarget

__all__ = ["CommandResult", "SSHTarget", "Session", "shell_command", "shell_script"]
