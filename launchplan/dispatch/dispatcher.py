"""The process dispatcher: places processes on engine agents, watches them, reschedules them.

Engine nodes are the run's nodes whose service declares `agent`. The store keeps one record per
process (definition, node, state, pid, restarts, round); the agents keep the truth about what
runs, and `reconcile` brings the records in line with it:

- each engine node still believed alive is checked: the cloud must report it running, SSH must
  answer, and its agent must answer `list` (an agent that died on a live node is started again;
  it re-adopts the processes that outlived it);
- a node that fails those checks is lost: it is marked failed in the store and each of its
  active processes is rescheduled by its restart policy: `never` -> failed; `always` and
  `abnormal` -> placed on another engine node with a free slot, round + 1 (or `waiting` until
  one has a free slot);
- on a live node, each record takes the agent's state, pid, exit code and restart count.

Placement asks every live engine node of the service for its `status` and picks the least
loaded one with a free slot (fewest used slots relative to its total, then CPU).
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from launchplan.dispatch.definition import QUEUE, check_definition, for_agent
from launchplan.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    AgentDown,
    AgentError,
    CeiError,
    UsageError,
)
from launchplan.levels import agents, states
from launchplan.levels import events as ev
from launchplan.levels.runtime import RunContext
from launchplan.levels.sessions import SessionPool
from launchplan.providers import driver_capabilities
from launchplan.providers.base import RUNNING
from launchplan.state import NodeRecord, ProcessRecord
from launchplan.state.records import (
    PROCESS_ACTIVE_STATES,
    PROCESS_EXITED,
    PROCESS_FAILED,
    PROCESS_RUNNING,
    PROCESS_STATES,
    PROCESS_TERMINATED,
    PROCESS_WAITING,
)

SSH_WAIT = 10.0  # how long a node's SSH may take to answer before the node counts as lost
LOCK_WAIT = 30.0  # how long to wait for the run lock another command (or cei watch) holds
WAIT_INTERVAL = 0.5
PROCESS_EVENT = "process"  # history entries of placements, reschedules and kills


class NodeLost(CeiError):
    """An engine node that no longer answers (the cloud, SSH, or its agent)."""


class NoFreeSlot(CeiError):
    """No live engine node of the service has a free slot for the process."""


@dataclass
class ProcessView:
    """A process as `cei process list` shows it: the record plus what its agent said."""

    record: ProcessRecord
    stderr_tail: str = ""

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "name": r.name,
            "state": r.state,
            "engine": r.engine,
            "node": r.node,
            "pid": r.pid,
            "exit_code": r.exit_code,
            "restarts": r.restarts,
            "round": r.round,
            "restart": r.definition.get("restart", "abnormal"),
            "last_error": r.last_error,
            "stderr_tail": self.stderr_tail,
            "updated": r.updated,
        }


@dataclass
class ReconcileReport:
    """What one reconcile found and did."""

    lost: dict[str, str]  # node -> why
    rescheduled: list[dict[str, Any]]  # {"process", "from", "to" (None: waiting), "round"}
    failed: list[str]  # processes not rescheduled (restart never)

    def to_json(self) -> dict[str, Any]:
        return {"lost": self.lost, "rescheduled": self.rescheduled, "failed": self.failed}


class Dispatcher:
    """Dispatch for one run; holds SSH sessions to engine nodes until `close`."""

    def __init__(self, ctx: RunContext, ssh_wait: float = SSH_WAIT,
                 sessions: SessionPool | None = None) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.run = ctx.run
        self._own_sessions = sessions is None
        self.sessions = sessions or SessionPool(ctx, ssh_wait)
        self._tails: dict[str, str] = {}
        run = self.store.get_run(self.run)
        if run.status in (states.RUN_TERMINATED, states.RUN_TERMINATING):
            raise UsageError(f"run {self.run!r} is {run.status}: it has no engines")

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every SSH session opened for this dispatcher (a pool it was given stays)."""
        if self._own_sessions:
            self.sessions.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    def _call(self, node: NodeRecord, op: str, *args: str) -> dict[str, Any]:
        """One agent command on `node`; NodeLost when the node or its agent does not answer."""
        agent = node.programs.get("agent")
        if not agent:
            raise UsageError(f"{node.node} runs no agent")
        try:
            session = self.sessions.get(node)
            try:
                return agents.call(session, agent, op, *args)
            except AgentDown:
                agents.start_agent(session, agent)  # re-adopts the processes that outlived it
                return agents.call(session, agent, op, *args)
        except AgentDown as exc:
            self.sessions.forget(node.node)
            raise NodeLost(f"its agent does not answer: {exc}") from None
        except AgentError:
            raise
        except CeiError as exc:
            self.sessions.forget(node.node)
            raise NodeLost(f"SSH failed: {exc}") from None

    def _check_cloud(self, node: NodeRecord) -> None:
        """NodeLost when the node's cloud reports it anything but running."""
        if not driver_capabilities(node.driver).creates_machines or not node.resource_id:
            return
        try:
            info = self.ctx.provider(node.driver, dict(node.cloud)).describe(node.resource_id)
        except CeiError as exc:
            raise NodeLost(f"cannot describe it: {exc}") from None
        if info.state != RUNNING:
            raise NodeLost(f"the {node.driver} cloud reports it {info.state}")

    # -- engines -------------------------------------------------------------------------------

    def engine_service(self, engine: str | None = None) -> str:
        """The engine service: `engine` if it declares an agent, else the run's only one."""
        services = sorted({n.service for n in self.store.nodes(self.run)
                           if n.programs.get("agent")})
        if engine is not None:
            if engine not in services:
                known = ", ".join(services) or "none"
                raise UsageError(f"service {engine!r} of run {self.run} runs no agent "
                                 f"(services with agent: {known})")
            return engine
        if not services:
            raise UsageError(f"run {self.run} has no service with `agent`: "
                             "nothing can run processes")
        if len(services) > 1:
            raise UsageError(f"run {self.run} has several engine services "
                             f"({', '.join(services)}): choose one with --engine")
        return services[0]

    def engine_nodes(self, service: str | None = None) -> list[NodeRecord]:
        """Engine nodes believed alive (ready, with an agent), of `service` or of all."""
        return [n for n in self.store.nodes(self.run)
                if n.programs.get("agent") and n.state == states.READY
                and (service is None or n.service == service)]

    # -- reconcile -----------------------------------------------------------------------------

    def reconcile(self) -> ReconcileReport:
        """Check every engine node, reschedule what lost nodes ran, place waiting processes."""
        report = ReconcileReport({}, [], [])
        with self.store.locked(self.run, wait=LOCK_WAIT):
            nodes = self.engine_nodes()
            if nodes:
                with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
                    listings = list(pool.map(self._listing, nodes))
            else:
                listings = []
            for node, (listing, why) in zip(nodes, listings, strict=True):
                if listing is None:
                    self._lose(node, why, report)
                else:
                    self._absorb(node, listing, report)
            self._place_waiting(report)
        return report

    def _listing(self, node: NodeRecord) -> tuple[list[dict[str, Any]] | None, str]:
        try:
            self._check_cloud(node)
            return list(self._call(node, "list").get("processes", [])), ""
        except NodeLost as exc:
            return None, str(exc)
        except AgentError as exc:
            return None, f"its agent refused `list`: {exc}"

    def absorb(self, node: NodeRecord, listing: list[dict[str, Any]]) -> None:
        """Take states from an agent listing that may be a little old (a heartbeat): known
        processes are updated; none is rescheduled for being missing from it, since it may
        predate the process's placement (reconcile does that, from a fresh listing)."""
        with self.store.locked(self.run, wait=LOCK_WAIT):
            self._absorb(node, listing, ReconcileReport({}, [], []), reschedule_unknown=False)

    def _absorb(self, node: NodeRecord, listing: list[dict[str, Any]],
                report: ReconcileReport, reschedule_unknown: bool = True) -> None:
        """Take the agent's word for the processes it runs for us."""
        by_name = {str(p.get("name")): p for p in listing}
        for record in self.store.processes(self.run):
            if record.node != node.node:
                continue
            seen = by_name.get(record.name)
            if seen is None:
                if record.state in PROCESS_ACTIVE_STATES and reschedule_unknown:
                    self._reschedule(record, f"the agent on {node.node} does not know it",
                                     report)
                continue
            self._tails[record.name] = str(seen.get("stderr_tail") or "")
            self._update_from_agent(record, seen)

    def _update_from_agent(self, record: ProcessRecord, seen: Mapping[str, Any]) -> None:
        state = str(seen.get("state"))
        if state not in PROCESS_STATES:
            state = PROCESS_FAILED
        error = seen.get("error") or (
            f"killed by signal {seen['signal']}" if seen.get("signal") else None)
        changes: dict[str, Any] = {
            "state": state,
            "pid": seen.get("pid"),
            "exit_code": seen.get("exit_code"),
            "restarts": int(seen.get("restarts") or 0),
            "last_error": error or record.last_error,
        }
        if any(getattr(record, k) != v for k, v in changes.items()):
            self.store.update_process(self.run, record.name, **changes)
            if record.state != state or record.pid != changes["pid"]:
                self.ctx.emit(PROCESS_EVENT, node=record.node, state=state,
                              process=record.name, pid=changes["pid"],
                              restarts=changes["restarts"])

    def lose(self, node: NodeRecord, why: str) -> ReconcileReport:
        """Mark an engine node failed (the controller judged it lost) and reschedule what it
        ran by each process's restart policy."""
        report = ReconcileReport({}, [], [])
        with self.store.locked(self.run, wait=LOCK_WAIT):
            self._lose(node, why, report)
        return report

    def drain(self, node: NodeRecord, why: str) -> ReconcileReport:
        """Move the processes off a node that is being retired: each is stopped there (best
        effort) and placed elsewhere by its restart policy (never: failed)."""
        report = ReconcileReport({}, [], [])
        with self.store.locked(self.run, wait=LOCK_WAIT):
            for record in self.store.processes(self.run):
                if record.node != node.node or record.state not in PROCESS_ACTIVE_STATES:
                    continue
                if record.state != PROCESS_WAITING:
                    try:
                        self._call(node, "kill", record.name)
                    except (NodeLost, AgentError) as exc:
                        self.ctx.emit(ev.WARNING, node=node.node,
                                      message=f"could not stop {record.name}: {exc}")
                self._reschedule(record, why, report)
            self._place_waiting(report)
        return report

    def place_waiting(self) -> ReconcileReport:
        """Place the processes waiting for a free slot, where there is one now."""
        report = ReconcileReport({}, [], [])
        with self.store.locked(self.run, wait=LOCK_WAIT):
            self._place_waiting(report)
        return report

    def _lose(self, node: NodeRecord, why: str, report: ReconcileReport) -> None:
        """Mark the node failed and reschedule its active processes by their policies."""
        report.lost[node.node] = why
        self.sessions.forget(node.node)
        message = f"engine node lost: {why}"
        self.store.update_node(self.run, node.node, state=states.FAILED, last_error=message)
        self.ctx.emit(ev.NODE_STATE, node=node.node, state=states.FAILED, message=message)
        for record in self.store.processes(self.run):
            if record.node == node.node and record.state in PROCESS_ACTIVE_STATES:
                self._reschedule(record, f"its node {node.node} was lost ({why})", report)

    def _reschedule(self, record: ProcessRecord, why: str, report: ReconcileReport) -> None:
        if record.definition.get("restart", "abnormal") == "never":
            self.store.update_process(self.run, record.name, state=PROCESS_FAILED, pid=None,
                                      last_error=f"{why}; restart never: not rescheduled")
            report.failed.append(record.name)
            self.ctx.emit(PROCESS_EVENT, node=record.node, state=PROCESS_FAILED,
                          process=record.name, message=why)
            return
        self.store.update_process(self.run, record.name, state=PROCESS_WAITING, node=None,
                                  pid=None, exit_code=None, restarts=0,
                                  round=record.round + 1, last_error=why)
        report.rescheduled.append({"process": record.name, "from": record.node, "to": None,
                                   "round": record.round + 1})
        self.ctx.emit(PROCESS_EVENT, node=record.node, state=PROCESS_WAITING,
                      process=record.name, round=record.round + 1, message=why)

    def _place_waiting(self, report: ReconcileReport) -> None:
        for record in self.store.processes(self.run):
            if record.state != PROCESS_WAITING:
                continue
            try:
                placed = self._place(record.engine, record.definition)
            except CeiError as exc:
                self.store.update_process(self.run, record.name, last_error=str(exc))
                continue
            node, doc = placed
            self._store_placement(replace(record, node=node.node), doc)
            for entry in report.rescheduled:
                if entry["process"] == record.name:
                    entry["to"] = node.node

    # -- placement -----------------------------------------------------------------------------

    def _status(self, node: NodeRecord) -> dict[str, Any] | None:
        try:
            return self._call(node, "status")
        except (NodeLost, AgentError):
            return None  # the next reconcile decides whether it is lost

    def _place(self, service: str, definition: Mapping[str, Any]
               ) -> tuple[NodeRecord, dict[str, Any]]:
        """Launch `definition` on the least loaded node of `service` with a free slot."""
        nodes = self.engine_nodes(service)
        if not nodes:
            raise NoFreeSlot(f"no live engine node of service {service!r} in run {self.run}")
        with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
            answers = list(pool.map(self._status, nodes))
        ranked = []
        for node, answer in zip(nodes, answers, strict=True):
            if answer is None:
                continue
            slots = answer.get("slots") or {}
            total, used = int(slots.get("total") or 0), int(slots.get("used") or 0)
            if total - used <= 0:
                continue
            cpu = float(((answer.get("sensors") or {}).get("cpu") or {}).get("percent") or 0.0)
            ranked.append((used / total, used, cpu, node.node, node))
        ranked.sort(key=lambda item: item[:4])
        problems = []
        for *_, node in ranked:
            try:
                return node, self._launch_on(node, definition)
            except (NodeLost, AgentError) as exc:
                problems.append(f"{node.node}: {exc}")
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise NoFreeSlot(f"no engine node of service {service!r} has a free slot{detail}")

    def _launch_on(self, node: NodeRecord, definition: Mapping[str, Any]) -> dict[str, Any]:
        agent = node.programs["agent"]
        folder = posixpath.join(str(agent["home"]), "definitions")
        path = posixpath.join(folder, f"{definition['name']}.json")
        sent = for_agent(definition, os.environ)  # secrets from env_from: never stored
        try:
            session = self.sessions.get(node)
            session.makedirs(folder, 0o700)
            session.put(_json(sent), path, 0o600)
        except AgentError:
            raise
        except CeiError as exc:
            self.sessions.forget(node.node)
            raise NodeLost(f"SSH failed: {exc}") from None
        return dict(self._call(node, "launch", path)["process"])

    def _store_placement(self, record: ProcessRecord, doc: Mapping[str, Any]) -> ProcessRecord:
        state = str(doc.get("state") or PROCESS_RUNNING)
        stored = self.store.save_process(replace(
            record, state=state if state in PROCESS_STATES else PROCESS_FAILED,
            pid=doc.get("pid"), exit_code=doc.get("exit_code"),
            restarts=int(doc.get("restarts") or 0), last_error=doc.get("error")))
        self.ctx.emit(PROCESS_EVENT, node=stored.node, state=stored.state,
                      process=stored.name, pid=stored.pid, round=stored.round)
        return stored

    # -- commands ------------------------------------------------------------------------------

    def run_process(self, definition: Mapping[str, Any], engine: str | None = None,
                    queue: bool = False) -> ProcessRecord:
        """Place a new process (after a reconcile); UsageError if its name is in use.

        With `queue` (or `queue: true` in the definition), a process that finds no free slot
        is recorded `waiting` instead of refused; it is placed when a slot appears (`cei
        watch`, or the next reconcile), and a `need` policy grows the engines for it.
        """
        definition = check_definition(dict(definition))
        queue = queue or bool(definition.get(QUEUE))
        name = str(definition["name"])
        service = self.engine_service(engine)
        with self.store.locked(self.run, wait=LOCK_WAIT):
            old = self.store.find_process(self.run, name)
            if old is not None and old.state in PROCESS_ACTIVE_STATES:
                raise UsageError(f"process {name!r} already exists in run {self.run} "
                                 f"({old.state} on {old.node or 'no node'}); "
                                 f"kill it first or choose another --name")
            record = ProcessRecord(run=self.run, name=name, definition=dict(definition),
                                   engine=service)
            try:
                node, doc = self._place(service, definition)
            except NoFreeSlot as exc:
                if not queue:
                    raise
                stored = self.store.save_process(replace(record, last_error=str(exc)))
                self.ctx.emit(PROCESS_EVENT, state=PROCESS_WAITING, process=name,
                              message="queued: no free slot")
                return stored
            return self._store_placement(replace(record, node=node.node), doc)

    def get(self, name: str) -> ProcessRecord:
        """The run's process `name`; UsageError naming the known ones if there is none."""
        record = self.store.find_process(self.run, name)
        if record is None:
            known = ", ".join(p.name for p in self.store.processes(self.run)) or "none"
            raise UsageError(f"no process {name!r} in run {self.run} (processes: {known})")
        return record

    def views(self) -> list[ProcessView]:
        """Every process of the run, as last reconciled."""
        return [ProcessView(p, self._tails.get(p.name, ""))
                for p in self.store.processes(self.run)]

    def kill(self, name: str) -> ProcessRecord:
        """Stop a process for good (no restart, no reschedule)."""
        with self.store.locked(self.run, wait=LOCK_WAIT):
            record = self.get(name)
            if record.state == PROCESS_WAITING or (
                    record.node is None and record.state in PROCESS_ACTIVE_STATES):
                return self.store.update_process(self.run, name, state=PROCESS_TERMINATED)
            if record.state not in PROCESS_ACTIVE_STATES or record.node is None:
                return record
            node = self.store.get_node(self.run, record.node)
            doc = self._call(node, "kill", name)["process"]
            self._update_from_agent(record, doc)
            self.ctx.emit(PROCESS_EVENT, node=record.node, state=PROCESS_TERMINATED,
                          process=name, message="killed")
            return self.store.get_process(self.run, name)

    def wait(self, name: str, until: str, timeout: float,
             interval: float = WAIT_INTERVAL,
             on_poll: Callable[[ProcessRecord], None] | None = None) -> tuple[int, ProcessRecord]:
        """Poll until the process is `until` (running | exited): exit status 0, 1 or 3."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(name)
            if on_poll is not None:
                on_poll(record)
            if record.state == until:
                return EXIT_OK, record
            if record.state in (PROCESS_FAILED, PROCESS_TERMINATED) or (
                    until == PROCESS_RUNNING and record.state == PROCESS_EXITED):
                return EXIT_FAILED, record
            if time.monotonic() + interval > deadline:
                return EXIT_TIMEOUT, record
            time.sleep(interval)
            self.reconcile()


def _json(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(value), indent=1, sort_keys=True) + "\n").encode()
