"""The `elastic` service key: what `cei watch` keeps true of a service, checked before launch.

The JSON Schema checks the shape; `parse_elastic` checks what the schema cannot say (bounds
around the launch count, thresholds that could both fire, a metric nothing provides, a policy
the service cannot serve) and turns the rendered mapping into an immutable `ElasticSpec` that
the store keeps with the run and the controller reads back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from launchplan.errors import PlanError

NPRESERVING = "npreserving"
SENSOR = "sensor"
TARGET = "target"
NEED = "need"
POLICIES = (NPRESERVING, SENSOR, TARGET, NEED)
# Metrics every node's monitor reports (docs/elastic.md "Metrics"); others need a metrics program.
BUILTIN_METRICS = ("cpu", "memory", "net_in", "net_out", "load")
SAMPLE_FUNCTIONS = ("average", "max", "min")
RETIRE_ORDERS = ("idle-first", "newest", "oldest")

DEFAULT_PERIOD = 10.0
DEFAULT_COOLDOWN = 60.0
DEFAULT_BOOT_TIMEOUT = 300.0
DEFAULT_MISSING_TIMEOUT = 30.0
DEFAULT_TOLERANCE = 0.1

# fail(path within the elastic block, message) -> the PlanError to raise
Fail = Callable[[tuple[Any, ...], str], PlanError]


@dataclass(frozen=True)
class Threshold:
    """One side of a sensor policy: cross `value` for `samples` samples, move by `step`."""

    value: float
    step: int = 1
    samples: int = 1


@dataclass(frozen=True)
class HealthSpec:
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    missing_timeout: float = DEFAULT_MISSING_TIMEOUT
    replace: bool = True


@dataclass(frozen=True)
class ElasticSpec:
    """A service's elastic settings, with every default filled in."""

    min: int
    max: int
    policy: str = NPRESERVING
    metric: str = "cpu"
    sample: str = "average"
    period: float = DEFAULT_PERIOD
    scale_up: Threshold | None = None
    scale_down: Threshold | None = None
    cooldown: float = DEFAULT_COOLDOWN
    target: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    spare_slots: int = 0
    health: HealthSpec = field(default_factory=HealthSpec)
    retire: str = "idle-first"

    @property
    def uses_metric(self) -> bool:
        return self.policy in (SENSOR, TARGET)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ElasticSpec:
        """The inverse of to_dict (for the copy the store keeps)."""
        values = dict(data)
        for side in ("scale_up", "scale_down"):
            if values.get(side) is not None:
                values[side] = Threshold(**values[side])
        values["health"] = HealthSpec(**(values.get("health") or {}))
        return cls(**values)


def parse_elastic(
    raw: Mapping[str, Any],
    *,
    count: int | None,
    agent: bool,
    metrics_program: bool,
    creates_machines: bool,
    fail: Fail,
) -> ElasticSpec:
    """Check a rendered `elastic` mapping (schema-valid) and fill in its defaults.

    `count` is the launch count when it is known (None when it depends on launch-time data);
    `fail(path, message)` locates a problem within the block.
    """
    if not creates_machines:
        raise fail((), "elastic needs a cloud that creates machines; this service runs on "
                       "existing hosts (driver static), which cei cannot add or replace")
    policy = str(raw.get("policy", NPRESERVING))
    low = int(raw.get("min", 1))
    high = int(raw.get("max", max(count or 1, low)))
    if low > high:
        raise fail(("min",), f"min ({low}) is larger than max ({high})")
    if count is not None and not low <= count <= high:
        side = "min" if count < low else "max"
        raise fail((side,), f"the service launches {count} node(s) (count), outside "
                            f"min {low} .. max {high}")
    if policy != NPRESERVING and low == high:
        raise fail(("max",), f"min and max are both {low}: policy {policy} has nothing to "
                             "scale (use policy npreserving to only keep the nodes healthy)")
    metric = str(raw.get("metric", "cpu"))
    if policy in (SENSOR, TARGET) and metric not in BUILTIN_METRICS and not metrics_program:
        where = ("metric",) if "metric" in raw else ()
        raise fail(where, f"no source provides the metric '{metric}': the built-in ones are "
                          f"{', '.join(BUILTIN_METRICS)}; add a metrics program to the service "
                          "that prints it")
    up = _threshold(raw.get("scale_up"), "above", "add")
    down = _threshold(raw.get("scale_down"), "below", "remove")
    if policy == SENSOR:
        if up is None and down is None:
            raise fail((), "policy sensor needs scale_up: {above: N} and/or "
                           "scale_down: {below: N}")
        if up is not None and down is not None and down.value >= up.value:
            raise fail(("scale_down", "below"),
                       f"scale_down.below ({down.value:g}) must be less than scale_up.above "
                       f"({up.value:g}), or one sample could call for both")
    target = raw.get("target") or {}
    if policy == TARGET and "value" not in target:
        raise fail((), "policy target needs target: {value: N}")
    if policy == NEED and not agent:
        raise fail(("policy",), "policy need follows the dispatcher's queue of processes; the "
                                "service needs `agent` to run them")
    health = raw.get("health") or {}
    return ElasticSpec(
        min=low,
        max=high,
        policy=policy,
        metric=metric,
        sample=str(raw.get("sample", "average")),
        period=float(raw.get("period", DEFAULT_PERIOD)),
        scale_up=up,
        scale_down=down,
        cooldown=float(raw.get("cooldown", DEFAULT_COOLDOWN)),
        target=float(target["value"]) if "value" in target else None,
        tolerance=float(target.get("tolerance", DEFAULT_TOLERANCE)),
        spare_slots=int((raw.get("need") or {}).get("spare_slots", 0)),
        health=HealthSpec(
            boot_timeout=float(health.get("boot_timeout", DEFAULT_BOOT_TIMEOUT)),
            missing_timeout=float(health.get("missing_timeout", DEFAULT_MISSING_TIMEOUT)),
            replace=bool(health.get("replace", True)),
        ),
        retire=str(raw.get("retire", "idle-first")),
    )


def _threshold(raw: Mapping[str, Any] | None, key: str, step: str) -> Threshold | None:
    if raw is None:
        return None
    return Threshold(value=float(raw[key]), step=int(raw.get(step, 1)),
                     samples=int(raw.get("samples", 1)))
