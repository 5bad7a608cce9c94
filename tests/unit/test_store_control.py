"""The controller's tables: elastic state, requests, the lease, and waiting for a run lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launchplan.errors import RunLockedError
from launchplan.state import ElasticRecord, Store
from launchplan.state.records import REQUEST_DONE, REQUEST_PENDING
from tests.unit.storehelp import execute, raw_contents, store_url


@pytest.fixture
def store(cei_home: Path, state_url: str):
    with Store(cei_home, state_url) as opened:
        opened.create_run("r1", "demo", "demo.yml", launch={"overrides": {"n": "3"}})
        yield opened


def test_run_keeps_how_it_was_launched_without_secrets(store: Store) -> None:
    store.create_run("r2", "demo", "demo.yml",
                     launch={"overrides": {"n": "3", "db_password": "hunter2"}})
    assert store.get_run("r2").launch == {"overrides": {"n": "3"}}
    assert b"hunter2" not in raw_contents(store)


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
store = Store(sys.argv[1], sys.argv[3])
store.acquire_lease(sys.argv[2], ttl=600)
print("leased", flush=True)
sys.stdin.readline()
"""


def test_lease_refused_while_its_holder_lives_and_taken_over_after(store: Store) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "PGPASSWORD"}}
    child = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(store.home), "r1",
                              store_url(store)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
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


def _insert_lease(store: Store, host: str, expires: float) -> None:
    execute(store, "DELETE FROM leases WHERE run = 'r1'")
    execute(store, "INSERT INTO leases (run, pid, starttime, host, acquired, expires) "
                   "VALUES ('r1', 1, 1, ?, 't', ?)", (host, expires))


def test_lease_of_another_host_holds_until_it_expires(store: Store) -> None:
    _insert_lease(store, "elsewhere", time.time() + 600)
    with pytest.raises(RunLockedError, match="elsewhere"):
        store.acquire_lease("r1", ttl=30)
    _insert_lease(store, "elsewhere", time.time() - 1)
    assert store.acquire_lease("r1", ttl=30).host != "elsewhere"


def test_renew_fails_once_the_lease_was_taken_over(store: Store) -> None:
    store.acquire_lease("r1", ttl=30)
    assert store.renew_lease("r1", ttl=30)
    _insert_lease(store, "elsewhere", time.time() + 600)
    assert not store.renew_lease("r1", ttl=30)


def test_a_stale_lease_is_broken_only_as_it_was_shown(store: Store) -> None:
    _insert_lease(store, "elsewhere", time.time() + 600)
    shown = store.lease_record("r1")
    assert shown is not None and shown.host == "elsewhere"
    _insert_lease(store, "elsewhere", time.time() + 900)  # renewed since: still the same lease
    assert store.break_lease(shown)
    assert store.lease_record("r1") is None and store.lease_holder("r1") is None
    assert not store.break_lease(shown)


def test_locked_waits_for_a_lock_another_thread_releases(store: Store, cei_home: Path,
                                                        state_url: str) -> None:
    """`wait` retries while another holder has the lock, and takes it once it is released."""
    execute(store, "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                   "VALUES ('r1', 1, NULL, 'elsewhere', 't', NULL)")
    other = Store(cei_home, state_url)
    release = threading.Timer(0.5, lambda: execute(other, "DELETE FROM locks"))
    release.start()
    try:
        with pytest.raises(RunLockedError), store.locked("r1", wait=0.0):
            pass
        with store.locked("r1", wait=20.0):
            pass
    finally:
        release.cancel()
        release.join(timeout=10)
        other.close()
