"""Messages per second of `cei demo sliding-window` end to end, as a user runs it.

    python bench/bench_demo.py [--steps N] [--passes K] [--amqp URL | --start-rabbitmq]

Launches the demo plan on the local cloud once per transport (`--keep`), then streams a
generated CSV of N time steps x 4 variables through the dispatched transform K times with
`--run` (the same engine process each time) and reports each pass's throughput as the demo
measures it: values published, first publish to last average received. Also reports the wall
time of the first demo command (launch + dispatch + stream). Uses a private $CEI_HOME and
terminates what it launched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIABLES = ("temperature", "salinity", "pressure", "oxygen")


def write_csv(path: Path, steps: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    lines = ["time," + ",".join(VARIABLES)]
    for i in range(steps):
        values = ",".join(f"{rng.gauss(10.0, 2.0):.6f}" for _ in VARIABLES)
        lines.append(f"{(i + 1) * 0.5},{values}")
    path.write_text("\n".join(lines) + "\n")


def cei(home: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "launchplan", *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"cei {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return next(d for d in reversed(docs) if d.get("event") in ("summary", None))


def bench(home: Path, data: Path, window: float, passes: int, label: str,
          extra: list[str]) -> None:
    run = f"bench-{label}"
    out = home / f"{label}.csv"
    started = time.perf_counter()
    first = cei(home, "demo", "sliding-window", "--input", str(data), "--window", str(window),
                "--output", str(out), "--keep", "--name", run, *extra)
    wall = time.perf_counter() - started
    rates = [first["throughput"]]
    try:
        for _ in range(passes - 1):
            again = cei(home, "demo", "sliding-window", "--input", str(data), "--window",
                        str(window), "--output", str(out), "--run", run)
            if again["pid"] != first["pid"]:
                raise RuntimeError("the engine process changed between passes")
            rates.append(again["throughput"])
    finally:
        subprocess.run([sys.executable, "-m", "launchplan", "terminate", run],
                       env={**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)},
                       capture_output=True, timeout=300)
    print(f"demo end to end  {label:<9} median {statistics.median(rates):>8,.0f} msg/s  "
          f"best {max(rates):>8,.0f}  ({first['messages']} messages x {len(rates)} passes; "
          f"first command incl. launch {wall:.1f}s; {first['transport']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="time steps (x4 values)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--amqp", help="RabbitMQ URL to measure too")
    parser.add_argument("--start-rabbitmq", action="store_true",
                        help="start a private RabbitMQ on loopback for the run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cei-bench-demo-") as tmp:
        home = Path(tmp) / "home"
        data = Path(tmp) / "data.csv"
        write_csv(data, args.steps)
        bench(home, data, args.window, args.passes, "embedded", [])
        url, broker = args.amqp, None
        if url is None and args.start_rabbitmq:
            from tests.integration.rabbitmq import start_broker

            broker = start_broker(Path(tmp) / "rabbitmq")
            url = broker.url
        try:
            if url:
                bench(home, data, args.window, args.passes, "rabbitmq", ["--transport", url])
        finally:
            if broker is not None:
                broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
