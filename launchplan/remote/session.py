"""One paramiko SSH connection per node, reused for every step cei takes on it.

Opening retries while the node is still booting (nothing listening, banner not sent yet,
authorized_keys not installed yet) but never retries a host-key mismatch: that is a possible
attack, not a slow boot. Commands stream their output as it arrives and, on timeout, the whole
remote process group is stopped, because closing a channel without a pty does not signal it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import posixpath
import random
import select
import shlex
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko

from launchplan.errors import (
    CommandTimeout,
    HostKeyMismatch,
    Interrupted,
    RemoteError,
    SSHUnavailable,
)
from launchplan.remote.quoting import env_script, shell_command
from launchplan.remote.target import POLICY_PINNED, SSHTarget

log = logging.getLogger("launchplan.remote")
# paramiko logs what Session handles itself (a node that resets a connection while it boots or
# dies) from its own threads; without a handler Python prints that on stderr, with tracebacks
logging.getLogger("paramiko").addHandler(logging.NullHandler())

TAIL_BYTES = 4096
_CHUNK = 32768
_POLL = 0.25
_BACKOFF_FIRST = 0.25
_BACKOFF_CAP = 5.0
_KEEPALIVE = 30
_KILL_TIMEOUT = 15.0

OutputCallback = Callable[[str, bytes], None]

# Runs the user's command in a new session (so its process group holds it and every child),
# recording that group's id where a second channel can find it on timeout. Without setsid
# (rare) the shell's own pid is recorded: sshd makes each session's shell a group leader.
_WRAPPER = (
    'p="${TMPDIR:-/tmp}/cei-$1.pid"; '
    "if setsid -w true >/dev/null 2>&1; then "
    'setsid -w sh -c \'echo $$ >"$1"; sh -c "$2"; exit $?\' sh "$p" "$2"; '
    'else echo $$ >"$p"; sh -c "$2"; fi; '
    's=$?; rm -f "$p"; exit "$s"'
)

# Stops the group recorded by _WRAPPER: TERM, a short grace, then KILL. Every loop is bounded.
# The group counts as alive while a member is not a zombie: a stopped program's orphans wait as
# zombies until init reaps them, which some inits do only every few seconds.
_KILLER = (
    'p="${TMPDIR:-/tmp}/cei-$1.pid"; i=0; '
    'while [ ! -s "$p" ] && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i+1)); done; '
    'g=$(cat "$p" 2>/dev/null); [ -n "$g" ] || exit 0; '
    'alive() { [ -r /proc/self/stat ] || { kill -0 -"$g" 2>/dev/null; return; }; '
    'for f in /proc/[0-9]*/stat; do { read -r l <"$f"; } 2>/dev/null || continue; '
    'set -- ${l##*) }; [ "$3" = "$g" ] && [ "$1" != Z ] && return 0; done; return 1; }; '
    'kill -TERM -"$g" 2>/dev/null || kill -TERM "$g" 2>/dev/null; i=0; '
    'while alive && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done; '
    'kill -KILL -"$g" 2>/dev/null; kill -KILL "$g" 2>/dev/null; rm -f "$p"; exit 0'
)


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended: exit status and the last ~4 KiB of each stream."""

    status: int
    stdout_tail: str
    stderr_tail: str


def fingerprint_of(key: paramiko.PKey) -> str:
    """SHA256 fingerprint as OpenSSH prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def public_line(key: paramiko.PKey) -> str:
    """The key as an OpenSSH public-key line (type and base64, no comment)."""
    return f"{key.get_name()} {key.get_base64()}"


def parse_public_line(line: str) -> paramiko.PKey:
    """Turn an OpenSSH public-key line into a paramiko key; RemoteError when malformed."""
    fields = line.split()
    if len(fields) < 2:
        raise RemoteError(f"not an OpenSSH public key line: {line!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        return paramiko.PKey.from_type_string(fields[0], blob)
    except (binascii.Error, ValueError, paramiko.SSHException) as exc:
        raise RemoteError(f"not a usable OpenSSH public key line ({exc}): {line[:60]!r}") from exc


class _KeyCheck(paramiko.MissingHostKeyPolicy):
    """Called for a key paramiko does not know: the pinned key is preloaded, so under policy
    "pinned" this means the node presented some other key (of another type)."""

    def __init__(self, target: SSHTarget, expected: paramiko.PKey | None) -> None:
        self.target = target
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        if self.target.policy == POLICY_PINNED:
            if self.target.fingerprints:
                if _fingerprint_listed(key, self.target.fingerprints):
                    return
                raise HostKeyMismatch(
                    f"host key mismatch for {self.target.address}: the server presented "
                    f"{fingerprint_of(key)} ({key.get_name()}), which is not among the "
                    f"fingerprints pinned for it ({', '.join(self.target.fingerprints)}); "
                    "refusing to connect"
                )
            if self.expected is None:
                raise RemoteError(f"no host key pinned for {self.target.address}")
            raise _mismatch(self.target, self.expected, key)
        log.warning(
            "accepting unverified host key %s for %s (host_key_policy accept-new)",
            fingerprint_of(key),
            self.target.address,
        )


def _fingerprint_listed(key: paramiko.PKey, fingerprints: tuple[str, ...]) -> bool:
    """Whether the key's SHA256 (or, from old images, MD5) fingerprint is listed."""
    md5 = "MD5:" + ":".join(f"{b:02x}" for b in hashlib.md5(key.asbytes()).digest())
    return fingerprint_of(key) in fingerprints or md5.lower() in (
        f.lower() for f in fingerprints)


def _mismatch(target: SSHTarget, expected: paramiko.PKey, got: paramiko.PKey) -> HostKeyMismatch:
    return HostKeyMismatch(
        f"host key mismatch for {target.address}: expected {fingerprint_of(expected)} "
        f"({expected.get_name()}), the server presented {fingerprint_of(got)} "
        f"({got.get_name()}); refusing to connect"
    )


def _load_client_key(path: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(Path(path).expanduser())
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise RemoteError(f"cannot use SSH key {path}: {exc}") from exc


def _describe(exc: BaseException) -> str:
    name = exc.__class__.__name__
    return f"{name}: {exc}" if str(exc) else name


class Tail:
    """The last TAIL_BYTES of a stream."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > TAIL_BYTES:
            del self.data[: len(self.data) - TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


class Session:
    """An open SSH connection to one node; use Session.open()."""

    def __init__(self, target: SSHTarget, client: paramiko.SSHClient, host_key: str) -> None:
        self.target = target
        self._client = client
        self._host_key = host_key
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # guards the SFTP client (see _sftp_client)

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        target: SSHTarget,
        *,
        connect_timeout: float = 10.0,
        retry_for: float = 60.0,
        cancel: threading.Event | None = None,
    ) -> Session:
        """Connect and authenticate, retrying with capped, jittered backoff for `retry_for`s.

        HostKeyMismatch is raised at once; SSHUnavailable names the last error when time runs
        out or `cancel` is set.
        """
        expected = parse_public_line(target.host_key) if target.host_key else None
        if target.policy == POLICY_PINNED and expected is None and not target.fingerprints:
            raise RemoteError(f"no host key pinned for {target.address}")
        pkey = _load_client_key(target.key_path) if target.key_path else None
        deadline = time.monotonic() + max(0.0, retry_for)
        delay = _BACKOFF_FIRST
        attempt = 0
        last: BaseException | None = None
        while True:
            if cancel is not None and cancel.is_set():
                raise cls._unavailable(target, attempt, last, "cancelled")
            attempt += 1
            remaining = deadline - time.monotonic()
            timeout = max(0.5, min(connect_timeout, remaining))
            try:
                return cls._connect_once(target, expected, pkey, timeout)
            except HostKeyMismatch:
                raise
            except (OSError, EOFError, paramiko.SSHException) as exc:
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise cls._unavailable(target, attempt, last, f"gave up after {retry_for:g} s")
            pause = min(remaining, random.uniform(delay / 2, delay))
            log.debug(
                "ssh %s@%s attempt %d failed (%s); retrying in %.2f s",
                target.user,
                target.address,
                attempt,
                _describe(last),
                pause,
            )
            if cancel is not None:
                cancel.wait(pause)
            else:
                time.sleep(pause)
            delay = min(_BACKOFF_CAP, delay * 2)

    @staticmethod
    def _unavailable(
        target: SSHTarget, attempts: int, last: BaseException | None, why: str
    ) -> SSHUnavailable:
        error = _describe(last) if last is not None else "no attempt made"
        return SSHUnavailable(
            f"SSH to {target.user}@{target.address} unavailable ({why}, {attempts} attempt(s));"
            f" last error: {error}"
        )

    @classmethod
    def _connect_once(
        cls,
        target: SSHTarget,
        expected: paramiko.PKey | None,
        pkey: paramiko.PKey | None,
        timeout: float,
    ) -> Session:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        client = paramiko.SSHClient()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.policy == POLICY_PINNED and expected is not None:
                name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
                client.get_host_keys().add(name, expected.get_name(), expected)
            client.set_missing_host_key_policy(_KeyCheck(target, expected))
            try:
                client.connect(
                    target.host,
                    port=target.port,
                    username=target.user,
                    pkey=pkey,
                    allow_agent=pkey is None,
                    look_for_keys=pkey is None,
                    sock=sock,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                )
            except paramiko.BadHostKeyException as exc:
                raise _mismatch(target, exc.expected_key, exc.key) from None
            transport = client.get_transport()
            if transport is None:
                raise paramiko.SSHException("transport closed after connecting")
            server_key = transport.get_remote_server_key()
            transport.set_keepalive(_KEEPALIVE)
        except BaseException:
            client.close()
            sock.close()
            raise
        log.debug(
            "ssh %s@%s connected, host key %s",
            target.user,
            target.address,
            fingerprint_of(server_key),
        )
        return cls(target, client, public_line(server_key))

    # ----------------------------------------------------------------- basics

    @property
    def host_key(self) -> str:
        """The public-key line the server presented."""
        return self._host_key

    @property
    def host_key_fingerprint(self) -> str:
        """SHA256 fingerprint of the presented host key."""
        return fingerprint_of(parse_public_line(self._host_key))

    @property
    def alive(self) -> bool:
        """Whether the connection is still up (a node that rebooted or died drops it)."""
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    @property
    def home(self) -> str:
        """Absolute login directory (what relative remote paths are relative to)."""
        with self._remote_errors("resolving the home directory"), \
                self._sftp_client() as sftp:
            return sftp.normalize(".")

    def close(self) -> None:
        """Close SFTP and the connection; safe to call twice."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except (OSError, EOFError, paramiko.SSHException):
                log.debug("closing sftp to %s failed", self.target.address, exc_info=True)
            self._sftp = None
        self._client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _remote_errors(self, what: str) -> Iterator[None]:
        """Translate paramiko/socket failures into RemoteError naming the node and action."""
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise RemoteError(f"{self.target.address}: {what} failed: {_describe(exc)}") from exc

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"{self.target.address}: the SSH connection is closed")
        return transport

    # ----------------------------------------------------------------- commands

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Run a POSIX sh command line, streaming output to `on_output(stream, chunk)`.

        Past `timeout` seconds the command's whole process group is stopped and
        CommandTimeout raised; when `cancel` is set it is stopped the same way and
        Interrupted raised.
        """
        token = uuid.uuid4().hex
        wrapped = "exec sh -c " + " ".join(
            shlex.quote(word) for word in (_WRAPPER, "cei-run", token, command)
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = Tail(), Tail()
        settled = False
        with self._remote_errors("running a command"):
            channel = self._transport().open_session()
        try:
            with self._remote_errors("running a command"):
                channel.exec_command(wrapped)
                channel.shutdown_write()
                while True:
                    self._drain(channel, out, err, on_output)
                    if (
                        channel.exit_status_ready()
                        and (channel.eof_received or channel.closed)
                        and not channel.recv_ready()
                        and not channel.recv_stderr_ready()
                    ):
                        break
                    if cancel is not None and cancel.is_set():
                        settled = True
                        self._stop(token)
                        raise Interrupted(f"{self.target.address}: command interrupted")
                    wait = _POLL
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        wait = min(wait, left)
                    if channel.eof_received:
                        # the pipe select() watches stays readable after EOF
                        channel.status_event.wait(wait)
                    else:
                        select.select([channel], [], [], wait)
                if not channel.exit_status_ready():
                    settled = True
                    self._stop(token)
                    raise CommandTimeout(
                        f"{self.target.address}: command ran past its timeout of {timeout:g} s"
                        " and was stopped"
                    )
                settled = True
                status = channel.recv_exit_status()
                if status == -1:  # no exit status: the wrapper itself was killed
                    raise RemoteError(f"{self.target.address}: node lost: the connection "
                                      "closed before the command ended")
        finally:
            if not settled:
                self._stop_quietly(token)
            channel.close()
        return CommandResult(status, out.text(), err.text())

    def run_argv(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Run `argv` in `cwd` with `env` added; each word reaches the program as it is.

        `env` travels in a 0600 file beside the program (in `cwd`, else the login directory)
        that the command line sources and removes: never in argv, where every user of the
        node could read it.
        """
        if not env:
            return self.run(shell_command(argv, cwd=cwd), timeout=timeout,
                            on_output=on_output, cancel=cancel)
        name = f".cei-env-{uuid.uuid4().hex}"
        self.put(env_script(env).encode(), posixpath.join(cwd or "~", name), 0o600)
        return self.run(shell_command(argv, cwd=cwd or "~", source=name), timeout=timeout,
                        on_output=on_output, cancel=cancel)

    @staticmethod
    def _drain(
        channel: paramiko.Channel, out: Tail, err: Tail, on_output: OutputCallback | None
    ) -> None:
        while channel.recv_ready():
            chunk = channel.recv(_CHUNK)
            if not chunk:
                break
            out.add(chunk)
            if on_output is not None:
                on_output("stdout", chunk)
        while channel.recv_stderr_ready():
            chunk = channel.recv_stderr(_CHUNK)
            if not chunk:
                break
            err.add(chunk)
            if on_output is not None:
                on_output("stderr", chunk)

    def _stop(self, token: str) -> None:
        """Stop the process group of the run identified by `token`, on a second channel."""
        with self._remote_errors("stopping a timed-out command"):
            channel = self._transport().open_session()
            try:
                channel.settimeout(_KILL_TIMEOUT)
                channel.exec_command(
                    "exec sh -c " + shlex.quote(_KILLER) + " cei-kill " + shlex.quote(token)
                )
                channel.shutdown_write()
                deadline = time.monotonic() + _KILL_TIMEOUT
                while not channel.exit_status_ready() and time.monotonic() < deadline:
                    select.select([channel], [], [], _POLL)
                    while channel.recv_ready():
                        channel.recv(_CHUNK)
                    while channel.recv_stderr_ready():
                        channel.recv_stderr(_CHUNK)
            finally:
                channel.close()

    def _stop_quietly(self, token: str) -> None:
        """Best effort when leaving run() by an exception (interrupt, callback error)."""
        try:
            self._stop(token)
        except RemoteError:
            log.debug("could not stop remote command %s on %s", token, self.target.address)

    # ----------------------------------------------------------------- files

    @contextmanager
    def _sftp_client(self) -> Iterator[paramiko.SFTPClient]:
        """The session's SFTP client, one caller at a time: paramiko's SFTP client matches
        answers to requests per call, so two threads using it at once can wait forever for
        answers the other one read."""
        with self._lock:
            if self._sftp is None:
                self._sftp = self._client.open_sftp()
            yield self._sftp

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """mkdir -p; directories created here, and `path` itself, get `mode`."""
        with self._remote_errors(f"creating directory {path}"), self._sftp_client() as sftp:
            path = _sftp_path(path)
            prefix = "/" if path.startswith("/") else ""
            for part in [p for p in path.split("/") if p and p != "."]:
                prefix = f"{prefix}{part}" if prefix in ("", "/") else f"{prefix}/{part}"
                try:
                    attrs = sftp.stat(prefix)
                except FileNotFoundError:
                    try:
                        sftp.mkdir(prefix, mode)
                    except OSError:
                        attrs = sftp.stat(prefix)  # made concurrently by another session?
                    else:
                        sftp.chmod(prefix, mode)
                        continue
                if attrs.st_mode is not None and not stat.S_ISDIR(attrs.st_mode):
                    raise RemoteError(
                        f"{self.target.address}: {prefix} exists and is not a directory"
                    )
            if prefix not in ("", "/"):
                sftp.chmod(prefix, mode)

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write `data` to `path` atomically (temporary file, then rename), with `mode`."""
        self._write(path, mode, lambda f: f.write(data))

    def upload(self, local: str | Path, path: str, mode: int = 0o700) -> None:
        """Copy a local file to `path` atomically, with `mode` (executable by default)."""
        try:
            source = Path(local).expanduser().open("rb")
        except OSError as exc:
            raise RemoteError(f"cannot read {local}: {exc}") from exc
        with source:
            self._write(path, mode, lambda f: _copy(source, f))

    def _write(self, path: str, mode: int, fill: Callable[[paramiko.SFTPFile], object]) -> None:
        path = _sftp_path(path)
        tmp = f"{path}.cei-tmp-{uuid.uuid4().hex[:12]}"
        with self._remote_errors(f"writing {path}"), self._sftp_client() as sftp:
            try:
                with sftp.open(tmp, "wb") as handle:
                    handle.chmod(mode)
                    handle.set_pipelined(True)
                    fill(handle)
                sftp.posix_rename(tmp, path)
            except BaseException:
                try:
                    sftp.remove(tmp)
                except (OSError, EOFError, paramiko.SSHException):
                    log.debug("could not remove %s on %s", tmp, self.target.address)
                raise

    def get(self, path: str, limit: int | None = None) -> bytes | None:
        """The file's contents (at most `limit` bytes), or None when it does not exist."""
        with self._remote_errors(f"reading {path}"), self._sftp_client() as sftp:
            try:
                with sftp.open(_sftp_path(path), "rb") as handle:
                    if limit is None:
                        handle.prefetch()
                    return handle.read(limit)
            except FileNotFoundError:
                return None


def _sftp_path(path: str) -> str:
    """SFTP paths are relative to the login directory already; accept a leading `~/` too."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def _copy(source: BinaryIO, target: paramiko.SFTPFile) -> None:
    while True:
        chunk = source.read(_CHUNK)
        if not chunk:
            return
        target.write(chunk)
