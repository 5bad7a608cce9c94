"""The sliding-window transform process: data messages in, averaged messages out.

Input documents and what each produces on the output queue:
- {"time": T, "variable": V, "value": X} -> {"time", "variable", "value", "average", "count"}
- {"control": "reset", "window": W} -> windows cleared (W optional) and
  {"control": "reset", "window": W, "pid": P} published, so a driver knows when the new run
  starts; the process is NOT restarted, so one engine serves many demo runs.
- {"control": "ping"} -> {"control": "pong", "pid": P, "window": W, "processed": N}
- anything malformed -> {"error": "...", "input": <the document>} (the stream goes on)

Runs as `python -m launchplan.demo.worker --transport URL --input Q --output Q --window W`
or as an agent process definition {"module": "launchplan.demo.worker:main", "args": [...]}.
The loop takes whatever batch of input is waiting and commits the batch's outputs together with
its acknowledgement (`Bus.commit`), so a worker killed at any point neither loses an input nor
publishes an output twice: the next worker gets the uncommitted batch again, in order.
SIGTERM/SIGINT finish the batch in hand, close the connection and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from launchplan.demo.messaging import (
    PASSWORD_ENV,
    Bus,
    MessagingError,
    connect,
    redact_url,
    with_password,
)
from launchplan.demo.sliding_window import MultiWindow

log = logging.getLogger("cei.transform")

IDLE_WAIT = 0.5


class Transform:
    """The message logic, separate from the loop so it can be driven in-process."""

    def __init__(self, window: float) -> None:
        self.windows = MultiWindow(window)
        self.processed = 0

    def handle(self, doc: Any) -> dict[str, Any]:
        """The output document for one input document."""
        if not isinstance(doc, dict):
            return {"error": "message is not a JSON object", "input": doc}
        control = doc.get("control")
        if control == "ping":
            return {
                "control": "pong",
                "pid": os.getpid(),
                "window": self.windows.window,
                "processed": self.processed,
            }
        if control == "reset":
            try:
                self.windows.reset(doc.get("window"))
            except (TypeError, ValueError) as exc:
                return {"error": f"bad reset: {exc}", "input": doc}
            self.processed = 0
            return {"control": "reset", "window": self.windows.window, "pid": os.getpid()}
        if control is not None:
            return {"error": f"unknown control {control!r}", "input": doc}
        try:
            variable = doc["variable"]
            if not isinstance(variable, str):
                raise TypeError("variable must be a string")
            average, count = self.windows.add(variable, doc["time"], doc["value"])
        except (KeyError, TypeError, ValueError) as exc:
            return {"error": f"bad data message: {exc}", "input": doc}
        self.processed += 1
        return {
            "time": doc["time"],
            "variable": variable,
            "value": doc["value"],
            "average": average,
            "count": count,
        }


def serve(bus: Bus, input_queue: str, output_queue: str, window: float,
          stop: list[bool] | None = None) -> int:
    """Consume `input_queue` and publish to `output_queue` until `stop[0]` becomes true."""
    stop = stop if stop is not None else [False]
    transform = Transform(window)
    bus.declare(input_queue, output_queue)
    while not stop[0]:
        batch = bus.take(input_queue, IDLE_WAIT)
        if batch is not None:
            bus.commit(batch, output_queue, [transform.handle(doc) for doc in batch.docs])
    return transform.processed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cei-transform", description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default=None,
                        help="filesystem:///DIR or amqp://USER@HOST:PORT/ (the password, if any, "
                             f"from ${PASSWORD_ENV}); default $CEI_HOME/bus")
    parser.add_argument("--input", default="cei.data", help="queue of data messages")
    parser.add_argument("--output", default="cei.averages", help="queue of averaged messages")
    parser.add_argument("--window", type=float, default=10.0, help="window length in seconds")
    parser.add_argument("--connect-timeout", type=float, default=60.0,
                        help="seconds to keep trying to reach the broker at start")
    return parser


def _connect_retrying(url: str | None, timeout: float) -> Bus:
    """The broker may still be starting (it is an earlier level of the same plan)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(url)
        except MessagingError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for the command line and for agent process definitions."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    stop = [False]

    def on_signal(signum: int, _frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = args.transport
    if url is not None:
        url = with_password(url, os.environ.get(PASSWORD_ENV))
    try:
        bus = _connect_retrying(url, args.connect_timeout)
    except MessagingError as exc:
        log.error("%s", exc)
        return 1
    log.info("transform pid %d: %s -> %s, window %ss, on %s", os.getpid(), args.input,
             args.output, args.window, redact_url(bus.url))
    try:
        processed = serve(bus, args.input, args.output, args.window, stop)
    finally:
        bus.close()
    log.info("stopped after %d data messages since the last reset", processed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
