"""The execution-engine agent on a node: ship the zipapp, start it, talk to it, stop it.

Part of the level engine: it runs while a node is contextualized and torn down; the
dispatcher (launchplan.dispatch) talks to agents through it.

Everything goes over one SSH session: the agent's client commands (`python3 cei-agent.pyz
OP --home HOME`) print one JSON document, which `call` parses. The agent lives in the node's
stage directory (STAGE/cei-agent.pyz, STAGE/agent/), so it goes away with the stage on hosts
that outlive the run, and with the node on clouds.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchplan.errors import AgentDown, AgentError, CeiError, RemoteError
from launchplan.plan.model import NodeSpec
from launchplan.remote import shell_command

if TYPE_CHECKING:
    from launchplan.remote import Session

PYZ_NAME = "cei-agent.pyz"
HOME_NAME = "agent"
PYTHON = "python3"
CALL_TIMEOUT = 60.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

_build_lock = threading.Lock()


def _source_digest() -> str:
    """A digest of the agent's sources: the cached zipapp is rebuilt when they change."""
    from launchplan.agent import build

    digest = hashlib.sha256()
    for path in sorted(Path(build.__file__).resolve().parent.glob("*.py")):
        if path.name not in build.EXCLUDE:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def agent_zipapp(run_dir: Path) -> Path:
    """The run's agent zipapp, RUN_DIR/cei-agent.pyz, built once and reused while current."""
    from launchplan.agent.build import build_zipapp

    dest = Path(run_dir) / PYZ_NAME
    stamp = dest.with_name(PYZ_NAME + ".sha256")
    digest = _source_digest()
    with _build_lock:
        if dest.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
            return dest
        tmp = dest.with_name(f".{PYZ_NAME}.tmp")
        build_zipapp(tmp)
        tmp.replace(dest)
        stamp.write_text(digest + "\n")
    return dest


def command(agent: Mapping[str, Any], op: str, *args: str) -> str:
    """The shell line that runs one agent client command on the node."""
    argv = [str(agent.get("python") or PYTHON), str(agent["pyz"]), op, "--home",
            str(agent["home"]), *args]
    return shell_command(argv)


def call(session: Session, agent: Mapping[str, Any], op: str, *args: str,
         timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """Run one client command and return its JSON answer; AgentError if it says not ok."""
    stdout = bytearray()  # the whole answer: CommandResult keeps only a tail

    def collect(stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            stdout.extend(chunk)

    result = session.run(command(agent, op, *args), timeout=timeout, on_output=collect)
    try:
        doc = json.loads(stdout.decode("utf-8", "replace"))
    except ValueError:
        tail = (result.stderr_tail or result.stdout_tail).strip()
        raise RemoteError(
            f"the agent's `{op}` exited {result.status} without a JSON answer"
            + (f": {tail[-500:]}" if tail else "")
        ) from None
    if not isinstance(doc, dict):
        raise RemoteError(f"the agent's `{op}` answered with a {type(doc).__name__}")
    if not doc.get("ok"):
        error = str(doc.get("error") or f"the agent refused `{op}`")
        raise (AgentDown if doc.get("down") else AgentError)(error)
    return doc


def start_agent(session: Session, agent: Mapping[str, Any]) -> dict[str, Any]:
    """Start the agent daemon of `agent` (its zipapp already on the node); its ping answer.

    An agent already serving the home is fine: a restarted agent re-adopts the processes
    that outlived its predecessor, so this also revives an agent that died.
    """
    result = session.run(command(agent, "serve", "--slots", str(agent["slots"]), "--daemon"),
                         timeout=START_TIMEOUT)
    try:
        started = json.loads(result.stdout_tail.strip().splitlines()[-1])
    except (ValueError, IndexError):
        started = {}
    if not started.get("ok") and "already serves" not in str(started.get("error")):
        tail = str(started.get("error") or result.stderr_tail or result.stdout_tail).strip()
        raise AgentError(f"the agent did not start (status {result.status}): {tail[-800:]}")
    return call(session, agent, "ping")


def install_agent(session: Session, stage_path: str, spec: NodeSpec,
                  run_dir: Path) -> dict[str, Any] | None:
    """Ship and start the agent if the node's service declares one; what the store keeps.

    Returns None for services without `agent`, else {"home", "pyz", "python", "slots", "pid",
    "version"}. Starting again on a node whose agent already serves the same home (a repeated
    contextualization) finds the running agent instead of failing.
    """
    if spec.agent is None:
        return None
    slots = int(spec.agent.get("slots", 4))
    pyz = posixpath.join(stage_path, PYZ_NAME)
    info: dict[str, Any] = {
        "home": posixpath.join(stage_path, HOME_NAME),
        "pyz": pyz,
        "python": PYTHON,
        "slots": slots,
    }
    session.upload(agent_zipapp(run_dir), pyz, 0o700)
    pong = start_agent(session, info)
    info.update(pid=pong.get("pid"), version=pong.get("version"))
    return info


def stop_agent(session: Session, agent: Mapping[str, Any] | None) -> str | None:
    """Stop the agent gracefully: kill its active processes, then the agent itself.

    Best effort, for teardown: returns a problem to warn about, or None.
    """
    if not agent:
        return None
    try:
        listing = call(session, agent, "list", timeout=STOP_TIMEOUT)
        for proc in _active(listing.get("processes", ())):
            call(session, agent, "kill", str(proc["name"]), timeout=STOP_TIMEOUT)
        call(session, agent, "stop", timeout=STOP_TIMEOUT)
    except CeiError as exc:
        return f"the agent was not stopped cleanly: {exc}"
    return None


def _active(processes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in processes if p.get("state") in ("pending", "running")]
