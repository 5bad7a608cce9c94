"""Runs moved between stores: export/import of one run, migrate of all; on both backends."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from launchplan.errors import RunExistsError, UsageError
from launchplan.state import ElasticRecord, NodeRecord, ProcessRecord, Store
from launchplan.state.transfer import copy_runs, export_run, import_run


def fill(store: Store, run: str = "r1") -> None:
    """A run with something in every table a run has."""
    store.create_run(run, "demo", "/plans/demo.yml", launch={"overrides": {"n": "2"}})
    store.save_node(NodeRecord(run=run, node="web/0", service="web", index=0, level=1,
                               level_name="front", driver="ec2", cloud={"image": "ami-1"},
                               state="ready", resource_id="i-1", address="10.0.0.1",
                               outputs={"url": "http://x"}, programs={"ready": None}))
    first = store.record_intent(run, "web/0", "ec2", {"image": "ami-1"}, "tok-1")
    store.record_resource_id(first, "i-1")
    gone = store.record_intent(run, "web/0", "ec2", {"image": "ami-1"}, "tok-0")
    store.set_intent_state(gone, "not-created")
    store.append_event(run, "run.started", None, {"levels": 1})
    store.append_event(run, "node.state", "web/0", {"state": "ready"})
    store.save_process(ProcessRecord(run=run, name="p", definition={"exec": "/bin/true"},
                                     engine="web", node="web/0", state="running", pid=9))
    store.save_elastic(ElasticRecord(run=run, service="web", level=1, spec={"min": 1},
                                     min=1, desired=1, max=3, last_action=1.5e9 + 0.25))
    store.add_request(run, "scale", "web", {"count": 2})
    store.save_run_key(run, "client_key", "ssh-ed25519 AAAA pub", "private text")


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """A document without what another store assigns anew (ids, the export's time)."""
    doc = copy.deepcopy(document)
    doc.pop("exported")
    for part in ("resources", "requests"):
        for item in doc[part]:
            item.pop("id")
    return doc


@pytest.fixture
def source(tmp_path: Path, state_url: str):
    with Store(tmp_path / "a", state_url) as store:
        yield store


def test_export_then_import_into_another_store_keeps_everything(
        source: Store, tmp_path: Path) -> None:
    fill(source)
    document = json.loads(json.dumps(export_run(source, "r1")))  # as a file carries it
    assert document["kind"] == "cei-run" and document["v"] == 1
    with Store(tmp_path / "b", "") as target:
        run = import_run(target, document)
        assert run == source.get_run("r1")
        assert comparable(export_run(target, "r1")) == comparable(document)
        assert [r.state for r in target.resources("r1")] == ["created", "not-created"]
        assert target.append_event("r1", "x", None, {}).seq == 3  # history goes on from there
        with pytest.raises(RunExistsError, match="already has a run named 'r1'"):
            import_run(target, document)


def test_migrate_copies_every_run_and_skips_what_is_there(source: Store, tmp_path: Path,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    """SQLite to PostgreSQL, and back."""
    fill(source, "r1")
    fill(source, "r2")
    other = request.getfixturevalue("pg_url") if source.location.kind == "sqlite" else ""
    with Store(tmp_path / "b", other) as target:
        fill(target, "r2")  # already in the target: left as it is
        outcomes = copy_runs(source, target)
        assert [(o.run, o.copied) for o in outcomes] == [("r1", True), ("r2", False)]
        assert "already has" in outcomes[1].reason
        assert comparable(export_run(target, "r1")) == comparable(export_run(source, "r1"))
        assert source.find_run("r1") is not None  # a copy: the source keeps its runs
        assert target.lock_record("r1") is None and source.lock_record("r1") is None


def test_a_kept_earlier_run_moves_under_its_name_at_n(source: Store, tmp_path: Path) -> None:
    """A run kept as NAME@N by a reused name is exported, imported and migrated as it is."""
    fill(source)
    source.set_resource_state("r1", "i-1", "terminated")
    source.set_run_status("r1", "terminated")
    assert source.archive_run("r1") == "r1@1"
    document = json.loads(json.dumps(export_run(source, "r1@1")))
    with Store(tmp_path / "b", "") as target:
        assert import_run(target, document).name == "r1@1"
        assert comparable(export_run(target, "r1@1")) == comparable(document)
    with Store(tmp_path / "c", "") as target:
        assert [(o.run, o.copied) for o in copy_runs(source, target)] == [("r1@1", True)]
        assert [r.name for r in target.runs_named("r1")] == ["r1@1"]
        fill(target)  # a new run of the name, archived next to the migrated one
        target.set_resource_state("r1", "i-1", "terminated")
        target.set_run_status("r1", "terminated")
        assert target.archive_run("r1") == "r1@2"


def test_migrate_leaves_a_run_another_process_changes(source: Store, tmp_path: Path) -> None:
    fill(source)
    from tests.unit.storehelp import execute

    execute(source, "INSERT INTO locks (run, pid, starttime, host, acquired, expires) "
                    "VALUES ('r1', 1, 1, 'busy-host', 't', NULL)")
    with Store(tmp_path / "b", "") as target:
        [outcome] = copy_runs(source, target)
        assert not outcome.copied and "busy-host" in outcome.reason
        assert target.find_run("r1") is None


@pytest.mark.parametrize("change, problem", [
    (lambda d: d.update(kind="other"), "not a cei run export"),
    (lambda d: d.update(v=99), "version 99"),
    (lambda d: d.update(nodes={}), "'nodes' must be a list"),
    (lambda d: d["nodes"][0].update(colour="red"), r"nodes\[0\] has unknown fields: colour"),
    (lambda d: d["nodes"][0].update(index="zero"), r"nodes\[0\].index must be int"),
    (lambda d: d["nodes"][0].update(run="other"), "nodes of other runs"),
    (lambda d: d["run"].pop("plan"), "run: .*plan"),
    (lambda d: d["events"][0].update(data=[1]), r"events\[0\].data must be dict"),
    (lambda d: d["run"].update(name="../r1"), "invalid run name '../r1'"),
])
def test_a_bad_document_is_refused_whole(source: Store, tmp_path: Path, change: Any,
                                         problem: str) -> None:
    fill(source)
    document = export_run(source, "r1")
    change(document)
    with Store(tmp_path / "b", "") as target:
        with pytest.raises(UsageError, match=problem):
            import_run(target, document)
        assert target.list_runs() == [] and target.nodes("r1") == []
