"""Verdicts on the nodes of elastic services: their heartbeats first, their cloud for the rest.

The cloud is asked only about nodes without a monitor (no SSH) and silent ones, at most every
third of missing_timeout per node, in one batch call per cloud, so that a tick over many
nodes costs a few API calls, not one per node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

from launchplan.elastic import health
from launchplan.elastic.heartbeats import HeartbeatCollector
from launchplan.errors import CeiError
from launchplan.levels import states
from launchplan.levels.runtime import RunContext
from launchplan.plan.elastic import ElasticSpec
from launchplan.providers import driver_capabilities
from launchplan.providers.base import ERROR, STOPPED, TERMINATED
from launchplan.state import NodeRecord


class Judge:
    """Remembers what each cloud last said of each node (and when) between ticks."""

    def __init__(self, ctx: RunContext, monitors: HeartbeatCollector,
                 patience: float | None) -> None:
        self.ctx = ctx
        self.monitors = monitors
        # a one-shot check (--once) cannot wait minutes for a silent node (health.judge)
        self.patience = patience
        self._asked: dict[str, tuple[float, str | None]] = {}  # node -> (when, gone?)

    def verdicts(self, nodes: Mapping[str, NodeRecord], specs: Mapping[str, ElasticSpec],
                 busy: Callable[[str], bool]) -> dict[str, health.Verdict]:
        """A verdict for every ready node of an elastic service that nothing acts on."""
        now = time.monotonic()
        judged: dict[str, tuple[NodeRecord, health.Verdict | None]] = {}
        for node in nodes.values():
            spec = specs.get(node.service)
            if spec is None or node.state != states.READY or busy(node.node):
                continue
            verdict = None  # no monitor (no SSH): the cloud's word alone
            if self.monitors.watched(node.node):
                heard = self.monitors.heard(node.node)
                verdict = health.judge(heard.watch, spec.health, now, self.patience)
                if verdict.state == health.HEALTHY and not heard.connected:
                    verdict = health.Verdict(health.BOOTING)  # its channel dropped: ask
            judged[node.node] = (node, verdict)
        self._ask([n for n, v in judged.values() if (v is None or v.state != health.HEALTHY)
                   and self._due(n, specs[n.service], now)], now)
        verdicts = {}
        for name, (_, verdict) in judged.items():
            gone = self._asked.get(name, (0.0, None))[1]
            verdicts[name] = (health.Verdict(health.LOST, gone) if gone is not None
                              else verdict or health.Verdict(health.HEALTHY))
        return verdicts

    def _due(self, node: NodeRecord, spec: ElasticSpec, now: float) -> bool:
        if not node.resource_id or not driver_capabilities(node.driver).creates_machines:
            return False
        asked = self._asked.get(node.node)
        return asked is None or now - asked[0] >= spec.health.missing_timeout / 3

    def _ask(self, nodes: list[NodeRecord], now: float) -> None:
        """Ask each cloud about `nodes` in one batch; remember which it no longer runs."""
        groups: dict[str, list[NodeRecord]] = {}
        for node in nodes:
            groups.setdefault(node.driver + json.dumps(node.cloud, sort_keys=True),
                              []).append(node)
        for members in groups.values():
            first = members[0]
            try:
                found = self.ctx.provider(first.driver, first.cloud).states(
                    [str(n.resource_id) for n in members])
            except CeiError:
                continue  # cannot tell: the heartbeats decide
            for node in members:
                state = found.get(str(node.resource_id))
                gone = (f"the {node.driver} cloud reports it {state}"
                        if state in (TERMINATED, ERROR, STOPPED) else None)
                self._asked[node.node] = (now, gone)
