"""The Bus over RabbitMQ (AMQP 0-9-1), through kombu.

Queues are addressed through the default exchange (routing key = queue name).

Batches: `publish_many` sends its documents as one AMQP message, the JSON list, with a header
`cei-batch` giving their number; a message without that header is one document, so any plain
AMQP publisher still reaches a worker. kombu's and the broker's costs per message (one publish
per message was 82% of the transform worker's time, one ack another large share) are paid once
per batch, and each end encodes and decodes the whole batch with one call of the json module.

Exactly once: `take` consumes on a channel of its own in AMQP transaction mode (tx.select), one
channel per queue, and `commit` publishes the results, acknowledges the whole batch with one
basic.ack(multiple) up to its last delivery (that channel delivered nothing else unacked below
it), then tx.commit: the broker applies the publish and the ack together or not at all. A
worker that dies before tx.commit has published nothing anyone sees, and the broker delivers its
batch again, in order, to the next consumer; after tx.commit the batch is gone for good.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from launchplan.demo.messaging import Batch, Bus, redact_url
from launchplan.errors import MessagingError

BATCH_HEADER = "cei-batch"


def _documents(message: Message) -> list[Any]:
    body = json.loads(message.body)
    return body if BATCH_HEADER in (message.headers or {}) else [body]


class _Inbox:
    """One queue's consumer on one channel, with its deliveries not yet handed out."""

    def __init__(self, channel: Any, producer: Producer) -> None:
        self.channel = channel
        self.producer = producer
        self.messages: deque[Message] = deque()
        self.docs: deque[Any] = deque()  # the rest of a message `get` began to hand out
        self.consumer: Consumer | None = None


class AmqpBus(Bus):
    """A Bus on one kombu connection to RabbitMQ."""

    def __init__(self, url: str, connection: Connection, prefetch: int = 64) -> None:
        super().__init__(url)
        self._conn = connection
        self._prefetch = prefetch
        self._declared: set[str] = set()
        self._producer: Producer | None = None
        self._inboxes: dict[tuple[str, bool], _Inbox] = {}

    @classmethod
    def open(cls, url: str, *, timeout: float, prefetch: int) -> AmqpBus:
        """Connect to the broker at `url`; MessagingError if it cannot be reached."""
        conn = Connection(url, connect_timeout=timeout, heartbeat=0)
        try:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:
            conn.release()
            raise MessagingError(f"cannot connect to {redact_url(url)}: {exc}") from exc
        return cls(url, conn, prefetch=prefetch)

    def _queue(self, name: str) -> Queue:
        return Queue(name, routing_key=name, durable=False, auto_delete=False)

    def declare(self, *queues: str) -> None:
        for name in queues:
            if name not in self._declared:
                self._queue(name)(self._conn.default_channel).declare()
                self._declared.add(name)

    def purge(self, queue: str) -> int:
        self.declare(queue)
        count = 0
        for transactional in (False, True):
            inbox = self._inboxes.pop((queue, transactional), None)
            if inbox is None:
                continue
            if inbox.consumer is not None:
                # Cancelling waits for the broker's cancel-ok, which follows every delivery
                # made to this consumer, so afterwards all prefetched messages are in the inbox.
                inbox.consumer.cancel()
            count += len(inbox.docs) + sum(len(_documents(m)) for m in inbox.messages)
            for message in inbox.messages:
                message.ack()
            if transactional:
                inbox.channel.tx_commit()
                inbox.channel.close()
        return count + int(self._queue(queue)(self._conn.default_channel).purge() or 0)

    def _send(self, producer: Producer, queue: str, body: str, headers: dict[str, Any]) -> None:
        self.declare(queue)
        producer.publish(body, exchange="", routing_key=queue, content_type="application/json",
                         content_encoding="utf-8", headers=headers, retry=False)

    def _default_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._conn.default_channel)
        return self._producer

    def publish(self, queue: str, document: Any) -> None:
        self._send(self._default_producer(), queue, json.dumps(document), {})

    def publish_many(self, queue: str, documents: Sequence[Any]) -> None:
        if documents:
            self._send(self._default_producer(), queue, json.dumps(list(documents)),
                       {BATCH_HEADER: len(documents)})

    def _inbox(self, queue: str, transactional: bool) -> _Inbox:
        inbox = self._inboxes.get((queue, transactional))
        if inbox is None:
            self.declare(queue)
            if transactional:
                channel = self._conn.channel()
                channel.tx_select()
            else:
                channel = self._conn.default_channel
            inbox = _Inbox(channel, Producer(channel))
            inbox.consumer = Consumer(channel, queues=[self._queue(queue)],
                                      on_message=inbox.messages.append,
                                      prefetch_count=self._prefetch)
            inbox.consumer.consume()
            self._inboxes[(queue, transactional)] = inbox
        return inbox

    def _wait(self, inbox: _Inbox, timeout: float) -> bool:
        """Whether a message is in `inbox`, reading from the broker for at most `timeout`."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not inbox.messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                return bool(inbox.messages)
        return True

    def get(self, queue: str, timeout: float) -> Any | None:
        inbox = self._inbox(queue, transactional=False)
        while not inbox.docs:
            if not self._wait(inbox, timeout):
                return None
            message = inbox.messages.popleft()
            message.ack()
            inbox.docs.extend(_documents(message))
        return inbox.docs.popleft()

    def take(self, queue: str, timeout: float) -> Batch | None:
        inbox = self._inbox(queue, transactional=True)
        if not self._wait(inbox, timeout):
            return None
        messages = list(inbox.messages)
        inbox.messages.clear()
        docs = [doc for message in messages for doc in _documents(message)]
        return Batch(queue, docs, (inbox, messages[-1]))

    def commit(self, batch: Batch, queue: str, documents: Sequence[Any]) -> None:
        inbox, last = batch.handle
        if documents:
            self._send(inbox.producer, queue, json.dumps(list(documents)),
                       {BATCH_HEADER: len(documents)})
        last.ack(multiple=True)
        inbox.channel.tx_commit()

    def close(self) -> None:
        for inbox in self._inboxes.values():
            try:
                if inbox.consumer is not None:
                    inbox.consumer.cancel()
            except Exception:  # the connection may already be gone; release it regardless
                break
        self._inboxes.clear()
        self._conn.release()
