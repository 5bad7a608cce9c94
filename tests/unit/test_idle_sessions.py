"""The pool of sessions kept open between nodes (remote/idle.py): who gets one, for how long
(the target's ControlPersist), and when it is closed instead. Sessions here are stand-ins with
a target, a liveness and a close; the real thing is exercised against OpenSSH in
tests/integration/test_round_trips.py."""

from __future__ import annotations

from dataclasses import dataclass

from launchplan.remote import SSHTarget
from launchplan.remote.idle import IdleSessions

HOST = SSHTarget("192.0.2.10", 22, "deploy", "/keys/id", "ssh-ed25519 AAAAkey", persist=30.0)


@dataclass(eq=False)
class FakeSession:
    target: SSHTarget
    alive: bool = True
    closed: bool = False

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool(limit: int = 64) -> tuple[IdleSessions, Clock]:
    clock = Clock()
    return IdleSessions(limit, clock=clock), clock


def kept(host: str, persist: float = 30.0) -> SSHTarget:
    return SSHTarget(host, 22, "u", None, "ssh-ed25519 K", persist=persist)


def test_a_session_given_back_goes_to_the_next_node_with_an_equal_target_only_once() -> None:
    idle, _ = pool()
    session = FakeSession(HOST)
    idle.give(session)  # type: ignore[arg-type]
    assert idle.take(SSHTarget("192.0.2.10", 22, "deploy", "/keys/id", "ssh-ed25519 AAAAkey",
                               persist=30.0)) is session
    assert idle.take(HOST) is None  # one node at a time: it is that node's now
    assert not session.closed


def test_any_difference_in_the_target_gets_no_session() -> None:
    idle, _ = pool()
    session = FakeSession(HOST)
    idle.give(session)  # type: ignore[arg-type]
    key = "ssh-ed25519 AAAAkey"
    for other in (SSHTarget("192.0.2.11", 22, "deploy", "/keys/id", key, persist=30.0),
                  SSHTarget("192.0.2.10", 2222, "deploy", "/keys/id", key, persist=30.0),
                  SSHTarget("192.0.2.10", 22, "admin", "/keys/id", key, persist=30.0),
                  SSHTarget("192.0.2.10", 22, "deploy", "/keys/other", key, persist=30.0),
                  SSHTarget("192.0.2.10", 22, "deploy", "/keys/id", "ssh-ed25519 AAAAnew",
                            persist=30.0),
                  SSHTarget("192.0.2.10", 22, "deploy", "/keys/id", key, persist=30.0,
                            jump=(SSHTarget("192.0.2.1", 22, "j", None, "ssh-ed25519 B"),))):
        assert idle.take(other) is None
    assert idle.take(HOST) is session


def test_without_control_persist_a_session_is_closed_at_once() -> None:
    """OpenSSH's default: no connection sharing, every node logs in anew (so that a group a
    boot added the user to holds for the next node)."""
    idle, _ = pool()
    session = FakeSession(kept("192.0.2.10", persist=0.0))
    idle.give(session)  # type: ignore[arg-type]
    assert session.closed
    assert idle.take(session.target) is None


def test_a_session_kept_past_its_persist_or_dead_is_closed_not_handed_out() -> None:
    idle, clock = pool()
    old, briefly, forever = (FakeSession(HOST), FakeSession(kept("192.0.2.20", 5.0)),
                             FakeSession(kept("192.0.2.30", float("inf"))))
    for session in (old, briefly, forever):
        idle.give(session)  # type: ignore[arg-type]
    clock.now += 5.0
    assert idle.take(briefly.target) is None and briefly.closed
    assert not old.closed
    clock.now += 25.5
    assert idle.take(HOST) is None and old.closed
    clock.now += 10**6
    assert idle.take(forever.target) is forever  # ControlPersist yes: until the command ends
    dead = FakeSession(HOST)
    idle.give(dead)  # type: ignore[arg-type]
    dead.alive = False  # the host went away meanwhile
    assert idle.take(HOST) is None
    assert dead.closed
    idle.give(gone := FakeSession(HOST, alive=False))  # type: ignore[arg-type]
    assert gone.closed


def test_past_the_limit_the_oldest_is_closed() -> None:
    idle, clock = pool(limit=2)
    sessions = [FakeSession(kept(f"192.0.2.{i}")) for i in range(3)]
    for session in sessions:
        clock.now += 1
        idle.give(session)  # type: ignore[arg-type]
    assert [s.closed for s in sessions] == [True, False, False]
    assert idle.take(sessions[2].target) is sessions[2]


def test_closing_closes_what_waits_and_what_comes_back_later() -> None:
    idle, _ = pool()
    waiting, busy = FakeSession(HOST), FakeSession(HOST)
    idle.give(waiting)  # type: ignore[arg-type]
    idle.close()
    assert waiting.closed
    idle.give(busy)  # type: ignore[arg-type]
    assert busy.closed
    assert idle.take(HOST) is None
