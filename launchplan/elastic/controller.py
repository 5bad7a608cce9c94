"""The controller: keeps a run's elastic services as the store says they should be.

One controller acts on a run at a time: it holds the run's lease in the store, renewed every
tick. A tick is small and idempotent: collect finished actions, take up requests (`cei scale`,
`cei repair`, `cei terminate` asking it to stop), then for each elastic service judge health
from the heartbeats, replace what is lost, sample the metric, decide by the policy, and start
launches or retirements to reach the desired count. Everything it starts goes through the
level engine, so each new node's intent is recorded before its cloud call and its id at once;
a controller killed at any moment leaves nothing the next one cannot finish or roll back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from launchplan.dispatch.dispatcher import Dispatcher
from launchplan.elastic import health
from launchplan.elastic.actions import LAUNCH, REFRESH, RETIRE, Actions, Outcome
from launchplan.elastic.deciding import Decider
from launchplan.elastic.desired import SCALED, set_desired
from launchplan.elastic.heartbeats import Cadence, HeartbeatCollector
from launchplan.elastic.judging import Judge
from launchplan.errors import EXIT_OK, CeiError, RunLockedError, UsageError
from launchplan.levels import events as ev
from launchplan.levels import states
from launchplan.levels.health import check_nodes
from launchplan.levels.launch import DEFAULT_PARALLEL, reserve_nodes, service_views
from launchplan.levels.runtime import RunContext
from launchplan.levels.sessions import SessionPool
from launchplan.levels.teardown import STOP_REQUEST as STOP
from launchplan.plan import render_node
from launchplan.plan.elastic import NEED, ElasticSpec
from launchplan.plan.model import NodeSpec, Plan
from launchplan.providers import driver_capabilities
from launchplan.state import ElasticRecord, NodeRecord, RequestRecord
from launchplan.state.records import (
    NODE_LAUNCHING_STATES,
    PROCESS_ACTIVE_STATES,
    PROCESS_WAITING,
    REQUEST_DONE,
    REQUEST_FAILED,
)

SSH_WAIT = 10.0
LEASE_MIN_TTL = 30.0
BACKOFF_FIRST = 2.0  # seconds before the next launch after the first failure; doubles
BACKOFF_CAP = 600.0
HEARTBEAT_MAX_PERIOD = 5.0
CONTROLLER = "controller"  # the origin of the nodes a controller launches

SCALE = "scale"
REPAIR = "repair"


class LeaseLost(CeiError):
    """Another controller took the run's lease over (this one's expired while it hung)."""


class RunGone(CeiError):
    """The run is being terminated (or was): nothing is left to keep alive."""

    exit_code = EXIT_OK


@dataclass
class ServiceState:
    """One elastic service as a tick left it: what `cei watch` shows and `--once` judges."""

    service: str
    policy: str
    min: int
    desired: int
    max: int
    healthy: int = 0
    launching: int = 0
    retiring: int = 0
    unhealthy: list[str] = field(default_factory=list)
    sample: float | None = None
    reason: str = ""
    backoff: float | None = None  # seconds until launches may be tried again

    @property
    def settled(self) -> bool:
        return (self.healthy == self.desired and not self.launching and not self.retiring
                and not self.unhealthy and self.backoff is None)

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["settled"] = self.settled
        return doc


@dataclass
class TickReport:
    services: list[ServiceState]
    waiting: str | None = None  # why the tick did nothing (the launch still runs)

    @property
    def settled(self) -> bool:
        return self.waiting is None and all(s.settled for s in self.services)


def require_live(ctx: RunContext) -> None:
    """UsageError for a run that is (being) terminated: nothing of it is left to act on."""
    status = ctx.store.get_run(ctx.run).status
    if status in (states.RUN_TERMINATING, states.RUN_TERMINATED):
        raise UsageError(f"run {ctx.run} is {status}: it has no nodes left to keep alive or "
                         f"change (launch it again first)")


def cadence(spec: ElasticSpec) -> Cadence:
    """Heartbeats often enough to notice a missing node and to sample every period; the
    metrics program once a period."""
    beat = max(0.5, min(spec.period, spec.health.missing_timeout / 3, HEARTBEAT_MAX_PERIOD))
    return Cadence(heartbeat=beat, metrics=spec.period)


class Controller:
    """Acts on one run while its lease is held (use as a context manager)."""

    def __init__(self, ctx: RunContext, plan: Plan, *, interval: float = 2.0,
                 parallel: int = DEFAULT_PARALLEL, patience: float | None = None,
                 monitor: bool = True) -> None:
        require_live(ctx)
        self.ctx = ctx
        self.store = ctx.store
        self.run = ctx.run
        self.plan = plan
        self.interval = interval
        self.patience = patience  # see Judge
        # heartbeats are for a controller that stays; one that only carries out a scale or a
        # repair judges nodes by their cloud alone and spares them starting a monitor each
        self.monitor = monitor
        self.ttl = max(LEASE_MIN_TTL, 3 * interval)
        self.sessions = SessionPool(ctx, SSH_WAIT)
        self.monitors = HeartbeatCollector(ctx, self.sessions)
        self.judge = Judge(ctx, self.monitors, patience)
        self.decider = Decider(ctx, self.monitors)
        self.dispatcher = Dispatcher(ctx, sessions=self.sessions)
        self.actions = Actions(ctx, self.sessions, self.dispatcher, parallel)
        self.stop_requested = False
        self._held = False
        self._judged: dict[str, str] = {}  # node -> its last bad verdict (reported once)
        # services whose peers must hear of new members -> the refresh request that says so
        # (a request, so that a controller killed before telling them leaves it to the next)
        self._changed: dict[str, int] = {}
        self._refreshing: dict[str, list[int]] = {}  # refresh action label -> its requests
        self._requests: dict[int, dict[str, Any]] = {}  # request id -> its result so far
        self._last = TickReport([])

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Controller:
        self.store.acquire_lease(self.run, self.ttl)
        self._held = True
        try:
            self._recover()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:  # leaving on an error: cut what is in flight short
            self.interrupt()
        self.close()

    def close(self) -> None:
        """Let what is in flight finish (cut short after interrupt()), give the lease up."""
        self.actions.close()
        self.monitors.close()
        self.dispatcher.close()
        self.sessions.close()
        if self._held:
            self.store.release_lease(self.run)
            self._held = False

    def interrupt(self) -> None:
        """Stop starting work and cut what is in flight short (it records what it made)."""
        self.stop_requested = True
        self.ctx.interrupt()

    def settle(self, timeout: float) -> TickReport:
        """Tick until nothing is in flight (for --once and direct scale/repair)."""
        deadline = time.monotonic() + timeout
        report = self.tick()
        while len(self.actions) and time.monotonic() < deadline:
            self.actions.wait(min(self.interval, max(0.0, deadline - time.monotonic())))
            report = self.tick()
        return report

    def _recover(self) -> None:
        """Finish or roll back what a controller that died left half done."""
        for node in self.store.nodes(self.run):
            if node.state == states.RETIRING:
                self.actions.retire(node, drain=True, programs=True)
            elif node.state == states.TERMINATING:  # killed mid-teardown (of a live run)
                self.actions.retire(node, drain=False, programs=False)
            elif (node.state in NODE_LAUNCHING_STATES
                  and node.programs.get("origin") == CONTROLLER):
                self.ctx.emit(ev.ELASTIC_ACTION, node=node.node, action="rollback",
                              service=node.service,
                              message=f"rolling {node.node} back: its controller stopped while "
                                      f"it was {node.state}")
                self.actions.retire(node, drain=False, programs=False)

    # -- the tick -----------------------------------------------------------------------------

    def tick(self) -> TickReport:
        if not self.store.renew_lease(self.run, self.ttl):
            raise LeaseLost(f"another controller took run {self.run} over; this one stops")
        run = self.store.get_run(self.run)
        if run.status in (states.RUN_TERMINATING, states.RUN_TERMINATED):
            raise RunGone(f"run {self.run} is {run.status}")
        if run.status == states.RUN_LAUNCHING and self.store.lock_holder(self.run) is not None:
            return TickReport([], waiting=f"run {self.run} is still launching")
        for outcome in self.actions.harvest():
            self._finished(outcome)
        self._take_requests()
        if self.stop_requested:
            return self._last
        nodes = {n.node: n for n in self.store.nodes(self.run)}
        elastic = self.store.elastic_services(self.run)
        self._watch(nodes, elastic)
        specs = {r.service: ElasticSpec.from_dict(r.spec) for r in elastic}
        verdicts = self.judge.verdicts(nodes, specs, lambda n: self.actions.on(n) is not None)
        services = [self._service(record, nodes, verdicts) for record in elastic]
        self._dispatch(nodes)
        self._refresh()
        self.ctx.notify(ev.ELASTIC_STATE, services=[s.to_json() for s in services])
        self._last = TickReport(services)
        return self._last

    def _watch(self, nodes: Mapping[str, NodeRecord], elastic: list[ElasticRecord]) -> None:
        if not self.monitor:
            return
        watched = []
        for record in elastic:
            pace = cadence(ElasticSpec.from_dict(record.spec))
            watched += [(n, pace) for n in nodes.values()
                        if n.service == record.service and n.state == states.READY
                        and n.programs.get("env") and self.actions.on(n.node) is None]
        self.monitors.sync(watched)
        if self.patience is not None:
            self.monitors.wait_first(self.patience)

    def _service(self, record: ElasticRecord, nodes: Mapping[str, NodeRecord],
                 verdicts: Mapping[str, health.Verdict]) -> ServiceState:
        spec = replace(ElasticSpec.from_dict(record.spec), min=record.min, max=record.max)
        mine = [n for n in nodes.values() if n.service == record.service]
        launching = self.actions.of(record.service, LAUNCH)
        healthy: list[NodeRecord] = []
        unhealthy = []
        for node in mine:
            if self.actions.on(node.node) is not None:
                continue
            if node.state == states.FAILED:  # a launch that failed, a node found lost
                self.actions.retire(node, drain=False, programs=False)
                continue
            if node.state != states.READY:
                continue
            verdict = verdicts[node.node]
            if not verdict.bad:
                healthy.append(node)
            elif spec.health.replace:
                self._replace(node, verdict)
            else:
                unhealthy.append(node.node)
                self._report(node, verdict)
        live = len(healthy) + len(launching) + len(unhealthy)
        record, sample = self.decider.decide(record, spec, healthy, live)
        state = ServiceState(record.service, spec.policy, record.min, record.desired,
                             record.max, healthy=len(healthy), launching=len(launching),
                             retiring=len(self.actions.of(record.service, RETIRE)),
                             unhealthy=unhealthy, sample=sample,
                             reason=str(record.decision.get("reason", "")))
        if record.desired > live:
            state.backoff = self._grow(record, record.desired - live)
        elif record.desired < live and not launching:
            self._shrink(record, spec, healthy, live - record.desired)
        return state

    # -- health -------------------------------------------------------------------------------

    def _replace(self, node: NodeRecord, verdict: health.Verdict) -> None:
        why = f"{verdict.state}: {verdict.reason}"
        self.ctx.emit(ev.ELASTIC_HEALTH, node=node.node, state=verdict.state,
                      service=node.service, message=f"{node.node} {why}; replacing it")
        if node.programs.get("agent"):
            self.dispatcher.lose(node, why)
        else:
            self.store.update_node(self.run, node.node, state=states.FAILED, last_error=why)
            self.ctx.emit(ev.NODE_STATE, node=node.node, state=states.FAILED, message=why)
        self.actions.retire(node, drain=False, programs=verdict.state == health.UNHEALTHY)

    def _report(self, node: NodeRecord, verdict: health.Verdict) -> None:
        if self._judged.get(node.node) != verdict.state:
            self._judged[node.node] = verdict.state
            self.ctx.emit(ev.ELASTIC_HEALTH, node=node.node, state=verdict.state,
                          service=node.service,
                          message=f"{node.node} {verdict.state}: {verdict.reason} (not "
                                  "replaced: health.replace is false)")

    # -- acting -------------------------------------------------------------------------------

    def _grow(self, record: ElasticRecord, count: int) -> float | None:
        """Launch `count` new nodes; the seconds of backoff left when launches must wait."""
        if record.backoff_until is not None and time.time() < record.backoff_until:
            return record.backoff_until - time.time()
        try:
            specs = self._new_nodes(record.service, count, record.desired)
        except CeiError as exc:
            self._launch_failed(record.service, str(exc))
            return None
        for spec in specs:
            self.actions.launch(spec)
        self.ctx.emit(ev.ELASTIC_ACTION, service=record.service, action="launch",
                      nodes=[s.node for s in specs],
                      message=f"launching {', '.join(s.node for s in specs)} "
                              f"(desired {record.desired})")
        return None

    def _new_nodes(self, service: str, count: int, total: int) -> list[NodeSpec]:
        """Render and reserve `count` new nodes of `service`; indexes are never reused."""
        used = [n.index for n in self.store.nodes(self.run) if n.service == service]
        first = max(used, default=-1) + 1
        views = service_views(self.store, self.run)
        specs = [render_node(self.plan, service, self.run, views, first + i, total)
                 for i in range(count)]
        reserve_nodes(self.ctx, specs, origin=CONTROLLER)
        return specs

    def _shrink(self, record: ElasticRecord, spec: ElasticSpec, healthy: list[NodeRecord],
                count: int) -> None:
        busy = self._busy_nodes(record.service)
        if spec.policy == NEED:
            candidates = [n for n in healthy if n.node not in busy]
        else:
            candidates = list(healthy)
        if spec.retire == "oldest":
            candidates.sort(key=lambda n: n.index)
        elif spec.retire == "newest":
            candidates.sort(key=lambda n: -n.index)
        else:
            candidates.sort(key=lambda n: (busy.get(n.node, 0), -n.index))
        chosen = candidates[:count]
        if not chosen:
            return
        for node in chosen:
            self.store.update_node(self.run, node.node, state=states.RETIRING)
            self.ctx.emit(ev.NODE_STATE, node=node.node, state=states.RETIRING,
                          message=f"retiring (desired {record.desired})")
            self.actions.retire(node, drain=True, programs=True)
        self.ctx.emit(ev.ELASTIC_ACTION, service=record.service, action="retire",
                      nodes=[n.node for n in chosen],
                      message=f"retiring {', '.join(n.node for n in chosen)} "
                              f"(desired {record.desired}, {spec.retire})")

    def _busy_nodes(self, service: str) -> dict[str, int]:
        """Active processes per engine node of `service`."""
        busy: dict[str, int] = {}
        for process in self.store.processes(self.run):
            if process.engine == service and process.node and \
                    process.state in PROCESS_ACTIVE_STATES:
                busy[process.node] = busy.get(process.node, 0) + 1
        return busy

    def _finished(self, outcome: Outcome) -> None:
        if outcome.kind == REFRESH:
            for request in self._refreshing.pop(outcome.service, []):
                self._requests.pop(request, None)
                problems = [outcome.problem] if outcome.problem else []
                self.store.finish_request(request, REQUEST_FAILED if problems else REQUEST_DONE,
                                          {"problems": problems})
        elif outcome.kind == LAUNCH:
            if outcome.problem is None:
                self._mark_changed(outcome.service)
                if self.store.find_elastic(self.run, outcome.service) is not None:
                    self.store.update_elastic(self.run, outcome.service, failures=0,
                                              backoff_until=None)
            else:
                self._launch_failed(outcome.service, outcome.problem, outcome.node)
        elif outcome.kind == RETIRE:
            if outcome.problem is None:
                self._mark_changed(outcome.service)
            else:
                self.ctx.emit(ev.WARNING, node=outcome.node,
                              message=f"{outcome.node} may not be gone: {outcome.problem}")
        if outcome.request is not None and outcome.request in self._requests:
            result = self._requests[outcome.request]
            if outcome.problem is not None:
                result.setdefault("problems", []).append(f"{outcome.node}: {outcome.problem}")
            if outcome.request not in self.actions.requests():
                self._finish_request(outcome.request, result)

    def _launch_failed(self, service: str, problem: str, node: str | None = None) -> None:
        if self.stop_requested:  # cut short on purpose: not the cloud's fault
            return
        record = self.store.find_elastic(self.run, service)
        first_line = problem.splitlines()[0] if problem else "unknown error"
        if record is None:  # a repair of a service that is not elastic: no backoff to keep
            self.ctx.emit(ev.WARNING, node=node, message=f"launch failed: {first_line}")
            return
        failures = record.failures + 1
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (failures - 1))
        self.store.update_elastic(self.run, service, failures=failures,
                                  backoff_until=time.time() + delay)
        self.ctx.emit(ev.ELASTIC_BACKOFF, node=node, service=service, failures=failures,
                      retry_in=delay,
                      message=f"launch failed ({failures} in a row): {first_line}; "
                              f"next attempt in {delay:g}s")

    def _dispatch(self, nodes: Mapping[str, NodeRecord]) -> None:
        """Processes: take their states from the heartbeats, place the waiting ones."""
        engines = [n for n in nodes.values()
                   if n.programs.get("agent") and self.monitors.watched(n.node)]
        free = False
        for node in engines:
            last = self.monitors.heard(node.node).last
            agent = last.agent if last is not None else None
            if not agent:
                continue
            slots = agent.get("slots") or {}
            free = free or int(slots.get("used") or 0) < int(slots.get("total") or 0)
            try:
                self.dispatcher.absorb(node, list(agent.get("processes") or []))
            except RunLockedError:
                return  # a `cei process` command holds the run: next tick
        if engines and free and any(p.state == PROCESS_WAITING
                                    for p in self.store.processes(self.run)):
            try:
                self.dispatcher.place_waiting()
            except RunLockedError:
                return

    def _mark_changed(self, service: str) -> None:
        if service not in self._changed:
            request = self.store.add_request(self.run, REFRESH, service, {})
            self._requests[request.id] = {}
            self._changed[service] = request.id

    def _refresh(self) -> None:
        """Tell peers about new members once a service's launches and retirements settled."""
        settled = {s for s in self._changed
                   if not self.actions.of(s, LAUNCH) and not self.actions.of(s, RETIRE)}
        if settled and not self.actions.running(REFRESH):
            label = self.actions.refresh(self.plan, settled)
            self._refreshing[label] = [self._changed.pop(s) for s in sorted(settled)]

    # -- requests -----------------------------------------------------------------------------

    def _take_requests(self) -> None:
        for request in self.store.pending_requests(self.run):
            if request.id in self._requests:
                continue  # under way
            self.ctx.emit(ev.ELASTIC_REQUEST, state="taken", operation=request.kind,
                          target=request.target, request=request.id,
                          message=f"{request.kind} {request.target or ''}".strip())
            try:
                if request.kind == STOP:  # `cei terminate` waits for the lease
                    self.interrupt()
                    self._finish_request(request.id, {"stopped": True})
                elif request.kind == SCALE:
                    self._finish_request(request.id, self._scale(request))
                elif request.kind == REPAIR:
                    self._repair(request)
                elif request.kind == REFRESH:  # left by a controller that stopped before it
                    self._requests[request.id] = {}
                    self._changed.setdefault(str(request.target), request.id)
                else:
                    raise UsageError(f"unknown request {request.kind!r}")
            except CeiError as exc:
                self.store.finish_request(request.id, REQUEST_FAILED, {"error": str(exc)})
                self.ctx.emit(ev.ELASTIC_REQUEST, state=REQUEST_FAILED, operation=request.kind,
                              request=request.id, message=str(exc))

    def _finish_request(self, request_id: int, result: dict[str, Any]) -> None:
        self._requests.pop(request_id, None)
        state = REQUEST_FAILED if result.get("problems") else REQUEST_DONE
        self.store.finish_request(request_id, state, result)
        self.ctx.emit(ev.ELASTIC_REQUEST, state=state, request=request_id,
                      message="; ".join(result.get("problems", [])) or "done")

    def _scale(self, request: RequestRecord) -> dict[str, Any]:
        service = str(request.target)
        record, reason = set_desired(self.store, self.run, service, int(request.args["count"]),
                                     bool(request.args.get("force")))
        self.ctx.emit(ev.ELASTIC_DECISION, service=service, direction=SCALED,
                      desired=record.desired, message=reason)
        return {"service": service, "desired": record.desired}

    def _repair(self, request: RequestRecord) -> None:
        """cloudinit.d's repair: replace failed or lost nodes (a named node in any case)."""
        target = request.target
        nodes = [n for n in self.store.nodes(self.run)
                 if n.state not in (states.TERMINATED, states.TERMINATING, states.RETIRING)
                 and self.actions.on(n.node) is None]
        named = [n for n in nodes if n.node == target]
        broken: list[tuple[NodeRecord, str]] = [(n, "named by cei repair") for n in named]
        if not named:
            if target is not None and not any(n.service == target for n in nodes):
                raise UsageError(f"run {self.run} has no live node or service named {target!r}")
            chosen = [n for n in nodes if target is None or n.service == target]
            ready = [n for n in chosen if n.state == states.READY]
            checked = {h.node: h for h in check_nodes(self.ctx, ready)}
            broken = [(n, n.last_error or "failed") for n in chosen if n.state == states.FAILED]
            broken += [(n, checked[n.node].message) for n in ready
                       if not checked[n.node].healthy]
        result: dict[str, Any] = {"replaced": {}}
        for node, why in broken:
            result["replaced"][node.node] = self._replace_for_repair(node, why, request.id)
        if not broken:
            self._finish_request(request.id, {"replaced": {}, "message": "nothing to repair"})
            return
        self._requests[request.id] = result
        for node, _ in broken:
            self._mark_changed(node.service)

    def _replace_for_repair(self, node: NodeRecord, reason: str, request: int) -> str:
        """Start replacing one node; the name of its replacement."""
        views = service_views(self.store, self.run)
        count = sum(n.service == node.service and n.state == states.READY
                    for n in self.store.nodes(self.run))
        why = f"replaced by cei repair: {reason.splitlines()[0] if reason else node.state}"
        if node.programs.get("agent") and node.state == states.READY:
            self.dispatcher.lose(node, why)
        if not driver_capabilities(node.driver).creates_machines:
            # an existing host: the same machine, booted again under its own name
            spec = render_node(self.plan, node.service, self.run, views, node.index, count)
            reserve_nodes(self.ctx, [spec], origin=CONTROLLER)
        else:
            if node.state != states.FAILED:
                self.store.update_node(self.run, node.node, state=states.FAILED,
                                       last_error=why)
            self.actions.retire(node, drain=False, programs=False, request=request)
            spec = self._new_nodes(node.service, 1, count)[0]
        self.actions.launch(spec, request=request)
        self.ctx.emit(ev.ELASTIC_ACTION, node=node.node, service=node.service, action="repair",
                      nodes=[spec.node], message=f"repairing {node.node} with {spec.node}")
        return spec.node
