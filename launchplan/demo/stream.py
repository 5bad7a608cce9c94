"""The sliding-window demo's moving parts: the input CSV, the transform's definition, the stream.

`read_series` checks the CSV (header `time,VAR...`, increasing times, numbers) and turns it into
one message per value in time order; `worker_definition` is the process the dispatcher places
on an engine; `stream` drives a running transform over a transport: ping, reset with the window,
publish every message, collect every average.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import launchplan
from launchplan.demo.messaging import PASSWORD_ENV, split_password
from launchplan.dispatch.definition import ENV_FROM
from launchplan.errors import CeiError, StepTimeout, UsageError

WORKER_NAME = "sliding-window"
WORKER_MODULE = "launchplan.demo.worker:main"
READY_TIMEOUT = 60.0  # for the transform to answer its first ping
PING_EVERY = 2.0
IDLE_TIMEOUT = 30.0  # the longest gap between two outputs before the demo gives up
PUBLISH_BATCH = 256  # values per message: the per-message costs of a broker are paid per batch
OUTPUT_HEADER = ("time", "variable", "value", "average", "count")


@dataclass(frozen=True)
class Message:
    """One input value: what the demo publishes."""

    time: float
    variable: str
    value: float

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "variable": self.variable, "value": self.value}


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{where}: {what} {text.strip()!r} is not a finite number")
    return value


def read_series(path: Path) -> tuple[list[str], list[Message]]:
    """The variables and the messages of a CSV `time,VAR1,VAR2,...`; UsageError at file:line."""
    if not path.is_file():
        raise UsageError(f"no such input file: {path}")
    messages: list[Message] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        last: float | None = None
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                if header[0] != "time" or len(header) < 2:
                    raise UsageError(f"{where}: the header must be time,VAR1,VAR2,... "
                                     f"(got {','.join(header)})")
                variables = header[1:]
                if any(not v for v in variables) or len(set(variables)) != len(variables):
                    raise UsageError(f"{where}: variable names must be non-empty and unique")
                continue
            if len(row) != len(header):
                raise UsageError(f"{where}: {len(row)} columns, the header has {len(header)}")
            t = _number(row[0], "time", where)
            if last is not None and t <= last:
                raise UsageError(f"{where}: time {row[0].strip()} is not after the previous "
                                 f"time {last:g} (times must increase)")
            last = t
            for name, cell in zip(header[1:], row[1:], strict=True):
                messages.append(Message(t, name, _number(cell, name, where)))
    if header is None:
        raise UsageError(f"{path}: empty file; expected a header time,VAR1,VAR2,...")
    if not messages:
        raise UsageError(f"{path}: no data rows after the header")
    return header[1:], messages


def queue_names(run: str) -> tuple[str, str]:
    """The run's own input and output queues, so runs never read each other's streams."""
    return f"cei.{run}.data", f"cei.{run}.averages"


def worker_definition(run: str, transport: str, window: float, local: bool,
                      password_from_env: bool = False) -> dict[str, Any]:
    """The transform as an agent process. On the local cloud the node's python finds cei's
    own package through `pythonpath`; elsewhere cei must be installed on the engine image.

    With `password_from_env`, the broker password leaves the URL: the process gets it from
    $CEI_TRANSPORT_PASSWORD, which the dispatcher fills from cei's own environment whenever it
    places the process, so it is in neither the store nor the process's argv.
    """
    input_queue, output_queue = queue_names(run)
    url, password = split_password(transport)
    definition: dict[str, Any] = {
        "name": WORKER_NAME,
        "description": "sliding-window average transform (cei demo sliding-window)",
        "module": WORKER_MODULE,
        "args": ["--transport", url if password_from_env else transport,
                 "--input", input_queue, "--output", output_queue,
                 "--window", repr(float(window))],
        "restart": "abnormal",
        "min_restart_interval": 1.0,
    }
    if password_from_env and password is not None:
        definition[ENV_FROM] = {PASSWORD_ENV: PASSWORD_ENV}
    if local:
        definition["pythonpath"] = [str(Path(launchplan.__file__).resolve().parent.parent)]
    return definition


def definition_option(definition: dict[str, Any], option: str) -> str | None:
    """The value of `--option` in a worker definition's args (for reuse by --run)."""
    args = [str(a) for a in definition.get("args", [])]
    for i, arg in enumerate(args[:-1]):
        if arg == option:
            return args[i + 1]
    return None


@dataclass
class StreamResult:
    """What came back for one pass of the data through the transform."""

    outputs: list[dict[str, Any]]
    elapsed: float  # first publish to last output
    pid: int | None  # the transform's pid, as it answered the ping
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return len(self.outputs) / self.elapsed if self.elapsed > 0 else 0.0


def _await(bus: Any, queue: str, accept: Callable[[Any], bool], timeout: float,
           retry: Callable[[], None] | None = None) -> Any:
    """The first document on `queue` that `accept` takes within `timeout`, others dropped."""
    deadline = time.monotonic() + timeout
    next_retry = time.monotonic() + PING_EVERY
    while time.monotonic() < deadline:
        doc = bus.get(queue, min(0.5, max(0.0, deadline - time.monotonic())))
        if doc is not None and accept(doc):
            return doc
        if retry is not None and time.monotonic() >= next_retry:
            retry()
            next_retry = time.monotonic() + PING_EVERY
    return None


def stream(transport: str, run: str, messages: Sequence[Message], window: float,
           ready_timeout: float = READY_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT
           ) -> StreamResult:
    """Send every message through the run's transform and collect its averages in order.

    The transform is pinged until it answers (it may still be connecting), told to reset its
    windows (with `window`), and then fed while a second connection collects; the output
    stream is bounded by `idle_timeout` between messages.
    """
    from launchplan.demo.messaging import MessagingError, connect, redact_url

    input_queue, output_queue = queue_names(run)
    try:
        publisher = connect(transport)
    except MessagingError as exc:
        raise CeiError(str(exc)) from None
    try:
        consumer = connect(transport)
    except MessagingError as exc:
        publisher.close()
        raise CeiError(str(exc)) from None
    try:
        publisher.purge(input_queue)
        consumer.purge(output_queue)

        def ping() -> None:
            publisher.publish(input_queue, {"control": "ping"})

        ping()
        pong = _await(consumer, output_queue,
                      lambda d: isinstance(d, dict) and d.get("control") == "pong",
                      ready_timeout, retry=ping)
        if pong is None:
            raise StepTimeout(f"the transform did not answer on {redact_url(transport)} "
                              f"(queue {input_queue}) within {ready_timeout:g}s")
        publisher.publish(input_queue, {"control": "reset", "window": float(window)})
        reset = _await(consumer, output_queue,
                       lambda d: isinstance(d, dict) and d.get("control") == "reset",
                       ready_timeout)
        if reset is None:
            raise StepTimeout(f"the transform did not confirm the reset within "
                              f"{ready_timeout:g}s")
        failure: list[BaseException] = []

        def feed() -> None:
            try:
                for start in range(0, len(messages), PUBLISH_BATCH):
                    publisher.publish_many(input_queue, [
                        m.to_json() for m in messages[start:start + PUBLISH_BATCH]])
            except BaseException as exc:  # reported by the collecting thread
                failure.append(exc)

        started = time.perf_counter()
        sender = threading.Thread(target=feed, name="cei-demo-publish", daemon=True)
        sender.start()
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        finished = started
        while len(outputs) + len(errors) < len(messages):
            doc = consumer.get(output_queue, idle_timeout)
            if doc is None or failure:
                break
            if not isinstance(doc, dict) or "control" in doc:
                continue
            (errors if "error" in doc else outputs).append(doc)
            finished = time.perf_counter()
        sender.join(timeout=idle_timeout)
        if failure:
            raise CeiError(f"publishing to {redact_url(transport)} failed: {failure[0]}")
        if len(outputs) + len(errors) < len(messages):
            raise StepTimeout(
                f"only {len(outputs) + len(errors)} of {len(messages)} averages arrived "
                f"(none for {idle_timeout:g}s)")
        return StreamResult(outputs, finished - started, reset.get("pid") or pong.get("pid"),
                            errors)
    finally:
        publisher.close()
        consumer.close()


def write_output(path: Path, messages: Sequence[Message],
                 outputs: Sequence[dict[str, Any]]) -> None:
    """OUT.csv: one row per input value, in publish order, averages at full precision."""
    if len(outputs) != len(messages):
        raise CeiError(f"{len(outputs)} averages for {len(messages)} values")
    rows = []
    for message, out in zip(messages, outputs, strict=True):
        if out.get("variable") != message.variable or float(out.get("time", "nan")) != message.time:
            raise CeiError(f"the transform answered {out.get('variable')}@{out.get('time')} "
                           f"for {message.variable}@{message.time:g}: the stream is out of order")
        rows.append((repr(message.time), message.variable, repr(message.value),
                     repr(float(out["average"])), str(int(out["count"]))))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(OUTPUT_HEADER)
        writer.writerows(rows)


def plot_available() -> bool:
    """Whether --plot can work (matplotlib is the optional extra `cei[plot]`)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot(path: Path, variables: Sequence[str], messages: Sequence[Message],
         outputs: Sequence[dict[str, Any]], window: float) -> None:
    """A PNG with one panel per variable: its values and their sliding-window average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(variables), 1, sharex=True,
                             figsize=(9, 2.4 * len(variables)), squeeze=False)
    for axis, name in zip(axes[:, 0], variables, strict=True):
        points = [(m.time, m.value, float(o["average"]))
                  for m, o in zip(messages, outputs, strict=True) if m.variable == name]
        axis.plot([p[0] for p in points], [p[1] for p in points], ".", ms=3, label=name)
        axis.plot([p[0] for p in points], [p[2] for p in points], "-",
                  label=f"{window:g}s average")
        axis.legend(loc="upper left", fontsize="small")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
