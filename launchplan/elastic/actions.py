"""What the controller has set in motion: launches, retirements and peer refreshes.

Each runs in a worker thread through the level engine (the same node launcher and teardown as
`cei launch` and `cei terminate`), so a tick never waits for a node to boot. The controller
collects what finished at the start of each tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from launchplan.dispatch.dispatcher import Dispatcher
from launchplan.levels import events as ev
from launchplan.levels.launch import run_launches
from launchplan.levels.reconfigure import refresh_peers
from launchplan.levels.runtime import RunContext
from launchplan.levels.sessions import SessionPool
from launchplan.levels.teardown import retire_node
from launchplan.plan.model import NodeSpec, Plan
from launchplan.state import NodeRecord

LAUNCH = "launch"
RETIRE = "retire"
REFRESH = "refresh"


@dataclass(frozen=True)
class Outcome:
    """A finished action; `problem` is None when it did what it set out to."""

    kind: str
    service: str
    node: str | None
    request: int | None
    problem: str | None


@dataclass(frozen=True)
class _Running:
    kind: str
    service: str
    node: str | None
    request: int | None
    future: Future[str | None]


class Actions:
    """The controller's actions in flight, at most `parallel` running at once."""

    def __init__(self, ctx: RunContext, sessions: SessionPool, dispatcher: Dispatcher,
                 parallel: int) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.parallel = parallel
        self._pool = ThreadPoolExecutor(max_workers=max(1, parallel),
                                        thread_name_prefix="elastic")
        self._running: dict[str, _Running] = {}

    # -- what is in flight ------------------------------------------------------------------

    def on(self, node: str) -> str | None:
        """The kind of action running on `node`, if any."""
        running = self._running.get(node)
        return running.kind if running else None

    def of(self, service: str, kind: str | None = None) -> list[str]:
        """Nodes of `service` with an action (of `kind`) in flight."""
        return [r.node for r in self._running.values() if r.service == service
                and r.node is not None and (kind is None or r.kind == kind)]

    def running(self, kind: str) -> bool:
        return any(r.kind == kind for r in self._running.values())

    def requests(self) -> set[int]:
        return {r.request for r in self._running.values() if r.request is not None}

    def __len__(self) -> int:
        return len(self._running)

    # -- starting ---------------------------------------------------------------------------

    def launch(self, spec: NodeSpec, request: int | None = None) -> None:
        """Take a reserved node (launch.reserve_nodes) from pending to ready."""

        def work() -> str | None:
            failures = run_launches(self.ctx, [spec], 1, stop_together=False)
            return failures[0].message if failures else None

        self._start(spec.node, LAUNCH, spec.service, spec.node, request, work)

    def retire(self, node: NodeRecord, *, drain: bool, programs: bool,
               request: int | None = None) -> None:
        """Take a node away for good: drain its processes, terminate program, destroy, verify."""

        def work() -> str | None:
            if drain and node.programs.get("agent"):
                self.dispatcher.drain(node, f"its node {node.node} was retired")
            remaining = retire_node(self.ctx, node, self._warn, programs=programs)
            self.sessions.forget(node.node)
            return "; ".join(f"{r.driver} {r.resource_id} {r.message}"
                             for r in remaining) or None

        self._start(node.node, RETIRE, node.service, node.node, request, work)

    def refresh(self, plan: Plan, services: Collection[str]) -> str:
        """Tell the peers of `services` (same and later levels) what changed; the label its
        Outcome will carry as its service."""
        changed = sorted(services)
        label = ",".join(changed)

        def work() -> str | None:
            problems = refresh_peers(self.ctx, plan, changed, self.sessions, self.parallel)
            return "; ".join(problems) or None

        self._start(f"{REFRESH}:{label}", REFRESH, label, None, None, work)
        return label

    def _start(self, key: str, kind: str, service: str, node: str | None, request: int | None,
               work: Callable[[], str | None]) -> None:
        self._running[key] = _Running(kind, service, node, request, self._pool.submit(work))

    def _warn(self, node: str | None, message: str) -> None:
        self.ctx.emit(ev.WARNING, node=node, message=message)

    # -- finishing --------------------------------------------------------------------------

    def harvest(self) -> list[Outcome]:
        """The actions that finished since the last call."""
        done = []
        for key, running in list(self._running.items()):
            if not running.future.done():
                continue
            del self._running[key]
            exc = running.future.exception()
            problem = (f"internal error: {exc!r}" if exc is not None
                       else running.future.result())
            done.append(Outcome(running.kind, running.service, running.node, running.request,
                                problem))
        return done

    def wait(self, timeout: float) -> bool:
        """Wait until nothing is in flight (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while any(not r.future.done() for r in self._running.values()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True)
