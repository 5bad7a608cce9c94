#!/usr/bin/env python3
"""`cei status --cached` at scale; prints figures, asserts nothing.

  python bench/bench_status.py [--nodes 1000] [--repeat 7] [--code DIR ...]

Builds a SQLite store with one run of --nodes nodes directly (no cloud: four services on two
levels, one of them elastic, a few nodes failed), then times as subprocesses (wall and CPU),
medians of --repeat: `cei --help` (the start-up baseline), `cei status --cached` (the
per-service summary above STATUS_SUMMARY_NODES nodes), `cei status --cached --all` (one row
per node) and `cei status --cached --json`. --code times another checkout (e.g. an unpacked
`git archive` of main) on the same store in the same run, alternating with this one; an older
one without --all is timed without it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from startup import as_installed  # noqa: E402

from launchplan.state import ElasticRecord, NodeRecord, Store  # noqa: E402

SERVICES = (("db", 1, "base"), ("queue", 1, "base"), ("web", 2, "front"), ("worker", 2, "front"))


def build(home: Path, nodes: int) -> None:
    """A finished launch of `nodes` nodes, spread over SERVICES, every 97th node failed."""
    with Store(home, "") as store:
        store.create_run("big", "big", "/plans/big.yml")
        records = []
        for i in range(nodes):
            service, level, level_name = SERVICES[i % len(SERVICES)]
            failed = i % 97 == 5
            records.append(NodeRecord(
                run="big", node=f"{service}/{i}", service=service, index=i, level=level,
                level_name=level_name, driver="local", state="failed" if failed else "ready",
                resource_id=f"big/{service}/{i}", address=f"127.1.{i // 250}.{i % 250 + 1}",
                port=2200, outputs={"url": f"http://127.1.{i // 250}.{i % 250 + 1}:8080"},
                last_error="boot exited 1" if failed else None))
        store.save_nodes(records)
        store.save_elastic(ElasticRecord(run="big", service="worker", level=2,
                                         spec={"policy": "queue"}, min=100, desired=nodes // 4,
                                         max=nodes))
        store.set_run_status("big", "ready")


def timed(code: Path, home: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU time (user + system) of `cei ARGS` with the code in `code`. CPU time
    moves less than wall time when others load the machine."""
    env = {**os.environ, "CEI_HOME": str(home), "CEI_STATE": "", "PYTHONPATH": str(code),
           "COLUMNS": "160"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "launchplan", *args], env=env, cwd=code,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def commands(code: Path) -> list[list[str]]:
    """What is timed: --help, then status in each form the checkout has (--all is new)."""
    has_all = "--all" in (code / "launchplan/cli/status.py").read_text()
    forms = [["--cached"], *([["--cached", "--all"]] if has_all else []), ["--cached", "--json"]]
    return [["--help"], *(["status", "big", *form] for form in forms)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout to time on the same store (repeatable)")
    args = parser.parse_args()
    codes = [code.resolve() for code in [*args.code, REPO]]
    as_installed(*codes)
    samples: dict[tuple[Path, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cei-bench-status-") as tmp:
        home = Path(tmp) / "home"
        build(home, args.nodes)
        for _ in range(args.repeat):  # the checkouts and commands alternate
            for code in codes:
                for command in commands(code):
                    samples.setdefault((code, " ".join(command)), []).append(
                        timed(code, home, command))
    print(f"{args.nodes} nodes; medians of {args.repeat}; wall s, CPU s, CPU ratio to --help")
    for code in codes:
        print(f"{code}:")
        base = statistics.median(cpu for _, cpu in samples[(code, "--help")])
        for command in commands(code):
            runs = samples[(code, " ".join(command))]
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"  {'cei ' + ' '.join(command):40} {wall:6.3f} {cpu:6.3f} {cpu / base:5.1f}x")


if __name__ == "__main__":
    main()
