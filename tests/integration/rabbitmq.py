"""A real RabbitMQ broker on loopback for integration tests.

The broker runs as our own process group with its own epmd, node name, ports, data and logs in
a temporary directory, so it never touches a system broker and is killed by PID on teardown.
Use it from a test module with `amqp_url = rabbitmq.rabbitmq_url` (the fixture object), or call
`start_broker` directly (benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launchplan.demo.scripts import broker as demo_broker
from launchplan.demo.scripts.broker import private_broker
from tests.conftest import require

# The Debian wrapper re-runs the server through `su rabbitmq` when started as root, which drops
# our HOME and temporary directories; the script behind it runs as whoever starts it.
SERVER_WRAPPER, SERVER_SCRIPT = demo_broker.SERVER_WRAPPER, demo_broker.SERVER_SCRIPT
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return demo_broker.free_port("127.0.0.1")


@dataclass
class Broker:
    """A running broker: its AMQP URL, the processes to stop, and where its logs are."""

    url: str
    server: subprocess.Popen[bytes]
    epmd: subprocess.Popen[bytes]
    base: Path

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the broker's logs, for failure messages."""
        parts = []
        for path in [*sorted(self.base.glob("log/*")), self.base / "server.out"]:
            if path.is_file():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Kill the server's process group and our epmd by PID, and reap both."""
        for proc in (self.server, self.epmd):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.server, self.epmd):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Erlang children (erl_child_setup, inet_gethost) share the server's group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)


def _wait_amqp(url: str, broker_proc: subprocess.Popen[bytes], deadline: float) -> bool:
    from kombu import Connection

    while time.monotonic() < deadline:
        if broker_proc.poll() is not None:
            return False
        conn = Connection(url, connect_timeout=2)
        try:
            conn.connect()
            return True
        except Exception:
            time.sleep(0.5)
        finally:
            conn.release()
    return False


def start_broker(base: Path, timeout: float = START_TIMEOUT) -> Broker:
    """Start epmd and rabbitmq-server in `base`; return once AMQP answers or raise."""
    script = SERVER_SCRIPT if SERVER_SCRIPT.exists() else SERVER_WRAPPER
    epmd_bin = shutil.which("epmd") or "/usr/bin/epmd"
    epmd_port, amqp_port, dist_port = free_port(), free_port(), free_port()
    while len({epmd_port, amqp_port, dist_port}) < 3:
        dist_port = free_port()
    env = private_broker(base, "127.0.0.1", amqp_port, epmd_port, dist_port, "cei-test")
    epmd = subprocess.Popen(
        [epmd_bin, "-address", "127.0.0.1", "-port", str(epmd_port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with open(base / "server.out", "wb") as out:
        server = subprocess.Popen(
            [str(script)],
            env=env,
            cwd=str(base),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    broker = Broker(f"amqp://guest:guest@127.0.0.1:{amqp_port}//", server, epmd, base)
    if not _wait_amqp(broker.url, server, time.monotonic() + timeout):
        tail = broker.log_tail()
        broker.stop()
        raise RuntimeError(f"RabbitMQ did not answer on {broker.url} within {timeout:.0f}s\n{tail}")
    return broker


_lock = threading.Lock()
_shared: dict[str, object] = {"broker": None, "users": 0}


@pytest.fixture(scope="session")
def rabbitmq_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """amqp:// URL of a broker shared by every module that uses this fixture in the session."""
    require(SERVER_WRAPPER.exists(), f"{SERVER_WRAPPER} missing (apt-get install rabbitmq-server)")
    require(shutil.which("epmd"), "epmd (erlang) not installed")
    with _lock:
        if _shared["broker"] is None:
            _shared["broker"] = start_broker(tmp_path_factory.mktemp("rabbitmq"))
        _shared["users"] = int(str(_shared["users"])) + 1
        broker = _shared["broker"]
    assert isinstance(broker, Broker)
    try:
        yield broker.url
    finally:
        with _lock:
            _shared["users"] = int(str(_shared["users"])) - 1
            if _shared["users"] == 0:
                _shared["broker"] = None
                broker.stop()
