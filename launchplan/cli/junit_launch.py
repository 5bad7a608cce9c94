"""`cei launch --junit FILE`: the launch's events, as they come, made into a JUnit report.

One suite per level. Each node has a `provision` case (create, boot, SSH, until its programs
start), then one case per program it ran (boot, agent, ready), each with its duration and, when
it did not pass, its exit status and the tail of its stderr (already masked by the engine).
A node another node's failure stopped is skipped; one an interrupt stopped is an error; one the
launch's deadline stopped is a failure of type timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launchplan.cli import junit
from launchplan.levels import events as ev
from launchplan.levels import states
from launchplan.levels.events import Event
from launchplan.levels.programs import FAILED, INTERRUPTED, PASSED, TIMEOUT

WRITE_EVERY = 1.0  # seconds between rewrites of the file while nodes change


@dataclass
class _Level:
    name: str
    index: int
    started: float
    ended: float | None = None


@dataclass
class _Node:
    name: str
    service: str
    level: str
    provision_from: float | None = None
    provision_to: float | None = None
    failed_at: float | None = None
    failure: str = ""
    programs: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class _Verdict:
    result: str
    kind: str
    message: str


class LaunchReport:
    """A reporter: one more consumer of the engine's events, beside the view and NDJSON.

    The file is rewritten when a level ends, when the launch ends, and at most every
    WRITE_EVERY seconds in between, so that a job killed outright still has a report.
    """

    def __init__(self, path: Path, run: str, plan: str) -> None:
        self.path = path
        self.run = run
        self.plan = plan
        self._lock = threading.Lock()
        self._levels: dict[str, _Level] = {}
        self._nodes: dict[str, _Node] = {}
        self._finished: Event | None = None
        self._written = 0.0
        self._closed = False

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._finished is not None or self._closed:
                return  # a teardown after the launch is not part of its report
            self._take(event)
            final = event.kind in (ev.LEVEL_FINISHED, ev.RUN_FINISHED)
            if final or time.monotonic() - self._written >= WRITE_EVERY:
                self._write()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._write()
                self._closed = True

    # events -------------------------------------------------------------------------------
    def _take(self, event: Event) -> None:
        data = event.data
        if event.kind == ev.LEVEL_STARTED:
            name = str(data.get("level"))
            self._levels[name] = _Level(name, int(data.get("index", 0)), event.time)
        elif event.kind == ev.LEVEL_FINISHED:
            level = self._levels.get(str(data.get("level")))
            if level is not None:
                level.ended = event.time
        elif event.kind == ev.RUN_FINISHED:
            self._finished = event
        elif event.kind == ev.NODE_STATE and event.node:
            self._node_state(event)
        elif event.kind == ev.NODE_PROGRAM and event.node in self._nodes:
            self._nodes[event.node].programs.append(event)

    def _node_state(self, event: Event) -> None:
        assert event.node is not None
        if event.state == states.PENDING:
            self._nodes[event.node] = _Node(event.node, str(event.data.get("service", "")),
                                            str(event.data.get("level", "")))
            return
        node = self._nodes.get(event.node)
        if node is None:
            return
        if event.state == states.CREATING:
            node.provision_from = event.time
        elif event.state in (states.CONTEXTUALIZING, states.READY):
            if node.provision_from is not None and node.provision_to is None:
                node.provision_to = event.time
        elif event.state == states.FAILED:
            node.failed_at = event.time
            node.failure = event.message

    # the report ---------------------------------------------------------------------------
    def _write(self) -> None:
        junit.write(self.path, f"cei launch {self.run}", self._suites(time.time()))
        self._written = time.monotonic()

    def _suites(self, now: float) -> list[junit.Suite]:
        suites: dict[str, junit.Suite] = {}
        for level in self._levels.values():
            suites[level.name] = junit.Suite(
                level.name, started=level.started, duration=(level.ended or now) - level.started,
                properties={"run": self.run, "plan": self.plan, "level": str(level.index)})
        for node in self._nodes.values():
            suite = suites.setdefault(node.level, junit.Suite(node.level))
            suite.cases.extend(self._cases(node, now))
        orphans = self._unattributed()
        if orphans:
            last = list(suites.values())[-1] if suites else suites.setdefault(
                "launch", junit.Suite("launch", started=now))
            last.cases.extend(orphans)
        return list(suites.values())

    def _cases(self, node: _Node, now: float) -> list[junit.Case]:
        classname = f"{node.level}.{node.service}"
        cases: list[junit.Case] = []
        provision = junit.Case(f"{node.name} provision", classname)
        if node.provision_from is None:  # stopped (or still waiting) before it was created
            self._judge(provision, self._verdict(node) if node.failed_at is not None
                        else _Verdict(junit.SKIPPED, "", "not started"))
            return [provision]
        end = node.provision_to or node.failed_at
        provision.duration = (end or now) - node.provision_from
        if node.provision_to is None:
            self._judge(provision, self._verdict(node) if node.failed_at is not None
                        else _Verdict(junit.ERROR, "unfinished", "under way when the report "
                                      "was written: cei stopped before it ended"))
        cases.append(provision)
        for event in node.programs:
            cases.append(self._program_case(node, classname, event))
        accounted = any(c.result != junit.PASSED for c in cases)
        if node.failed_at is not None and not accounted:  # e.g. its outputs or agent failed
            case = junit.Case(f"{node.name} contextualize", classname,
                              node.failed_at - (node.provision_to or node.failed_at))
            self._judge(case, self._verdict(node))
            cases.append(case)
        return cases

    def _program_case(self, node: _Node, classname: str, event: Event) -> junit.Case:
        data = event.data
        program = str(data.get("program", "program"))
        status = data.get("status")
        outcome = str(data.get("outcome") or (PASSED if status == 0 else FAILED))
        case = junit.Case(f"{node.name} {program}", classname, float(data.get("duration", 0.0)),
                          stderr=str(data.get("stderr_tail", "")),
                          stdout=str(data.get("stdout_tail", "")))
        if outcome == PASSED:
            return case
        message = event.message or f"{program} program {outcome}"
        if outcome == FAILED:
            verdict = _Verdict(junit.FAILURE,
                               f"exit status {status}" if status is not None else "failed",
                               message)
        elif outcome == TIMEOUT:
            verdict = _Verdict(junit.FAILURE, "timeout", message)
        elif outcome == INTERRUPTED:
            verdict = self._stopped(message)
        else:
            verdict = _Verdict(junit.ERROR, outcome, message)
        self._judge(case, verdict)
        return case

    def _verdict(self, node: _Node) -> _Verdict:
        """Why a node failed, known fully once the run has finished."""
        entry = self._failures().get(node.name)
        message = str(entry["message"]) if entry else node.failure
        if self._finished is None:
            return _Verdict(junit.FAILURE, "failure", message)
        if self._deadline() or self._finished.state == states.RUN_INTERRUPTED:
            if entry is not None and not entry.get("timeout") and self._deadline():
                return _Verdict(junit.FAILURE, "failure", message)
            return self._stopped(message)
        if entry is not None:
            return _Verdict(junit.FAILURE, "timeout" if entry.get("timeout") else "failure",
                            message)
        return _Verdict(junit.SKIPPED, "", message)  # another node's failure stopped it

    def _stopped(self, message: str) -> _Verdict:
        """A step an interrupt or the deadline cut short."""
        deadline = self._deadline()
        if deadline:
            return _Verdict(junit.FAILURE, "timeout",
                            message if message.startswith(deadline) else f"{deadline}; {message}")
        return _Verdict(junit.ERROR, "interrupted", message)

    def _unattributed(self) -> list[junit.Case]:
        """Failures of no node: a service that did not render, a deadline between levels."""
        cases = []
        for name, entry in self._failures().items():
            if name in self._nodes:
                continue
            if name == self.run and self._deadline() and any(
                    n.failed_at is not None for n in self._nodes.values()):
                continue  # the nodes it stopped carry it already
            what = "render" if name.endswith("/*") else "launch"
            cases.append(junit.Case(
                f"{name} {what}", self.run, 0.0, junit.FAILURE,
                "timeout" if entry.get("timeout") else what, str(entry.get("message", "")),
                stderr=str(entry.get("message", ""))))
        return cases

    def _failures(self) -> dict[str, dict[str, Any]]:
        if self._finished is None:
            return {}
        return {str(f.get("node")): f for f in self._finished.data.get("failures") or []}

    def _deadline(self) -> str:
        return str(self._finished.data.get("deadline") or "") if self._finished else ""

    @staticmethod
    def _judge(case: junit.Case, verdict: _Verdict) -> None:
        case.result, case.kind, case.message = verdict.result, verdict.kind, verdict.message
