#!/usr/bin/env python3
"""The state store's backends side by side: SQLite (the baseline) and PostgreSQL.

  python bench/bench_state.py [--nodes 50] [--emulated 1000] [--parallel 16] [--runs 10000]
                             [--repeat 3]

Measures, with each backend in the same run: launch and terminate of a one-level plan of
--nodes local-cloud nodes (boot: true), launch of --emulated EC2 instances on the moto
emulator (no SSH: the store and the cloud API are all there is), and `cei list` over --runs
recorded runs. The emulated launch runs --parallel nodes at once (moto, one Python process,
answers 64 pollers of a thousand instances slower than botocore's read timeout). PostgreSQL
runs as a private server on a free loopback port with its durable defaults (fsync on every
commit; SQLite fsyncs only the records of cloud resources, see docs/state.md), reached over
TCP with a password. Prints medians and the PostgreSQL/SQLite ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launchplan.state import NodeRecord, Store  # noqa: E402
from launchplan.state.transfer import export_run, import_run  # noqa: E402
from tests.integration.cloud_emulator import EC2Emulator, use_fake_aws  # noqa: E402
from tests.pgserver import PostgresServer, start_server  # noqa: E402

BACKENDS = ("sqlite", "postgresql")


def cei(home: Path, url: str, *args: str, timeout: float = 3600) -> float:
    """Wall time of one `cei` command against the store `url` ("" is SQLite in `home`)."""
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO), "CEI_STATE": url}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "launchplan", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cei {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


class Stores:
    """A fresh store of each backend: a SQLite file in a new CEI_HOME, a new PG database."""

    def __init__(self, server: PostgresServer, work: Path) -> None:
        self.server = server
        self.work = work
        self.count = 0

    def fresh(self, backend: str) -> tuple[Path, str]:
        self.count += 1
        home = self.work / f"home-{self.count}"
        return home, ("" if backend == "sqlite" else self.server.create_database())


def wide_plan(directory: Path, nodes: int) -> Path:
    plan = directory / "wide.yml"
    plan.write_text("plan: wide\nlevels:\n  - services:\n      worker:\n"
                    f"        count: {nodes}\n        boot: {{command: 'true'}}\n")
    return plan


def emulated_plan(directory: Path, emulator: EC2Emulator, image: str, nodes: int) -> Path:
    plan = directory / "emulated.yml"
    plan.write_text(
        "plan: emulated\nclouds:\n  aws:\n    driver: ec2\n"
        f"    region: {emulator.region}\n    endpoint_url: {emulator.endpoint}\n"
        f"    image: {image}\n    size: t3.micro\n"
        "defaults: {cloud: aws, timeout: 900}\nlevels:\n  - services:\n      fleet:\n"
        f"        count: {nodes}\n")
    return plan


def seed_runs(home: Path, url: str, runs: int) -> None:
    """`runs` finished runs of two nodes each, each added in one transaction (as `cei state
    import` adds a run) so that seeding does not take longer than what is measured."""
    with Store(home, "") as template:
        template.create_run("old", "wide", "/plans/wide.yml")
        for index in range(2):
            template.save_node(NodeRecord(run="old", node=f"worker/{index}", service="worker",
                                          index=index, level=1, level_name="level1",
                                          driver="local", state="terminated"))
        template.set_run_status("old", "terminated")
        document = export_run(template, "old")
    with Store(home, url) as store:
        for i in range(runs):
            name = f"old-{i:05d}"
            document["run"]["name"] = name
            for node in document["nodes"]:
                node["run"] = name
            import_run(store, document)


def report(name: str, samples: dict[str, list[float]]) -> None:
    sqlite, postgres = (statistics.median(samples[b]) for b in BACKENDS)
    print(f"{name:44} sqlite {sqlite:8.2f} s   postgresql {postgres:8.2f} s   "
          f"ratio {postgres / sqlite:5.2f}   (n={len(samples['sqlite'])})", flush=True)


def measure(repeat: int, one: Callable[[str], float]) -> dict[str, list[float]]:
    """`one(backend)` `repeat` times for each backend, alternating, so that load on the
    machine weighs on both alike."""
    samples: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(repeat):
        for backend in BACKENDS:
            samples[backend].append(one(backend))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--emulated", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    use_fake_aws(os.environ)
    server = start_server(for_tests=False)
    os.environ["PGPASSWORD"] = server.password
    emulator = EC2Emulator()
    emulator.start()
    try:
        with tempfile.TemporaryDirectory(prefix="cei-bench-state-") as tmp:
            work = Path(tmp)
            stores = Stores(server, work)
            print(f"PostgreSQL {server.bindir.parent.name} on 127.0.0.1:{server.port} "
                  "(fsync on), SQLite WAL synchronous=NORMAL (resource records FULL)", flush=True)

            plan = wide_plan(work, args.nodes)
            downs: dict[str, list[float]] = {b: [] for b in BACKENDS}

            def local(backend: str) -> float:
                home, url = stores.fresh(backend)
                elapsed = cei(home, url, "launch", str(plan), "--name", "wide")
                downs[backend].append(cei(home, url, "terminate", "wide"))
                return elapsed

            report(f"{args.nodes}-node local launch", measure(args.repeat, local))
            report(f"{args.nodes}-node local terminate", downs)

            def emulated(backend: str) -> float:
                # a fresh emulator each time: moto answers slower the more instances it has
                # ever held, which would weigh on whichever backend came second
                emulator.reset()
                image = emulator.client().register_image(
                    Name="cei-bench-state", Architecture="x86_64", RootDeviceName="/dev/sda1",
                    VirtualizationType="hvm")["ImageId"]
                fleet = emulated_plan(work, emulator, image, args.emulated)
                home, url = stores.fresh(backend)
                elapsed = cei(home, url, "launch", str(fleet), "--name", "fleet",
                              "--parallel", str(args.parallel))
                cei(home, url, "terminate", "fleet")
                return elapsed

            report(f"{args.emulated}-instance emulated EC2 launch",
                   measure(max(1, args.repeat // 3), emulated))

            homes = {}
            for backend in BACKENDS:
                home, url = stores.fresh(backend)
                seed_runs(home, url, args.runs)
                homes[backend] = (home, url)
            report(f"cei list --json, {args.runs} runs",
                   measure(args.repeat, lambda b: cei(*homes[b], "list", "--json")))
            report(f"cei list (table), {args.runs} runs",
                   measure(args.repeat, lambda b: cei(*homes[b], "list")))
    finally:
        emulator.stop()
        server.destroy()


if __name__ == "__main__":
    main()
