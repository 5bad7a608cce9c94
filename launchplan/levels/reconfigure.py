"""Telling running nodes that their peers changed: context, config, reconfigure program.

When nodes of a service come or go after launch (replaced, added, retired), every ready node of
that service's level and of later levels gets the context document again (the nodes known
now), its config rendered again from the current outputs and addresses of earlier levels, and
then its `reconfigure` program, with CEI_CHANGED naming the services that changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

from launchplan.ctx.environment import LevelContext
from launchplan.errors import CeiError
from launchplan.levels import events as ev
from launchplan.levels import states
from launchplan.levels.launch import known_nodes, service_views
from launchplan.levels.nodelog import NodeLog, node_log_path
from launchplan.levels.programs import Stage
from launchplan.levels.runtime import RunContext
from launchplan.levels.sessions import SessionPool
from launchplan.plan import render_node
from launchplan.plan.model import Plan, ProgramSpec
from launchplan.state import NodeRecord

RECONFIGURE = "reconfigure"


def refresh_peers(ctx: RunContext, plan: Plan, changed: Collection[str], sessions: SessionPool,
                  parallel: int) -> list[str]:
    """Refresh every ready node that can see `changed` services; the problems (warned too)."""
    nodes = ctx.store.nodes(ctx.run)
    levels = [n.level for n in nodes if n.service in changed]
    if not levels:
        return []
    first = min(levels)
    targets = [n for n in nodes if n.state == states.READY and n.level >= first
               and n.programs.get("env")]
    if not targets:
        return []
    views = service_views(ctx.store, ctx.run)
    context = LevelContext(ctx.run, known_nodes(ctx.store, ctx.run)).document()
    counts = Counter(n.service for n in nodes if n.state == states.READY)
    label = ",".join(sorted(changed))

    def one(node: NodeRecord) -> str | None:
        log = NodeLog(node_log_path(ctx.run_dir, node.node))
        try:
            spec = render_node(plan, node.service, ctx.run, views, node.index,
                               counts[node.service])
            env = node.programs["env"]
            stage = Stage(sessions.get(node), env["CEI_STAGE"], env, log, cancel=ctx.cancel)
            stage.prepare(spec.config, context)
            program = node.programs.get(RECONFIGURE)
            if program:
                result = stage.run(RECONFIGURE, ProgramSpec.from_dict(program),
                                   extra_env={"CEI_CHANGED": label})
                if result.status != 0:
                    tail = (result.stderr_tail or result.stdout_tail).strip()
                    return (f"reconfigure program exited with status {result.status}"
                            + (f": {tail}" if tail else ""))
                ctx.emit(ev.NODE_PROGRAM, node=node.node, program=RECONFIGURE, status=0,
                         changed=sorted(changed))
            else:
                stage.flush()
            return None
        except CeiError as exc:
            sessions.forget(node.node)
            return f"could not tell it about {label}: {exc}"
        finally:
            log.close()

    with ThreadPoolExecutor(max_workers=min(max(1, parallel), len(targets))) as pool:
        outcomes = list(pool.map(one, targets))
    problems = []
    for node, problem in zip(targets, outcomes, strict=True):
        if problem is not None:
            problems.append(f"{node.node}: {problem}")
            ctx.emit(ev.WARNING, node=node.node, message=problem)
    return problems
