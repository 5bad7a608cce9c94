"""The kill test: SIGKILL `cei launch` at a random moment, then `cei terminate` loses nothing.

bench/kill_test.py runs the same trial many times; here a few seeded trials keep it honest.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.cli_helpers import both_stores
from tests.integration.cloud_emulator import EC2Emulator
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
