#!/usr/bin/env python3
"""Store transactions and fsyncs per node of a local launch; prints figures, asserts nothing.

  python bench/store_writes.py [--nodes 50] [--code DIR ...] [--replay-only]

Launches (then terminates) a one-level plan of N local-cloud nodes whose boot is `true`, with
the SQLite store in a fresh $CEI_HOME, and counts for the launch alone:
- transactions: every commit SQLite makes for cei (a statement that writes outside BEGIN, or
  one BEGIN ... COMMIT), through sqlite3's trace callback in the `cei` process;
- fsyncs: fsync and fdatasync calls on the store's files (cei.db and its -wal), by strace -f
  -y; the local nodes are traced too (they are cei's children) but fsync other files.
- milliseconds per node of those writes alone: the store calls a node's launch makes, replayed
  straight into a fresh store by REPLAY_THREADS threads (no cloud, no SSH), median of 3.
--code runs the same measurements against another checkout (e.g. an unpacked `git archive` of
main), so that figures before and after a change come from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_WAIT = 1800.0  # seconds

# Run `cei` with a trace callback on every sqlite3 connection; write the commit count at exit.
_COUNTING = r"""
import atexit, re, runpy, sqlite3, sys
counts = {"commits": 0}
writes = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.I)
_connect = sqlite3.connect
def connect(*args, **kwargs):
    conn = _connect(*args, **kwargs)
    inside = [False]
    def trace(sql):
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "BEGIN":
            inside[0] = True
        elif word in ("COMMIT", "END"):
            inside[0] = False
            counts["commits"] += 1
        elif word == "ROLLBACK":
            inside[0] = False
        elif not inside[0] and writes.match(sql):
            counts["commits"] += 1
    conn.set_trace_callback(trace)
    return conn
sqlite3.connect = connect
where = sys.argv.pop(1)
def report():
    with open(where, "w") as out:
        out.write(str(counts["commits"]))
atexit.register(report)
sys.argv[0] = "cei"
runpy.run_module("launchplan", run_name="__main__")
"""


# A node's store writes in a launch of the local cloud, in order (levels/launch.py), replayed
# by REPLAY_THREADS threads as the engine's workers would; a checkout without save_nodes
# reserves node by node, as it did.
REPLAY_THREADS = 8
_REPLAY = r"""
import sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from launchplan.state import NodeRecord, Store
nodes = int(sys.argv[1])
with tempfile.TemporaryDirectory() as home, Store(home, "") as store:
    store.create_run("w", "w", "/w.yml")
    def event(node, **data):
        store.append_event("w", "node.state", node, data)
    def launch(i):
        node = f"worker/{i}"
        event(node, state="creating")
        store.update_node("w", node, state="creating")
        intent = store.record_intent("w", node, "local", {"driver": "local"}, f"tok-{i}")
        store.record_resource_id(intent, f"w/{node}")
        store.update_node("w", node, resource_id=f"w/{node}", token=f"tok-{i}",
                          host_key="ssh-ed25519 AAAA", host_key_fingerprint="SHA256:x")
        event(node, resource_id=f"w/{node}")
        for state in ("booting", "contextualizing"):
            store.update_node("w", node, state=state)
            event(node, state=state)
        store.update_node("w", node, address="127.0.0.1", port=2222, hostname="h")
        store.update_node("w", node, programs={"env": {"CEI_RUN": "w"}})
        store.update_node("w", node, outputs={"url": "http://x"})
        store.update_node("w", node, programs={"env": {"CEI_RUN": "w"}, "agent": {"pid": 1}})
        store.update_node("w", node, state="ready")
        event(node, state="ready")
    start = time.perf_counter()
    records = [NodeRecord(run="w", node=f"worker/{i}", service="worker", index=i, level=1,
                          level_name="l", driver="local") for i in range(nodes)]
    if hasattr(store, "save_nodes"):
        store.save_nodes(records)
    else:
        for record in records:
            store.save_node(record)
    for record in records:
        event(record.node, state="pending")
    with ThreadPoolExecutor(REPLAY_THREADS) as pool:
        list(pool.map(launch, range(nodes)))
    print((time.perf_counter() - start) / nodes * 1000)
""".replace("REPLAY_THREADS", str(REPLAY_THREADS))


def replay(code: Path, nodes: int) -> float:
    """Median milliseconds per node of a node's launch writes replayed with `code`."""
    env = {**os.environ, "PYTHONPATH": str(code), "CEI_STATE": ""}
    return statistics.median(float(subprocess.run(
        [sys.executable, "-c", _REPLAY, str(nodes)], env=env, cwd=code, check=True,
        capture_output=True, text=True).stdout) for _ in range(3))


def wide_plan(directory: Path, nodes: int) -> Path:
    plan = directory / "wide.yml"
    plan.write_text("plan: wide\nlevels:\n  - services:\n      worker:\n"
                    f"        count: {nodes}\n        boot: {{command: 'true'}}\n")
    return plan


def measure(code: Path, nodes: int) -> tuple[int, int]:
    """(transactions, fsyncs) of one launch of `nodes` nodes with the code in `code`."""
    with tempfile.TemporaryDirectory(prefix="cei-writes-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "CEI_HOME": str(work / "home"), "PYTHONPATH": str(code),
               "CEI_STATE": ""}
        counted = work / "commits"
        trace = work / "strace"
        cmd = ["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace),
               sys.executable, "-c", _COUNTING, str(counted),
               "launch", str(wide_plan(work, nodes)), "--name", "w"]
        traced = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, cwd=code)
        try:
            deadline = time.monotonic() + LAUNCH_WAIT
            while not counted.exists() and traced.poll() is None:  # the launch's exit
                if time.monotonic() > deadline:
                    raise SystemExit(f"the launch took longer than {LAUNCH_WAIT:g}s")
                time.sleep(0.5)
        finally:  # strace follows the detached nodes: it ends once terminate stops them
            subprocess.run([sys.executable, "-m", "launchplan", "terminate", "w"], env=env,
                           stdout=subprocess.DEVNULL, check=False, cwd=code)
            traced.wait(LAUNCH_WAIT)
        if not counted.exists():
            raise SystemExit(f"launch failed ({traced.returncode})")
        fsyncs = sum(1 for line in trace.read_text().splitlines()
                     if re.search(r"f(?:data)?sync\(\d+<[^>]*cei\.db", line))
        return int(counted.read_text()), fsyncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout to measure in the same run (repeatable)")
    parser.add_argument("--replay-only", action="store_true",
                        help="only the replay (no launch, no strace)")
    args = parser.parse_args()
    print(f"{'code':40} {'transactions/node':>18} {'fsyncs/node':>12} {'replay ms/node':>15}")
    for code in [*args.code, REPO]:
        counts = "" if args.replay_only else "{:18.1f} {:12.1f}".format(
            *(n / args.nodes for n in measure(code.resolve(), args.nodes)))
        took = replay(code.resolve(), args.nodes)
        print(f"{code!s:40} {counts:>31} {took:15.1f}", flush=True)


if __name__ == "__main__":
    main()
