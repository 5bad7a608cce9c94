"""Elastic policies and health verdicts: pure functions, no clouds, no clock."""

from __future__ import annotations

import pytest

from launchplan.elastic.health import BOOTING, FAILED, HEALTHY, LOST, UNHEALTHY, Watch, judge
from launchplan.elastic.policies import (
    COOLDOWN,
    DOWN,
    NO_SAMPLES,
    STEADY,
    UP,
    Inputs,
    combine,
    decide,
)
from launchplan.plan.elastic import ElasticSpec, HealthSpec, Threshold

SENSOR = ElasticSpec(min=1, max=8, policy="sensor", scale_up=Threshold(70, 2),
                     scale_down=Threshold(20, 1), cooldown=60)


def test_sensor_scales_up_by_add_and_says_why() -> None:
    decision = decide(SENSOR, Inputs(current=3, desired=3, samples=[83.0]))
    assert (decision.desired, decision.kind) == (5, UP)
    assert decision.reason == "cpu average 83.0 > 70: 3 -> 5"


def test_sensor_needs_consecutive_samples_when_asked() -> None:
    spec = ElasticSpec(min=1, max=8, policy="sensor", scale_up=Threshold(70, 2, samples=2))
    assert decide(spec, Inputs(3, 3, samples=[50.0, 83.0])).kind == STEADY
    decision = decide(spec, Inputs(3, 3, samples=[75.0, 83.0]))
    assert decision.reason == "cpu average 83.0 > 70 for 2 samples: 3 -> 5"


def test_sensor_scales_down_by_remove_never_below_min() -> None:
    assert decide(SENSOR, Inputs(3, 3, samples=[5.0])).desired == 2
    at_min = decide(SENSOR, Inputs(1, 1, samples=[5.0]))
    assert (at_min.desired, at_min.kind) == (1, STEADY)
    assert "already at min 1" in at_min.reason


def test_sensor_never_above_max() -> None:
    decision = decide(SENSOR, Inputs(7, 7, samples=[99.0]))
    assert (decision.desired, decision.kind) == (8, UP)
    at_max = decide(SENSOR, Inputs(8, 8, samples=[99.0]))
    assert (at_max.desired, at_max.kind) == (8, STEADY)


def test_sensor_within_band_keeps_desired() -> None:
    decision = decide(SENSOR, Inputs(3, 4, samples=[50.0]))
    assert (decision.desired, decision.kind) == (4, STEADY)
    assert decision.reason == "cpu average 50.0 within [20, 70]: stays 4"


def test_cooldown_holds_a_change_back() -> None:
    decision = decide(SENSOR, Inputs(3, 3, samples=[90.0], since_action=15.0))
    assert (decision.desired, decision.kind) == (3, COOLDOWN)
    assert decision.reason == "cooldown (45s left): stays 3"
    assert decide(SENSOR, Inputs(3, 3, samples=[90.0], since_action=61.0)).kind == UP


def test_no_samples_changes_nothing() -> None:
    decision = decide(SENSOR, Inputs(3, 3))
    assert (decision.desired, decision.kind) == (3, NO_SAMPLES)


def test_target_policy() -> None:
    spec = ElasticSpec(min=1, max=10, policy="target", target=50.0, tolerance=0.1)
    assert decide(spec, Inputs(4, 4, samples=[100.0])).desired == 8
    assert decide(spec, Inputs(4, 4, samples=[53.0])).kind == STEADY  # within 10 %
    down = decide(spec, Inputs(4, 4, samples=[10.0]))
    assert (down.desired, down.kind) == (1, DOWN)
    assert decide(spec, Inputs(4, 4, samples=[1000.0])).desired == 10


@pytest.mark.parametrize(("running", "waiting", "occupied", "current", "expected", "kind"), [
    (0, 12, 0, 1, 3, UP),  # 12 queued on 4-slot engines: 3
    (4, 0, 1, 3, 1, DOWN),  # work drained: back to the one busy engine
    (0, 0, 0, 3, 1, DOWN),  # idle: min
    (1, 0, 2, 2, 2, STEADY),  # never below the engines that run something
])
def test_need_policy(running: int, waiting: int, occupied: int, current: int, expected: int,
                     kind: str) -> None:
    spec = ElasticSpec(min=1, max=4, policy="need", cooldown=0)
    decision = decide(spec, Inputs(current, current, running=running, waiting=waiting,
                                   occupied=occupied, slots=4))
    assert (decision.desired, decision.kind) == (expected, kind)


def test_need_scales_up_at_once_but_down_after_cooldown() -> None:
    spec = ElasticSpec(min=1, max=4, policy="need", cooldown=60)
    assert decide(spec, Inputs(1, 1, waiting=8, slots=4, since_action=1.0)).desired == 2
    assert decide(spec, Inputs(3, 3, slots=4, since_action=1.0)).kind == COOLDOWN


def test_npreserving_keeps_desired() -> None:
    spec = ElasticSpec(min=2, max=2)
    decision = decide(spec, Inputs(1, 2))
    assert (decision.desired, decision.reason) == (2, "keeps 2 node(s) (npreserving)")


def test_combine() -> None:
    assert combine([10.0, 30.0], "average") == 20.0
    assert combine([10.0, 30.0], "max") == 30.0
    assert combine([10.0, 30.0], "min") == 10.0
    assert combine([], "average") is None


def test_spec_survives_the_store() -> None:
    assert ElasticSpec.from_dict(SENSOR.to_dict()) == SENSOR


HEALTH = HealthSpec(boot_timeout=300, missing_timeout=30)


@pytest.mark.parametrize(("watch", "now", "state"), [
    (Watch(since=0), 10, BOOTING),
    (Watch(since=0), 301, FAILED),
    (Watch(since=0, last_seen=100, last_ok=100), 120, HEALTHY),
    (Watch(since=0, last_seen=100, last_ok=100), 131, LOST),
    (Watch(since=0, last_seen=130, last_ok=100), 131, UNHEALTHY),
    (Watch(since=0, last_seen=130, last_ok=120), 131, HEALTHY),
    (Watch(since=0, last_seen=130, last_ok=130, gone="the cloud reports it terminated"),
     131, LOST),
])
def test_health_verdicts(watch: Watch, now: float, state: str) -> None:
    assert judge(watch, HEALTH, now).state == state


def test_patience_replaces_the_timeouts_for_one_shot_checks() -> None:
    assert judge(Watch(since=0), HEALTH, 16, patience=15).state == FAILED
    assert judge(Watch(since=0, last_seen=1, detail="agent down"), HEALTH, 16,
                 patience=15).reason == "unhealthy for 16s (agent down)"
