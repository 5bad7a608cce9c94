"""Build POSIX sh command lines from argv lists, so arguments are never re-split remotely.

Environment variables travel as `env K=V` words rather than SSH env requests, because
OpenSSH drops those unless the server's AcceptEnv lists them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _cd_word(cwd: str) -> str:
    """Quote a directory for `cd`; a leading `~/` still means the login home."""
    if cwd == "~":
        return '"$HOME"'
    if cwd.startswith("~/"):
        return '"$HOME"/' + shlex.quote(cwd[2:])
    if cwd.startswith("-"):
        return shlex.quote("./" + cwd)
    return shlex.quote(cwd)


def shell_command(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Return `[cd DIR && ]exec [env K=V ...] ARGV...` with every word shell-quoted.

    The remote shell then hands each element of `argv` to the program byte for byte.
    A relative `cwd` is relative to the login directory.
    """
    words = [str(word) for word in argv]
    if not words:
        raise ValueError("empty argv: nothing to run")
    program = words[0]
    if program.startswith("-"):
        raise ValueError(f"program name may not start with '-': {program!r}")
    parts = ["exec"]
    if env:
        if "=" in program:
            raise ValueError(f"program name may not contain '=' when env is set: {program!r}")
        parts.append("env")
        for key, value in env.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"invalid environment variable name: {key!r}")
            parts.append(f"{key}={shlex.quote(value)}")
    parts.extend(shlex.quote(word) for word in words)
    line = " ".join(parts)
    if cwd is not None:
        if not cwd:
            raise ValueError("empty working directory")
        line = f"cd {_cd_word(cwd)} && {line}"
    return line
