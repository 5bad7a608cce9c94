"""A service's desired count set by hand (`cei scale`): checked against its bounds, recorded.

A service without an `elastic` block has a fixed count; `--force` gives it one (npreserving)
so that the controller keeps the new count, and moves a bound that N lies outside of.
"""

from __future__ import annotations

import time
from typing import Any

from launchplan.errors import UsageError
from launchplan.levels import states
from launchplan.plan.elastic import NPRESERVING, ElasticSpec
from launchplan.providers import driver_capabilities
from launchplan.state import ElasticRecord, NodeRecord, Store
from launchplan.state.records import NODE_LAUNCHING_STATES

SCALED = "scale"  # the kind of decision a scale by hand is recorded as


def check_scale(store: Store, run: str, service: str, count: int, force: bool) -> None:
    """UsageError (exit 2) when `count` may not be set, before anything is asked of anyone."""
    record = store.find_elastic(run, service)
    if record is None:
        _fixed_nodes(store, run, service, force)
    elif not force and not record.min <= count <= record.max:
        raise UsageError(f"{count} is outside {service}'s bounds min {record.min} .. max "
                         f"{record.max}; --force moves the bound")


def set_desired(store: Store, run: str, service: str, count: int,
                force: bool) -> tuple[ElasticRecord, str]:
    """Record `count` as the service's desired count (a scale action: the cooldown starts);
    the new record and the reason."""
    check_scale(store, run, service, count, force)
    record = store.find_elastic(run, service) or _make_elastic(
        store, run, _fixed_nodes(store, run, service, force))
    reason = f"set by cei scale: {record.desired} -> {count}"
    decision: dict[str, Any] = {"time": time.time(), "desired": count, "reason": reason,
                                "kind": SCALED}
    updated = store.update_elastic(run, service, desired=count, min=min(record.min, count),
                                   max=max(record.max, count), last_action=time.time(),
                                   decision=decision)
    return updated, reason


def reached(store: Store, run: str, service: str) -> bool:
    """Whether the service has its desired count of ready nodes and none on the way."""
    record = store.find_elastic(run, service)
    nodes = [n for n in store.nodes(run) if n.service == service]
    moving = NODE_LAUNCHING_STATES | {states.RETIRING, states.TERMINATING}
    return record is not None and not any(n.state in moving for n in nodes) \
        and sum(n.state == states.READY for n in nodes) == record.desired


def _fixed_nodes(store: Store, run: str, service: str, force: bool) -> list[NodeRecord]:
    """The live nodes of a service that is not elastic, if --force may scale it."""
    live = [n for n in store.nodes(run) if n.service == service
            and n.state not in (states.TERMINATED, states.TERMINATING)]
    if not live:
        names = sorted({n.service for n in store.nodes(run)})
        raise UsageError(f"run {run} has no service {service!r} (services: "
                         f"{', '.join(names) or 'none'})")
    if not force:
        raise UsageError(f"service {service!r} is not elastic (no `elastic` block): its "
                         "count is fixed; --force scales it anyway")
    if not driver_capabilities(live[0].driver).creates_machines:
        raise UsageError(f"service {service!r} runs on existing hosts: cei cannot add "
                         "machines to it")
    return live


def _make_elastic(store: Store, run: str, live: list[NodeRecord]) -> ElasticRecord:
    count = len(live)
    spec = ElasticSpec(min=count, max=count, policy=NPRESERVING)
    return store.save_elastic(ElasticRecord(
        run=run, service=live[0].service, level=live[0].level, spec=spec.to_dict(),
        min=count, desired=count, max=count))
