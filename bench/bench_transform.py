"""Messages per second of the sliding-window transform: in-process and end to end.

    python bench/bench_transform.py [--messages N] [--amqp URL | --start-rabbitmq]

With a broker it also measures, in the same run, bare kombu and bare pika workers doing the
same job one message at a time (bench/transform_baselines.py), and prints cei's ratios to them.

End to end: a worker process (`python -m launchplan.demo.worker`) on the transport; a
publisher thread streams N data messages in batches of stream.PUBLISH_BATCH, as `cei demo`
does, while this process consumes the N outputs; the figure is N divided by the time from the
first publish to the last output received.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import transform_baselines as baselines  # noqa: E402

from launchplan.demo.messaging import connect, filesystem_url, redact_url  # noqa: E402
from launchplan.demo.sliding_window import MultiWindow  # noqa: E402
from launchplan.demo.stream import PUBLISH_BATCH  # noqa: E402
from launchplan.demo.worker import Transform  # noqa: E402

VARIABLES = ("temperature", "salinity", "pressure", "oxygen")


def make_messages(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n data messages over four variables, one time step per four messages."""
    rng = random.Random(seed)
    return [
        {"time": (i // len(VARIABLES)) * 0.5, "variable": VARIABLES[i % len(VARIABLES)],
         "value": rng.gauss(10.0, 2.0)}
        for i in range(n)
    ]


def bench_in_process(msgs: list[dict[str, Any]], window: float) -> dict[str, float]:
    """The arithmetic alone, and with the worker's message handling."""
    multi = MultiWindow(window)
    start = time.perf_counter()
    for m in msgs:
        multi.add(m["variable"], m["time"], m["value"])
    window_rate = len(msgs) / (time.perf_counter() - start)
    transform = Transform(window)
    start = time.perf_counter()
    for m in msgs:
        transform.handle(m)
    handle_rate = len(msgs) / (time.perf_counter() - start)
    return {"window_add": window_rate, "transform_handle": handle_rate}


def bench_end_to_end(url: str, msgs: list[dict[str, Any]], window: float) -> float:
    """Messages per second through a worker process on `url`."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    q_in, q_out = f"bench.in.{suffix}", f"bench.out.{suffix}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "launchplan.demo.worker", "--transport", url,
         "--input", q_in, "--output", q_out, "--window", str(window)],
        env=env, start_new_session=True, stderr=subprocess.DEVNULL,
    )
    try:
        with connect(url, prefetch=256) as bus:
            bus.declare(q_in, q_out)
            bus.publish(q_in, {"control": "ping"})
            if bus.get(q_out, 60) is None:
                raise RuntimeError("worker did not answer ping")

            def publish() -> None:
                with connect(url) as pub:
                    for i in range(0, len(msgs), PUBLISH_BATCH):
                        pub.publish_many(q_in, msgs[i:i + PUBLISH_BATCH])

            publisher = threading.Thread(target=publish)
            start = time.perf_counter()
            publisher.start()
            received = 0
            while received < len(msgs):
                if bus.get(q_out, 60) is None:
                    raise RuntimeError(f"outputs stopped after {received} of {len(msgs)}")
                received += 1
            elapsed = time.perf_counter() - start
            publisher.join()
            bus.purge(q_in)
            bus.purge(q_out)
        return len(msgs) / elapsed
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--in-process-messages", type=int, default=400_000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--amqp", help="RabbitMQ URL to measure too")
    parser.add_argument("--start-rabbitmq", action="store_true",
                        help="start a private RabbitMQ on loopback for the run")
    args = parser.parse_args()

    rates = bench_in_process(make_messages(args.in_process_messages), args.window)
    print(f"in-process  window.add        {rates['window_add']:>12,.0f} msg/s "
          f"({args.in_process_messages} values)")
    print(f"in-process  transform.handle  {rates['transform_handle']:>12,.0f} msg/s")

    msgs = make_messages(args.messages)
    with tempfile.TemporaryDirectory() as tmp:
        embedded = bench_end_to_end(filesystem_url(Path(tmp) / "bus"), msgs, args.window)
    print(f"end to end  cei embedded      {embedded:>12,.0f} msg/s ({args.messages} messages)")

    broker = None
    url = args.amqp
    tmp_broker = None
    if url is None and args.start_rabbitmq:
        from tests.integration.rabbitmq import start_broker

        tmp_broker = tempfile.TemporaryDirectory()
        broker = start_broker(Path(tmp_broker.name))
        url = broker.url
    try:
        if url:
            print(f"RabbitMQ {redact_url(url)}, {args.messages} messages:")
            rates = {lib: baselines.drive(lib, url, msgs, args.window)
                     for lib in ("kombu", "pika")}
            rates["cei"] = bench_end_to_end(url, msgs, args.window)
            for name, label in (("kombu", "bare kombu"), ("pika", "bare pika"),
                                ("cei", "cei RabbitMQ")):
                print(f"end to end  {label:<17} {rates[name]:>12,.0f} msg/s")
            for name, label in (("cei", "cei RabbitMQ"), ("embedded", "cei embedded")):
                rate = embedded if name == "embedded" else rates["cei"]
                print(f"ratio       {label:<17} {rate / rates['kombu']:>8.2f}x kombu "
                      f"{rate / rates['pika']:>6.2f}x pika")
    finally:
        if broker is not None:
            broker.stop()
        if tmp_broker is not None:
            tmp_broker.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
