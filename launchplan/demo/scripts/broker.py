#!/usr/bin/env python3
"""The sliding-window demo's broker service: RabbitMQ when asked for, else nothing.

    broker.py boot KIND     KIND "rabbitmq": start a broker, write {"transport": URL}
                            any other KIND: write {"transport": ""} (the demo then uses
                            --transport or the embedded transport)
    broker.py ready         exit 0 when the broker (if any) answers AMQP
    broker.py terminate     stop the broker by the pids boot recorded

On the local cloud (CEI_NODE_ROOT is set) the machine's rabbitmq-server runs as this user with
its own epmd, node name, ports, data and logs under the stage directory, listening on the
node's own loopback address. On a VM, boot installs rabbitmq-server with apt-get when missing,
lets systemd run it, and adds a user `cei` with a random password (RabbitMQ's `guest` may only
connect from the broker's own host).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STAGE = Path(os.environ.get("CEI_STAGE", "."))
STATE = STAGE / "broker.json"
START_TIMEOUT = 90.0
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
SERVER_WRAPPER = Path("/usr/sbin/rabbitmq-server")
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def my_address() -> str:
    """This node's address, from the context document cei wrote."""
    context = json.loads(Path(os.environ["CEI_CONTEXT"]).read_text())
    for node in context.get("nodes", []):
        if node.get("node") == os.environ.get("CEI_NODE") and node.get("address"):
            return str(node["address"])
    return "127.0.0.1"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def answers_amqp(host: str, port: int) -> bool:
    """True when the port speaks AMQP 0-9-1 (the server answers our header with a frame)."""
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(AMQP_HEADER)
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def write_output(doc: dict[str, object]) -> None:
    Path(os.environ["CEI_OUTPUT"]).write_text(json.dumps(doc) + "\n")


def private_broker(base: Path, address: str, amqp_port: int, epmd_port: int, dist_port: int,
                   name: str) -> dict[str, str]:
    """Lay out a rabbitmq-server of its own in `base` (config, data, logs) and return the
    environment that runs it and its epmd there: its own ports, node name NAME-RANDOM, and
    AMQP on address:amqp_port. The test suite's brokers are laid out the same way."""
    for sub in ("home", "mnesia", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {address}:{amqp_port}\n"
        "disk_free_limit.absolute = 1MB\n"
        "vm_memory_high_watermark.relative = 0.9\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text("")
    env = dict(os.environ)
    env.update(
        HOME=str(base / "home"),
        ERL_EPMD_ADDRESS="127.0.0.1",
        ERL_EPMD_PORT=str(epmd_port),
        RABBITMQ_NODENAME=f"{name}-{secrets.token_hex(4)}@localhost",
        RABBITMQ_NODE_IP_ADDRESS=address,
        RABBITMQ_NODE_PORT=str(amqp_port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
        RABBITMQ_LOG_BASE=str(base / "log"),
        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
        RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
        RABBITMQ_PLUGINS_EXPAND_DIR=str(base / "plugins-expand"),
        RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
    )
    return env


def start_local(address: str) -> dict[str, object]:
    """A private rabbitmq-server on this node's loopback address."""
    script = SERVER_SCRIPT if SERVER_SCRIPT.exists() else SERVER_WRAPPER
    epmd_bin = shutil.which("epmd") or "/usr/bin/epmd"
    if not script.exists():
        sys.exit(f"rabbitmq-server is not installed ({SERVER_WRAPPER}): "
                 "apt-get install rabbitmq-server")
    base = STAGE / "rabbitmq"
    amqp_port = free_port(address)
    epmd_port, dist_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    while dist_port == epmd_port:
        dist_port = free_port("127.0.0.1")
    env = private_broker(base, address, amqp_port, epmd_port, dist_port, "cei")
    pids = []
    with open(base / "epmd.out", "ab") as out:
        pids.append(subprocess.Popen(
            [epmd_bin, "-address", "127.0.0.1", "-port", str(epmd_port)], env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True).pid)
    with open(base / "server.out", "ab") as out:
        pids.append(subprocess.Popen(
            [str(script)], env=env, cwd=str(base), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True).pid)
    state = {"host": address, "port": amqp_port, "pids": pids,
             "url": f"amqp://guest:guest@{address}:{amqp_port}//"}
    STATE.write_text(json.dumps(state) + "\n")
    return state


def start_vm(address: str) -> dict[str, object]:
    """The distribution's rabbitmq-server under systemd, with a user for remote clients."""
    if not SERVER_WRAPPER.exists():
        subprocess.run(["sudo", "-n", "apt-get", "update", "-q"], check=True)
        subprocess.run(["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get",
                        "install", "-y", "-q", "rabbitmq-server"], check=True)
    subprocess.run(["sudo", "-n", "systemctl", "enable", "--now", "rabbitmq-server"], check=True)
    password = secrets.token_urlsafe(18)
    ctl = ["sudo", "-n", "rabbitmqctl"]
    subprocess.run([*ctl, "await_startup"], check=True, timeout=START_TIMEOUT)
    subprocess.run([*ctl, "delete_user", "cei"], capture_output=True)
    subprocess.run([*ctl, "add_user", "cei", password], check=True, capture_output=True)
    subprocess.run([*ctl, "set_permissions", "-p", "/", "cei", ".*", ".*", ".*"], check=True)
    state = {"host": address, "port": 5672, "pids": [],
             "url": f"amqp://cei:{password}@{address}:5672//"}
    fd = os.open(STATE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(state) + "\n")
    return state


def boot(kind: str) -> int:
    if kind != "rabbitmq":
        STATE.write_text(json.dumps({"url": ""}) + "\n")
        write_output({"transport": ""})
        return 0
    address = my_address()
    local = bool(os.environ.get("CEI_NODE_ROOT"))
    state = start_local(address) if local else start_vm(address)
    deadline = time.monotonic() + START_TIMEOUT
    while not answers_amqp(str(state["host"]), int(str(state["port"]))):
        if time.monotonic() > deadline:
            sys.exit(f"RabbitMQ did not answer on {state['host']}:{state['port']} "
                     f"within {START_TIMEOUT:.0f}s (logs in {STAGE / 'rabbitmq'})")
        time.sleep(0.5)
    write_output({"transport": state["url"]})
    print(f"RabbitMQ answers on {state['host']}:{state['port']}")
    return 0


def ready() -> int:
    state = json.loads(STATE.read_text())
    if not state.get("url"):
        return 0
    return 0 if answers_amqp(str(state["host"]), int(state["port"])) else 1


def _ours(pid: int) -> bool:
    """Only signal a pid that still runs something of this broker (not a recycled pid)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return str(STAGE / "rabbitmq").encode() in environ


def terminate() -> int:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [pid for pid in state.get("pids", []) if _ours(pid)]
        for pid in live:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + 15.0
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if _ours(pid) and _running(pid)]
            time.sleep(0.2)
        if not live:
            break
    return 0


def _running(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] not in ("Z", "X")


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    if argv[0] == "boot":
        return boot(argv[1] if len(argv) > 1 else "none")
    if argv[0] == "ready":
        return ready()
    if argv[0] == "terminate":
        return terminate()
    sys.exit(f"unknown command {argv[0]!r}\n{__doc__}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
