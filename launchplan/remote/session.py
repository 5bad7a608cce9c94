"""One paramiko SSH connection per node, reused for every step cei takes on it.

Opening retries while the node is still booting (nothing listening, banner not sent yet,
authorized_keys not installed yet) but never retries a host-key mismatch: that is a possible
attack, not a slow boot. Commands stream their output as it arrives and, on timeout, the whole
remote process group is stopped, because closing a channel without a pty does not signal it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import random
import select
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from launchplan.errors import (
    CommandTimeout,
    HostKeyMismatch,
    Interrupted,
    RemoteError,
    SSHUnavailable,
)
from launchplan.remote.keys import KeyRing
from launchplan.remote.quoting import shell_command
from launchplan.remote.results import CommandResult, OutputCallback, Tail
from launchplan.remote.sshlib import paramiko
from launchplan.remote.staging import (
    STAGING_FAILED,
    ReportReader,
    Staging,
    before_partial,
    mkdir_command,
    staged_command,
)
from launchplan.remote.target import POLICY_PINNED, SSHTarget

log = logging.getLogger("launchplan.remote")
# paramiko logs what Session handles itself (a node that resets a connection while it boots or
# dies, a refused key exchange) from its own threads; without a handler Python prints that on
# stderr, with tracebacks
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_CHUNK = 32768
_POLL = 0.25
_BACKOFF_FIRST = 0.25
_BACKOFF_CAP = 5.0
_KEEPALIVE = 30
_KILL_TIMEOUT = 15.0
_HEADER_WAIT = 2.0  # for a stopped command's header (see Session._stop)
_QUICK_TIMEOUT = 120.0  # cei's own short commands (home, mkdir): generous, for loaded nodes
# SHA-1 signatures (ssh-rsa) and DSA are never negotiated, whatever paramiko's own defaults.
_NO_SHA1 = {"keys": ["ssh-rsa", "ssh-dss"], "pubkeys": ["ssh-rsa", "ssh-dss"]}

# What every command runs in: it prints a header, _HEADER "PID LOGIN-DIRECTORY" \x1e\n
# (_HEADER finds it after whatever a login shell's rc files printed; the directory may hold
# any byte but NUL), then runs the command itself (eval, with no positional
# parameters and no variable of its own left) in the process group PID leads, which holds it
# and every child: a timeout stops that group from a second channel (_KILLER). sshd makes each
# session's shell the leader of a group of its own, and so does the local cloud's server; a
# shell that is not one (its group read from /proc without starting a process) goes through
# setsid first. No process starts on the node before the command but the shells themselves,
# and none after it.
_HEADER = b"\x1ecei-header "
_RUN = (f'printf "\\036{_HEADER[1:].decode()}%s %s\\036\\n" "$$" "$PWD"; '
        'c=$1; set --; eval "unset c g; $c"')
_WRAPPER = (
    'g=; { read -r g </proc/$$/stat; } 2>/dev/null && set -- "$1" ${g##*) } && g=$4; '
    'if [ -n "$g" ] && [ "$g" != $$ ] && command -v setsid >/dev/null 2>&1; then '
    f'exec setsid sh -c {shlex.quote(_RUN)} sh "$1"; fi; ' + _RUN
)

# Stops the group _WRAPPER reported: TERM, a short grace, then KILL. Every loop is bounded.
# The group counts as alive while a member is not a zombie: a stopped program's orphans wait as
# zombies until init reaps them, which some inits do only every few seconds.
_KILLER = (
    'g=$1; '
    'alive() { [ -r /proc/self/stat ] || { kill -0 -"$g" 2>/dev/null; return; }; '
    'for f in /proc/[0-9]*/stat; do { read -r l <"$f"; } 2>/dev/null || continue; '
    'set -- ${l##*) }; [ "$3" = "$g" ] && [ "$1" != Z ] && return 0; done; return 1; }; '
    'kill -TERM -"$g" 2>/dev/null || kill -TERM "$g" 2>/dev/null; i=0; '
    'while alive && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done; '
    'kill -KILL -"$g" 2>/dev/null; kill -KILL "$g" 2>/dev/null; exit 0'
)


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


def _fingerprint_listed(key: paramiko.PKey, fingerprints: tuple[str, ...]) -> bool:
    """Whether the key's SHA256 (or, from old images, MD5) fingerprint is listed."""
    md5 = "MD5:" + ":".join(f"{b:02x}" for b in hashlib.md5(key.asbytes()).digest())
    return fingerprint_of(key) in fingerprints or md5.lower() in (
        f.lower() for f in fingerprints)


def _mismatch(target: SSHTarget, expected: paramiko.PKey, got: paramiko.PKey) -> HostKeyMismatch:
    return HostKeyMismatch(
        f"host key mismatch for {target.label}: expected {fingerprint_of(expected)} "
        f"({expected.get_name()}), the server presented {fingerprint_of(got)} "
        f"({got.get_name()}); refusing to connect"
    )


def _verify(target: SSHTarget, key: paramiko.PKey) -> None:
    """Accept the presented host key only as the target's policy allows."""
    if target.host_key:
        expected = parse_public_line(target.host_key)
        if key.asbytes() != expected.asbytes():
            raise _mismatch(target, expected, key)
    elif target.fingerprints:
        if not _fingerprint_listed(key, target.fingerprints):
            raise HostKeyMismatch(
                f"host key mismatch for {target.label}: the server presented "
                f"{fingerprint_of(key)} ({key.get_name()}), which is not among the "
                f"fingerprints pinned for it ({', '.join(target.fingerprints)}); "
                "refusing to connect"
            )
    elif target.policy == POLICY_PINNED:
        raise RemoteError(f"no host key pinned for {target.label}")
    else:
        log.warning(
            "accepting unverified host key %s for %s (host_key_policy accept-new)",
            fingerprint_of(key),
            target.label,
        )


def _prefer_pinned_type(transport: paramiko.Transport, target: SSHTarget) -> None:
    """Negotiate the pinned key's type first, so a server with several keys shows that one."""
    if not target.host_key:
        return
    kind = target.host_key.split()[0]
    wanted = ("rsa-sha2-512", "rsa-sha2-256") if kind == "ssh-rsa" else (kind,)
    options = transport.get_security_options()
    types = list(options.key_types)
    options.key_types = [t for t in wanted if t in types] + [t for t in types if t not in wanted]


def _sha1_host_key(target: SSHTarget) -> RemoteError:
    return RemoteError(
        f"{target.label} offers no host key algorithm cei accepts: cei refuses SHA-1 RSA "
        "signatures (ssh-rsa) and DSA, because SHA-1 is broken (chosen-prefix collisions) and "
        "a forged signature would let a man in the middle pass as the host; give the server "
        "an ed25519 or ECDSA host key, or let it sign with rsa-sha2-256/512 (OpenSSH 7.2 or "
        "later: remove ssh-rsa-only HostKeyAlgorithms)"
    )


def _sha1_login(target: SSHTarget, keys: list[str]) -> RemoteError:
    return RemoteError(
        f"{target.label} accepts the RSA key(s) {', '.join(keys)} only with SHA-1 signatures "
        "(ssh-rsa), which cei refuses because SHA-1 is broken (chosen-prefix collisions); use "
        "an ed25519 or ECDSA key, or let the server accept rsa-sha2-256/512 "
        "(PubkeyAcceptedAlgorithms, OpenSSH 7.2 or later)"
    )


def _authenticate(transport: paramiko.Transport, target: SSHTarget, ring: KeyRing) -> None:
    """Offer each key in turn; AuthenticationException (retried: a booting node may not
    have its authorized_keys yet) when none is accepted."""
    sha1_only = []
    for login in ring.keys:
        try:
            transport.auth_publickey(target.user, login.key)
        except paramiko.AuthenticationException as exc:
            if "pubkey algorithm" in str(exc):  # the server wants ssh-rsa, paramiko won't
                sha1_only.append(login.label)
            continue
        if transport.is_authenticated():
            return
    if sha1_only and len(sha1_only) == len(ring.keys):
        raise _sha1_login(target, sha1_only)
    offered = ", ".join(k.label for k in ring.keys)
    raise paramiko.AuthenticationException(
        f"{target.label}: {target.user} was refused with every key offered ({offered})")


def _key_ring(target: SSHTarget) -> KeyRing:
    ring = KeyRing(target.key_path, target.identity_files, target.identities_only,
                   target.passphrase_env)
    if not ring.keys:
        ring.close()
        why = "".join(f"; {reason}" for reason in ring.skipped)
        raise RemoteError(
            f"no SSH key to log in to {target.label} with: set ssh_key in the plan, an "
            f"IdentityFile in the ssh config, or add a key to ssh-agent{why}")
    return ring


def _lost(target: SSHTarget) -> RemoteError:
    return RemoteError(f"{target.address}: node lost: the connection closed before the "
                       "command ended")


def _describe(exc: BaseException) -> str:
    name = exc.__class__.__name__
    return f"{name}: {exc}" if str(exc) else name


class _Stdout:
    """Where a command's stdout goes: the wrapper's header line read off first (see _WRAPPER),
    then its tail and the caller's callback, after `reader` took out what follows a staged
    run's report marker."""

    def __init__(self, tail: Tail, on_output: OutputCallback | None,
                 reader: ReportReader | None) -> None:
        self.tail = tail
        self.on_output = on_output
        self.reader = reader
        self.group: str | None = None  # the process group running the command, once known
        self.login_dir: str | None = None
        self._header: bytes | None = b""  # None once read

    def add(self, chunk: bytes) -> None:
        if self._header is not None:
            chunk = self._read_header(self._header + chunk)
        self._pass_on(self.reader.feed(chunk) if self.reader is not None else chunk)

    def _read_header(self, data: bytes) -> bytes:
        """What of `data` is output: all but the header line, and but what may be its start."""
        at = data.find(_HEADER)
        if at < 0:
            output, self._header = before_partial(data, _HEADER)
            return output
        end = data.find(b"\x1e\n", at + len(_HEADER))
        if end < 0:
            self._header = data[at:]
            return data[:at]
        self._header = None
        group, _, login_dir = data[at + len(_HEADER):end].partition(b" ")
        if group.isdigit():
            self.group = group.decode("ascii")
            with contextlib.suppress(UnicodeDecodeError):  # else unknown, as when empty
                self.login_dir = login_dir.decode("utf-8") or None
        return data[:at] + data[end + 2:]

    def finish(self) -> None:
        if self._header:
            self._pass_on(self._header)
        self._header = None
        if self.reader is not None:
            self._pass_on(self.reader.finish())

    def _pass_on(self, data: bytes) -> None:
        if not data:
            return
        self.tail.add(data)
        if self.on_output is not None:
            self.on_output("stdout", data)


class Session:
    """An open SSH connection to one node; use Session.open()."""

    def __init__(self, target: SSHTarget, transports: list[paramiko.Transport],
                 host_key: str) -> None:
        self.target = target
        self._transports = transports  # one per bastion, then the node's own
        self._host_key = host_key
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # guards the SFTP client (see _sftp_client)
        self._home: str | None = None

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
        """Connect through the target's bastions and log in, retrying with capped, jittered
        backoff for `retry_for` seconds (each attempt bounded by the ssh config's
        ConnectTimeout, else `connect_timeout`).

        A host key mismatch at any hop, and every refusal that waiting cannot cure (no key to
        offer, SHA-1 only), is raised at once; SSHUnavailable names the last error when time
        runs out or `cancel` is set.
        """
        if target.policy == POLICY_PINNED and not (target.host_key or target.fingerprints):
            raise RemoteError(f"no host key pinned for {target.address}")
        chain = (*target.jump, target)
        for endpoint in chain:  # a malformed pinned key is the plan's fault: say so at once
            if endpoint.host_key:
                parse_public_line(endpoint.host_key)
        rings: list[KeyRing] = []
        try:
            for endpoint in chain:
                rings.append(_key_ring(endpoint))
            return cls._open(target, rings, target.connect_timeout or connect_timeout,
                             retry_for, cancel)
        finally:
            for ring in rings:
                ring.close()

    @classmethod
    def _open(cls, target: SSHTarget, rings: list[KeyRing], connect_timeout: float,
              retry_for: float, cancel: threading.Event | None) -> Session:
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
                return cls._connect_once(target, rings, timeout)
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
        via = "".join(f" via {hop.label}" for hop in target.jump)
        return SSHUnavailable(
            f"SSH to {target.user}@{target.address}{via} unavailable ({why}, {attempts} "
            f"attempt(s)); last error: {error}"
        )

    @classmethod
    def _connect_once(cls, target: SSHTarget, rings: list[KeyRing], timeout: float) -> Session:
        """One attempt: TCP to the first hop, then each next hop through a direct-tcpip
        channel of the one before, every host key checked before logging in."""
        chain = (*target.jump, target)
        transports: list[paramiko.Transport] = []
        first = socket.create_connection((chain[0].host, chain[0].port), timeout=timeout)
        sock: socket.socket | paramiko.Channel = first
        try:
            first.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for endpoint, ring in zip(chain, rings, strict=True):
                if transports:
                    sock = transports[-1].open_channel(
                        "direct-tcpip", (endpoint.host, endpoint.port), ("127.0.0.1", 0),
                        timeout=timeout)
                transports.append(cls._login(endpoint, sock, ring, timeout))
        except BaseException:
            for transport in reversed(transports):
                transport.close()
            sock.close()
            raise
        server_key = transports[-1].get_remote_server_key()
        log.debug("ssh %s@%s connected, host key %s", target.user, target.address,
                  fingerprint_of(server_key))
        return cls(target, transports, public_line(server_key))

    @staticmethod
    def _login(endpoint: SSHTarget, sock: socket.socket | paramiko.Channel, ring: KeyRing,
               timeout: float) -> paramiko.Transport:
        transport = paramiko.Transport(sock, disabled_algorithms=_NO_SHA1)
        try:
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            _prefer_pinned_type(transport, endpoint)
            try:
                transport.start_client(timeout=timeout)
            except paramiko.ssh_exception.IncompatiblePeer as exc:
                if "host key" in str(exc):
                    raise _sha1_host_key(endpoint) from None
                raise
            _verify(endpoint, transport.get_remote_server_key())
            _authenticate(transport, endpoint, ring)
            keepalive = _KEEPALIVE if endpoint.keepalive is None else endpoint.keepalive
            transport.set_keepalive(int(keepalive))
        except BaseException:
            transport.close()
            raise
        return transport

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
        """Whether the connection is still up (a node that rebooted or died drops it, and so
        does a bastion on the way)."""
        return all(transport.is_active() for transport in self._transports)

    @property
    def home(self) -> str:
        """Absolute login directory (what relative remote paths are relative to); asked once.

        Asked over SFTP rather than with an exec: an exec starts the login shell, whose rc
        files may be slow or print."""
        if self._home is None:
            with self._remote_errors("resolving the home directory"), \
                    self._sftp_client() as sftp:
                self._home = sftp.normalize(".")
        return self._home

    def close(self) -> None:
        """Close SFTP and the connection; safe to call twice."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except (OSError, EOFError, paramiko.SSHException):
                log.debug("closing sftp to %s failed", self.target.address, exc_info=True)
            self._sftp = None
        for transport in reversed(self._transports):
            transport.close()

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

    @contextmanager
    def _command_errors(self) -> Iterator[None]:
        """As _remote_errors, but a connection that died on the way is the node lost, however
        far the command had come (opening, starting, or running)."""
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self.alive:
                raise _lost(self.target) from exc
            raise RemoteError(f"{self.target.address}: running a command failed: "
                              f"{_describe(exc)}") from exc

    def _transport(self) -> paramiko.Transport:
        transport = self._transports[-1]
        if not transport.is_active():
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
        return self._exec(command, timeout, on_output, cancel)

    def _exec(self, command: str, timeout: float | None,
              on_output: OutputCallback | None, cancel: threading.Event | None,
              stdin: bytes = b"", reader: ReportReader | None = None) -> CommandResult:
        """Run `command` through _WRAPPER with `stdin`; `reader` takes its report out of
        stdout."""
        wrapped = "exec sh -c " + " ".join(
            shlex.quote(word) for word in (_WRAPPER, "cei-run", command)
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = Tail(), Tail()
        stdout = _Stdout(out, on_output, reader)
        settled = False
        with self._command_errors():
            channel = self._transport().open_session()
        try:
            with self._command_errors():
                channel.exec_command(wrapped)
                if stdin:
                    channel.settimeout(timeout)  # a node that stops reading is a timeout
                    with contextlib.suppress(OSError):  # it ended early: its status says why
                        channel.sendall(stdin)
                    channel.settimeout(None)
                channel.shutdown_write()
                while True:
                    self._drain(channel, stdout, err, on_output)
                    if (
                        channel.exit_status_ready()
                        and (channel.eof_received or channel.closed)
                        and not channel.recv_ready()
                        and not channel.recv_stderr_ready()
                    ):
                        break
                    if cancel is not None and cancel.is_set():
                        settled = True
                        self._stop(channel, stdout, err, on_output)
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
                    self._stop(channel, stdout, err, on_output)
                    raise CommandTimeout(
                        f"{self.target.address}: command ran past its timeout of {timeout:g} s"
                        " and was stopped"
                    )
                settled = True
                status = channel.recv_exit_status()
                if status == -1:  # no exit status: the wrapper itself was killed
                    raise _lost(self.target)
        finally:
            if not settled:
                self._stop_quietly(channel, stdout, err)
            channel.close()
        stdout.finish()
        return CommandResult(status, out.text(), err.text(),
                             reader.report if reader is not None else None, stdout.login_dir)

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
        return self.run_staged(Staging(cwd or "~"), argv, env=env, timeout=timeout,
                               on_output=on_output, cancel=cancel)

    def run_staged(
        self,
        staging: Staging,
        argv: Sequence[str] | None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Write `staging`'s files and run `argv` in its directory, in one exec (see
        remote.staging); the result carries the report. Only stages when `argv` is None.

        RemoteError when staging fails; timeout and cancel as for run().
        """
        command, stdin, marker = staged_command(staging, argv, env or {}, uuid.uuid4().hex)
        reader = ReportReader(marker)
        result = self._exec(command, timeout, on_output, cancel, stdin, reader)
        if reader.kind == STAGING_FAILED:
            raise RemoteError(f"{self.target.address}: staging in {staging.directory} failed: "
                              + (result.stderr_tail.strip() or f"status {result.status}"))
        return result

    @staticmethod
    def _drain(
        channel: paramiko.Channel, out: _Stdout, err: Tail, on_output: OutputCallback | None
    ) -> None:
        while channel.recv_ready():
            chunk = channel.recv(_CHUNK)
            if not chunk:
                break
            out.add(chunk)
        while channel.recv_stderr_ready():
            chunk = channel.recv_stderr(_CHUNK)
            if not chunk:
                break
            err.add(chunk)
            if on_output is not None:
                on_output("stderr", chunk)

    def _stop(self, channel: paramiko.Channel, stdout: _Stdout, err: Tail,
              on_output: OutputCallback | None) -> None:
        """Stop the process group running on `channel`, from a second channel. Its header may
        be on the way still: it is waited for a moment; a command that had not printed it by
        then never runs, for closing its channel breaks the pipe it prints to."""
        deadline = time.monotonic() + _HEADER_WAIT
        while stdout.group is None and not channel.exit_status_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([channel], [], [], min(left, _POLL))
            self._drain(channel, stdout, err, on_output)
        if stdout.group is None:
            return
        with self._remote_errors("stopping a timed-out command"):
            killer = self._transport().open_session()
            try:
                killer.settimeout(_KILL_TIMEOUT)
                killer.exec_command(
                    "exec sh -c " + shlex.quote(_KILLER) + " cei-kill " + stdout.group)
                killer.shutdown_write()
                deadline = time.monotonic() + _KILL_TIMEOUT
                while not killer.exit_status_ready() and time.monotonic() < deadline:
                    select.select([killer], [], [], _POLL)
                    while killer.recv_ready():
                        killer.recv(_CHUNK)
                    while killer.recv_stderr_ready():
                        killer.recv_stderr(_CHUNK)
            finally:
                killer.close()

    def _stop_quietly(self, channel: paramiko.Channel, stdout: _Stdout, err: Tail) -> None:
        """Best effort when leaving run() by an exception (interrupt, callback error)."""
        try:
            self._stop(channel, stdout, err, None)  # the caller's callback may be what failed
        except (RemoteError, OSError, EOFError, paramiko.SSHException):
            log.debug("could not stop a remote command on %s", self.target.address)

    # ----------------------------------------------------------------- files

    @contextmanager
    def _sftp_client(self) -> Iterator[paramiko.SFTPClient]:
        """The session's SFTP client, one caller at a time: paramiko's SFTP client matches
        answers to requests per call, so two threads using it at once can wait forever for
        answers the other one read."""
        with self._lock:
            if self._sftp is None:
                sftp = paramiko.SFTPClient.from_transport(self._transport())
                if sftp is None:
                    raise paramiko.SSHException("the SFTP subsystem did not start")
                self._sftp = sftp
            yield self._sftp

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """mkdir -p, in one exec; directories created here, and `path` itself, get `mode`."""
        result = self.run(mkdir_command(path, mode), timeout=_QUICK_TIMEOUT)
        if result.status != 0:
            raise RemoteError(f"{self.target.address}: creating directory {path} failed: "
                              + (result.stderr_tail.strip() or f"status {result.status}"))

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
