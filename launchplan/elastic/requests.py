"""`cei scale` and `cei repair`: handed to the run's controller, or done here when none runs.

While a controller (`cei watch`) holds the run's lease, a request goes through the store and
its events are followed from there, so two controllers never race. Otherwise this command
takes the lease itself and runs the controller's ticks until what it started has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from launchplan.elastic.controller import Controller, require_live
from launchplan.errors import CeiError, Interrupted, StepTimeout
from launchplan.levels.runtime import RunContext
from launchplan.plan.model import Plan
from launchplan.state import RequestRecord
from launchplan.state.records import REQUEST_PENDING

POLL = 0.2


def submit(ctx: RunContext, kind: str, target: str | None, args: dict[str, Any],
           load_plan: Callable[[], Plan], timeout: float,
           done: Callable[[], bool] | None = None) -> RequestRecord:
    """Carry out one request and return it finished; `done` (if given) must also hold before
    this returns (scale: the service reached its desired count). StepTimeout past `timeout`."""
    require_live(ctx)
    store = ctx.store
    deadline = time.monotonic() + timeout
    if store.lease_holder(ctx.run) is None:
        with Controller(ctx, load_plan(), monitor=False) as controller:
            request = store.add_request(ctx.run, kind, target, args)
            while True:
                controller.settle(max(0.0, deadline - time.monotonic()))
                finished = store.get_request(request.id)
                if finished.state != REQUEST_PENDING and (done is None or done()):
                    return finished
                _check(ctx, deadline, kind)
                ctx.cancel.wait(controller.interval)
    holder = store.lease_holder(ctx.run)
    request = store.add_request(ctx.run, kind, target, args)
    seen = max((e.seq for e in store.events(ctx.run)), default=0)
    if holder is not None:
        ctx.notify("elastic.request", state="handed",
                   message=f"handed to the controller of run {ctx.run} (pid {holder.pid} "
                           f"on host {holder.host})")
    while True:
        for record in store.events(ctx.run, after=seen):
            seen = record.seq
            ctx.replay(record)
        finished = store.get_request(request.id)
        if finished.state != REQUEST_PENDING and (done is None or done()):
            return finished
        _check(ctx, deadline, kind)
        if store.lease_holder(ctx.run) is None:
            raise CeiError(f"the controller of run {ctx.run} stopped before it finished the "
                           f"{kind} (request {request.id} stays queued for the next one)")
        ctx.cancel.wait(POLL)


def _check(ctx: RunContext, deadline: float, kind: str) -> None:
    if ctx.cancel.is_set():
        raise Interrupted(f"interrupted while waiting for the {kind}")
    if time.monotonic() >= deadline:
        raise StepTimeout(f"the {kind} did not finish in time; `cei status {ctx.run}` shows "
                          "where it stands")
