"""One kill trial: `cei launch` of a 10-node EC2 plan gets SIGKILL, then `cei terminate`.

Shared by tests/integration/test_kill.py (a few trials) and bench/kill_test.py (many). A trial
leaks when any instance is still alive in the emulator after `cei terminate RUN`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from launchplan.errors import EXIT_USAGE
from launchplan.state import Store
from tests.integration.cli_helpers import REPO, cei
from tests.integration.cloud_emulator import EC2Emulator

NODES = 10
LAUNCH_TIMEOUT = 120.0
RECORD_WAIT = 60.0
ALIVE = ("pending", "running", "stopping", "stopped")


@dataclass
class Trial:
    run: str
    delay: float
    launch_status: int | None  # None: killed before it finished (the usual case)
    terminate_status: int
    terminate_output: str
    created: int  # instances the emulator ever made for the trial
    run_recorded: bool  # False: killed before the run reached the store (nothing to do)
    leaked: list[str] = field(default_factory=list)  # instance ids still alive

    @property
    def ok(self) -> bool:
        expected = 0 if self.run_recorded else EXIT_USAGE  # an unknown run is a usage error
        return not self.leaked and self.terminate_status == expected


def write_plan(directory: Path, emulator: EC2Emulator, image: str, nodes: int = NODES) -> Path:
    """A plan of `nodes` EC2 instances in two services (no SSH: the kill hits the cloud path)."""
    half = nodes // 2
    plan = {
        "plan": "killme",
        "clouds": {"aws": {"driver": "ec2", "region": emulator.region,
                           "endpoint_url": emulator.endpoint, "image": image,
                           "size": "t3.micro"}},
        "defaults": {"cloud": "aws", "timeout": 60},
        "levels": [{"services": {"db": {"count": half}}},
                   {"services": {"web": {"count": nodes - half}}}],
    }
    path = directory / "killme.yml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def wait_recorded(home: Path, run: str, proc: subprocess.Popen[bytes],
                  created: bool = False) -> None:
    """Until the run is in the store (with `created`: until the store holds the id of an
    instance the cloud made for it), or the launch ended, or RECORD_WAIT passed."""
    deadline = time.monotonic() + RECORD_WAIT
    while proc.poll() is None and time.monotonic() < deadline:
        if os.environ.get("CEI_STATE") or (home / "cei.db").exists():  # never make it here
            with Store(home) as store:
                if store.find_run(run) is not None and (not created or any(
                        r.resource_id for r in store.resources(run))):
                    return
        time.sleep(0.02)


def alive(emulator: EC2Emulator) -> list[str]:
    return [i["InstanceId"] for i in emulator.instances() if i["State"]["Name"] in ALIVE]


def run_trial(emulator: EC2Emulator, home: Path, plan: Path, run: str, delay: float,
              terminate_home: Path | None = None, after_create: bool = False) -> Trial:
    """Launch, SIGKILL `delay` seconds after the run is recorded (if it still runs; a negative
    delay: that long after the process started, before anything may be recorded; with
    `after_create`: after the first instance's id is recorded), terminate (from
    `terminate_home`, another machine sharing the store, if given), count what lives.
    Counting from the record keeps a slow interpreter start-up on a busy machine from turning
    every trial into a kill before the cloud is asked anything."""
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launchplan", "launch", str(plan), "--name", run],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launch_status: int | None = None
    try:
        if delay >= 0:
            wait_recorded(home, run, proc, created=after_create)
        launch_status = proc.wait(timeout=abs(delay))
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL: no handler, no cleanup, nothing flushed
        proc.wait(timeout=30)
    created = len(emulator.instances(**{"tag:cei:run": [run]}))
    with Store(home) as store:
        recorded = store.find_run(run) is not None
    down = cei(terminate_home or home, "terminate", run, timeout=LAUNCH_TIMEOUT)
    return Trial(run=run, delay=delay, launch_status=launch_status,
                 terminate_status=down.returncode, terminate_output=down.stdout + down.stderr,
                 created=created, run_recorded=recorded, leaked=alive(emulator))
