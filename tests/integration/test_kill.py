"""The kill test: SIGKILL `cei launch` at a random moment, then `cei terminate` loses nothing.

bench/kill_test.py runs the same trial many times; here a few seeded trials keep it honest.
"""

from __future__ import annotations

import json
import os
import random
import signal
from contextlib import suppress
from pathlib import Path

import pytest

from launchplan.providers.localnode.procinfo import processes_with_env
from launchplan.state import Store
from tests.integration.cli_helpers import both_stores, cei, cei_running, wait_for
from tests.integration.cloud_emulator import EC2Emulator
from tests.integration.conftest import SSHDServer
from tests.integration.killtrial import run_trial, write_plan

pytestmark = pytest.mark.integration

TRIALS = 5
SEED = 20240603
MAX_DELAY = 2.0  # seconds after the run is recorded; a 10-node launch takes about 1.5 s


@both_stores
def test_sigkill_mid_launch_leaves_nothing_after_terminate(
    tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str, store_backend: str
) -> None:
    plan = write_plan(tmp_path, ec2_emulator, ec2_image)
    rng = random.Random(SEED)
    home = tmp_path / "cei-home"
    # the first trial is killed during start-up, before the run may be recorded
    delays = [-rng.uniform(0.0, 0.5)] + [rng.uniform(0.0, MAX_DELAY) for _ in range(TRIALS - 1)]
    trials = [run_trial(ec2_emulator, home, plan, f"kill{i}", delay)
              for i, delay in enumerate(delays)]
    # however slow the machine, one trial is killed while the cloud is making the nodes
    trials.append(run_trial(ec2_emulator, home, plan, f"kill{TRIALS}",
                            rng.uniform(0.0, MAX_DELAY / 4), after_create=True))
    bad = [t for t in trials if not t.ok]
    assert not bad, "\n".join(
        f"{t.run} (killed after {t.delay:.2f}s): leaked {t.leaked}, terminate exited "
        f"{t.terminate_status}: {t.terminate_output}" for t in bad)
    # the trials did hit the cloud path, not only the start-up
    assert trials[-1].created > 0


def test_sigkill_mid_boot_on_an_existing_host_then_terminate_stops_that_boot(
        home: Path, tmp_path: Path, sshd: SSHDServer) -> None:
    """OpenSSH sends nothing to a session without a pty whose client went away, so the boot
    program of a killed launch runs on, on a host that outlives the run: terminate stops it
    and what it started. What the boot of a node that got ready started is left alone (its
    terminate program is there to stop it)."""
    run = f"killboot-{os.getpid()}"
    host = {"host": sshd.host, "ssh_port": sshd.port, "ssh_user": sshd.user,
            "ssh_key": sshd.key_path, "host_key": sshd.host_key}
    plan = tmp_path / "killboot.yml"
    plan.write_text(json.dumps({
        "plan": "killboot", "clouds": {"hosts": {"driver": "static"}},
        "defaults": {"cloud": "hosts", "timeout": 120},
        "levels": [{"services": {
            "kept": {**host, "boot": {"command": "nohup sleep 300 >/dev/null 2>&1 &"}},
            "cut": {**host, "boot": {"command": "sleep 301 & sleep 302"}},
        }}]}))

    def ours(service: str) -> list[int]:  # processes carrying the node's identity
        return [pid for pid in processes_with_env("CEI_RUN", run)
                if pid in processes_with_env("CEI_SERVICE", service)]

    def states() -> dict[str, str]:
        return {n.node: n.state for n in Store(home).nodes(run)}

    try:
        with cei_running(home, "launch", str(plan), "--name", run) as launch:
            wait_for(lambda: states().get("kept/0") == "ready" and len(ours("cut")) >= 2, 60,
                     "kept ready and cut's boot running")
            launch.send_signal(signal.SIGKILL)
            launch.wait(timeout=30)
        assert states()["cut/0"] == "contextualizing" and ours("cut")  # it does run on
        cei(home, "terminate", run, check=0)
        assert ours("cut") == []
        assert ours("kept")
    finally:
        for pid in ours("kept") + ours("cut"):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
