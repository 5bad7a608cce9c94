"""Bare-library baselines for bench_transform.py: the same job without cei's Bus.

    python bench/transform_baselines.py worker {kombu|pika} URL INPUT OUTPUT WINDOW

A worker takes one message, runs it through the transform, publishes one message and acks
one message, as a straightforward kombu or pika program would. `drive` streams N messages
through such a worker with the same library and returns messages per second, measured like
bench_transform's cei figures: first publish to last output received.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launchplan.demo.worker import Transform  # noqa: E402


def pika_url(url: str) -> str:
    """`url` as pika reads it: the vhost percent-encoded (kombu's `//` is the vhost `/`)."""
    parsed = urlparse(url)
    vhost = parsed.path[1:] or "/"
    return parsed._replace(path="/" + quote(vhost, safe="")).geturl()


def kombu_worker(url: str, q_in: str, q_out: str, window: float) -> None:
    from kombu import Connection, Consumer, Producer, Queue

    transform = Transform(window)
    inbox: deque[tuple[Any, Any]] = deque()
    with Connection(url, heartbeat=0) as conn:
        channel = conn.channel()
        producer = Producer(channel, serializer="json")
        # publishing from inside the callback recurses into drain_events: buffer, then act
        with Consumer(channel, queues=[Queue(q_in, routing_key=q_in, durable=False)],
                      callbacks=[lambda body, message: inbox.append((body, message))],
                      accept=["json"], prefetch_count=256):
            while True:
                conn.drain_events()
                while inbox:
                    body, message = inbox.popleft()
                    producer.publish(transform.handle(body), exchange="", routing_key=q_out)
                    message.ack()


def pika_worker(url: str, q_in: str, q_out: str, window: float) -> None:
    import pika

    transform = Transform(window)
    conn = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
    channel = conn.channel()
    channel.queue_declare(q_in)
    channel.queue_declare(q_out)
    channel.basic_qos(prefetch_count=256)

    def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
        out = json.dumps(transform.handle(json.loads(body)))
        ch.basic_publish(exchange="", routing_key=q_out, body=out)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(q_in, on_message)
    channel.start_consuming()


def _drive_kombu(url: str, q_in: str, q_out: str, msgs: list[dict[str, Any]]) -> float:
    from kombu import Connection, Consumer, Producer, Queue

    received = [0]
    done = threading.Event()

    def publish() -> None:
        with Connection(url, heartbeat=0) as conn:
            producer = Producer(conn.channel(), serializer="json")
            for m in msgs:
                producer.publish(m, exchange="", routing_key=q_in)

    def on_message(_body: Any, message: Any) -> None:
        message.ack()
        received[0] += 1
        if received[0] == len(msgs):
            done.set()

    with Connection(url, heartbeat=0) as conn:
        channel = conn.channel()
        with Consumer(channel, queues=[Queue(q_out, routing_key=q_out, durable=False)],
                      callbacks=[on_message], accept=["json"], prefetch_count=256):
            publisher = threading.Thread(target=publish)
            start = time.perf_counter()
            publisher.start()
            while not done.is_set():
                conn.drain_events(timeout=60)
            elapsed = time.perf_counter() - start
            publisher.join()
    return len(msgs) / elapsed


def _drive_pika(url: str, q_in: str, q_out: str, msgs: list[dict[str, Any]]) -> float:
    import pika

    def publish() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
        channel = conn.channel()
        for m in msgs:
            channel.basic_publish(exchange="", routing_key=q_in, body=json.dumps(m))
        conn.close()

    conn = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=256)
    publisher = threading.Thread(target=publish)
    start = time.perf_counter()
    publisher.start()
    outputs = channel.consume(q_out, inactivity_timeout=60)
    for received, (method, _props, _body) in enumerate(outputs, start=1):
        if method is None:
            raise RuntimeError(f"pika outputs stopped after {received - 1} of {len(msgs)}")
        channel.basic_ack(method.delivery_tag)
        if received == len(msgs):
            break
    elapsed = time.perf_counter() - start
    channel.cancel()
    publisher.join()
    conn.close()
    return len(msgs) / elapsed


def drive(library: str, url: str, msgs: list[dict[str, Any]], window: float) -> float:
    """Messages per second through a bare `library` worker process on RabbitMQ at `url`."""
    suffix = f"{library}.{os.getpid()}-{time.monotonic_ns()}"
    q_in, q_out = f"bench.in.{suffix}", f"bench.out.{suffix}"
    _declare(url, q_in, q_out)
    worker = subprocess.Popen(
        [sys.executable, __file__, "worker", library, url, q_in, q_out, str(window)],
        start_new_session=True,
    )
    try:
        run = _drive_kombu if library == "kombu" else _drive_pika
        return run(url, q_in, q_out, msgs)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        _delete(url, q_in, q_out)


def _declare(url: str, *queues: str) -> None:
    from kombu import Connection, Queue

    with Connection(url) as conn:
        for name in queues:
            Queue(name, routing_key=name, durable=False)(conn.default_channel).declare()


def _delete(url: str, *queues: str) -> None:
    from kombu import Connection, Queue

    with Connection(url) as conn:
        for name in queues:
            Queue(name, routing_key=name, durable=False)(conn.default_channel).delete()


if __name__ == "__main__":
    _, _, lib, arg_url, arg_in, arg_out, arg_window = sys.argv
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    (kombu_worker if lib == "kombu" else pika_worker)(arg_url, arg_in, arg_out,
                                                       float(arg_window))
