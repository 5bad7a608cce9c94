"""The node process: boot (apply user-data), serve SSH, stop cleanly on SIGTERM.

status.json is rewritten atomically at each change so the provider (in another process, maybe
much later) can tell booting, running, error and stopped apart. The node listens only once
user-data is applied; a failed command makes it `error` but it keeps serving SSH so a user can
look in.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from launchplan.providers.localnode import sshserver
from launchplan.providers.localnode.cloudinit import CloudInit
from launchplan.providers.localnode.commands import ProcessGroups
from launchplan.providers.localnode.procinfo import (
    NODE_ROOT_ENV,
    read_json,
    starttime,
    write_json_atomic,
)

BOOTING, RUNNING, ERROR, STOPPED = "booting", "running", "error", "stopped"


def say(line: str) -> None:
    """One line on the node's console (stdout is NODE_DIR/console.log)."""
    os.write(1, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))


class Node:
    def __init__(self, node_dir: Path) -> None:
        self.dir = node_dir.resolve()
        self.home = self.dir / "home"
        self.root = self.dir / "root"
        self.tmp = self.dir / "tmp"
        request = read_json(self.dir / "request.json") or {}
        self.address = str(request.get("address") or "127.0.0.1")
        self.hostname = str(request.get("hostname") or self.dir.name)
        self.port = int(request.get("port") or 0)
        self.bound_port: int | None = None
        self.state = BOOTING
        self.errors: list[str] = []
        self.fingerprints: list[str] = []
        self.public_keys: list[str] = []
        self.groups = ProcessGroups()
        self.acceptor: Any = None
        self._started = starttime(os.getpid())

    def write_status(self) -> None:
        write_json_atomic(
            self.dir / "status.json",
            {
                "pid": os.getpid(),
                "starttime": self._started,
                "address": self.address,
                "port": self.bound_port,
                "hostname": self.hostname,
                "state": self.state,
                "errors": self.errors,
                "host_key_fingerprints": self.fingerprints,
                "host_keys": self.public_keys,
                "updated": time.time(),
            },
        )

    def boot_env(self) -> dict[str, str]:
        user = pwd.getpwuid(os.getuid()).pw_name
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "USER": user,
            "LOGNAME": user,
            "LANG": "C.UTF-8",
            "SHELL": "/bin/sh",
            "TMPDIR": str(self.tmp),
            NODE_ROOT_ENV: str(self.root),
        }

    async def boot(self) -> None:
        """Apply user-data, then listen; any surprise becomes an error, not a dead node."""
        try:
            await self._boot()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            say(traceback.format_exc())
            self.errors.append(f"local node failed: {type(exc).__name__}: {exc}")
            self.state = ERROR
            self.write_status()

    async def _boot(self) -> None:
        say(f"cei local node {self.hostname} booting (pid {os.getpid()}, {self.dir})")
        try:
            data = (self.dir / "userdata").read_bytes()
        except FileNotFoundError:
            data = b""
        init = CloudInit(self.dir, self.boot_env(), self.groups, say)
        applied = await init.apply(data)
        self.errors.extend(applied.errors)
        keys = sshserver.load_host_keys(applied.host_keys, self.errors)
        if not keys:
            keys = [sshserver.generate_host_key()]
        self.fingerprints = [key.get_fingerprint("sha256") for key in keys]
        self.public_keys = [sshserver.public_line(key) for key in keys]
        say(sshserver.fingerprint_block(keys, self.hostname))
        authorized = sshserver.load_authorized_keys(applied.authorized_keys, self.errors)
        if authorized is None:
            say("cei local node: no ssh_authorized_keys given; nobody can log in")
        ctx = sshserver.ExecContext(self.home, self.root, self.tmp, self.groups)
        try:
            self.acceptor, self.bound_port = await sshserver.start_server(
                self.address, self.port, keys, authorized, ctx
            )
        except OSError as exc:
            self.errors.append(f"cannot listen on {self.address}:{self.port}: {exc}")
        self.state = ERROR if self.errors else RUNNING
        for error in self.errors:
            say(f"cei local node error: {error}")
        say(f"cei local node {self.hostname} {self.state}: ssh on {self.address}:{self.bound_port}")
        self.write_status()

    async def stop(self) -> None:
        say(f"cei local node {self.hostname} stopping")
        if self.acceptor is not None:
            self.acceptor.close()
        await self.groups.terminate_all()
        self.state = STOPPED
        self.write_status()
        say(f"cei local node {self.hostname} stopped")


async def _main(node_dir: Path) -> int:
    node = Node(node_dir)
    node.tmp.mkdir(mode=0o700, exist_ok=True)
    os.chdir(node.home)
    node.write_status()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    boot = asyncio.ensure_future(node.boot())
    await stop.wait()
    if not boot.done():
        boot.cancel()
        await asyncio.gather(boot, return_exceptions=True)
    await node.stop()
    return 0


def run_node(node_dir: Path) -> int:
    """Run the node until SIGTERM; exit status 0 after a clean stop."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return asyncio.run(_main(node_dir))
