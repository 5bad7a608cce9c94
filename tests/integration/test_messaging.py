"""Messaging and the transform worker over the embedded transport and a real RabbitMQ."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launchplan.agent.build import build_zipapp
from launchplan.demo import messaging
from launchplan.demo.messaging import MessagingError, connect, filesystem_url, resolve_url
from launchplan.demo.sliding_window import brute_force
from launchplan.demo.worker import serve
from tests.integration import rabbitmq

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
amqp_url = rabbitmq.rabbitmq_url


@pytest.fixture(params=["embedded", "rabbitmq"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "embedded":
        return filesystem_url(tmp_path / "bus")
    return str(request.getfixturevalue("amqp_url"))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def test_url_forms(cei_home: Path) -> None:
    assert resolve_url(None) == f"filesystem://{cei_home.resolve()}/bus"
    assert resolve_url("filesystem:///tmp/x/../bus") == "filesystem:///tmp/bus"
    assert resolve_url("amqp://u:p@127.0.0.1:5672//") == "amqp://u:p@127.0.0.1:5672//"
    assert messaging.redact_url("amqp://u:secret@h:1/v") == "amqp://u:***@h:1/v"
    for bad in ("filesystem://host/dir", "filesystem:relative", "redis://x", "memory://"):
        with pytest.raises(MessagingError):
            resolve_url(bad)


def test_unreachable_broker_is_a_messaging_error() -> None:
    port = rabbitmq.free_port()
    with pytest.raises(MessagingError, match="cannot connect"):
        connect(f"amqp://guest:guest@127.0.0.1:{port}//", timeout=2)


def test_round_trip_across_two_processes(url: str) -> None:
    peer = textwrap.dedent(f"""
        from launchplan.demo.messaging import connect
        with connect({url!r}) as bus:
            bus.declare("to-peer", "from-peer")
            bus.publish("from-peer", {{"ready": True}})
            for _ in range(200):
                doc = bus.get("to-peer", 20)
                if doc is None:
                    raise SystemExit(2)
                if doc.get("stop"):
                    break
                bus.publish("from-peer", {{"echo": doc["n"] * 2}})
    """)
    with connect(url) as bus:
        bus.declare("to-peer", "from-peer")
        bus.purge("to-peer")
        bus.purge("from-peer")
        child = subprocess.Popen([sys.executable, "-c", peer], env=_child_env(),
                                 start_new_session=True)
        try:
            assert bus.get("from-peer", 30) == {"ready": True}
            for n in range(100):
                bus.publish("to-peer", {"n": n})
            echoes = [bus.get("from-peer", 30) for _ in range(100)]
            assert echoes == [{"echo": 2 * n} for n in range(100)]
            bus.publish("to-peer", {"stop": True})
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        assert bus.get("from-peer", 0.2) is None


def test_backlog_keeps_publish_order_while_the_publisher_writes(tmp_path: Path) -> None:
    """A consumer listing the queue while messages are renamed into it never sees k+1 before k
    (a regression: readdir may return an entry added during the scan and miss an earlier one).
    The consumer starts slowly so a backlog of thousands builds while the publisher goes on."""
    url = filesystem_url(tmp_path / "bus")
    count = 20000
    publisher = textwrap.dedent(f"""
        from launchplan.demo.messaging import connect
        with connect({url!r}) as bus:
            bus.declare("ordered")
            for i in range({count}):
                bus.publish("ordered", {{"i": i}})
    """)
    with connect(url) as bus:
        bus.declare("ordered")
        child = subprocess.Popen([sys.executable, "-c", publisher], env=_child_env(),
                                 start_new_session=True)
        try:
            seen = []
            while len(seen) < count:
                doc = bus.get("ordered", 30)
                assert doc is not None, f"stream stopped after {len(seen)} messages"
                seen.append(doc["i"])
                if len(seen) < 3000:
                    time.sleep(0.0003)
            assert child.wait(timeout=60) == 0
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    assert seen == list(range(count))


def test_purge_and_bounded_wait(url: str) -> None:
    with connect(url) as bus:
        bus.purge("scratch")
        for i in range(5):
            bus.publish("scratch", {"i": i})
        assert bus.get("scratch", 10) == {"i": 0}
        assert bus.purge("scratch") == 4
        assert bus.get("scratch", 0.3) is None
        assert list(bus.iter("scratch", idle_timeout=0.1)) == []


def _data(seed: int, steps: int = 80) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    t = 0.0
    msgs = []
    for _ in range(steps):
        t += rng.choice([0.5, 1.0, 1.0, 2.5])
        for var in ("temperature", "salinity", "pressure"):
            msgs.append({"time": t, "variable": var, "value": rng.gauss(10, 3)})
    return msgs


def _run_stream(bus: messaging.Bus, msgs: list[dict[str, Any]], window: float) -> int:
    """Reset the worker, stream `msgs`, check every output against brute force; the pid."""
    bus.publish("in", {"control": "reset", "window": window})
    reset = bus.get("out", 30)
    assert reset is not None and reset["control"] == "reset" and reset["window"] == window
    for msg in msgs:
        bus.publish("in", msg)
    outs = [bus.get("out", 30) for _ in msgs]
    want = brute_force([(m["variable"], m["time"], m["value"]) for m in msgs], window)
    for msg, out, (avg, count) in zip(msgs, outs, want, strict=True):
        assert out is not None
        assert {k: out[k] for k in ("time", "variable", "value")} == msg
        assert out["count"] == count
        assert math.isclose(out["average"], avg, rel_tol=1e-9)
    bus.publish("in", {"control": "ping"})
    pong = bus.get("out", 30)
    assert pong is not None and pong["control"] == "pong" and pong["processed"] == len(msgs)
    return int(pong["pid"])


def _agent(pyz: Path, home: Path, *args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, str(pyz), args[0], "--home", str(home), *args[1:]],
                         capture_output=True, text=True, timeout=60)
    doc: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == 0, doc
    return doc


@pytest.fixture
def agent_home(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    pyz = build_zipapp(tmp_path / "cei-agent.pyz")
    home = tmp_path / "agent"
    started = _agent(pyz, home, "serve", "--daemon", "--slots", "2")
    try:
        yield pyz, home
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(started["pid"], signal.SIGKILL)
        state = json.loads((home / "state.json").read_text())
        for proc in state["processes"]:
            if proc["state"] == "running" and proc["pid"]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc["pid"], signal.SIGKILL)


def test_worker_under_the_agent_serves_many_runs(url: str, agent_home: tuple[Path, Path]) -> None:
    """The worker as an agent module process: two runs, one process, then a clean SIGTERM."""
    pyz, home = agent_home
    with connect(url) as bus:
        bus.purge("in")
        bus.purge("out")
        definition = {
            "name": "transform",
            "module": "launchplan.demo.worker:main",
            "args": ["--transport", url, "--input", "in", "--output", "out", "--window", "10"],
            "pythonpath": [str(REPO)],
            "restart": "abnormal",
        }
        def_path = home.parent / "transform.json"
        def_path.write_text(json.dumps(definition))
        launched = _agent(pyz, home, "launch", str(def_path))["process"]
        pid1 = _run_stream(bus, _data(1), 10.0)
        pid2 = _run_stream(bus, _data(2), 3.0)
        assert pid1 == pid2 == launched["pid"]
        killed = _agent(pyz, home, "kill", "transform")["process"]
        assert killed["state"] == "terminated" and killed["exit_code"] == 0, killed


def test_worker_from_the_command_line(url: str) -> None:
    with connect(url) as bus:
        bus.purge("in")
        bus.purge("out")
        worker = subprocess.Popen(
            [sys.executable, "-m", "launchplan.demo.worker", "--transport", url,
             "--input", "in", "--output", "out", "--window", "5"],
            env=_child_env(), start_new_session=True, stderr=subprocess.PIPE,
        )
        try:
            assert _run_stream(bus, _data(3, 40), 5.0) == worker.pid
            bus.publish("in", {"time": 1.0, "variable": "x"})
            bad = bus.get("out", 30)
            assert bad is not None and "bad data message" in bad["error"]
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
            assert b"stopped after" in err
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def _start_worker(url: str, window: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "launchplan.demo.worker", "--transport", url,
         "--input", "in", "--output", "out", "--window", str(window)],
        env=_child_env(), start_new_session=True, stderr=subprocess.DEVNULL,
    )


def test_a_worker_killed_mid_stream_counts_every_value_once(url: str) -> None:
    """SIGKILL the worker (by PID) while it streams, start another: every input yields one
    output, in order, and the averages are those of two clean runs, the killed worker's over
    a prefix of the inputs and the new one's over the rest: nothing counted twice or lost."""
    window = 10.0
    msgs = [{"time": float(step), "variable": var, "value": float(step % 7) + len(var)}
            for step in range(2500) for var in ("a", "bb", "ccc", "dddd")]
    with connect(url) as bus:
        bus.purge("in")
        bus.purge("out")
        first = _start_worker(url, window)
        try:
            for start in range(0, len(msgs), 40):
                bus.publish_many("in", msgs[start:start + 40])
            outs = [bus.get("out", 60)]
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(timeout=30) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
        second = _start_worker(url, window)
        try:
            while len(outs) < len(msgs):
                outs.append(bus.get("out", 60))
                assert outs[-1] is not None, f"outputs stopped after {len(outs) - 1}"
            assert bus.get("out", 1.0) is None  # and nothing more: no input counted twice
        finally:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    assert [(o["variable"], o["time"]) for o in outs] == [(m["variable"], m["time"]) for m in msgs]
    rows = [(m["variable"], m["time"], m["value"]) for m in msgs]
    whole = brute_force(rows, window)
    got = [(o["average"], o["count"]) for o in outs]
    cut = next((i for i, (g, w) in enumerate(zip(got, whole, strict=True)) if g != w), len(msgs))
    assert got[cut:] == brute_force(rows[cut:], window)


def test_the_worker_publishes_once_per_batch(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four messages of 250 values in: at most four messages out, as many as batches taken,
    counted where they reach the transport (kombu's publish, SQLite's INSERT)."""
    import kombu

    published: list[int] = []
    real_publish = kombu.Producer.publish

    def counting(producer: kombu.Producer, body: Any, *args: Any, **kwargs: Any) -> Any:
        published.append(1)
        return real_publish(producer, body, *args, **kwargs)

    with connect(url) as bus, connect(url) as worker_bus:
        bus.purge("in")
        bus.purge("out")
        for start in range(0, 1000, 250):
            bus.publish_many("in", [{"time": float(i), "variable": "x", "value": 1.0}
                                    for i in range(start, start + 250)])
        monkeypatch.setattr(kombu.Producer, "publish", counting)
        if worker_bus.is_embedded:
            worker_bus._db.set_trace_callback(  # type: ignore[attr-defined]
                lambda sql: published.append(1) if sql.startswith("INSERT") else None)
        batches: list[int] = []
        real_commit = worker_bus.commit

        def commit(batch: messaging.Batch, queue: str, docs: Any) -> None:
            batches.append(len(batch.docs))
            real_commit(batch, queue, docs)

        monkeypatch.setattr(worker_bus, "commit", commit)
        stop = [False]
        thread = threading.Thread(target=serve, args=(worker_bus, "in", "out", 5.0, stop))
        thread.start()
        try:
            outs = [bus.get("out", 30) for _ in range(1000)]
        finally:
            stop[0] = True
            thread.join(timeout=30)
    assert [out["time"] for out in outs if out is not None] == [float(i) for i in range(1000)]
    assert sum(batches) == 1000 and 1 <= len(batches) <= 4
    assert len(published) == len(batches)
