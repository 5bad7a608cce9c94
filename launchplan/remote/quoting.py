"""Build POSIX sh command lines from argv lists, so arguments are never re-split remotely.

The environment never travels in a command line: anything in argv is readable by every user
of the node in /proc/PID/cmdline while the program runs. It goes into a script of `export`
lines instead (env_script), which the command line sources from a 0600 file and deletes, or
which heads a script file (shell_script). SSH env requests are no way either: OpenSSH drops
them unless the server's AcceptEnv lists them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping, Sequence

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def cd_word(cwd: str) -> str:
    """Quote a directory for `cd` (and mkdir); a leading `~/` still means the login home, and
    the word never starts with `-`."""
    if cwd == "~":
        return '"$HOME"'
    if cwd.startswith("~/"):
        return '"$HOME"/' + shlex.quote(cwd[2:])
    if cwd.startswith("-"):
        return shlex.quote("./" + cwd)
    return shlex.quote(cwd)


def env_script(env: Mapping[str, str], *, under: str = "",
               relative: Collection[str] = ()) -> str:
    """`export K='V'` lines, one per variable, every value quoted. The values of the names in
    `relative` are paths relative to the directory in the shell variable `under`."""
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"invalid environment variable name: {key!r}")
        word = shlex.quote(str(value))
        if key in relative:
            word = f'"${under}"/{word}'
        lines.append(f"export {key}={word}\n")
    return "".join(lines)


def shell_command(argv: Sequence[str], *, cwd: str | None = None) -> str:
    """Return `[cd DIR && ]exec ARGV...`, every word quoted.

    The remote shell then hands each element of `argv` to the program byte for byte.
    A relative `cwd` is relative to the login directory.
    """
    words = [str(word) for word in argv]
    if not words:
        raise ValueError("empty argv: nothing to run")
    program = words[0]
    if program.startswith("-"):
        raise ValueError(f"program name may not start with '-': {program!r}")
    line = "exec " + " ".join(shlex.quote(word) for word in words)
    if cwd is not None:
        if not cwd:
            raise ValueError("empty working directory")
        line = f"cd {cd_word(cwd)} && {line}"
    return line


def shell_script(argv: Sequence[str], *, cwd: str | None = None,
                 env: Mapping[str, str] | None = None) -> str:
    """A script that exports `env` and runs `argv` in `cwd` (for a 0600 file run by `sh`)."""
    return env_script(env or {}) + shell_command(argv, cwd=cwd) + "\n"
