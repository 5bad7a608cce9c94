"""The controller's tables: elastic state, requests, the lease, and waiting for a run lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launchplan.errors import RunLockedError
from launchplan.state import ElasticRecord, Store
from launchplan.state.records import REQUEST_DONE, REQUEST_PENDING


@pytest.fixture
def store(cei_home: Path):
    with Store(cei_home) as opened:
        opened.create_run("r1", "demo", "demo.yml", launch={"overrides": {"n": "3"}})
        yield opened


def test_run_keeps_how_it_was_launched_without_secrets(cei_home: Path) -> None:
    with Store(cei_home) as store:
        store.create_run("r2", "demo", "demo.yml",
                         launch={"overrides": {"n": "3", "db_password": "hunter2"}})
        assert store.get_run("r2").launch == {"overrides": {"n": "3"}}
    assert b"hunter2" not in (cei_home / "cei.db").read_bytes()


def test_elastic_state_round_trip_and_update(store: Store) -> None:
    spec = {"min": 1, "max": 4, "policy": "sensor"}
    saved = store.save_elastic(ElasticRecord(run="r1", service="engine", level=2, spec=spec,
                                             min=1, desired=2, max=4))
    assert saved.spec == spec and saved.desired == 2 and saved.updated
    changed = store.update_elastic("r1", "engine", desired=3, last_action=12.5,
                                   decision={"reason": "cpu average 83.0 > 70: 2 -> 3"})
    assert (changed.desired, changed.last_action) == (3, 12.5)
    assert changed.decision["reason"].startswith("cpu average")
    assert [e.service for e in store.elastic_services("r1")] == ["engine"]
    with pytest.raises(KeyError, match="not elastic"):
        store.update_elastic("r1", "web", desired=1)
    with pytest.raises(ValueError, match="unknown elastic field"):
        store.update_elastic("r1", "engine", colour="blue")


def test_requests_queue_in_order_and_finish(store: Store) -> None:
    first = store.add_request("r1", "scale", "engine", {"count": 3})
    second = store.add_request("r1", "repair", None, {})
    assert [r.id for r in store.pending_requests("r1")] == [first.id, second.id]
    store.finish_request(first.id, REQUEST_DONE, {"desired": 3})
    assert [r.id for r in store.pending_requests("r1")] == [second.id]
    done = store.get_request(first.id)
    assert (done.state, done.result, done.args) == (REQUEST_DONE, {"desired": 3}, {"count": 3})
    assert second.state == REQUEST_PENDING


def test_deleting_a_run_forgets_its_controller_state(store: Store) -> None:
    store.save_elastic(ElasticRecord(run="r1", service="e", level=1, spec={}, min=1, desired=1,
                                     max=2))
    store.add_request("r1", "scale", "e", {"count": 2})
    store.acquire_lease("r1", ttl=30)
    store.release_lease("r1")
    store.delete_run("r1")
    assert store.elastic_services("r1") == [] and store.pending_requests("r1") == []


LEASE_HOLDER = """
import sys
from launchplan.state import Store
store = Store(sys.argv[1])
store.acquire_lease(sys.argv[2], ttl=600)
print("leased", flush=True)
sys.stdin.readline()
"""


def test_lease_refused_while_its_holder_lives_and_taken_over_after(
    store: Store, cei_home: Path
) -> None:
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(cei_home), "r1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"leased"
        holder = store.lease_holder("r1")
        assert holder is not None and holder.pid == child.pid
        with pytest.raises(RunLockedError, match=f"pid {child.pid} on host"):
            store.acquire_lease("r1", ttl=30)
    finally:
        child.kill()
        child.communicate(timeout=10)
    assert store.lease_holder("r1") is None  # its holder died: the lease is free
    taken = store.acquire_lease("r1", ttl=30)
    assert taken.pid != child.pid
    assert store.renew_lease("r1", ttl=30)


def _insert_lease(home: Path, host: str, expires: float) -> None:
    conn = sqlite3.connect(str(home / "cei.db"))
    with conn:
        conn.execute("INSERT OR REPLACE INTO leases VALUES ('r1', 1, 1, ?, 't', ?)",
                     (host, expires))
    conn.close()


def test_lease_of_another_host_holds_until_it_expires(store: Store, cei_home: Path) -> None:
    _insert_lease(cei_home, "elsewhere", time.time() + 600)
    with pytest.raises(RunLockedError, match="elsewhere"):
        store.acquire_lease("r1", ttl=30)
    _insert_lease(cei_home, "elsewhere", time.time() - 1)
    assert store.acquire_lease("r1", ttl=30).host != "elsewhere"


def test_renew_fails_once_the_lease_was_taken_over(store: Store, cei_home: Path) -> None:
    store.acquire_lease("r1", ttl=30)
    _insert_lease(cei_home, "elsewhere", time.time() + 600)
    assert not store.renew_lease("r1", ttl=30)


def test_locked_waits_for_a_lock_another_thread_releases(store: Store, cei_home: Path) -> None:
    """`wait` retries while another holder has the lock, and takes it once it is released."""
    conn = sqlite3.connect(str(cei_home / "cei.db"))
    with conn:
        conn.execute("INSERT INTO locks VALUES ('r1', 1, NULL, 'elsewhere', 't')")
    release = threading.Timer(0.5, lambda: _delete_locks(cei_home))
    release.start()
    try:
        with pytest.raises(RunLockedError), store.locked("r1", wait=0.0):
            pass
        with store.locked("r1", wait=20.0):
            pass
    finally:
        release.cancel()
        conn.close()


def _delete_locks(home: Path) -> None:
    conn = sqlite3.connect(str(home / "cei.db"))
    with conn:
        conn.execute("DELETE FROM locks")
    conn.close()
