"""Files and a program in one SSH exec: its command line, its stdin, and its report.

Staging a node file by file costs a round trip per SFTP request; here the files travel
concatenated on the exec's stdin (a byte stream, no here-documents, so any bytes pass), and
the command line, under umask 077:

1. creates the directory (mode 0700) and in it a private temporary one when there are
   files, and enters it;
2. saves stdin to a 0600 file in the temporary directory, cuts each file out of it with dd
   into that directory (mode 0600; one chmod makes the programs 0700), and renames them all
   into place with one mv (atomic for each file), then removes the temporary directory;
3. removes what must not be left from before (an old $CEI_OUTPUT);
4. runs the program (under the login's own umask) with its environment sourced from a 0600
   file cut out beside the others, under a name of its own, which it removes (never in
   argv, where every user of the node could read it);
5. after the program exits 0, prints the report after a marker on stdout: the size and the
   first `limit` + 1 bytes of a file the program wrote ($CEI_OUTPUT).

Only POSIX sh, mkdir, chmod, mv, rm, cat, dd and wc are needed on the node, and each starts
as few times as it can: a process costs the node a fork and an exec, more than the bytes
sent (staging a node of four files starts 11 processes, where a mv per file made it 15). dd
reads one block of `bs` bytes after skipping `skip` blocks, which is exact on a regular file;
so each file sits in the stream at a multiple of its own size, the largest first, which keeps
the padding smaller than the files that follow the first.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from launchplan.remote.quoting import cd_word, env_script, shell_command

STAGING_FAILED = b"S"
NO_REPORT = b"N"
REPORT = b"O"

# mkdir -p that names the first component in the way when one is not a directory
_MKDIR = ('mkdir -p "$1" 2>/dev/null || { p="$1"; '
          'while [ ! -e "$p" ] && [ "$p" != "$(dirname "$p")" ]; do p=$(dirname "$p"); '
          'done; [ -d "$p" ] && echo "cannot create $1" >&2 || '
          'echo "$p exists and is not a directory" >&2; exit 1; }')


def mkdir_command(path: str, mode: int) -> str:
    """mkdir -p `path`: the directories it creates and `path` itself get `mode`."""
    quoted = cd_word(path)
    return (f"umask {0o777 & ~mode:03o} && set -- {quoted} && {{ {_MKDIR}; }} && "
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
    there are any), paths removed before it starts, and the file reported after it passes."""

    directory: str
    files: tuple[StagedFile, ...] = ()
    remove: tuple[str, ...] = ()
    report: str | None = None
    limit: int = 0  # the report carries at most limit + 1 bytes of it


def staged_command(staging: Staging, argv: Sequence[str] | None, env: Mapping[str, str],
                   token: str) -> tuple[str, bytes, bytes]:
    """(command line, stdin, report marker) for one exec that stages and runs `argv` (None:
    only stage). `token` makes its temporary names and its marker unique."""
    marker = f"\x1ecei-report-{token}\x1e".encode()
    # the staging files go through a temporary directory, to be renamed into place; the env
    # file's name is the token's own, so it is cut out where the program reads it
    cuts = [(item, _in_temporary(item.name)) for item in staging.files]
    source = None
    if env and argv is not None:
        source = f".cei-env-{token}"
        cuts.append((StagedFile(source, env_script(env).encode()), shlex.quote("./" + source)))
    # with staging files, the saved stdin sits in the temporary directory, and one rm -r of
    # that directory (its name is the token's) leaves nothing of either
    saved = f'"$t"/.cei-in-{token}' if staging.files else f".cei-in-{token}"
    lines = [
        "u=$(umask); umask 077",
        f"m={shlex.quote(marker.decode())}; t=.cei-tmp-{token}; b={saved}",
        'fail() { rm -rf "$t" "$b" 2>/dev/null; printf %s "$m"S; exit 1; }',
    ]
    directory = cd_word(staging.directory)
    if staging.files:
        within = cd_word(posixpath.join(staging.directory, f".cei-tmp-{token}"))
        lines.append(f"( set -- {within}; {_MKDIR} ) && chmod 700 {directory} || fail")
    lines.append(f"cd {directory} || fail")
    stream, writes = _layout(cuts)
    if stream:
        lines.append('cat >"$b" || fail')
    lines += writes
    removed = [shlex.quote(p) for p in staging.remove]
    if staging.files:
        programs = [target for item, target in cuts if item.mode != 0o600]
        if programs:
            lines.append(f"chmod 700 {' '.join(programs)} || fail")
        names = " ".join(_in_temporary(item.name) for item in staging.files)
        lines.append(f'mv -f {names} . && rm -rf "$t" || fail')
    elif stream:
        removed.insert(0, '"$b"')
    if removed:
        lines.append(f"rm -f -- {' '.join(removed)} || fail")
    if argv is None:
        lines.append("exit 0")
        return "\n".join(lines) + "\n", stream, marker
    lines += [f'( umask "$u"; {shell_command(argv, source=source)} )', "s=$?"]
    if staging.report is not None:
        lines.append(_report(staging.report, staging.limit))
    lines.append('exit "$s"')
    return "\n".join(lines) + "\n", stream, marker


def _layout(cuts: Sequence[tuple[StagedFile, str]]) -> tuple[bytes, list[str]]:
    """The stream of the files' contents, and the lines that cut each out of it into its
    (quoted) target path."""
    stream = bytearray()
    writes = []
    for item, target in sorted(cuts, key=lambda cut: len(cut[0].data), reverse=True):
        _plain_name(item.name)
        if item.mode not in (0o600, 0o700):
            raise ValueError(f"{item.name}: a staged file is 0600 or 0700, not {item.mode:o}")
        size = len(item.data)
        if size:
            skip = -(-len(stream) // size)
            stream += bytes(skip * size - len(stream)) + item.data
            writes.append(f'dd if="$b" of={target} bs={size} skip={skip} count=1 2>/dev/null '
                          "|| fail")
        else:
            writes.append(f": >{target} || fail")
    return bytes(stream), writes


def _in_temporary(name: str) -> str:
    return '"$t"/' + shlex.quote(name)


def _plain_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")


def _report(path: str, limit: int) -> str:
    """Prints the marker, then N (no such file) or O, the size sent, ':' and that many bytes."""
    quoted = shlex.quote(path)
    return (f'if [ "$s" -eq 0 ]; then if [ -f {quoted} ]; then '
            f"n=$(($(wc -c <{quoted}))); [ \"$n\" -gt {limit + 1} ] && n={limit + 1}; "
            f'printf "%sO%d:" "$m" "$n"; '
            f'[ "$n" -eq 0 ] || dd if={quoted} bs="$n" count=1 2>/dev/null; '
            f'else printf %s "$m"N; fi; fi')


class ReportReader:
    """Splits a staged command's stdout into the program's own output and what follows the
    marker: whether staging failed, and the report."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.kind: bytes | None = None  # STAGING_FAILED | NO_REPORT | REPORT, once seen
        self.report: bytes | None = None
        self._held = b""
        self._size: int | None = None
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
                keep = _partial_suffix(data, self.marker)
                self._held = data[len(data) - keep:]
                return data[:len(data) - keep]
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
        if self._size is None:
            colon = data.find(b":")
            if colon < 0:
                self._held = data
                return b""
            self._size = int(data[:colon] or b"0")
            data = data[colon + 1:]
            self.report = b""
        assert self.report is not None
        take = self._size - len(self.report)
        self.report += data[:take]
        if len(self.report) == self._size:
            self._done = True
            return data[take:]
        return b""


def _partial_suffix(data: bytes, marker: bytes) -> int:
    """The length of the longest end of `data` that begins `marker`."""
    start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1))
    while start >= 0:
        if marker.startswith(data[start:]):
            return len(data) - start
        start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1), start)
    return 0
