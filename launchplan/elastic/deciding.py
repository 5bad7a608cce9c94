"""Deciding: each elastic service's metric sampled once per period, its policy applied.

A decision is recorded (and is an event) when it changes the desired count or the kind of
decision it is (up, down, steady, cooldown, no samples); the store always holds the latest
reason, so `cei status` can say why a service has the size it has.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Any

from launchplan.elastic import policies
from launchplan.elastic.heartbeats import HeartbeatCollector
from launchplan.levels import events as ev
from launchplan.levels.runtime import RunContext
from launchplan.plan.elastic import NEED, ElasticSpec
from launchplan.state import ElasticRecord, NodeRecord
from launchplan.state.records import PROCESS_ACTIVE_STATES, PROCESS_WAITING

DEFAULT_SLOTS = 4
SAMPLES_KEPT = 16


class Decider:
    """Keeps each service's recent samples between ticks."""

    def __init__(self, ctx: RunContext, monitors: HeartbeatCollector) -> None:
        self.ctx = ctx
        self.monitors = monitors
        self._samples: dict[str, deque[float]] = {}
        self._sampled_at: dict[str, float] = {}
        self._decided: dict[str, str] = {}  # service -> kind of its last decision

    def decide(self, record: ElasticRecord, spec: ElasticSpec, healthy: list[NodeRecord],
                live: int) -> tuple[ElasticRecord, float | None]:
        """Once per period: sample, apply the policy, record the decision; the service's record
        as it is now and the latest sample."""
        now = time.monotonic()
        last = self._sampled_at.get(record.service)
        if last is not None and now - last < spec.period:
            samples = self._samples.get(record.service)
            return record, samples[-1] if samples else None
        self._sampled_at[record.service] = now
        samples = self._samples.setdefault(record.service, deque(maxlen=SAMPLES_KEPT))
        value = None
        if spec.uses_metric:
            value = policies.combine(self._values(healthy, spec, last or 0.0), spec.sample)
            if value is not None:
                samples.append(value)
        inputs = self._inputs(record, spec, healthy, live, list(samples))
        decision = policies.decide(spec, inputs)
        if decision.kind == policies.NO_SAMPLES:
            decision = replace(decision, reason=decision.reason + self._why_no_samples(healthy))
        shown = ("current", "desired", "since_action") + (
            ("running", "waiting", "occupied", "slots") if spec.policy == NEED else ())
        data: dict[str, Any] = {"inputs": {k: getattr(inputs, k) for k in shown},
                                "samples": [round(v, 2) for v in list(samples)[-4:]]}
        changed = decision.desired != record.desired
        turned = self._decided.get(record.service) != decision.kind
        if changed or turned or record.decision.get("reason") != decision.reason:
            fields: dict[str, Any] = {"decision": {
                "time": time.time(), "desired": decision.desired, "reason": decision.reason,
                "kind": decision.kind, **data}}
            if changed:  # a scale action: the cooldown starts
                fields.update(desired=decision.desired, last_action=time.time())
            record = self.ctx.store.update_elastic(self.ctx.run, record.service, **fields)
        if changed or turned:
            self.ctx.emit(ev.ELASTIC_DECISION, service=record.service, policy=spec.policy,
                          direction=decision.kind, desired=decision.desired,
                          message=decision.reason, **data)
        self._decided[record.service] = decision.kind
        return record, value

    def _values(self, healthy: list[NodeRecord], spec: ElasticSpec, after: float
                ) -> list[float]:
        """Each healthy node's newest value of the metric, heard since the last sample."""
        values = []
        for node in healthy:
            beats = self.monitors.beats_after(node.node, after)
            value = beats[-1].value(spec.metric) if beats else None
            if value is not None:
                values.append(value)
        return values

    def _why_no_samples(self, healthy: list[NodeRecord]) -> str:
        """What a node's metrics program said instead of a number, if it said anything."""
        for node in healthy:
            last = self.monitors.heard(node.node).last if self.monitors.watched(node.node) \
                else None
            if last is not None and last.metrics_error:
                return f" ({node.node}: metrics program: {last.metrics_error[:200]})"
        return ""

    def _inputs(self, record: ElasticRecord, spec: ElasticSpec, healthy: list[NodeRecord],
                live: int, samples: list[float]) -> policies.Inputs:
        since = None if record.last_action is None else max(0.0, time.time() - record.last_action)
        inputs = policies.Inputs(current=live, desired=record.desired, samples=samples,
                                 since_action=since)
        if spec.policy != NEED:
            return inputs
        processes = [p for p in self.ctx.store.processes(self.ctx.run) if p.engine == record.service
                     and p.state in PROCESS_ACTIVE_STATES]
        slots = next((int(n.programs["agent"].get("slots") or DEFAULT_SLOTS)
                      for n in healthy if n.programs.get("agent")), DEFAULT_SLOTS)
        return replace(inputs, running=sum(p.state != PROCESS_WAITING for p in processes),
                       waiting=sum(p.state == PROCESS_WAITING for p in processes),
                       occupied=len({p.node for p in processes if p.node}), slots=slots)
