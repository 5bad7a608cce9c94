"""The node's SSH server (asyncssh): public-key login as any user, exec and SFTP only.

exec runs `/bin/sh -c COMMAND` in a new process group in the node's home, with stdout and
stderr streamed separately and the exit status returned. A channel that closes before its
command ends takes the command's process group down with it (SIGTERM, SIGKILL after 3 s).
SFTP works on the real filesystem; relative paths (and so `realpath('.')`) start at the home.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from launchplan.providers.localnode.commands import ProcessGroups

NO_SHELL = (
    b"this local cloud node runs commands only (ssh HOST COMMAND) and SFTP; "
    b"interactive shells and other subsystems are not supported\n"
)
_KEY_ALGORITHMS = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}


@dataclass(frozen=True)
class ExecContext:
    """What every command on the node shares: where it runs and its base environment."""

    home: Path
    root: Path
    tmp: Path  # the node's own TMPDIR: nodes share the machine's /tmp otherwise
    groups: ProcessGroups


def load_host_keys(texts: Mapping[str, str], errors: list[str]) -> list[asyncssh.SSHKey]:
    """Host keys from ssh_keys private texts; bad ones become errors."""
    keys: list[asyncssh.SSHKey] = []
    for kind, text in texts.items():
        try:
            keys.append(asyncssh.import_private_key(text))
        except (asyncssh.KeyImportError, ValueError) as exc:
            errors.append(f"ssh_keys.{kind}_private is not a usable private key: {exc}")
    return keys


def generate_host_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key(_KEY_ALGORITHMS["ed25519"])


def load_authorized_keys(
    lines: Sequence[str], errors: list[str]
) -> asyncssh.SSHAuthorizedKeys | None:
    """The keys allowed to log in; lines that are not keys become errors."""
    good: list[str] = []
    for index, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            asyncssh.import_authorized_keys(text)
        except (asyncssh.KeyImportError, ValueError) as exc:
            errors.append(f"ssh_authorized_keys[{index}] is not a usable public key: {exc}")
            continue
        good.append(text)
    return asyncssh.import_authorized_keys("\n".join(good) + "\n") if good else None


def key_bits(key: asyncssh.SSHKey) -> int:
    """Key size as ssh-keygen -l prints it."""
    name = key.get_algorithm()
    if name.startswith("ecdsa-sha2-nistp"):
        return int(name.removeprefix("ecdsa-sha2-nistp"))
    if name == "ssh-rsa":
        blob = key.public_data
        offset = 0
        values = []
        for _ in range(3):  # algorithm name, e, n
            (length,) = struct.unpack(">I", blob[offset : offset + 4])
            values.append(blob[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return int.from_bytes(values[2], "big").bit_length()
    return 256


def fingerprint_block(keys: Sequence[asyncssh.SSHKey], hostname: str) -> str:
    """The console block cloud-init prints, which a "console" host-key policy reads."""
    lines = ["-----BEGIN SSH HOST KEY FINGERPRINTS-----"]
    for key in keys:
        kind = key.get_algorithm().removeprefix("ssh-").split("-")[0].upper()
        lines.append(f"{key_bits(key)} {key.get_fingerprint('sha256')} root@{hostname} ({kind})")
    lines.append("-----END SSH HOST KEY FINGERPRINTS-----")
    lines.append("-----BEGIN SSH HOST KEY KEYS-----")
    lines.extend(public_line(key) for key in keys)
    lines.append("-----END SSH HOST KEY KEYS-----")
    return "\n".join(lines)


def public_line(key: asyncssh.SSHKey) -> str:
    return f"{key.get_algorithm()} {base64.b64encode(key.public_data).decode()}"


class _NodeServer(asyncssh.SSHServer):
    """Any user name; public-key authentication against the node's authorized keys only."""

    def __init__(self, authorized: asyncssh.SSHAuthorizedKeys | None) -> None:
        self._authorized = authorized
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        if self._conn is not None and self._authorized is not None:
            self._conn.set_authorized_keys(self._authorized)
        return True

    def public_key_auth_supported(self) -> bool:
        return self._authorized is not None


class _NodeSFTP(asyncssh.SFTPServer):
    """The real filesystem, with relative paths taken from the node's home."""

    def __init__(self, chan: asyncssh.SSHServerChannel, home: Path) -> None:
        super().__init__(chan)
        self._home = os.fsencode(home)

    def map_path(self, path: bytes) -> bytes:
        return os.path.join(self._home, path)


def command_env(ctx: ExecContext, user: str, sent: Mapping[str, str]) -> dict[str, str]:
    """The environment of an exec'd command: a login-like base plus what the client sent."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(ctx.home),
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        "SHELL": "/bin/sh",
        "TMPDIR": str(ctx.tmp),
    }
    env.update(sent)
    env["CEI_NODE_ROOT"] = str(ctx.root)
    return env


async def _pump_out(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        writer.write(chunk)
        await writer.drain()


async def _pump_in(reader: asyncssh.SSHReader[bytes], writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (OSError, asyncssh.Error):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def handle_exec(ctx: ExecContext, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run one exec request; end its process group if the channel goes away first."""
    command = process.command
    if command is None or process.subsystem is not None:
        process.stderr.write(NO_SHELL)
        process.exit(1)
        return
    user = str(process.get_extra_info("username") or "")
    env = command_env(ctx, user, process.env)
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(ctx.home),
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        process.stderr.write(f"cannot start /bin/sh: {exc}\n".encode())
        process.exit(127)
        return
    ctx.groups.add(proc.pid)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeder = asyncio.ensure_future(_pump_in(process.stdin, proc.stdin))
    work = asyncio.ensure_future(
        asyncio.gather(
            _pump_out(proc.stdout, process.stdout),
            _pump_out(proc.stderr, process.stderr),
            proc.wait(),
        )
    )
    closed = asyncio.ensure_future(process.channel.wait_closed())
    racing: set[asyncio.Future[Any]] = {work, closed}
    try:
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    finally:
        feeder.cancel()
        closed.cancel()
    if work.done() and work.exception() is None:
        status = proc.returncode if proc.returncode is not None else 1
        process.exit(128 - status if status < 0 else status)
        return
    work.cancel()
    await ctx.groups.terminate([proc.pid])
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
    with contextlib.suppress(OSError, asyncssh.Error):
        process.exit(128 + signal.SIGTERM)


async def start_server(
    address: str,
    port: int,
    host_keys: Sequence[asyncssh.SSHKey],
    authorized: asyncssh.SSHAuthorizedKeys | None,
    ctx: ExecContext,
) -> tuple[asyncssh.SSHAcceptor, int]:
    """Listen on address:port (0: any free port); returns the acceptor and the bound port."""

    async def on_process(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await handle_exec(ctx, process)

    acceptor = await asyncssh.create_server(
        lambda: _NodeServer(authorized),
        host=address,
        port=port,
        server_host_keys=list(host_keys),
        process_factory=on_process,
        sftp_factory=lambda chan: _NodeSFTP(chan, ctx.home),
        encoding=None,
        allow_pty=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
    )
    return acceptor, acceptor.sockets[0].getsockname()[1]
