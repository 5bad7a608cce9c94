#!/usr/bin/env python3
"""Store transactions and fsyncs per node of a local launch; prints figures, asserts nothing.

  python bench/store_writes.py [--nodes 50] [--code DIR ...]

Launches (then terminates) a one-level plan of N local-cloud nodes whose boot is `true`, with
the SQLite store in a fresh $CEI_HOME, and counts for the launch alone:
- transactions: every commit SQLite makes for cei (a statement that writes outside BEGIN, or
  one BEGIN ... COMMIT), through sqlite3's trace callback in the `cei` process;
- fsyncs: fsync and fdatasync calls on the store's files (cei.db and its -wal), by strace -f
  -y; the local nodes are traced too (they are cei's children) but fsync other files.
--code runs the same measurement against another checkout (e.g. an unpacked `git archive` of
main), so that figures before and after a change come from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import re
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
    args = parser.parse_args()
    print(f"{'code':40} {'transactions/node':>18} {'fsyncs/node':>12}")
    for code in [*args.code, REPO]:
        transactions, fsyncs = measure(code.resolve(), args.nodes)
        print(f"{code!s:40} {transactions / args.nodes:18.1f} {fsyncs / args.nodes:12.1f}",
              flush=True)


if __name__ == "__main__":
    main()
