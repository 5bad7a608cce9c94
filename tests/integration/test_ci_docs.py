"""docs/ci.md: its GitHub Actions and GitLab CI jobs parse, and their commands run as written.

The commands are taken from the YAML itself, so that the guide and what is tested cannot
drift: every line of every step runs in order, with CI's variables set as the CI system would,
except the lines that install cei and jq (already here).
"""

from __future__ import annotations

import os
import re
import stat
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cli_helpers import REPO, cei_json, node_processes
from tests.junit_report import read_report

pytestmark = pytest.mark.integration

GUIDE = REPO / "docs" / "ci.md"
INSTALLS = {"python -m pip install .", "apt-get update -qq && apt-get install -y -qq jq"}
GITHUB = {"github.run_id": "4242", "github.run_attempt": "1"}
GITLAB = {"CI_PIPELINE_ID": "777", "CI_JOB_ID": "888", "CI_PIPELINE_SOURCE": "push",
          "GITLAB_CI": "true"}


def _examples() -> dict[str, Any]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    documents = [yaml.safe_load(block) for block in blocks]
    github = [d for d in documents if isinstance(d, dict) and "jobs" in d]
    gitlab = [d for d in documents if isinstance(d, dict) and "smoke-deploy" in d]
    assert len(github) == 1 and len(gitlab) == 1
    return {"github": github[0], "gitlab": gitlab[0]}


def test_examples_are_complete_jobs() -> None:
    github, gitlab = _examples().values()
    smoke = github["jobs"]["smoke"]
    steps = smoke["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    assert any(s.get("uses", "").startswith("mikepenz/action-junit-report@") for s in steps)
    teardown = next(s for s in steps if "terminate --if-exists" in s.get("run", ""))
    assert teardown["if"] == "always()"
    assert "cei launch" in next(s["run"] for s in steps if s.get("name") == "Launch")
    assert github[True]["schedule"]  # PyYAML reads the key `on` as true
    job = gitlab["smoke-deploy"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "reports/*.xml"
    assert job["after_script"] == ['cei terminate --if-exists "$CEI_RUN_NAME"']


def _github_value(text: str, env: dict[str, str]) -> str:
    def expand(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression in GITHUB:
            return GITHUB[expression]
        if expression.startswith("secrets."):
            return ""  # not configured: the local cloud needs none
        if expression.startswith("env."):
            return env[expression[4:]]
        raise AssertionError(f"the test does not know ${{{{ {expression} }}}}")

    return re.sub(r"\$\{\{(.*?)\}\}", expand, text)


def _github_scripts(workflow: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    scripts = []
    for job in workflow["jobs"].values():
        env: dict[str, str] = {"GITHUB_ACTIONS": "true"}
        for key, value in (job.get("env") or {}).items():
            env[key] = _github_value(str(value), env)
        scripts.extend((_github_value(step["run"], env), env)
                       for step in job["steps"] if "run" in step)
    return scripts


def _gitlab_scripts(pipeline: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    scripts = []
    for job in pipeline.values():
        env = dict(GITLAB)
        for key, value in (job.get("variables") or {}).items():
            env[key] = string.Template(str(value)).substitute(env)
        # before_script and script share one shell; after_script has its own
        scripts.append(("\n".join([*job.get("before_script", []), *job["script"]]), env))
        if "after_script" in job:
            scripts.append(("\n".join(job["after_script"]), env))
    return scripts


def _cei_on_path(tmp_path: Path) -> Path:
    """A `cei` that runs this checkout, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cei"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m launchplan "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return bin_dir


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_example_jobs_run_on_the_local_cloud(system: str, home: Path, tmp_path: Path) -> None:
    example = _examples()[system]
    scripts = _github_scripts(example) if system == "github" else _gitlab_scripts(example)
    work = tmp_path / "checkout"  # the job's working directory: reports land here
    work.mkdir()
    (work / "plans").symlink_to(REPO / "plans")
    path = f"{_cei_on_path(tmp_path)}{os.pathsep}{os.environ['PATH']}"
    skipped, ran = set(), []
    for script, env in scripts:
        lines = [line for line in script.splitlines() if line.strip()]
        skipped |= {line for line in lines if line in INSTALLS}
        body = "\n".join(line for line in lines if line not in INSTALLS)
        if not body:
            continue
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", body], cwd=work,
                              env={**os.environ, **env, "PATH": path, "CEI_HOME": str(home)},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{body}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        ran.append(body)
    assert skipped == INSTALLS or (system == "github" and skipped == {"python -m pip install ."})
    joined = "\n".join(ran)
    for command in ("cei launch", "cei status", "cei terminate --if-exists",
                    "cei terminate --all"):
        assert command in joined
    run = "ci-4242-1" if system == "github" else "ci-777-888"
    assert [c.outcome for c in read_report(work / "reports" / "cei-launch.xml")] == \
        ["passed"] * 3
    assert {c.name for c in read_report(work / "reports" / "cei-status.xml")} == {
        "hello/0 state", "hello/0 cloud", "hello/0 ready"}
    assert cei_json(home, "status", run, "--cached", check=1)["status"] == "terminated"
    assert node_processes(home) == []
