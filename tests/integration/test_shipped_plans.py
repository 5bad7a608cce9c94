"""The plans shipped in plans/ are valid as they are, and the local ones run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from launchplan.ctx.hostkeys import generate_client_key
from tests.integration.cli_helpers import REPO, cei, cei_json

PLANS = sorted((REPO / "plans").glob("*.yml"))
CLOUD_ENV = {name: "placeholder" for name in (
    "OS_AUTH_URL", "OS_PROJECT_NAME", "OS_USER_DOMAIN_NAME", "OS_REGION_NAME", "OS_USERNAME",
    "OS_PASSWORD")}


def test_every_shipped_plan_is_listed() -> None:
    assert {p.name for p in PLANS} >= {"hello.yml", "three-tier.yml", "sliding-window.yml",
                                       "ec2.yml", "openstack.yml"}


@pytest.mark.parametrize("plan", PLANS, ids=[p.name for p in PLANS])
def test_shipped_plan_validates(plan: Path, home: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # the cloud plans read credentials from the environment and name a key under ~, which
    # this machine need not have to validate them (only to launch them)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    for name, value in CLOUD_ENV.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    proc = cei(home, "validate", str(plan), check=0)
    assert "valid" in proc.stdout


def test_a_missing_ssh_key_is_a_warning_for_validate_and_refused_by_launch(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    proc = cei(home, "validate", str(REPO / "plans" / "ec2.yml"), check=0)
    key = tmp_path / "user" / ".ssh" / "id_ed25519"
    assert f"ec2.yml:32:14: cloud 'aws': ssh_key: file not found: {key}" in proc.stderr
    launch = cei(home, "launch", str(REPO / "plans" / "ec2.yml"), "--name", "nokey", check=2)
    assert f"error: {REPO / 'plans' / 'ec2.yml'}:32:14" in launch.stderr
    assert cei_json(home, "list")["runs"] == []
    generate_client_key(key)
    assert "warning" not in cei(home, "validate", str(REPO / "plans" / "ec2.yml"),
                                check=0).stderr


def test_hello_runs_with_a_greeting_of_spaces_and_quotes(home: Path) -> None:
    greeting = "it's \"hi\" $USER"
    cei(home, "launch", str(REPO / "plans" / "hello.yml"), "--name", "hi", "--var",
        f"greeting={greeting}", check=0)
    node = cei_json(home, "status", "hi")["nodes"][0]
    assert node["healthy"] is True
    assert node["outputs"]["greeting"] == f"{greeting} from hello/0"
    cei(home, "terminate", "hi", check=0)


def test_three_tier_uses_the_shipped_cloud_config_template(home: Path) -> None:
    """templates/db.cloud-config.j2, rendered for the node and applied by (the local cloud's)
    cloud-init before cei connects."""
    cei(home, "launch", str(REPO / "plans" / "three-tier.yml"), "--name", "tiers",
        "--var", "app_nodes=1", check=0)
    written = home / "runs" / "tiers" / "nodes" / "db-0" / "root" / "etc" / "cei" / "node.json"
    assert json.loads(written.read_text()) == {"run": "tiers", "service": "db", "replica": 0,
                                               "replicas": 1}
    cei(home, "terminate", "tiers", check=0)
