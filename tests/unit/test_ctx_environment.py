"""The node environment contract: stage directory, CEI_* variables, the context document."""

from __future__ import annotations

import json

import pytest

from launchplan.ctx.environment import context_document, node_environment, stage_dir
from launchplan.errors import UsageError
from launchplan.plan.model import CloudSpec, NodeSpec


def _spec() -> NodeSpec:
    return NodeSpec(
        run="r1",
        service="db",
        index=1,
        count=2,
        level=1,
        level_name="storage",
        cloud=CloudSpec(name="local", driver="local"),
    )


def test_stage_dir_is_per_node() -> None:
    assert stage_dir("r1", "db", 0) == ".cei/r1/db/0"
    assert stage_dir("r1", "db", 1) == ".cei/r1/db/1"


@pytest.mark.parametrize("run,service", [("", "db"), ("r1", "a/b"), ("..", "db"), ("r1", ".")])
def test_stage_dir_refuses_path_tricks(run: str, service: str) -> None:
    with pytest.raises(UsageError):
        stage_dir(run, service, 0)


def test_node_environment() -> None:
    env = node_environment(_spec(), "/home/u/.cei/r1/db")
    assert env == {
        "CEI_RUN": "r1",
        "CEI_SERVICE": "db",
        "CEI_NODE": "db/1",
        "CEI_NODE_INDEX": "1",
        "CEI_LEVEL": "storage",
        "CEI_CONFIG": "/home/u/.cei/r1/db/config.json",
        "CEI_CONTEXT": "/home/u/.cei/r1/db/context.json",
        "CEI_OUTPUT": "/home/u/.cei/r1/db/output.json",
        "CEI_STAGE": "/home/u/.cei/r1/db",
    }
    assert all(isinstance(v, str) for v in env.values())


def test_context_document_keeps_only_public_fields() -> None:
    nodes = [
        {
            "service": "db",
            "index": 0,
            "node": "db/0",
            "address": "127.0.0.5",
            "hostname": "db-0",
            "host_key_fingerprint": "SHA256:abc",
            "outputs": {"port": 5432},
            "ssh_key": "/secret/key",
            "token": "t",
        },
        {"service": "web", "index": 2},
    ]
    doc = context_document("r1", nodes)
    assert doc == {
        "run": "r1",
        "nodes": [
            {
                "service": "db",
                "index": 0,
                "node": "db/0",
                "address": "127.0.0.5",
                "hostname": "db-0",
                "host_key_fingerprint": "SHA256:abc",
                "outputs": {"port": 5432},
            },
            {
                "service": "web",
                "index": 2,
                "node": "web/2",
                "address": None,
                "hostname": None,
                "host_key_fingerprint": None,
                "outputs": {},
            },
        ],
    }
    json.dumps(doc)
    assert context_document("r1", []) == {"run": "r1", "nodes": []}
