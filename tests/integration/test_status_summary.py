"""`cei status` above STATUS_SUMMARY_NODES: a summary per service, `--all` for every node, and
the same complete JSON either way. The run is written to the store directly: no cloud."""

from __future__ import annotations

import json
from pathlib import Path

from launchplan.cli.statusview import STATUS_SUMMARY_NODES
from launchplan.state import ElasticRecord, NodeRecord, Store
from tests.integration.cli_helpers import cei

WIDE = {"COLUMNS": "200"}  # rows of --all on one line each


def _record(run: str, number: int) -> NodeRecord:
    """Node `number`: web or worker by parity, every 25th failed."""
    service = ("web", "worker")[number % 2]
    failed = number % 25 == 4
    return NodeRecord(
        run=run, node=f"{service}/{number}", service=service, index=number,
        level=1 if service == "web" else 2, level_name="front" if service == "web" else "back",
        driver="local", state="failed" if failed else "ready", resource_id=f"{run}/{number}",
        address=f"127.9.{number // 200}.{number % 200 + 1}", port=22,
        outputs={"n": number}, last_error=f"boot of node {number} exited 3" if failed else None)


def _store_run(home: Path, run: str, nodes: int) -> list[NodeRecord]:
    records = [_record(run, number) for number in range(nodes)]
    with Store(home, "") as store:
        store.create_run(run, run, f"/plans/{run}.yml")
        store.save_nodes(records)
        store.save_elastic(ElasticRecord(run=run, service="worker", level=2,
                                         spec={"policy": "queue"}, min=3, desired=nodes // 2,
                                         max=nodes))
        store.set_run_status(run, "ready")
    return records


def test_above_the_threshold_status_summarises_per_service(cei_home: Path) -> None:
    records = _store_run(cei_home, "big", STATUS_SUMMARY_NODES + 1)
    failed = [r for r in records if r.state == "failed"]
    shown = cei(cei_home, "status", "big", "--cached", check=1, env=WIDE).stdout
    assert "a summary per service; --all shows every node" in shown
    rows = {line.split("│")[2].strip(): line for line in shown.splitlines()
            if line.count("│") > 3 and line.split("│")[2].strip() in ("web", "worker")}
    web = sum(r.service == "web" for r in records)
    web_failed = sum(r.service == "web" for r in failed)
    assert f"failed {web_failed}, ready {web - web_failed}" in rows["web"]
    assert f"{STATUS_SUMMARY_NODES // 2} (3-{STATUS_SUMMARY_NODES + 1})" in rows["worker"]
    assert f"failed nodes ({len(failed)}):" in shown
    for record in failed:  # each failure by node, with its message
        assert f"  {record.node} (failed): {record.last_error}\n" in shown
    assert not any(r.address in shown for r in records)  # no row per node
    assert "not all healthy" in shown


def test_all_shows_every_node_above_the_threshold(cei_home: Path) -> None:
    records = _store_run(cei_home, "big", STATUS_SUMMARY_NODES + 1)
    shown = cei(cei_home, "status", "big", "--cached", "--all", check=1, env=WIDE).stdout
    assert "a summary per service" not in shown
    addresses = {line.split("│")[5].strip() for line in shown.splitlines() if "│" in line}
    assert addresses >= {r.address for r in records}


def test_at_the_threshold_status_shows_every_node(cei_home: Path) -> None:
    records = _store_run(cei_home, "edge", STATUS_SUMMARY_NODES)
    shown = cei(cei_home, "status", "edge", "--cached", check=1, env=WIDE).stdout
    assert "a summary per service" not in shown
    assert all(r.address in shown for r in records)


def test_json_lists_every_node_as_before_with_or_without_all(cei_home: Path) -> None:
    records = _store_run(cei_home, "big", STATUS_SUMMARY_NODES + 1)
    plain = cei(cei_home, "status", "big", "--cached", "--json", check=1).stdout
    every = cei(cei_home, "status", "big", "--cached", "--all", "--json", check=1).stdout
    assert plain == every
    document = json.loads(plain)
    assert [n["node"] for n in document["nodes"]] == [
        r.node for r in sorted(records, key=lambda r: (r.level, r.service, r.index))]
    assert document["nodes"][0] == {
        "node": "web/0", "service": "web", "level": "front", "state": "ready",
        "healthy": True, "address": "127.9.0.1", "resource_id": "big/0", "outputs": {"n": 0},
        "message": "", "checks": [{"check": "state", "passed": True, "duration": 0.0,
                                   "message": "", "status": None, "stderr_tail": "",
                                   "stdout_tail": ""}]}
    failed = next(n for n in document["nodes"] if n["node"] == "worker/29")
    assert (failed["healthy"], failed["message"], failed["checks"][0]["message"]) == (
        False, "boot of node 29 exited 3", "failed: boot of node 29 exited 3")
    assert set(document) == {"v", "run", "plan", "status", "healthy", "checked", "nodes",
                             "retired", "elastic", "controller"}
    assert (document["healthy"], document["checked"], document["retired"]) == (
        False, "cached", [])
    assert [(e["service"], e["min"], e["desired"], e["max"]) for e in document["elastic"]] == [
        ("worker", 3, STATUS_SUMMARY_NODES // 2, STATUS_SUMMARY_NODES + 1)]
