"""Kill test, many trials: SIGKILL `cei launch` of a 10-node EC2 plan, then `cei terminate`.

Runs its own moto EC2 emulator on 127.0.0.1. Each trial kills the launch after a seeded random
delay in [0, --max-delay) seconds after the run is recorded, and counts the instances still
alive after `cei terminate`.

    python bench/kill_test.py [--trials 50] [--seed 1] [--max-delay 2.5]

Prints one line per trial and then "trials=N leaks=L"; exits 1 if any trial leaked.
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
from tests.integration.killtrial import run_trial, write_plan  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=2.5)
    args = parser.parse_args()

    use_fake_aws(os.environ)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cei-kill-bench-"))
    emulator = EC2Emulator()
    emulator.start()
    leaks = failures = 0
    started = time.monotonic()
    try:
        image = emulator.client().register_image(
            Name="cei-kill-bench", Architecture="x86_64", RootDeviceName="/dev/sda1",
            VirtualizationType="hvm")["ImageId"]
        plan = write_plan(work, emulator, image)
        for i in range(args.trials):
            trial = run_trial(emulator, work / "cei-home", plan, f"kill{i}",
                              rng.uniform(0.0, args.max_delay))
            leaks += bool(trial.leaked)
            failures += not trial.ok
            finished = "killed" if trial.launch_status is None else f"exited {trial.launch_status}"
            print(f"trial {i + 1}: delay {trial.delay:.2f}s, launch {finished}, "
                  f"created {trial.created}, terminate exit {trial.terminate_status}, "
                  f"leaked {len(trial.leaked)}", flush=True)
            if not trial.ok:
                print(f"  leaked: {trial.leaked}\n  terminate said: {trial.terminate_output}",
                      flush=True)
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"trials={args.trials} leaks={leaks} failed={failures} "
          f"elapsed={time.monotonic() - started:.0f}s")
    return 1 if leaks or failures else 0


if __name__ == "__main__":
    sys.exit(main())
