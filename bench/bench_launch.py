#!/usr/bin/env python3
"""Wall times of the core on the embedded local cloud; prints figures, asserts nothing.

  python bench/bench_launch.py [--nodes 50] [--repeat 3]

Measures: `cei --help` start-up, plans/three-tier.yml launch and terminate, and launch and
terminate of a single-level plan of N nodes whose boot is `true`. Each run uses a fresh
private $CEI_HOME, and everything launched is terminated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cei(home: Path, *args: str) -> float:
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "launchplan", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cei {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def wide_plan(directory: Path, nodes: int) -> Path:
    plan = directory / "wide.yml"
    plan.write_text(
        "plan: wide\n"
        "levels:\n"
        "  - services:\n"
        "      worker:\n"
        f"        count: {nodes}\n"
        "        boot: {command: 'true'}\n"
    )
    return plan


def report(name: str, samples: list[float]) -> None:
    spread = f" (min {min(samples):.2f}, max {max(samples):.2f}, n={len(samples)})" \
        if len(samples) > 1 else ""
    print(f"{name:44} {statistics.median(samples):7.2f} s{spread}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    help_times = []
    for _ in range(max(5, args.repeat)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "launchplan", "--help"], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
        help_times.append(time.perf_counter() - start)
    report("cei --help", help_times)

    launch3, down3, launchn, downn = [], [], [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="cei-bench-") as tmp:
            home = Path(tmp) / "home"
            launch3.append(cei(home, "launch", str(REPO / "plans/three-tier.yml"),
                               "--name", f"tt{i}"))
            down3.append(cei(home, "terminate", f"tt{i}"))
            plan = wide_plan(Path(tmp), args.nodes)
            launchn.append(cei(home, "launch", str(plan), "--name", f"wide{i}"))
            downn.append(cei(home, "terminate", f"wide{i}"))
    report("three-tier.yml launch (3 levels, 4 nodes)", launch3)
    report("three-tier.yml terminate", down3)
    report(f"{args.nodes}-node level launch (boot: true)", launchn)
    report(f"{args.nodes}-node level terminate", downn)
    report(f"{args.nodes}-node launch + terminate",
           [a + b for a, b in zip(launchn, downn, strict=True)])


if __name__ == "__main__":
    main()
