"""Kill test, many trials: SIGKILL `cei launch` of a 10-node plan, then `cei terminate`.

`--cloud ec2` (default) runs its own moto EC2 emulator on 127.0.0.1 and counts the instances
still alive after `cei terminate`; `--cloud local` launches on the embedded local cloud and
counts the node processes still alive. Each trial kills the launch after a seeded random delay
in [0, --max-delay) seconds.

    python bench/kill_test.py [--cloud ec2|local] [--trials 50] [--seed 1] [--max-delay 2.5]

Prints one line per trial and then "trials=N leaks=L"; exits 1 if any trial leaked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launchplan.errors import EXIT_USAGE  # noqa: E402
from tests.integration.cli_helpers import cei, node_processes  # noqa: E402
from tests.integration.cloud_emulator import EC2Emulator, use_fake_aws  # noqa: E402
from tests.integration.killtrial import run_trial, wait_recorded, write_plan  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=2.5)
    parser.add_argument("--cloud", choices=("ec2", "local"), default="ec2")
    args = parser.parse_args()
    if args.cloud == "local":
        return local_trials(args.trials, random.Random(args.seed), args.max_delay)

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


def local_trials(trials: int, rng: random.Random, max_delay: float) -> int:
    """The same trials on the embedded local cloud: a leak is a node process still alive."""
    work = Path(tempfile.mkdtemp(prefix="cei-kill-bench-local-"))
    plan = work / "killme.yml"
    plan.write_text("plan: killme\nlevels:\n  - services:\n      db: {count: 5}\n"
                    "  - services:\n      web: {count: 5}\n")
    home = work / "cei-home"
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    leaks = failures = 0
    started = time.monotonic()
    try:
        for i in range(trials):
            delay = rng.uniform(0.0, max_delay)
            proc = subprocess.Popen(
                [sys.executable, "-m", "launchplan", "launch", str(plan), "--name", f"kill{i}"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            try:  # the delay counts from the run's record, as in the EC2 trials
                wait_recorded(home, f"kill{i}", proc)
                status: int | None = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                status = None
            made = len(list((home / "runs" / f"kill{i}" / "nodes").glob("*")))
            down = cei(home, "terminate", f"kill{i}", timeout=180)
            leaked = node_processes(home)
            ok = not leaked and down.returncode in (0, EXIT_USAGE)
            leaks += bool(leaked)
            failures += not ok
            finished = "killed" if status is None else f"exited {status}"
            print(f"trial {i + 1}: delay {delay:.2f}s, launch {finished}, node dirs {made}, "
                  f"terminate exit {down.returncode}, leaked {len(leaked)}", flush=True)
            if not ok:
                print(f"  leaked pids: {leaked}\n  terminate said: {down.stdout}{down.stderr}",
                      flush=True)
    finally:
        for pid in node_processes(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    print(f"cloud=local trials={trials} leaks={leaks} failed={failures} "
          f"elapsed={time.monotonic() - started:.0f}s")
    return 1 if leaks or failures else 0


if __name__ == "__main__":
    sys.exit(main())
