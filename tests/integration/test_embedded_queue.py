"""The embedded transport's SQLite queue: order, claims, redelivery after a consumer dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launchplan.demo.messaging import MessagingError, connect, filesystem_url
from launchplan.demo.sqlitequeue import DATABASE, HOLDERS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _child(code: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                            stdout=subprocess.PIPE, start_new_session=True)


def _reap(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def test_a_dead_consumers_batch_comes_back_first_and_in_order(tmp_path: Path) -> None:
    """A consumer takes a batch and is killed (SIGKILL, by PID) before it commits: while it
    lives nobody else gets its messages; once it is dead they come back, oldest first."""
    url = filesystem_url(tmp_path / "bus")
    with connect(url) as bus:
        bus.publish_many("q", [{"i": i} for i in range(0, 3)])
        bus.publish("q", {"i": 3})
        bus.publish_many("q", [{"i": i} for i in range(4, 10)])
        child = _child(f"""
            import sys, time
            from launchplan.demo.messaging import connect
            bus = connect({url!r})
            batch = bus.take("q", 30)
            print(len(batch.docs), flush=True)
            time.sleep(120)
        """)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "10"
            # held by a live consumer: not ours, even past a look for dead consumers
            assert bus.take("q", 1.5) is None
            bus.publish("q", {"i": 10})
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            _reap(child)
        seen: list[int] = []
        for _ in range(11):
            batch = bus.take("q", 10)
            assert batch is not None, seen
            seen.extend(doc["i"] for doc in batch.docs)
            bus.commit(batch, "done", batch.docs)
            if len(seen) == 11:
                break
        assert seen == list(range(11))
        assert bus.take("q", 0.2) is None
        assert [bus.get("done", 5)["i"] for _ in range(11)] == list(range(11))
    assert list((tmp_path / "bus" / HOLDERS).iterdir()) == []  # the dead one's lock is gone


def test_publishers_each_keep_their_order(tmp_path: Path) -> None:
    """Two processes publish at once, in batches of varied size; each one's order is kept."""
    url = filesystem_url(tmp_path / "bus")
    count = 3000
    code = """
        import random
        from launchplan.demo.messaging import connect
        rng = random.Random({p})
        with connect({url!r}) as bus:
            i = 0
            while i < {count}:
                n = min(rng.choice([1, 1, 7, 50]), {count} - i)
                bus.publish_many("mixed", [{{"p": {p}, "i": j}} for j in range(i, i + n)])
                i += n
    """
    with connect(url) as bus:
        children = [_child(code.format(p=p, url=url, count=count)) for p in (1, 2)]
        try:
            seen: dict[int, list[int]] = {1: [], 2: []}
            for _ in range(2 * count):
                doc = bus.get("mixed", 30)
                assert doc is not None, {p: len(v) for p, v in seen.items()}
                seen[doc["p"]].append(doc["i"])
            assert all(child.wait(timeout=60) == 0 for child in children)
        finally:
            for child in children:
                _reap(child)
        assert seen == {1: list(range(count)), 2: list(range(count))}
        assert bus.get("mixed", 0.2) is None


def test_commit_publishes_and_acknowledges_together(tmp_path: Path) -> None:
    """A commit that finds its batch given away (its holder looked dead) changes nothing."""
    folder = tmp_path / "bus"
    with connect(filesystem_url(folder)) as bus:
        bus.publish_many("in", [1, 2, 3])
        batch = bus.take("in", 5)
        assert batch is not None and batch.docs == [1, 2, 3]
        with sqlite3.connect(folder / DATABASE) as db:
            db.execute("UPDATE messages SET holder = NULL")
        with pytest.raises(MessagingError, match="given to another consumer"):
            bus.commit(batch, "out", ["x"])
        assert bus.get("out", 0.2) is None
        assert [bus.get("in", 5) for _ in range(3)] == [1, 2, 3]

