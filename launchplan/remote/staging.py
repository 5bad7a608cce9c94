"""Files and a program in one SSH exec: its command line, its stdin, and its report.

Staging a node file by file costs a round trip per SFTP request; here the files travel as a
tar archive on the exec's stdin, after the program's environment, and the command line,
under umask 077 (the login's own read from /proc without a process, else with one):

1. reads the environment's lines into a shell variable with the shell's own `read` (a byte
   at a time from the pipe, so no more than those lines; never into argv, where every user
   of the node could read it, nor into a file);
2. where the directory is new: creates it (mode 0700, as every directory it creates) and
   extracts the files into it with one tar (each 0600, programs 0700); where it exists,
   extracts them into a private temporary directory in it, makes it 0700, renames them all
   into place with one mv (atomic for each file: a service may be reading them) and removes
   the temporary directory, with what must not be left from before (an old $CEI_OUTPUT), by
   one rm;
3. runs the program (under the login's own umask) with that environment;
4. after the program exits 0, prints the report after a marker on stdout: O, the first
   `limit` + 1 bytes of a file the program wrote ($CEI_OUTPUT), and the marker again; or N
   when there is no such file.

A process costs the node a fork and an exec, more than any bytes sent, so each step starts
as few as it can: staging and booting a node in a new directory starts mkdir, tar and dd
besides the program (it started 21 when each file was cut out of the stream with dd, and
every command went through setsid twice). The node needs POSIX sh, mkdir, mv, rm, chmod, dd
and a tar that takes -x -m -o -f - (GNU tar, busybox, bsdtar and toybox all do).
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from launchplan.remote.quoting import cd_word, env_script, shell_command

STAGING_FAILED = b"S"
NO_REPORT = b"N"
REPORT = b"O"

# Says why `mkdir -p "$1"` failed: the first component in the way when one is not a directory.
_MKDIR_FAILED = ('p="$1"; while [ ! -e "$p" ] && [ "$p" != "$(dirname "$p")" ]; do '
                 'p=$(dirname "$p"); done; [ -d "$p" ] && echo "cannot create $1" >&2 || '
                 'echo "$p exists and is not a directory" >&2')
# Extracts the archive on stdin: modes from it (0600, 0700; under umask 077 where tar applies
# the umask), owner the login (-o, even for root), mtime now (-m: no warning for a clock that
# is behind the controller's).
_EXTRACT = "tar -x -m -o -f -"
# The login's umask, from /proc/PID/status where it is there (Linux 4.7 on), so that reading
# it starts no process; else from the umask builtin, in a subshell.
_UMASK = ('u=; [ -r /proc/$$/status ] && while read -r k v; do '
          '[ "$k" = Umask: ] && u=$v && break; done </proc/$$/status; '
          '[ -n "$u" ] || u=$(umask)')


def mkdir_command(path: str, mode: int) -> str:
    """mkdir -p `path`: the directories it creates and `path` itself get `mode`."""
    quoted = cd_word(path)
    return (f"umask {0o777 & ~mode:03o} && set -- {quoted} && "
            f'{{ mkdir -p "$1" 2>/dev/null || {{ {_MKDIR_FAILED}; exit 1; }}; }} && '
            f"chmod {mode:o} {quoted}")


@dataclass(frozen=True)
class StagedFile:
    """A file to write in the staging directory: its plain name, contents and mode."""

    name: str
    data: bytes
    mode: int = 0o600


@dataclass(frozen=True)
class Staging:
    """What goes with one program run: files written first (the directory made 0700 when
    there are any), paths removed before it starts, and the file reported after it passes.

    Relative paths are relative to the login directory, and so are the values of the
    environment variables named in `login_relative`: the program gets them absolute."""

    directory: str
    files: tuple[StagedFile, ...] = ()
    remove: tuple[str, ...] = ()
    report: str | None = None
    limit: int = 0  # the report carries at most limit + 1 bytes of it
    login_relative: frozenset[str] = frozenset()


def staged_command(staging: Staging, argv: Sequence[str] | None, env: Mapping[str, str],
                   token: str) -> tuple[str, bytes, bytes]:
    """(command line, stdin, report marker) for one exec that stages and runs `argv` (None:
    only stage). `token` makes its temporary names and its marker unique."""
    marker = f"\x1ecei-report-{token}\x1e".encode()
    lines = [
        f"h=$PWD; {_UMASK}; umask 077",
        f"m={shlex.quote(marker.decode())}; t=.cei-tmp-{token}",
        'fail() { rm -rf "$t" 2>/dev/null; printf %s "$m"S; exit 1; }',
    ]
    environment = (env_script(env, under="h", relative=staging.login_relative)
                   if env and argv is not None else "")
    if environment:
        count = environment.count("\n")
        lines.append(f'e=; i=0; while [ "$i" -lt {count} ] && IFS= read -r l; do e="$e$l\n"; '
                     f'i=$((i+1)); done; [ "$i" -eq {count} ] || fail')
    directory = cd_word(staging.directory)
    removed = " ".join(_from_login(p) for p in staging.remove)
    archive = _archive(staging.files) if staging.files else b""
    if archive:
        names = " ".join('"$t"/' + shlex.quote(item.name) for item in staging.files)
        cleanup = f"rm -rf -- \"$t\" {removed}".rstrip()
        lines += [
            f"if [ -d {directory} ]; then",
            f'cd {directory} && mkdir "$t" && {_EXTRACT} -C "$t" && chmod 700 . && '
            f"mv -f {names} . && {cleanup} || fail",
            "else",
            f'set -- {directory}; mkdir -p "$1" 2>/dev/null || {{ {_MKDIR_FAILED}; fail; }}',
            f'cd "$1" && {_EXTRACT} || fail',
            *([_remove_existing(removed)] if removed else []),
            "fi",
        ]
    else:
        lines.append(f"cd {directory} || fail")
        if removed:
            lines.append(_remove_existing(removed))
    if argv is None:
        lines.append("exit 0")
        return "\n".join(lines) + "\n", archive, marker
    # unset: were `e` or `l` exported by the login, the program would get the script too
    start = 'eval "$e" && unset e l && ' if environment else ""
    lines += [f'( umask "$u"; {start}{shell_command(argv)} )', "s=$?"]
    if staging.report is not None:
        lines.append(_report(staging.report, staging.limit))
    lines.append('exit "$s"')
    return "\n".join(lines) + "\n", environment.encode() + archive, marker


def _archive(files: Sequence[StagedFile]) -> bytes:
    """The files as a tar archive (GNU format: a long name still fits)."""
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for item in files:
            _plain_name(item.name)
            if item.mode not in (0o600, 0o700):
                raise ValueError(f"{item.name}: a staged file is 0600 or 0700, not "
                                 f"{item.mode:o}")
            info = tarfile.TarInfo(item.name)
            info.size, info.mode, info.mtime = len(item.data), item.mode, int(time.time())
            archive.addfile(info, io.BytesIO(item.data))
    return stream.getvalue()


def _remove_existing(removed: str) -> str:
    """rm of those of `removed` that are there (seen by test, a builtin): no process when
    none is."""
    return (f"for f in {removed}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then "
            f"rm -rf -- {removed} || fail; break; fi; done")


def _from_login(path: str) -> str:
    """A path for the command line once it entered the stage: a relative one is relative to
    the login directory, kept in $h."""
    if path.startswith(("/", "~")):
        return cd_word(path)
    return '"$h"/' + shlex.quote(path)


def _plain_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")


def _report(path: str, limit: int) -> str:
    """Prints the marker, then N (no such file), or O, at most limit + 1 bytes of the file and
    the marker again."""
    quoted = _from_login(path)
    return (f'if [ "$s" -eq 0 ]; then if [ -f {quoted} ]; then printf %s "$m"O; '
            f"dd if={quoted} bs={limit + 1} count=1 2>/dev/null; printf %s \"$m\"; "
            f'else printf %s "$m"N; fi; fi')


class ReportReader:
    """Splits a staged command's stdout into the program's own output and what follows the
    marker: whether staging failed, and the report."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.kind: bytes | None = None  # STAGING_FAILED | NO_REPORT | REPORT, once seen
        self.report: bytes | None = None
        self._held = b""
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        """The part of `chunk` that is the program's output (some may be held back until the
        next chunk shows whether it starts the marker)."""
        data = self._held + chunk
        self._held = b""
        if self._done:
            return data
        if self.kind is None:
            at = data.find(self.marker)
            if at < 0:
                output, self._held = before_partial(data, self.marker)
                return output
            output, data = data[:at], data[at + len(self.marker):]
            return output + self._after_marker(data)
        return self._after_marker(data)

    def finish(self) -> bytes:
        """What is still held: the program's output when no complete report followed."""
        held, self._held = self._held, b""
        return held if self.kind is None or self._done else b""

    def _after_marker(self, data: bytes) -> bytes:
        if self.kind is None:
            if not data:
                self._held = self.marker
                return b""
            self.kind = data[:1]
            data = data[1:]
            if self.kind != REPORT:
                self._done = True
                return data
            self.report = b""
        assert self.report is not None
        at = data.find(self.marker)
        if at < 0:
            content, self._held = before_partial(data, self.marker)
            self.report += content
            return b""
        self.report += data[:at]
        self._done = True
        return data[at + len(self.marker):]


def before_partial(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """`data` split before its longest end that begins `marker` (to hold back until the next
    chunk shows whether the marker follows), and that end."""
    start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1))
    while start >= 0:
        if marker.startswith(data[start:]):
            return data[:start], data[start:]
        start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1), start)
    return data, b""
