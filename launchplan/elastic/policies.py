"""Elastic policies as pure functions: what is known now -> the desired node count and why.

No clouds, no clock: the controller gathers `Inputs` and acts on the `Decision`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from launchplan.plan.elastic import NEED, NPRESERVING, SENSOR, ElasticSpec

UP = "up"
DOWN = "down"
STEADY = "steady"
COOLDOWN = "cooldown"
NO_SAMPLES = "no-samples"


@dataclass(frozen=True)
class Inputs:
    """What a decision looks at."""

    current: int  # live nodes: healthy (or not judged yet) and still launching
    desired: int  # the desired count the store holds now
    samples: Sequence[float] = ()  # the service's samples of its metric, oldest first
    since_action: float | None = None  # seconds since the last scale action (None: never)
    running: int = 0  # policy need: processes placed on the service's engines
    waiting: int = 0  # policy need: processes waiting for a free slot
    occupied: int = 0  # policy need: engines that run at least one process
    slots: int = 1  # policy need: slots per engine


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    kind: str  # up | down | steady | cooldown | no-samples


def clamp(spec: ElasticSpec, count: int) -> int:
    return max(spec.min, min(spec.max, count))


def combine(values: Sequence[float], function: str) -> float | None:
    """One sample from the healthy nodes' values: average, max or min (None: no values)."""
    if not values:
        return None
    if function == "max":
        return max(values)
    if function == "min":
        return min(values)
    return sum(values) / len(values)


def decide(spec: ElasticSpec, inputs: Inputs) -> Decision:
    """The desired count by the service's policy, always within min..max."""
    if spec.policy == NPRESERVING:
        return Decision(inputs.desired, f"keeps {inputs.desired} node(s) (npreserving)", STEADY)
    if spec.policy == NEED:
        return _need(spec, inputs)
    if not inputs.samples:
        return Decision(inputs.desired, f"no {spec.metric} samples yet: stays "
                                        f"{inputs.desired}", NO_SAMPLES)
    decision = _sensor(spec, inputs) if spec.policy == SENSOR else _target(spec, inputs)
    if decision.desired != inputs.desired:
        waiting = _cooling(spec, inputs)
        if waiting is not None:
            return waiting
    return decision


def _cooling(spec: ElasticSpec, inputs: Inputs) -> Decision | None:
    if inputs.since_action is None or inputs.since_action >= spec.cooldown:
        return None
    left = spec.cooldown - inputs.since_action
    return Decision(inputs.desired, f"cooldown ({left:.0f}s left): stays {inputs.desired}",
                    COOLDOWN)


def _sensor(spec: ElasticSpec, inputs: Inputs) -> Decision:
    last = inputs.samples[-1]
    label = f"{spec.metric} {spec.sample} {last:.1f}"
    up, down = spec.scale_up, spec.scale_down
    if up is not None and _crossed(inputs.samples, up.samples, lambda v: v > up.value):
        target = clamp(spec, inputs.current + up.step)
        why = f"{label} > {up.value:g}{_for(up.samples)}"
        if target <= inputs.current:
            return Decision(clamp(spec, inputs.desired), f"{why}: already at max {spec.max}",
                            STEADY)
        return Decision(target, f"{why}: {inputs.current} -> {target}", UP)
    if down is not None and _crossed(inputs.samples, down.samples, lambda v: v < down.value):
        target = clamp(spec, inputs.current - down.step)
        why = f"{label} < {down.value:g}{_for(down.samples)}"
        if target >= inputs.current:
            return Decision(clamp(spec, inputs.desired), f"{why}: already at min {spec.min}",
                            STEADY)
        return Decision(target, f"{why}: {inputs.current} -> {target}", DOWN)
    low = f"{down.value:g}" if down is not None else "-"
    high = f"{up.value:g}" if up is not None else "-"
    return Decision(inputs.desired, f"{label} within [{low}, {high}]: stays {inputs.desired}",
                    STEADY)


def _crossed(samples: Sequence[float], count: int, test: Callable[[float], bool]) -> bool:
    return len(samples) >= count and all(test(v) for v in samples[-count:])


def _for(count: int) -> str:
    return f" for {count} samples" if count > 1 else ""


def _target(spec: ElasticSpec, inputs: Inputs) -> Decision:
    assert spec.target is not None
    last = inputs.samples[-1]
    label = f"{spec.metric} {spec.sample} {last:.1f} vs target {spec.target:g}"
    nodes = max(inputs.current, 1)
    if abs(last / spec.target - 1.0) <= spec.tolerance:
        return Decision(inputs.desired, f"{label} (within {spec.tolerance:.0%}): stays "
                                        f"{inputs.desired}", STEADY)
    target = clamp(spec, math.ceil(nodes * last / spec.target))
    if target == inputs.current:
        return Decision(target, f"{label}: stays {target} (bounds {spec.min}..{spec.max})",
                        STEADY)
    kind = UP if target > inputs.current else DOWN
    return Decision(target, f"{label} on {inputs.current} node(s): {inputs.current} -> "
                            f"{target}", kind)


def _need(spec: ElasticSpec, inputs: Inputs) -> Decision:
    slots = max(1, inputs.slots)
    need = math.ceil((inputs.running + inputs.waiting + spec.spare_slots) / slots)
    target = clamp(spec, max(need, inputs.occupied))
    why = (f"{inputs.running} running + {inputs.waiting} waiting + {spec.spare_slots} spare "
           f"on {slots}-slot engines: need {need}")
    if target > inputs.current:
        return Decision(target, f"{why}: {inputs.current} -> {target}", UP)
    if target < inputs.current:
        waiting = _cooling(spec, inputs)
        if waiting is not None:
            return waiting
        return Decision(target, f"{why}: {inputs.current} -> {target}", DOWN)
    return Decision(target, f"{why}: stays {target}", STEADY)
