"""SIGKILL `cei watch` mid scale-up and mid scale-down, restart it, terminate: nothing leaks.

bench/elastic_kill.py runs the same trial many times (the campaign in the closing note);
here a few seeded trials on each cloud keep it honest.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.cloud_emulator import EC2Emulator
from tests.integration.elastickill import (
    ec2_live,
    ec2_plan,
    local_live,
    local_plan,
    run_trial,
)

pytestmark = pytest.mark.integration

SEED = 20261130
LOCAL_TRIALS = 3
EC2_TRIALS = 3
MAX_DELAY = 3.0  # seconds; a scale-up of three local nodes takes about two


def test_sigkill_of_watch_on_the_local_cloud(home: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    plan = local_plan(tmp_path)
    trials = [run_trial(home, plan, f"kill{i}", rng, local_live(home), MAX_DELAY)
              for i in range(LOCAL_TRIALS)]
    bad = [t for t in trials if not t.ok]
    assert not bad, "\n".join(f"{t.run} (kills after {t.delays}): {t.problems}, leaked "
                              f"{t.leaked}" for t in bad)


def test_sigkill_of_watch_on_the_ec2_emulator(home: Path, tmp_path: Path,
                                              ec2_emulator: EC2Emulator, ec2_image: str) -> None:
    rng = random.Random(SEED + 1)
    plan = ec2_plan(tmp_path, ec2_emulator, ec2_image)
    trials = [run_trial(home, plan, f"kill{i}", rng, ec2_live(ec2_emulator), MAX_DELAY)
              for i in range(EC2_TRIALS)]
    bad = [t for t in trials if not t.ok]
    assert not bad, "\n".join(f"{t.run} (kills after {t.delays}): {t.problems}, leaked "
                              f"{t.leaked}" for t in bad)
    assert ec2_emulator.instances(**{"tag:cei:run": ["kill0"]})  # the trials did make instances
