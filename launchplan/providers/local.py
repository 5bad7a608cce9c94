"""The local cloud: every node is a detached process on this machine serving SSH on loopback.

Layout: run_dir/nodes/<node with "/" -> "-">/ (0700) holds the node's request, user-data,
console log and status (see launchplan.providers.localnode). A node gets its own loopback
address 127.A.B.C, unique among the run's nodes (A from a hash of the run name, B.C from a
counter, nodes/.addresses.json), an OS-chosen port, and the hostname
"<service>-<index>.<run>.cei.local".

Options (the cloud profile): `port`, the port every node listens on (default 0: the OS picks a
free one; each node has its own address, so one fixed port serves them all).

resource_id is "<run>/<node>" (e.g. "demo/db/1"): stable, unique within the run, and enough to
find the node directory again from any later process.

A node is only ever signalled after an identity check: its PID is alive, its start time equals
the one recorded when it was spawned, and it works in its node's home/, so a recycled PID is
never killed. Nodes are forked by one pre-imported node factory per provider, so starting many
at once costs little CPU.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import launchplan
from launchplan.errors import ProviderError
from launchplan.providers.base import (
    ERROR,
    PENDING,
    RUNNING,
    TERMINATED,
    Capabilities,
    NodeInfo,
    NodeRequest,
    Provider,
)
from launchplan.providers.localnode.procinfo import (
    NODE_ROOT_ENV,
    PARENT_ENV,
    is_node_process,
    orphaned_factories,
    processes_with_env,
    read_json,
    write_json_atomic,
)

STOP_WAIT = 5.0  # seconds between SIGTERM and SIGKILL of a node
SPAWN_WAIT = 30.0  # seconds for the detaching first process to hand over
POLL = 0.05


def node_slug(node: str) -> str:
    """The node's directory name: "db/1" -> "db-1"."""
    slug = node.replace("/", "-")
    if not slug or slug.startswith(".") or "\0" in slug:
        raise ProviderError(f"local cloud: bad node name {node!r}")
    return slug


def node_hostname(run: str, service: str, node: str) -> str:
    index = node.rsplit("/", 1)[1] if "/" in node else "0"
    return f"{service}-{index}.{run}.cei.local"


# What node processes take from cei's environment: never the rest (cloud credentials, tokens,
# the user's secrets, cei's own: the state database's password, the key that seals run keys);
# their commands get a login-like environment of their own.
_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "PYTHONPATH"})


class _NodeFactory:
    """One pre-imported process that forks nodes (see launchplan.providers.localnode).

    It ends when its stdin closes: when this object is collected or the cei process exits,
    and at its next request once the cei process is gone. The nodes it made live on, detached.
    """

    def __init__(self, run_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("LC_")}
        package_root = str(Path(launchplan.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        # A local node is this machine: its `python3` is the one cei runs on, with cei's
        # libraries, whether or not the user activated cei's virtualenv.
        env["PATH"] = os.pathsep.join(
            p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p
        )
        env[PARENT_ENV] = str(os.getpid())
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = os.open(run_dir / "local-cloud.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "launchplan.providers.localnode"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                cwd=str(run_dir), text=True, bufsize=1, start_new_session=True,
            )
        finally:
            os.close(log)
        self._lock = threading.Lock()
        weakref.finalize(self, _stop_factory, self._proc)

    def spawn(self, node_dir: Path) -> None:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(f"{node_dir}\n")
                self._proc.stdin.flush()
                answer = self._proc.stdout.readline().strip()
            except OSError as exc:
                answer = f"error {exc}"
        if not answer.startswith("ok"):
            raise ProviderError(
                f"local cloud: node process failed to start ({answer or 'node factory gone'}); "
                f"see {node_dir / 'console.log'}"
            )


def _stop_factory(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        with suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(SPAWN_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


ADDRESSES = 254 * 256  # a run's addresses: 127.A.0.1 to 127.A.255.254
ADDRESS_COUNTER = ".addresses.json"  # in nodes/: how many addresses the run has handed out


def _first_octet(run: str) -> int:
    return zlib.crc32(run.encode()) % 254 + 1


def _address(run: str, number: int) -> str:
    return f"127.{_first_octet(run)}.{number // 254 % 256}.{number % 254 + 1}"


def _number(run: str, address: str) -> int | None:
    """Which of the run's addresses `address` is (the inverse of _address), if it is one."""
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts) \
            or parts[:2] != ["127", str(_first_octet(run))]:
        return None
    return int(parts[2]) * 254 + int(parts[3]) - 1


class LocalProvider(Provider):
    """Nodes as local processes; create/describe/destroy/find work from any later process."""

    driver = "local"
    CAPABILITIES = Capabilities(
        runs_cloud_init=False,  # a node applies its user-data before its SSH server answers
        port_per_node=True,  # each node's SSH server binds a port of its own choosing
        generated_login_key=True,  # a node knows no key of the user's
        on_this_machine=True,
        poll_interval=POLL,
    )

    def __init__(self, options: Any, run_dir: Path) -> None:
        super().__init__(options, run_dir)
        self.nodes_dir = run_dir / "nodes"
        self._factory: _NodeFactory | None = None
        self._orphans_awaited = False

    # -- files -------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise node-directory changes across threads and processes."""
        self.nodes_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.nodes_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _await_orphans(self) -> None:
        """Before this provider first looks for nodes: let each factory of the run whose cei
        process died (a SIGKILLed launch) end. It makes no node once it notices, but a node
        it had begun shows only once it has ended (within SPAWN_WAIT seconds)."""
        if self._orphans_awaited:
            return
        self._orphans_awaited = True
        run_dir = self.run_dir.resolve()
        deadline = time.monotonic() + SPAWN_WAIT
        while orphaned_factories(run_dir) and time.monotonic() < deadline:
            time.sleep(POLL)

    def _node_dir(self, resource_id: str) -> Path | None:
        self._await_orphans()
        run, sep, node = resource_id.partition("/")
        if not sep or not node:
            return None
        try:
            path = self.nodes_dir / node_slug(node)
        except ProviderError:
            return None
        request = read_json(path / "request.json")
        if request is None or request.get("run") != run or request.get("node") != node:
            return None
        return path

    def _allocate_address(self, run: str) -> str:
        """An address no node of the run has had (called under the lock): the next of the
        counter in nodes/.addresses.json, so that making the Nth node reads no other node's
        files. Without a readable counter (a run from before it), the run's node directories
        are read once, and the counter starts past every address they hold."""
        counter = self.nodes_dir / ADDRESS_COUNTER
        number = (read_json(counter) or {}).get("handed_out")
        if not isinstance(number, int):
            held = [_number(run, address) for address in self._addresses()]
            number = 1 + max((n for n in held if n is not None), default=-1)
        if number >= ADDRESSES:
            raise ProviderError(f"local cloud: run {run} has no loopback address left")
        write_json_atomic(counter, {"handed_out": number + 1})
        return _address(run, number)

    def _addresses(self) -> list[str]:
        """The addresses the node directories hold."""
        found = []
        for entry in self.nodes_dir.iterdir():
            request = read_json(entry / "request.json") if entry.is_dir() else None
            if request and request.get("address"):
                found.append(str(request["address"]))
        return found

    @staticmethod
    def _identity(path: Path) -> tuple[int | None, int | None]:
        """The node's PID and start time, from status.json or (before it exists) spawn.json."""
        for name in ("status.json", "spawn.json"):
            data = read_json(path / name)
            if data and data.get("pid"):
                return int(data["pid"]), data.get("starttime")
        return None, None

    def _alive(self, path: Path) -> int | None:
        """The node's PID if the process running is really this node, else None."""
        pid, started = self._identity(path)
        return pid if is_node_process(pid, started, path) else None

    # -- the interface -----------------------------------------------------------------------

    def create(self, request: NodeRequest) -> NodeInfo:
        """Start the node's process (or return the live one made with the same token)."""
        path = self.nodes_dir / node_slug(request.node)
        resource_id = f"{request.run}/{request.node}"
        with self._locked():
            old = read_json(path / "request.json")
            if old is not None and self._alive(path) is not None:
                if old.get("token") == request.token:
                    return self.describe(resource_id)
                raise ProviderError(
                    f"local cloud: node {request.node} of run {request.run} is already running "
                    f"with another token ({path})"
                )
            if old is not None and old.get("run") == request.run and old.get("address"):
                address = str(old["address"])
            else:
                address = self._allocate_address(request.run)
            hostname = node_hostname(request.run, request.service, request.node)
            for sub in ("", "home", "root"):
                (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)
            for stale in ("status.json", "spawn.json"):
                (path / stale).unlink(missing_ok=True)
            fd = os.open(path / "userdata", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(request.userdata or b"")
            write_json_atomic(
                path / "request.json",
                {
                    "run": request.run,
                    "service": request.service,
                    "node": request.node,
                    "token": request.token,
                    "tags": dict(request.tags),
                    "address": address,
                    "port": int(self.options.get("port", 0) or 0),
                    "hostname": hostname,
                },
            )
        self._spawn(path)
        return NodeInfo(
            resource_id=resource_id,
            state=PENDING,
            address=address,
            port=0,
            hostname=hostname,
            tags=dict(request.tags),
        )

    def _spawn(self, path: Path) -> None:
        if self._factory is None:
            self._factory = _NodeFactory(self.run_dir)
        self._factory.spawn(path)
        if read_json(path / "spawn.json") is None:
            raise ProviderError(
                f"local cloud: node process failed to start; see {path / 'console.log'}"
            )

    def describe(self, resource_id: str) -> NodeInfo:
        path = self._node_dir(resource_id)
        if path is None:
            return NodeInfo(resource_id=resource_id, state=TERMINATED)
        request = read_json(path / "request.json") or {}
        tags = dict(request.get("tags") or {})
        status = read_json(path / "status.json") or {}
        hostname = status.get("hostname") or request.get("hostname")
        address = status.get("address") or request.get("address")
        if self._alive(path) is None:
            return NodeInfo(resource_id, TERMINATED, hostname=hostname, tags=tags)
        state = status.get("state", "booting")
        port = int(status.get("port") or 0)
        if state == "running":
            return NodeInfo(resource_id, RUNNING, address, port, hostname, tags=tags)
        if state == "error":
            message = "; ".join(status.get("errors") or ["local node reported an error"])
            return NodeInfo(
                resource_id,
                ERROR,
                address,
                port,
                hostname,
                tags=tags,
                error=f"{message} (console: {path / 'console.log'})",
            )
        if state == "stopped":
            return NodeInfo(resource_id, TERMINATED, hostname=hostname, tags=tags)
        return NodeInfo(resource_id, PENDING, address, port, hostname, tags=tags)

    def destroy(self, resource_id: str) -> None:
        """SIGTERM the verified node, SIGKILL it and its commands after STOP_WAIT seconds."""
        path = self._node_dir(resource_id)
        if path is None:
            return
        pid = self._alive(path)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT
            while time.monotonic() < deadline and self._alive(path) is not None:
                time.sleep(POLL)
            if self._alive(path) is not None:  # its group is its own session's (setsid)
                with suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
        self._kill_leftovers(path)
        (path / "userdata").unlink(missing_ok=True)  # it holds the node's host private key
        status = read_json(path / "status.json")
        if status is not None and status.get("state") != "stopped":
            status["state"] = "stopped"
            write_json_atomic(path / "status.json", status)

    @staticmethod
    def _kill_leftovers(path: Path) -> None:
        """SIGKILL commands the node started that outlived it (they carry its root in env)."""
        root = str((path / "root").resolve())
        for _ in range(3):
            pids = processes_with_env(NODE_ROOT_ENV, root)
            if not pids:
                return
            for pid in pids:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(POLL)

    def console_output(self, resource_id: str) -> str | None:
        """The node's console.log: its boot prints the host key fingerprint block."""
        path = self._node_dir(resource_id)
        if path is None:
            return None
        try:
            return (path / "console.log").read_text(encoding="utf-8", errors="replace") or None
        except FileNotFoundError:
            return None

    def find(self, run: str) -> list[NodeInfo]:
        self._await_orphans()
        found: list[NodeInfo] = []
        if not self.nodes_dir.is_dir():
            return found
        for entry in sorted(self.nodes_dir.iterdir()):
            request = read_json(entry / "request.json") if entry.is_dir() else None
            if not request or request.get("run") != run:
                continue
            info = self.describe(f"{run}/{request.get('node')}")
            if info.state != TERMINATED:
                found.append(info)
        return found
