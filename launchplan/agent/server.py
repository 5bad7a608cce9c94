"""The agent daemon: a unix-socket JSON server over a Supervisor, and the client side.

Protocol: the client connects to HOME/agent.sock, sends one JSON object on one line
({"op": ..., ...}) and reads one JSON object on one line back: {"ok": true, ...} or
{"ok": false, "error": "..."}.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any

from launchplan.errors import AgentError

from . import VERSION
from .sensors import SensorReader
from .supervisor import Supervisor

log = logging.getLogger("cei-agent")

SOCKET_NAME = "agent.sock"
PID_NAME = "agent.pid"
LOG_NAME = "agent.log"
MAX_REQUEST = 1 << 20
TICK = 0.1
SENSOR_PERIOD = 1.0
READY_TIMEOUT = 20.0


class AgentUnavailable(Exception):
    """No agent answers on the home's socket."""


def _connect_path(path: str) -> tuple[str, str | None]:
    """Unix socket paths are limited to ~107 bytes: long ones are reached relative to cwd."""
    if len(path.encode()) < 100:
        return path, None
    return os.path.basename(path), os.path.dirname(path)


def request(home: str, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    """Send one request to the agent serving `home`; its response document."""
    path, chdir_to = _connect_path(os.path.join(os.path.abspath(home), SOCKET_NAME))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    cwd = os.getcwd() if chdir_to else None
    try:
        try:
            if chdir_to:
                os.chdir(chdir_to)
            sock.connect(path)
        except OSError as exc:
            raise AgentUnavailable(f"no agent at {home}: {exc.strerror or exc}") from exc
        finally:
            if cwd:
                os.chdir(cwd)
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise AgentUnavailable(f"the agent at {home} closed the connection without answering")
    result = json.loads(data)
    if not isinstance(result, dict):
        raise AgentUnavailable(f"the agent at {home} sent a malformed answer")
    return result


class Agent:
    """A Supervisor plus sensors, answering requests, with a background tick."""

    def __init__(self, home: str, slots: int) -> None:
        self.home = os.path.abspath(home)
        self.supervisor = Supervisor(self.home, slots)
        self.sensors = SensorReader()
        self.started = time.time()
        self.stopping = threading.Event()
        self._sensor_lock = threading.Lock()

    def handle(self, req: Any) -> dict[str, Any]:
        """Answer one request document."""
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return {"ok": False, "error": "a request is a JSON object with an op"}
        op = req["op"]
        sup = self.supervisor
        try:
            if op == "ping":
                return {"ok": True, **self.identity()}
            if op == "launch":
                return {"ok": True, "process": sup.launch(req.get("definition"))}
            if op == "list":
                return {"ok": True, "processes": sup.list(), "slots": sup.slot_report()}
            if op == "kill":
                return {"ok": True, "process": sup.kill(str(req.get("name")))}
            if op == "sensors":
                return {"ok": True, "sensors": self.read_sensors()}
            if op == "status":
                return {
                    "ok": True,
                    "agent": self.identity(),
                    "slots": sup.slot_report(),
                    "processes": sup.list(),
                    "sensors": self.read_sensors(),
                }
            if op == "stop":
                self.stopping.set()
                return {"ok": True, **self.identity()}
        except AgentError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def identity(self) -> dict[str, Any]:
        """Who is answering: pid, home, version, uptime."""
        return {
            "pid": os.getpid(),
            "home": self.home,
            "version": VERSION,
            "python": sys.version.split()[0],
            "started": self.started,
            "uptime": round(time.time() - self.started, 3),
        }

    def read_sensors(self) -> dict[str, Any]:
        """All sensors (serialised so concurrent requests share CPU samples sanely)."""
        with self._sensor_lock:
            return self.sensors.read()

    def run_ticks(self) -> None:
        """Supervise until stopping: reap, restart, and sample CPU once a second."""
        next_sample = 0.0
        while not self.stopping.wait(TICK):
            try:
                self.supervisor.tick()
                if time.monotonic() >= next_sample:
                    with self._sensor_lock:
                        self.sensors.sample()
                    next_sample = time.monotonic() + SENSOR_PERIOD
            except Exception:
                log.exception("supervision tick failed")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = 60.0

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            req = json.loads(line)
        except ValueError:
            resp: dict[str, Any] = {"ok": False, "error": "request is not one line of JSON"}
        else:
            try:
                resp = self.server.agent.handle(req)
            except Exception as exc:
                log.exception("request %r failed", req)
                resp = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(resp).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    # server_close() waits for handlers, so a `stop` request still gets its answer.
    daemon_threads = False
    block_on_close = True

    def __init__(self, path: str, agent: Agent) -> None:
        self.agent = agent
        super().__init__(path, _Handler)


def _daemonize(log_path: str) -> int:
    """Double fork; the original process waits for readiness and exits. Returns the ready fd."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        message = b""
        deadline = time.monotonic() + READY_TIMEOUT
        while not message.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], deadline - time.monotonic())
            if not ready:
                break
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            message += chunk
        text = message.decode(errors="replace").strip()
        if text.startswith("{"):
            print(text, flush=True)
            os._exit(0 if json.loads(text).get("ok") else 1)
        print(json.dumps({"ok": False, "error": text or "agent did not start; see " + log_path}))
        os._exit(1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o077)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    return write_fd


def _write_pid(path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def serve(home: str, slots: int, daemon: bool = False) -> int:
    """Run the agent until SIGTERM/SIGINT or a `stop` request; children keep running."""
    home = os.path.abspath(home)
    os.makedirs(home, mode=0o700, exist_ok=True)
    sock_path = os.path.join(home, SOCKET_NAME)
    log_path = os.path.join(home, LOG_NAME)
    try:
        pong = request(home, "ping", timeout=5.0)
    except (AgentUnavailable, OSError, ValueError):
        pong = None
    if pong is not None:
        print(json.dumps({"ok": False, "error": f"an agent already serves {home}", **pong}))
        return 1
    ready_fd = _daemonize(log_path) if daemon else None
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if not daemon:
        handlers.append(logging.FileHandler(log_path))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers
    )

    def tell(doc: dict[str, Any]) -> None:
        if ready_fd is not None:
            os.write(ready_fd, json.dumps(doc).encode() + b"\n")
            os.close(ready_fd)

    try:
        agent = Agent(home, slots)
        os.chdir(home)  # bind relative: the absolute path may be too long for AF_UNIX
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME)
        server = _Server(SOCKET_NAME, agent)
        os.chmod(SOCKET_NAME, 0o600)
    except Exception as exc:
        log.exception("agent failed to start")
        tell({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    _write_pid(os.path.join(home, PID_NAME))

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping (children keep running)", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True),
        threading.Thread(target=agent.run_ticks, daemon=True),
    ]
    for thread in threads:
        thread.start()
    log.info("agent %s serving %s with %d slots (pid %d)", VERSION, home, slots, os.getpid())
    tell({"ok": True, **agent.identity(), "slots": agent.supervisor.slot_report()})
    while not agent.stopping.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    threads[1].join(timeout=5)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)
    pid_path = os.path.join(home, PID_NAME)
    with contextlib.suppress(OSError), open(pid_path) as fh:
        if fh.read().strip() == str(os.getpid()):
            os.unlink(pid_path)
    log.info("agent stopped")
    return 0
