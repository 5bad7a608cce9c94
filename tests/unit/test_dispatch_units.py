"""Pure parts of dispatch: the processes table and its migration, definitions, the demo CSV."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from launchplan.demo.messaging import split_password, with_password
from launchplan.demo.stream import Message, definition_option, read_series, worker_definition
from launchplan.dispatch.definition import check_definition, for_agent, load_definition
from launchplan.errors import PlanError, UsageError
from launchplan.plan.render import agent_settings
from launchplan.state import ProcessRecord, Store
from launchplan.state.schema import SCHEMA_VERSION, statements
from launchplan.state.sqlite import SQLiteDatabase


def test_version_1_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    conn = sqlite3.connect(str(home / "cei.db"))
    for sql in statements(0, SQLiteDatabase.autoid, SQLiteDatabase.text):
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs VALUES ('old', 'p', 'p.yml', 'ready', 't', 't')")
    conn.commit()
    conn.close()
    with Store(home, "") as store:
        assert store.get_run("old").status == "ready"
        assert store.get_run("old").launch == {}
        assert store.processes("old") == []
        assert store.elastic_services("old") == []
    conn = sqlite3.connect(str(home / "cei.db"))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    finally:
        conn.close()


def test_process_records_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        store.create_run("r", "p", "p.yml")
        record = ProcessRecord(run="r", name="a", definition={"name": "a", "exec": "/bin/true"},
                               engine="engine", node="engine/0", state="running", pid=42)
        stored = store.save_process(record)
        assert stored.created and stored.updated and stored.definition["exec"] == "/bin/true"
        moved = store.update_process("r", "a", node="engine/1", round=1, state="waiting")
        assert (moved.node, moved.round, moved.state, moved.pid) == ("engine/1", 1, "waiting", 42)
        again = store.save_process(replace(record, state="exited"))
        assert again.created == stored.created and again.state == "exited"
        with pytest.raises(ValueError, match="unknown process state"):
            store.update_process("r", "a", state="sleeping")
        with pytest.raises(ValueError, match="unknown process field"):
            store.update_process("r", "a", colour="red")
        with pytest.raises(KeyError):
            store.get_process("r", "b")
        assert store.find_process("r", "b") is None
        store.set_run_status("r", "terminated")
        store.delete_run("r")
        assert store.processes("r") == []


def test_definition_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.yml"
    path.write_text("name: job\nexec: /bin/true\nmin_restart_interval: -1\n")
    with pytest.raises(PlanError, match=rf"{path}:3: .*min_restart_interval"):
        load_definition(path)
    path.write_text("exec: /bin/true\n")
    with pytest.raises(PlanError, match="no name"):
        load_definition(path)
    assert load_definition(path, name="given")["name"] == "given"
    path.write_text("name: [unclosed\n")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_definition(path)
    with pytest.raises(PlanError, match="exactly one of exec or module"):
        check_definition({"name": "x"})
    with pytest.raises(UsageError, match="no such process definition"):
        load_definition(tmp_path / "missing.yml")


def test_definition_keeps_node_dependent_defaults_for_the_agent() -> None:
    checked = check_definition({"name": "m", "module": "pkg.mod:main"})
    assert "python" not in checked and checked == {"name": "m", "module": "pkg.mod:main"}


def test_read_series_orders_values_by_time_then_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("time,a,b\n\n0.5,1,2\n1.5, 3 ,4e0\n")
    variables, messages = read_series(path)
    assert variables == ["a", "b"]
    assert messages == [Message(0.5, "a", 1.0), Message(0.5, "b", 2.0),
                        Message(1.5, "a", 3.0), Message(1.5, "b", 4.0)]
    path.write_text("time,a,a\n1,2,3\n")
    with pytest.raises(UsageError, match=rf"{path}:1: variable names"):
        read_series(path)
    path.write_text("time,a\n")
    with pytest.raises(UsageError, match="no data rows"):
        read_series(path)


def test_worker_definition_carries_transport_and_queues() -> None:
    local = worker_definition("r1", "filesystem:///tmp/bus", 10, local=True)
    assert local["module"] == "launchplan.demo.worker:main"
    assert definition_option(local, "--transport") == "filesystem:///tmp/bus"
    assert definition_option(local, "--input") == "cei.r1.data"
    assert definition_option(local, "--output") == "cei.r1.averages"
    assert local["pythonpath"] and local["restart"] == "abnormal"
    assert "pythonpath" not in worker_definition("r1", "amqp://h//", 10, local=False)
    check_definition(local)


@pytest.mark.parametrize("value, expected", [
    (None, None), (False, None), (True, {"slots": 4}), ({}, {"slots": 4}),
    ({"slots": 2}, {"slots": 2}),
])
def test_agent_settings(value: object, expected: object) -> None:
    assert agent_settings(value) == expected


def test_broker_password_leaves_the_url_and_comes_back_from_the_environment() -> None:
    url = "amqp://cei:s3cr%2Ft@127.0.0.1:5672//"
    assert split_password(url) == ("amqp://cei@127.0.0.1:5672//", "s3cr/t")
    assert with_password("amqp://cei@127.0.0.1:5672//", "s3cr/t") == url
    assert with_password(url, "other") == url  # a URL's own password stays
    assert split_password("filesystem:///tmp/bus") == ("filesystem:///tmp/bus", None)

    definition = worker_definition("r", url, 10, local=False, password_from_env=True)
    assert "s3cr" not in repr(definition)
    assert definition["env_from"] == {"CEI_TRANSPORT_PASSWORD": "CEI_TRANSPORT_PASSWORD"}
    sent = for_agent(check_definition(definition), {"CEI_TRANSPORT_PASSWORD": "s3cr/t"})
    assert "env_from" not in sent
    assert sent["env"]["CEI_TRANSPORT_PASSWORD"] == "s3cr/t"
    with pytest.raises(UsageError, match="set CEI_TRANSPORT_PASSWORD"):
        for_agent(definition, {})


def test_env_from_must_map_names_to_names() -> None:
    base = {"name": "p", "exec": "/bin/true"}
    check_definition({**base, "env_from": {"TOKEN": "MY_TOKEN"}})
    for bad in ({"TOKEN": "not a name"}, ["TOKEN"], {"1X": "Y"}):
        with pytest.raises(PlanError, match="env_from"):
            check_definition({**base, "env_from": bad})
