"""The state store on both backends (SQLite and a real PostgreSQL): round trips, locks across
processes, no secrets; and what only SQLite has: file modes, WAL."""

from __future__ import annotations

import dataclasses
import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import launchplan
from launchplan.errors import (
    CeiError,
    RunExistsError,
    RunLockedError,
    UnknownRunError,
    UsageError,
)
from launchplan.state import (
    EventRecord,
    NodeRecord,
    ResourceRecord,
    RunRecord,
    Store,
    default_home,
    locks,
    scrub_secrets,
)
from launchplan.state.holders import process_starttime
from launchplan.state.locks import LOCK_TTL
from launchplan.state.nodes import SAVE_BATCH
from launchplan.state.schema import MIGRATIONS, SCHEMA_VERSION
from tests.unit.storehelp import execute, lock_rows, raw_contents, store_url

REPO_ROOT = Path(launchplan.__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def make_node(run: str = "r1", node: str = "web-0", **changes: object) -> NodeRecord:
    base = NodeRecord(
        run=run,
        node=node,
        service="web",
        index=0,
        level=1,
        level_name="front",
        driver="local",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(cei_home: Path, state_url: str):
    with Store(cei_home, state_url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(cei_home: Path):
    with Store(cei_home, "") as opened:
        yield opened


# -- files and database ----------------------------------------------------------------------


def test_home_db_and_run_dirs_are_private(sqlite_store: Store, cei_home: Path) -> None:
    store = sqlite_store
    store.create_run("r1", "demo", "/plans/demo.yml")  # a write, so the WAL files exist
    run_dir = store.run_dir("r1")
    assert run_dir == cei_home / "runs" / "r1"
    assert mode(cei_home) == 0o700
    assert mode(cei_home / "runs") == 0o700
    assert mode(run_dir) == 0o700
    db_files = [cei_home / name for name in ("cei.db", "cei.db-wal", "cei.db-shm")]
    assert all(path.exists() for path in db_files)
    assert [mode(path) for path in db_files] == [0o600, 0o600, 0o600]


def test_loose_home_and_db_are_tightened(tmp_path: Path) -> None:
    home = tmp_path / "loose"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "cei.db").touch()
    (home / "cei.db").chmod(0o644)
    Store(home, "").close()
    assert mode(home) == 0o700
    assert mode(home / "cei.db") == 0o600


def test_wal_mode_busy_timeout_and_schema_version(sqlite_store: Store, cei_home: Path) -> None:
    conn = sqlite3.connect(str(cei_home / "cei.db"))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"runs", "nodes", "resources", "events", "locks"} <= tables
    [busy] = sqlite_store._read("PRAGMA busy_timeout")
    assert busy["timeout"] >= 5000
    assert set(MIGRATIONS) == set(range(SCHEMA_VERSION))


def test_reopening_keeps_data(cei_home: Path, state_url: str) -> None:
    with Store(cei_home, state_url) as first:
        first.create_run("r1", "demo", "demo.yml")
    with Store(cei_home, state_url) as second:
        assert second.get_run("r1").plan == "demo"


def test_newer_schema_is_refused(cei_home: Path, state_url: str) -> None:
    with Store(cei_home, state_url) as store, store._write("any") as conn:
        assert store._db.schema_version(conn) == SCHEMA_VERSION
        store._db.set_schema_version(conn, SCHEMA_VERSION + 1)
    with pytest.raises(CeiError, match="newer than this cei understands"):
        Store(cei_home, state_url)


def test_postgresql_keeps_its_schema_version_in_a_table(cei_home: Path, pg_url: str) -> None:
    with Store(cei_home, pg_url) as store:
        [row] = store._read("SELECT version FROM cei_schema")
        assert row["version"] == SCHEMA_VERSION
        tables = {r["tablename"] for r in store._read(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "nodes", "resources", "events", "locks", "leases", "run_keys"} <= tables
    assert not (cei_home / "cei.db").exists()  # nothing of the state is kept locally


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CEI_HOME", str(tmp_path / "x"))
    assert default_home() == tmp_path / "x"
    monkeypatch.delenv("CEI_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".cei"


# -- runs -------------------------------------------------------------------------------------


def test_run_round_trip_and_status(store: Store) -> None:
    created = store.create_run("r1", "demo", Path("/plans/demo.yml"))
    assert isinstance(created, RunRecord)
    assert store.get_run("r1") == created
    assert created.status == "launching"
    assert created.plan_path == "/plans/demo.yml"
    store.set_run_status("r1", "ready")
    assert store.get_run("r1").status == "ready"
    store.create_run("r2", "demo", "demo.yml")
    assert [r.name for r in store.list_runs()] == ["r1", "r2"]
    assert store.find_run("nope") is None
    with pytest.raises(ValueError, match="unknown run status"):
        store.set_run_status("r1", "sleepy")
    with pytest.raises(UnknownRunError):
        store.set_run_status("nope", "ready")


def test_second_run_of_a_name_is_refused(store: Store) -> None:
    store.create_run("r1", "demo", "demo.yml")
    with pytest.raises(RunExistsError, match="r1"):
        store.create_run("r1", "demo", "demo.yml")


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 200])
def test_bad_run_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(UsageError, match="invalid run name"):
        store.create_run(name, "demo", "demo.yml")
    with pytest.raises(UsageError):
        store.run_dir(name)


def test_unknown_run_suggests_close_names_and_cei_list(store: Store) -> None:
    store.create_run("web-demo", "demo", "demo.yml")
    store.create_run("batch", "demo", "demo.yml")
    with pytest.raises(UnknownRunError) as caught:
        store.get_run("web-dmeo")
    message = str(caught.value)
    assert "did you mean 'web-demo'" in message
    assert "batch" not in message
    assert "cei list" in message
    with pytest.raises(UnknownRunError) as unrelated:
        store.get_run("zzzzzz")
    assert "did you mean" not in str(unrelated.value)


# -- nodes ------------------------------------------------------------------------------------


def test_node_round_trip_every_field(store: Store) -> None:
    record = make_node(
        cloud={"name": "lab", "image": "img-1", "nested": {"size": "small"}},
        state="ready",
        resource_id="i-123",
        token="tok-1",
        address="127.0.0.5",
        port=2222,
        hostname="web-0.local",
        ssh_user="cei",
        ssh_key="/home/u/.cei/runs/r1/id_ed25519",
        host_key="ssh-ed25519 AAAAC3Nza... host",
        host_key_fingerprint="SHA256:abc",
        outputs={"url": "http://127.0.0.5:8080"},
        programs={"setup": {"status": 0, "duration": 1.5}},
        last_error=None,
    )
    saved = store.save_node(record)
    assert saved.updated
    assert saved == dataclasses.replace(record, updated=saved.updated)
    assert store.nodes("r1") == [saved]


def test_nodes_ordered_by_level_service_index(store: Store) -> None:
    for node, service, index, level in [
        ("web-1", "web", 1, 2),
        ("db-0", "db", 0, 1),
        ("web-0", "web", 0, 2),
        ("api-0", "api", 0, 2),
    ]:
        store.save_node(make_node(node=node, service=service, index=index, level=level))
    assert [n.node for n in store.nodes("r1")] == ["db-0", "api-0", "web-0", "web-1"]
    assert store.nodes("other") == []


def test_save_node_upserts(store: Store) -> None:
    store.save_node(make_node(state="creating"))
    store.save_node(make_node(state="booting", address="127.0.0.9"))
    [node] = store.nodes("r1")
    assert (node.state, node.address) == ("booting", "127.0.0.9")


def test_save_nodes_batches_many_nodes(store: Store) -> None:
    count = SAVE_BATCH + 7  # more than one statement's worth
    store.save_node(make_node(node="web/3", index=3, state="failed", address="127.0.0.3"))
    store.save_nodes([make_node(node=f"web/{i}", index=i, cloud={"image": "i", "secret": "s"})
                      for i in range(count)] + [make_node(node="web/0", state="creating")])
    saved = {n.node: n for n in store.nodes("r1")}
    assert len(saved) == count
    assert saved["web/0"].state == "creating"  # a node named twice: the last one given
    assert (saved["web/3"].state, saved["web/3"].address) == ("pending", None)  # replaced
    assert saved["web/1"].cloud == {"image": "i"}  # scrubbed like save_node
    assert all(n.updated for n in saved.values())
    with pytest.raises(ValueError, match="unknown node state"):
        store.save_nodes([make_node(node="web/x", state="dreaming")])
    assert "web/x" not in {n.node for n in store.nodes("r1")}


def test_resource_records_are_synced_other_writes_are_not(sqlite_store: Store) -> None:
    """The intent and id of a cloud resource commit with synchronous=FULL (an fsync of the
    -wal file); a node's update with NORMAL."""
    seen: list[str] = []
    conn = sqlite_store._db._conn.conn  # type: ignore[attr-defined]

    def trace(sql: str) -> None:
        words = sql.split()
        if words[0] == "PRAGMA" and words[1] == "synchronous":
            seen.append(words[-1])
        elif words[0] in ("INSERT", "UPDATE"):
            seen.append(words[2 if words[0] == "INSERT" else 1])

    sqlite_store.save_node(make_node())
    conn.set_trace_callback(trace)
    try:
        intent = sqlite_store.record_intent("r1", "web-0", "ec2", {}, "tok")
        sqlite_store.record_resource_id(intent, "i-1")
        sqlite_store.update_node("r1", "web-0", state="ready")
        sqlite_store.set_resource_state("r1", "i-1", "terminated")
    finally:
        conn.set_trace_callback(None)
    synced = ["FULL", "resources", "NORMAL"]
    assert seen == synced + synced + ["nodes"] + synced
    assert conn.execute("PRAGMA synchronous").fetchone()["synchronous"] == 1  # NORMAL


def test_update_node_validates(store: Store) -> None:
    store.save_node(make_node())
    assert store.update_node("r1", "web-0", state="ready", outputs={"k": "v"}, port=22) is None
    updated = store.get_node("r1", "web-0")
    assert (updated.state, updated.outputs, updated.port) == ("ready", {"k": "v"}, 22)
    assert store.nodes("r1") == [updated]
    with pytest.raises(ValueError, match="colour"):
        store.update_node("r1", "web-0", colour="blue")
    with pytest.raises(ValueError, match="updated"):
        store.update_node("r1", "web-0", updated="yesterday")
    with pytest.raises(ValueError, match="unknown node state"):
        store.update_node("r1", "web-0", state="dreaming")
    with pytest.raises(ValueError, match="unknown node state"):
        store.save_node(make_node(state="dreaming"))
    with pytest.raises(KeyError):
        store.update_node("r1", "ghost-0", state="ready")


# -- resources --------------------------------------------------------------------------------


def test_resource_intent_then_id_then_state(store: Store, cei_home: Path,
                                            state_url: str) -> None:
    store.create_run("r1", "demo", "demo.yml")
    intent = store.record_intent("r1", "web-0", "ec2", {"image": "ami-1"}, "tok-web-0")
    # Committed at once: another connection sees the intent before the provider is called.
    with Store(cei_home, state_url) as other:
        [seen] = other.resources("r1")
        assert (seen.id, seen.token, seen.state) == (intent, "tok-web-0", "intent")
    [before] = store.resources("r1")
    assert (before.resource_id, before.state) == (None, "intent")
    store.record_resource_id(intent, "i-42")
    store.set_resource_state("r1", "i-42", "running")
    [after] = store.resources("r1")
    assert isinstance(after, ResourceRecord)
    assert (after.id, after.run, after.node, after.driver) == (intent, "r1", "web-0", "ec2")
    assert (after.cloud, after.token, after.resource_id) == (
        {"image": "ami-1"},
        "tok-web-0",
        "i-42",
    )
    assert after.state == "running"
    assert after.created == before.created
    with pytest.raises(KeyError):
        store.record_resource_id(intent + 100, "i-0")
    with pytest.raises(KeyError):
        store.set_resource_state("r1", "i-missing", "running")


def test_resources_kept_after_node_updates_and_teardown(store: Store) -> None:
    store.create_run("r1", "demo", "demo.yml")
    store.save_node(make_node())
    first = store.record_intent("r1", "web-0", "local", {}, "tok-a")
    store.record_resource_id(first, "node-a")
    store.update_node("r1", "web-0", resource_id="node-a", state="failed")
    second = store.record_intent("r1", "web-0", "local", {}, "tok-b")
    store.record_resource_id(second, "node-b")
    store.save_node(make_node(resource_id="node-b", state="ready"))
    store.set_resource_state("r1", "node-a", "terminated")
    store.set_resource_state("r1", "node-b", "terminated")
    store.update_node("r1", "web-0", state="terminated")
    assert [(r.resource_id, r.state) for r in store.resources("r1")] == [
        ("node-a", "terminated"),
        ("node-b", "terminated"),
    ]


def test_delete_run_refuses_while_resources_may_exist(store: Store) -> None:
    store.create_run("r1", "demo", "demo.yml")
    (store.run_dir("r1") / "node.log").write_text("log")
    store.save_node(make_node())
    store.append_event("r1", "node.state", "web-0", {"state": "ready"})
    live = store.record_intent("r1", "web-0", "local", {}, "tok-a")
    with pytest.raises(UsageError, match="intent"):
        store.delete_run("r1")
    store.record_resource_id(live, "node-a")
    with pytest.raises(UsageError, match="node-a"):
        store.delete_run("r1")
    store.set_resource_state("r1", "node-a", "terminated")
    store.delete_run("r1")
    assert store.find_run("r1") is None
    assert store.nodes("r1") == [] and store.resources("r1") == [] and store.events("r1") == []
    assert not (store.home / "runs" / "r1").exists()
    store.create_run("r1", "demo", "demo.yml")  # the name is free again
    with pytest.raises(UnknownRunError):
        store.delete_run("never")


def _finished_run(store: Store, name: str) -> None:
    """A terminated run of `name` with something in each table a run has, and a log."""
    store.create_run(name, "demo", "demo.yml")
    (store.run_dir(name) / "node.log").write_text(f"log of {name}")
    store.save_node(make_node(run=name, state="terminated"))
    intent = store.record_intent(name, "web-0", "local", {}, f"tok-{name}")
    store.record_resource_id(intent, f"node-{name}")
    store.set_resource_state(name, f"node-{name}", "terminated")
    store.append_event(name, "node.state", "web-0", {"state": "terminated"})
    store.save_run_key(name, "client_key", "ssh-ed25519 AAAA pub", "private text")
    store.set_run_status(name, "terminated")


def test_archive_run_keeps_a_finished_run_as_name_at_n(store: Store) -> None:
    _finished_run(store, "r1")
    store.create_run("r", "demo", "demo.yml")  # a name that r1's is longer than
    assert store.archive_run("r1") == "r1@1"
    assert store.find_run("r1") is None
    kept = store.get_run("r1@1")
    assert kept.status == "terminated"
    assert [n.node for n in store.nodes("r1@1")] == ["web-0"]
    assert [r.resource_id for r in store.resources("r1@1")] == ["node-r1"]
    assert [e.seq for e in store.events("r1@1")] == [1]
    assert [k.name for k in store.run_keys("r1@1")] == ["client_key"]
    assert (store.home / "runs" / "r1@1" / "node.log").read_text() == "log of r1"
    assert not (store.home / "runs" / "r1").exists()
    assert store.nodes("r1") == [] and store.events("r1") == [] and store.run_keys("r1") == []
    _finished_run(store, "r1")  # the name is free again; its history starts anew
    assert store.archive_run("r1") == "r1@2"
    store.create_run("r1", "demo", "demo.yml")
    assert [r.name for r in store.runs_named("r1")] == ["r1@1", "r1@2", "r1"]
    assert [r.name for r in store.runs_named("r")] == ["r"]
    store.delete_run("r1@1")  # a number given up is taken again
    store.set_run_status("r1", "terminated")
    assert store.archive_run("r1") == "r1@1"
    with pytest.raises(UnknownRunError, match="did you mean 'r1@2'"):
        store.get_run("r1@3")


def test_archive_run_refuses_a_run_that_may_have_resources_or_is_held(store: Store) -> None:
    store.create_run("r1", "demo", "demo.yml")
    intent = store.record_intent("r1", "web-0", "local", {}, "tok-a")
    store.record_resource_id(intent, "node-a")
    with pytest.raises(UsageError, match="node-a"):
        store.archive_run("r1")
    store.set_resource_state("r1", "node-a", "terminated")
    execute(store, "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                   "VALUES ('r1', 1, 1, 'busy-host', 't', NULL)")
    with pytest.raises(RunLockedError, match="busy-host"):
        store.archive_run("r1")
    assert store.find_run("r1") is not None and store.runs_named("r1")[0].name == "r1"


def test_a_kept_run_name_is_not_one_a_new_run_may_have(store: Store) -> None:
    with pytest.raises(UsageError, match="invalid run name"):
        store.create_run("r1@1", "demo", "demo.yml")
    assert store.run_dir("r1@1").is_dir()  # but the kept run's directory is one


# -- events -----------------------------------------------------------------------------------


def test_event_round_trip(store: Store) -> None:
    event = store.append_event("r1", "node.state", "web-0", {"state": "booting", "n": [1, 2]})
    assert isinstance(event, EventRecord)
    assert (event.run, event.seq, event.kind, event.node) == ("r1", 1, "node.state", "web-0")
    assert event.time.endswith("+00:00") and "T" in event.time
    run_event = store.append_event("r1", "run.status", None, {})
    assert store.events("r1") == [event, run_event]
    assert store.events("r1", after=1) == [run_event]
    assert store.append_event("r2", "run.status", None, {}).seq == 1


def test_event_seq_is_monotonic_from_many_threads(cei_home: Path, state_url: str) -> None:
    # two connections, as two processes would have
    stores = [Store(cei_home, state_url), Store(cei_home, state_url)]
    threads_per_store, per_thread = 4, 25
    errors: list[BaseException] = []

    def writer(store: Store, worker: int) -> None:
        try:
            for i in range(per_thread):
                store.append_event("r1", "tick", f"w{worker}", {"i": i})
        except BaseException as exc:  # reported below, a thread cannot raise into the test
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, n * threads_per_store + k))
        for n, store in enumerate(stores)
        for k in range(threads_per_store)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    events = stores[0].events("r1")
    total = len(stores) * threads_per_store * per_thread
    assert [e.seq for e in events] == list(range(1, total + 1))
    for worker in range(len(threads)):
        mine = [e.data["i"] for e in events if e.node == f"w{worker}"]
        assert mine == list(range(per_thread))
    for store in stores:
        store.close()


# -- secrets ----------------------------------------------------------------------------------


SECRETS = [
    "AKIA-SECRET-ACCESS-KEY-ID-42",
    "wJalrXUtnFEMI-K7MDENG-bPxRfiCY",
    "FwoGZXIvYXdzEJr-session-token",
    "hunter2-password-value",
    "libcloud-api-token-zzz",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
]


def cloud_spec_like() -> dict:
    return {
        "name": "aws-lab",
        "driver": "ec2",
        "image": "ami-12345",
        "region": "us-east-1",
        "credentials": {"access_key_id": SECRETS[0], "secret_access_key": SECRETS[1]},
        "session_token": SECRETS[2],
        "extra": {"password": SECRETS[3], "auth_token": SECRETS[4], "keep": "visible"},
        "nics": [{"private_key": SECRETS[5], "subnet": "sn-1"}],
    }


def test_secrets_never_reach_the_database(store: Store) -> None:
    private_key_text = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n" + SECRETS[5] + "\n-----END OPENSSH PRIVATE KEY-----"
    )
    store.create_run("r1", "demo", "demo.yml")
    store.save_node(
        make_node(
            cloud=cloud_spec_like(),
            token="tok-idempotency-1",
            programs={"setup": {"env": {"DB_PASSWORD": SECRETS[3]}, "argv": ["./setup"]}},
            outputs={"admin_password": SECRETS[3], "url": "http://x"},
        )
    )
    store.update_node("r1", "web-0", cloud=cloud_spec_like())
    intent = store.record_intent("r1", "web-0", "ec2", cloud_spec_like(), "tok-idempotency-1")
    store.record_resource_id(intent, "i-1")
    store.append_event(
        "r1",
        "node.create",
        "web-0",
        {"cloud": cloud_spec_like(), "token": "tok-event-1", "key": private_key_text},
    )
    raw = raw_contents(store)
    assert raw, "the database is empty"
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    # What is not secret is kept: the idempotency tokens, ordinary options.
    assert b"tok-idempotency-1" in raw and b"tok-event-1" in raw
    [node] = store.nodes("r1")
    assert node.token == "tok-idempotency-1"
    assert node.cloud == {
        "name": "aws-lab",
        "driver": "ec2",
        "image": "ami-12345",
        "region": "us-east-1",
        "extra": {"keep": "visible"},
        "nics": [{"subnet": "sn-1"}],
    }
    assert node.programs == {"setup": {"env": {}, "argv": ["./setup"]}}
    assert node.outputs == {"url": "http://x"}
    [resource] = store.resources("r1")
    assert resource.token == "tok-idempotency-1"
    assert "credentials" not in resource.cloud
    [event] = store.events("r1")
    assert event.data["token"] == "tok-event-1"
    assert event.data["key"] == "<private key redacted>"


def test_scrub_keeps_tokens_outside_cloud_dicts() -> None:
    data = {"token": "t", "Secret_Key": "s", "items": [{"PASSWORD": "p", "ok": 1}]}
    assert scrub_secrets(data) == {"token": "t", "items": [{"ok": 1}]}
    assert scrub_secrets({"token": "t", "image": "i"}, cloud=True) == {"image": "i"}
    assert scrub_secrets({"session_token": "s", "token": "t"}) == {"token": "t"}
    assert scrub_secrets({"cloud": {"api_token": "a", "image": "i"}, "token": "t"}) == {
        "cloud": {"image": "i"},
        "token": "t",
    }


# -- locks ------------------------------------------------------------------------------------


LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from launchplan.state import Store

    store = Store(sys.argv[1], sys.argv[3])
    with store.locked(sys.argv[2]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def start_holder(store: Store, run: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(store.home), run, store_url(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 30)
    if not ready:
        stop_holder(child)
        pytest.fail("the lock-holding child did not start within 30 s")
    line = child.stdout.readline()
    if line.strip() != b"locked":
        child.kill()
        _, err = child.communicate(timeout=10)
        pytest.fail(f"the lock-holding child failed: {err.decode(errors='replace')}")
    return child


def stop_holder(child: subprocess.Popen) -> None:
    child.kill()
    child.communicate(timeout=10)  # reaps it and closes its pipes


def test_lock_held_by_live_process_then_taken_over_when_it_dies(store: Store) -> None:
    child = start_holder(store, "r1")
    try:
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"), store.locked("r1"):
            pytest.fail("acquired a lock another live process holds")
        with store.locked("other-run"):  # locks are per run
            pass
    finally:
        stop_holder(child)
    # The holder died without releasing: its row is still there and is taken over.
    assert [row["pid"] for row in lock_rows(store)] == [child.pid]
    with store.locked("r1"):
        assert [row["pid"] for row in lock_rows(store)] == [os.getpid()]
    assert lock_rows(store) == []


def test_lock_released_normally_by_other_process(store: Store) -> None:
    child = start_holder(store, "r1")
    assert child.stdin is not None
    child.communicate(b"\n", timeout=30)
    assert child.returncode == 0
    assert lock_rows(store) == []
    with store.locked("r1"):
        pass


def insert_lock(store: Store, run: str, pid: int, starttime: int | None, host: str,
                expires: float | None = None) -> None:
    execute(store, "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
            (run, pid, starttime, host, "2024-01-01T00:00:00+00:00", expires))


def test_lock_of_dead_pid_is_taken_over(store: Store) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    insert_lock(store, "r1", gone.pid, 12345, store._me.host, time.time() + 600)
    with store.locked("r1"):
        assert [row["pid"] for row in lock_rows(store)] == [os.getpid()]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_lock_of_recycled_pid_is_taken_over(store: Store) -> None:
    parent = os.getppid()
    starttime = process_starttime(parent)
    assert starttime is not None
    insert_lock(store, "r1", parent, starttime + 1, store._me.host)  # same pid, other process
    with store.locked("r1"):
        assert [row["pid"] for row in lock_rows(store)] == [os.getpid()]


def test_lock_from_another_host_is_respected_until_it_expires(store: Store) -> None:
    insert_lock(store, "r1", 1, 1, "some-other-host", time.time() + 600)
    with pytest.raises(RunLockedError, match=r"some-other-host.*cei unlock r1"), \
            store.locked("r1"):
        pytest.fail("acquired a lock held on another host")
    holder = store.lock_holder("r1")
    assert holder is not None and holder.host == "some-other-host"
    execute(store, "UPDATE locks SET expires = ?", (time.time() - 1,))
    assert store.lock_holder("r1") is None  # its machine stopped renewing it: it is stale
    with store.locked("r1"):
        [row] = lock_rows(store)
        assert (row["host"], row["pid"]) == (store._me.host, os.getpid())
        assert row["expires"] > time.time() + LOCK_TTL / 2


def test_a_lock_without_expiry_from_another_host_waits_for_unlock(store: Store) -> None:
    insert_lock(store, "r1", 7, 1, "old-cei-host", None)  # taken by a cei before expiries
    with pytest.raises(RunLockedError, match="never expires"), store.locked("r1"):
        pytest.fail("took a lock that never expires")
    record = store.lock_record("r1")
    assert record is not None and (record.host, record.pid, record.expires) == (
        "old-cei-host", 7, None)
    insert_lock_again = dataclasses.replace(record, acquired="2030-01-01T00:00:00+00:00")
    assert not store.break_lock(insert_lock_again)  # not the lock it was shown: kept
    assert store.break_lock(record)
    assert store.lock_record("r1") is None
    with store.locked("r1"):
        pass


def test_a_held_lock_is_renewed_while_held(store: Store, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setattr(locks, "RENEW_EVERY", 0.05)
    with store.locked("r1"):
        [first] = lock_rows(store)
        execute(store, "UPDATE locks SET expires = ?", (time.time() + 1,))
        deadline = time.monotonic() + 30
        while lock_rows(store)[0]["expires"] < time.time() + LOCK_TTL / 2:
            assert time.monotonic() < deadline, "the lock was not renewed"
            time.sleep(0.05)
        assert lock_rows(store)[0]["acquired"] == first["acquired"]
    assert lock_rows(store) == []


def test_lock_is_reentrant_and_released_on_exception(store: Store, cei_home: Path,
                                                     state_url: str) -> None:
    with store.locked("r1"):
        with store.locked("r1"):
            assert len(lock_rows(store)) == 1
        assert len(lock_rows(store)) == 1  # the inner exit keeps the outer's lock
        with Store(cei_home, state_url) as second, second.locked("r1"):
            pass
        assert len(lock_rows(store)) == 1
    assert lock_rows(store) == []
    with pytest.raises(RuntimeError), store.locked("r1"):
        raise RuntimeError("boom")
    assert lock_rows(store) == []


def test_delete_run_refused_while_another_process_holds_its_lock(store: Store) -> None:
    store.create_run("r1", "demo", "demo.yml")
    child = start_holder(store, "r1")
    try:
        with pytest.raises(RunLockedError):
            store.delete_run("r1")
    finally:
        stop_holder(child)
    with store.locked("r1"):
        store.delete_run("r1")
    assert store.find_run("r1") is None


def test_nodes_are_read_again_after_a_write_here_or_in_another_process(
        cei_home: Path, state_url: str) -> None:
    with Store(cei_home, state_url) as here, Store(cei_home, state_url) as elsewhere:
        here.create_run("r1", "demo", "demo.yml")
        here.save_node(make_node())
        assert here.nodes("r1") == here.nodes("r1")
        elsewhere.update_node("r1", "web-0", state="ready")
        assert here.nodes("r1")[0].state == "ready"
        here.update_node("r1", "web-0", address="192.0.2.7")
        assert here.nodes("r1")[0].address == "192.0.2.7"
        elsewhere.save_node(make_node(node="web-1", index=1))
        assert [n.node for n in here.nodes("r1")] == ["web-0", "web-1"]
