"""Health: each node's stored state (nodehealth.py), and live: its cloud's word and its ready
program run once more."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from launchplan.errors import CeiError
from launchplan.levels import states
from launchplan.levels.launch import DEFAULT_PARALLEL
from launchplan.levels.nodehealth import Check, NodeHealth, stored_health
from launchplan.levels.nodelog import NodeLog, node_log_path
from launchplan.levels.programs import PASSED, Stage
from launchplan.levels.runtime import RunContext
from launchplan.levels.sites import Elsewhere
from launchplan.plan.model import ProgramSpec
from launchplan.providers import driver_capabilities
from launchplan.providers.base import RUNNING
from launchplan.state import NodeRecord

STATUS_SSH_WAIT = 15.0


def check_run(ctx: RunContext, parallel: int = DEFAULT_PARALLEL) -> list[NodeHealth]:
    """Live health of every node (in parallel; never changes stored state). The stored
    health alone is nodehealth.stored_health's."""
    return check_nodes(ctx, ctx.store.nodes(ctx.run), parallel)


def check_nodes(ctx: RunContext, nodes: list[NodeRecord],
                parallel: int = DEFAULT_PARALLEL) -> list[NodeHealth]:
    """Live health of `nodes`: the cloud's word, then each ready node's ready program once."""
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(parallel, len(nodes))) as pool:
        return list(pool.map(lambda n: _live(ctx, n), nodes))


def _live(ctx: RunContext, node: NodeRecord) -> NodeHealth:
    if node.state != states.READY:
        return stored_health(node)
    checks: list[Check] = []
    if driver_capabilities(node.driver).creates_machines and node.resource_id:
        started = time.monotonic()
        options = dict(node.cloud)
        try:
            state = ctx.provider(node.driver, options).describe(node.resource_id).state
            problem = "" if state == RUNNING else f"the cloud reports it {state}"
        except Elsewhere as exc:
            problem = str(exc)
        except CeiError as exc:
            problem = f"cannot describe the node: {exc}"
        checks.append(Check("cloud", not problem, time.monotonic() - started, problem))
        if problem:
            return stored_health(node, False, problem, checks)
    ready = node.programs.get("ready")
    env = node.programs.get("env")
    if not ready or not env:
        return stored_health(node, True, checks=checks)
    log = NodeLog(node_log_path(ctx.run_dir, node.node))
    started = time.monotonic()
    try:
        session = ctx.open_host(node, retry_for=STATUS_SSH_WAIT)
        try:
            program = ProgramSpec.from_dict(ready)
            run = Stage(session, env["CEI_STAGE"], env, log).check("ready", program)
        finally:
            session.close()
    except CeiError as exc:
        problem = f"ready check could not run: {exc}"
        checks.append(Check("ready", False, time.monotonic() - started, problem))
        return stored_health(node, False, problem, checks)
    finally:
        log.close()
    checks.append(Check("ready", run.outcome == PASSED, run.duration, run.message, run.status,
                        run.stderr_tail, run.stdout_tail))
    if run.outcome == PASSED:
        return stored_health(node, True, checks=checks)
    tail = (run.stderr_tail or run.stdout_tail).strip()
    return stored_health(node, False, run.message + (f": {tail}" if tail else ""), checks)
