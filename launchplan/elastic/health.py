"""Health verdicts as a pure function of what the controller has heard from a node.

As in the CEI EPU's health monitor: a node that never reports within `boot_timeout` of being
watched has failed; one silent for `missing_timeout` is lost; one that reports but fails its
health check (agent down, ready program failing) for `missing_timeout` is unhealthy. The cloud
saying the node is gone is final at once. Times are monotonic seconds of the controller;
after a controller restart they count from when it started watching.
"""

from __future__ import annotations

from dataclasses import dataclass

from launchplan.plan.elastic import HealthSpec

HEALTHY = "healthy"
BOOTING = "booting"  # watched, not heard from yet, still within its boot_timeout
FAILED = "failed"
LOST = "lost"
UNHEALTHY = "unhealthy"
BAD = frozenset({FAILED, LOST, UNHEALTHY})


@dataclass(frozen=True)
class Watch:
    """What is known of one node."""

    since: float  # when watching began
    last_seen: float | None = None  # last heartbeat
    last_ok: float | None = None  # last heartbeat that said healthy
    detail: str = ""  # why the last heartbeat was not healthy, or why none comes
    gone: str | None = None  # the cloud says the node no longer runs (what it says)


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str = ""

    @property
    def bad(self) -> bool:
        return self.state in BAD


def judge(watch: Watch, health: HealthSpec, now: float, patience: float | None = None
          ) -> Verdict:
    """The node's health now. `patience` replaces both timeouts for a one-shot check (`cei
    watch --once`), which cannot wait minutes for a node to speak."""
    if watch.gone is not None:
        return Verdict(LOST, watch.gone)
    boot = health.boot_timeout if patience is None else patience
    missing = health.missing_timeout if patience is None else patience
    detail = f" ({watch.detail})" if watch.detail else ""
    if watch.last_seen is None:
        if now - watch.since > boot:
            return Verdict(FAILED, f"no heartbeat within {boot:g}s{detail}")
        return Verdict(BOOTING)
    if now - watch.last_seen > missing:
        return Verdict(LOST, f"no heartbeat for {now - watch.last_seen:.0f}s "
                             f"(missing_timeout {missing:g}s){detail}")
    healthy_since = watch.last_ok if watch.last_ok is not None else watch.since
    if now - healthy_since > missing:
        return Verdict(UNHEALTHY, f"unhealthy for {now - healthy_since:.0f}s{detail}")
    return Verdict(HEALTHY)
