"""Teardown: levels in reverse, terminate programs best effort, then destroy and sweep.

Every resource the run ever created is destroyed by its recorded id, then each cloud the run
used is swept by the run's tag, so that a node whose id never reached the store (cei killed
mid-create) is still found. Terminate programs never stop a destroy.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from launchplan.errors import (
    EXIT_OK,
    EXIT_TEARDOWN_INCOMPLETE,
    CeiError,
    Interrupted,
    RunLockedError,
)
from launchplan.levels import events as ev
from launchplan.levels import states
from launchplan.levels.agents import stop_agent
from launchplan.levels.launch import DEFAULT_PARALLEL
from launchplan.levels.leftovers import stop_leftovers
from launchplan.levels.nodelog import NodeLog, node_log_path
from launchplan.levels.programs import Stage, seen_through
from launchplan.levels.runtime import RunContext
from launchplan.levels.sites import Elsewhere, unreachable
from launchplan.plan.model import ProgramSpec
from launchplan.providers import driver_capabilities
from launchplan.providers.base import RUNNING, TERMINATED, Provider
from launchplan.remote.local import LocalSession
from launchplan.state import NodeRecord, ResourceRecord
from launchplan.state.records import (
    REQUEST_FAILED,
    RESOURCE_GONE_STATES,
    RESOURCE_INTENT,
    RESOURCE_NOT_CREATED,
)

TERMINATE_SSH_WAIT = 15.0  # a node that does not answer SSH soon is destroyed without it
CONTROLLER_STOP_WAIT = 120.0  # how long a running `cei watch` may take to stop for terminate
STOP_REQUEST = "stop"  # the request kind the controller takes as "give the run up"


@dataclass
class Remaining:
    node: str | None
    driver: str
    resource_id: str
    message: str


@dataclass
class TerminateResult:
    run: str
    status: str
    remaining: list[Remaining] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    destroyed: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_TEARDOWN_INCOMPLETE if self.remaining else EXIT_OK


class Terminator:
    def __init__(self, ctx: RunContext, parallel: int = DEFAULT_PARALLEL) -> None:
        self.ctx = ctx
        self.parallel = max(1, parallel)
        self.result = TerminateResult(ctx.run, states.RUN_TERMINATING)

    def terminate(self, programs: bool = True) -> TerminateResult:
        """Tear the run down; `programs=False` only destroys and sweeps (`cei clean`)."""
        ctx = self.ctx
        self._stop_controller()
        with ctx.store.locked(ctx.run):
            ctx.store.set_run_status(ctx.run, states.RUN_TERMINATING)
            ctx.emit(ev.RUN_STARTED, operation="terminate" if programs else "clean")
            resources = ctx.store.resources(ctx.run)
            by_node: dict[str | None, list[ResourceRecord]] = defaultdict(list)
            for res in resources:
                by_node[res.node].append(res)
            levels: dict[int, list[NodeRecord]] = defaultdict(list)
            for node in ctx.store.nodes(ctx.run):
                levels[node.level].append(node)
            with ctx.keeping_sessions(self.parallel):  # for the other services on a host
                for level in sorted(levels, reverse=True):
                    nodes = self._destroy_together(levels[level], by_node, programs)
                    with ThreadPoolExecutor(max_workers=max(1, min(self.parallel, len(nodes)))
                                            ) as pool:
                        self.result.destroyed += sum(pool.map(
                            lambda n: take_down(ctx, n, by_node.get(n.node, []), programs,
                                                self._warn), nodes))
                    if ctx.cancel.is_set():
                        self._interrupted()
            self._sweep(resources)
            self._verify()
            self.result.status = (states.RUN_TEARDOWN_INCOMPLETE if self.result.remaining
                                  else states.RUN_TERMINATED)
            ctx.store.set_run_status(ctx.run, self.result.status)
            ctx.emit(ev.RUN_FINISHED, state=self.result.status,
                     destroyed=self.result.destroyed,
                     remaining=[r.resource_id for r in self.result.remaining])
        return self.result

    def _interrupted(self) -> None:
        """Ctrl-C: stop here, leaving the nodes not yet taken down (and the run terminating)
        for the next `cei terminate`, and say which they are."""
        ctx = self.ctx
        left = [n.node for n in ctx.store.nodes(ctx.run) if n.state != states.TERMINATED]
        ctx.emit(ev.RUN_FINISHED, state="interrupted", destroyed=self.result.destroyed,
                 left=left)
        raise Interrupted(f"terminate of run {ctx.run} interrupted; not torn down yet: "
                          f"{', '.join(left) or 'nothing'}. Finish with: cei terminate {ctx.run}")

    def _stop_controller(self) -> None:
        """A controller (`cei watch`) acting on the run is asked to stop first, and waited
        for, so that no node it launches can appear after the teardown has looked."""
        store, run = self.ctx.store, self.ctx.run
        holder = store.lease_holder(run)
        if holder is None:
            return
        self.ctx.emit(ev.WARNING, message=f"asking the controller of run {run} (pid "
                                          f"{holder.pid} on host {holder.host}) to stop")
        request = store.add_request(run, STOP_REQUEST, None, {})
        deadline = time.monotonic() + CONTROLLER_STOP_WAIT
        while store.lease_holder(run) is not None:
            problem: CeiError | None = None
            if time.monotonic() >= deadline:
                problem = RunLockedError(
                    f"the controller of run {run} (pid {holder.pid} on host {holder.host}) "
                    f"did not stop within {CONTROLLER_STOP_WAIT:g}s; stop it, then terminate "
                    "again")
            elif self.ctx.cancel.wait(0.2):
                problem = Interrupted("interrupted while waiting for the controller to stop")
            if problem is not None:  # withdrawn, or the next controller would stop at once
                store.finish_request(request.id, REQUEST_FAILED, {"error": str(problem)})
                raise problem

    def _destroy_together(self, nodes: list[NodeRecord],
                          by_node: dict[str | None, list[ResourceRecord]],
                          programs: bool) -> list[NodeRecord]:
        """Destroy at once, one provider.destroy_many per cloud, the nodes of clouds that
        destroy many in one call (capabilities.batches) and that have nothing to run first
        (never contextualized, or `cei clean`). Returns the other nodes, for take_down."""
        ctx = self.ctx
        if ctx.cancel.is_set():
            return nodes
        rest: list[NodeRecord] = []
        together: dict[int, tuple[Provider, list[ResourceRecord]]] = {}
        taken: list[NodeRecord] = []
        for node in nodes:
            live = [r for r in by_node.get(node.node, [])
                    if r.resource_id is not None and r.state != TERMINATED]
            batching = [(r, p) for r in live if (p := _batching(ctx, r)) is not None]
            if not live or (programs and _contextualized(node)) or len(batching) < len(live):
                rest.append(node)
                continue
            taken.append(node)
            for res, provider in batching:
                together.setdefault(id(provider), (provider, []))[1].append(res)
        for node in taken:
            ctx.store.update_node(ctx.run, node.node, state=states.TERMINATING)
            ctx.emit(ev.NODE_STATE, node=node.node, state=states.TERMINATING)
        left: set[str | None] = set()
        for provider, resources in together.values():
            errors = provider.destroy_many([str(r.resource_id) for r in resources])
            for res in resources:
                error = errors.get(str(res.resource_id))
                if error is not None:
                    self._warn(res.node, f"destroy of {res.resource_id} failed: {error}")
                    left.add(res.node)
                    continue
                _destroyed(ctx, res.node, res.driver, str(res.resource_id))
                self.result.destroyed += 1
        for node in taken:
            if node.node not in left:
                ctx.store.update_node(ctx.run, node.node, state=states.TERMINATED)
                ctx.emit(ev.NODE_STATE, node=node.node, state=states.TERMINATED)
        return rest

    def _warn(self, node: str | None, message: str) -> None:
        self.result.warnings.append(f"{node}: {message}" if node else message)
        self.ctx.emit(ev.WARNING, node=node, message=message)

    def _destroy(self, node: str | None, driver: str, cloud: dict[str, Any],
                 resource_id: str) -> None:
        self.result.destroyed += destroy(self.ctx, node, driver, cloud, resource_id, self._warn)

    def _sweep(self, known: list[ResourceRecord]) -> None:
        """Find what the run's tag still marks, including nodes whose id was never stored."""
        ctx = self.ctx
        known_ids = {r.resource_id for r in known if r.resource_id}
        clouds: dict[str, tuple[str, dict[str, Any]]] = {}
        for res in known:
            clouds[res.driver + json.dumps(res.cloud, sort_keys=True)] = (res.driver, res.cloud)
        for key, (driver, cloud) in clouds.items():
            # intents cei committed but whose id never came back (killed mid-create)
            open_intents = {r.node: r for r in known if r.resource_id is None
                            and r.state == RESOURCE_INTENT
                            and r.driver + json.dumps(r.cloud, sort_keys=True) == key}
            try:
                found = ctx.provider(driver, cloud).find(ctx.run)
            except Elsewhere:
                continue  # its machine's to sweep; _verify reports what may remain
            except CeiError as exc:
                self._warn(None, f"could not search the {driver} cloud for the run's nodes: {exc}")
                continue
            for info in found:
                if info.state == TERMINATED or info.resource_id in known_ids:
                    continue
                node = info.tags.get("cei:node")
                intent = open_intents.pop(node, None) if node else None
                intent_id = intent.id if intent else ctx.store.record_intent(
                    ctx.run, node or "?", driver, cloud, "found-by-tag")
                ctx.store.record_resource_id(intent_id, info.resource_id)
                ctx.emit(ev.RESOURCE, node=node, state="found", driver=driver,
                         resource_id=info.resource_id)
                self._destroy(node, driver, cloud, info.resource_id)
            for intent in open_intents.values():  # the cloud has nothing for them
                ctx.store.set_intent_state(intent.id, RESOURCE_NOT_CREATED)

    def _verify(self) -> None:
        resources = self.ctx.store.resources(self.ctx.run)
        known = _states(self.ctx, resources)
        for res in resources:
            remaining = verify(self.ctx, res, known.get(str(res.resource_id)))
            if remaining is not None:
                self.result.remaining.append(remaining)

Warn = Callable[[str | None, str], None]


def take_down(ctx: RunContext, node: NodeRecord, resources: list[ResourceRecord],
              programs: bool, warn: Warn) -> int:
    """Stop one node: its agent and terminate program (best effort, when `programs`), then
    destroy every resource it has by id. Returns how many were destroyed.

    A node on another machine (a local node made elsewhere) is left as it is: verify()
    reports it as what may remain."""
    if node.state == states.TERMINATED and all(r.state == TERMINATED for r in resources):
        return 0
    if ctx.cancel.is_set():  # interrupted: the node stays as it is for the next teardown
        return 0
    if unreachable(node.driver, node.cloud, ctx.site) is not None:
        return 0
    ctx.store.update_node(ctx.run, node.node, state=states.TERMINATING)
    ctx.emit(ev.NODE_STATE, node=node.node, state=states.TERMINATING)
    if programs:
        try:
            _run_terminate_program(ctx, node, warn)
        except Interrupted:  # its terminate program runs again next time, then the destroy
            return 0
    gone = [destroy(ctx, res.node, res.driver, res.cloud, res.resource_id, warn)
            for res in resources if res.resource_id is not None and res.state != TERMINATED]
    if all(gone):
        ctx.store.update_node(ctx.run, node.node, state=states.TERMINATED)
        ctx.emit(ev.NODE_STATE, node=node.node, state=states.TERMINATED)
    return sum(gone)


def retire_node(ctx: RunContext, node: NodeRecord, warn: Warn, programs: bool = True
                ) -> list[Remaining]:
    """Take one node of a live run away for good and check that nothing of it is left.

    Besides what take_down does, a create whose id never came back (its process died
    mid-create) is looked for by the node's tag, and every resource is described once more.
    Returns what may remain (empty: the node is gone).
    """
    resources = [r for r in ctx.store.resources(ctx.run) if r.node == node.node]
    take_down(ctx, node, resources, programs, warn)
    for intent in resources:
        if intent.resource_id is not None or intent.state != RESOURCE_INTENT:
            continue
        try:
            found = [i for i in ctx.provider(intent.driver, intent.cloud).find(ctx.run)
                     if i.tags.get("cei:node") == node.node and i.state != TERMINATED]
        except CeiError as exc:
            warn(node.node, f"could not search the {intent.driver} cloud for it: {exc}")
            continue
        for info in found:
            ctx.store.record_resource_id(intent.id, info.resource_id)
            ctx.emit(ev.RESOURCE, node=node.node, state="found", driver=intent.driver,
                     resource_id=info.resource_id)
            destroy(ctx, node.node, intent.driver, intent.cloud, info.resource_id, warn)
        if not found:
            ctx.store.set_intent_state(intent.id, RESOURCE_NOT_CREATED)
    remaining = [r for r in (verify(ctx, res) for res in ctx.store.resources(ctx.run)
                             if res.node == node.node) if r is not None]
    if not remaining:
        ctx.store.update_node(ctx.run, node.node, state=states.TERMINATED)
    return remaining


def verify(ctx: RunContext, res: ResourceRecord, state: str | None = None) -> Remaining | None:
    """What the cloud says of a resource cei destroyed (its `state` when already asked):
    None when it is gone."""
    elsewhere = (unreachable(res.driver, res.cloud, ctx.site)
                 if res.state not in RESOURCE_GONE_STATES else None)
    if elsewhere is not None:
        return Remaining(res.node, res.driver, res.resource_id or f"(intent of {res.node})",
                         elsewhere)
    if res.resource_id is None:
        return None
    if state is None:
        try:
            state = ctx.provider(res.driver, res.cloud).describe(res.resource_id).state
        except CeiError as exc:
            state = f"unknown ({exc})"
    if state != TERMINATED:
        return Remaining(res.node, res.driver, res.resource_id, f"still {state}")
    if res.state != TERMINATED:
        ctx.store.set_resource_state(ctx.run, res.resource_id, TERMINATED)
    return None


def destroy(ctx: RunContext, node: str | None, driver: str, cloud: dict[str, Any],
            resource_id: str, warn: Warn) -> bool:
    """Destroy one resource by id and record it; False (warned) when the cloud refused."""
    try:
        ctx.provider(driver, cloud).destroy(resource_id)
    except CeiError as exc:
        warn(node, f"destroy of {resource_id} failed: {exc}")
        return False
    _destroyed(ctx, node, driver, resource_id)
    return True


def _destroyed(ctx: RunContext, node: str | None, driver: str, resource_id: str) -> None:
    ctx.store.set_resource_state(ctx.run, resource_id, TERMINATED)
    ctx.emit(ev.RESOURCE, node=node, state="destroyed", driver=driver, resource_id=resource_id)


def _batching(ctx: RunContext, res: ResourceRecord) -> Provider | None:
    """The resource's provider if it handles many nodes in one call, else None."""
    try:
        provider = ctx.provider(res.driver, res.cloud)
    except CeiError:  # destroy() says why, node by node
        return None
    return provider if provider.capabilities.batches else None


def _states(ctx: RunContext, resources: list[ResourceRecord]) -> dict[str, str]:
    """The states of the resources of clouds that describe many in one call, asked at once;
    verify() asks the others (and any a cloud could not answer for) one by one."""
    ids: dict[int, tuple[Provider, list[str]]] = {}
    for res in resources:
        provider = _batching(ctx, res) if res.resource_id is not None else None
        if provider is not None:
            ids.setdefault(id(provider), (provider, []))[1].append(str(res.resource_id))
    known: dict[str, str] = {}
    for provider, chunk in ids.values():
        try:
            known.update(provider.states(chunk))
        except CeiError:
            continue
    return known


def _run_terminate_program(ctx: RunContext, node: NodeRecord, warn: Warn) -> None:
    """Best effort: a failure is logged and warned about, and the destroy goes on."""
    spec = node.programs.get("terminate")
    env = node.programs.get("env")
    if not node.address or not env:  # never contextualized: nothing of cei's is there
        return
    if not _running(ctx, node):  # gone already: do not wait for its SSH to answer
        if spec:
            warn(node.node, "terminate program not run: the node no longer runs")
        return
    log = NodeLog(node_log_path(ctx.run_dir, node.node))
    try:
        session = ctx.open_host(node, retry_for=TERMINATE_SSH_WAIT)
    except CeiError as exc:
        if spec:
            warn(node.node, f"terminate program not run: {exc}")
        log.close()
        return
    worked = False
    try:
        if not isinstance(session, LocalSession):
            if problem := stop_agent(session, node.programs.get("agent")):
                warn(node.node, problem)
            # an existing host outlives the run: what a killed launch's program left runs on
            if not driver_capabilities(node.driver).creates_machines and not seen_through(env):
                stopped = stop_leftovers(session, env["CEI_STAGE"])
                if stopped:
                    log.note(f"stopped {stopped} process(es) that its programs left running")
        if spec:
            stage = Stage(session, env["CEI_STAGE"], env, log, cancel=ctx.cancel)
            result = stage.run_retried("terminate", ProgramSpec.from_dict(spec))
            if result.status != 0:
                tail = (result.stderr_tail or result.stdout_tail).strip()
                warn(node.node, f"terminate program exited with status {result.status}"
                                + (f": {tail}" if tail else ""))
        # leave nothing behind on hosts that outlive the run: the stage, then the service's
        # and the run's directories once no other node's stage is in them
        stage = env["CEI_STAGE"].rstrip("/")
        service_dir = posixpath.dirname(stage)
        session.run_argv(["rm", "-rf", stage], timeout=60)
        session.run_argv(["rmdir", service_dir, posixpath.dirname(service_dir)], timeout=60)
        worked = True
    except Interrupted:
        raise
    except CeiError as exc:
        warn(node.node, f"terminate program failed: {exc}")
    finally:
        ctx.release(node, session, worked)
        log.close()


def _contextualized(node: NodeRecord) -> bool:
    """Whether cei staged anything on the node, so _run_terminate_program has work there."""
    return bool(node.address and node.programs.get("env"))


def _running(ctx: RunContext, node: NodeRecord) -> bool:
    """Whether the cloud still runs the node (existing hosts always do)."""
    if not driver_capabilities(node.driver).creates_machines or node.resource_id is None:
        return True
    try:
        return ctx.provider(node.driver, node.cloud).describe(node.resource_id).state == RUNNING
    except CeiError:
        return True  # cannot tell: let SSH decide
