"""Health: each node's stored state, and (live) its ready program run once more."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from launchplan.errors import CeiError
from launchplan.levels import states
from launchplan.levels.launch import DEFAULT_PARALLEL
from launchplan.levels.nodelog import NodeLog, node_log_path
from launchplan.levels.programs import Stage
from launchplan.levels.runtime import RunContext
from launchplan.plan.model import ProgramSpec
from launchplan.providers.base import RUNNING
from launchplan.state import NodeRecord

STATUS_SSH_WAIT = 15.0


@dataclass
class NodeHealth:
    node: str
    service: str
    level: str
    state: str
    healthy: bool
    address: str | None
    resource_id: str | None
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_run(ctx: RunContext, live: bool = True,
              parallel: int = DEFAULT_PARALLEL) -> list[NodeHealth]:
    """Health of every node; live checks run in parallel and never change stored state."""
    nodes = ctx.store.nodes(ctx.run)
    if not live:
        return [_cached(n) for n in nodes]
    return check_nodes(ctx, nodes, parallel)


def check_nodes(ctx: RunContext, nodes: list[NodeRecord],
                parallel: int = DEFAULT_PARALLEL) -> list[NodeHealth]:
    """Live health of `nodes`: the cloud's word, then each ready node's ready program once."""
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(parallel, len(nodes))) as pool:
        return list(pool.map(lambda n: _live(ctx, n), nodes))


def _cached(node: NodeRecord, healthy: bool | None = None, message: str = "") -> NodeHealth:
    ok = node.state == states.READY if healthy is None else healthy
    return NodeHealth(
        node=node.node, service=node.service, level=node.level_name, state=node.state,
        healthy=ok, address=node.address, resource_id=node.resource_id,
        outputs=dict(node.outputs), message=message or (node.last_error or ""),
    )


def _live(ctx: RunContext, node: NodeRecord) -> NodeHealth:
    if node.state != states.READY:
        return _cached(node)
    if node.driver != "static" and node.resource_id:
        options = dict(node.cloud)
        try:
            info = ctx.provider(node.driver, options).describe(node.resource_id)
        except CeiError as exc:
            return _cached(node, False, f"cannot describe the node: {exc}")
        if info.state != RUNNING:
            return _cached(node, False, f"the cloud reports it {info.state}")
    ready = node.programs.get("ready")
    env = node.programs.get("env")
    if not ready or not env:
        return _cached(node, True)
    log = NodeLog(node_log_path(ctx.run_dir, node.node))
    try:
        session = ctx.open_host(node, retry_for=STATUS_SSH_WAIT)
        try:
            program = ProgramSpec.from_dict(ready)
            result = Stage(session, env["CEI_STAGE"], env, log).run("ready", program)
        finally:
            session.close()
    except CeiError as exc:
        return _cached(node, False, f"ready check could not run: {exc}")
    finally:
        log.close()
    if result.status == 0:
        return _cached(node, True)
    tail = (result.stderr_tail or result.stdout_tail).strip()
    return _cached(node, False, f"ready program exited with status {result.status}"
                   + (f": {tail}" if tail else ""))
