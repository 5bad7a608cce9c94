"""Elastic kill campaign: SIGKILL `cei watch` mid scale-up and mid scale-down, many times.

Each trial launches a one-service elastic plan, asks the watch to scale to 4 and kills it
(SIGKILL) after a seeded random delay, restarts the controller (`cei watch --once`), does
the same for a scale back to 1, then terminates the run. A trial fails if an identity is
ever live twice in the cloud, if the cloud and the store disagree after a restart, or if
anything of the run is left after terminate. Runs its own moto EC2 emulator on 127.0.0.1.

    python bench/elastic_kill.py [--local 20] [--ec2 10] [--seed 1] [--max-delay 3]

Prints one line per trial, then a summary per cloud; exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.cloud_emulator import EC2Emulator, use_fake_aws  # noqa: E402
from tests.integration.elastickill import (  # noqa: E402
    Live,
    ec2_live,
    ec2_plan,
    local_live,
    local_plan,
    run_trial,
)


def campaign(name: str, count: int, home: Path, plan: Path, live: Live, rng: random.Random,
             max_delay: float) -> int:
    failed = 0
    started = time.monotonic()
    for i in range(count):
        trial = run_trial(home, plan, f"{name}{i}", rng, live, max_delay)
        failed += not trial.ok
        print(f"{name} trial {i + 1}: kills after {trial.delays[0]:.2f}s (up) and "
              f"{trial.delays[1]:.2f}s (down): {'ok' if trial.ok else 'FAILED'}", flush=True)
        for problem in trial.problems + [f"leaked {trial.leaked}"] * bool(trial.leaked):
            print(f"  {problem}", flush=True)
    print(f"{name}: trials={count} failed={failed} "
          f"elapsed={time.monotonic() - started:.0f}s", flush=True)
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", type=int, default=20, help="trials on the local cloud")
    parser.add_argument("--ec2", type=int, default=10, help="trials on the EC2 emulator")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=3.0)
    args = parser.parse_args()

    use_fake_aws(os.environ)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cei-elastic-kill-"))
    home = work / "cei-home"
    os.environ["CEI_HOME"] = str(home)
    emulator = EC2Emulator()
    emulator.start()
    failed = 0
    try:
        failed += campaign("local", args.local, home, local_plan(work), local_live(home), rng,
                           args.max_delay)
        image = emulator.client().register_image(
            Name="cei-elastic-kill", Architecture="x86_64", RootDeviceName="/dev/sda1",
            VirtualizationType="hvm")["ImageId"]
        failed += campaign("ec2", args.ec2, home, ec2_plan(work, emulator, image),
                           ec2_live(emulator), rng, args.max_delay)
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
