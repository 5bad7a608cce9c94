"""JSON messages on named queues over kombu: an embedded transport or RabbitMQ.

A transport URL picks the broker:
- `filesystem:///ABS/DIR`: kombu's filesystem transport in DIR. It needs no server and every
  process on the machine that opens the same DIR shares the queues. `connect(None)` uses
  `$CEI_HOME/bus` (default `~/.cei/bus`).
- `amqp://user:pass@host:port/vhost` (or `pyamqp://`): RabbitMQ.

Queues are addressed through the default exchange (routing key = queue name), which both
transports implement, so the same code runs on either.

The stock filesystem transport names message files by millisecond and a random uuid and lists
the whole directory on every read, so messages published within one millisecond come out in
random order and a backlog costs O(n) per message. `_OrderedChannel` fixes both: names carry a
nanosecond clock, the publishing pid and a per-process sequence number (FIFO per publisher), and
a consumer reads from a cached sorted listing, claiming each file by an atomic rename.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlparse

from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

from launchplan.errors import MessagingError

FILESYSTEM_SCHEME = "filesystem"
AMQP_SCHEMES = ("amqp", "pyamqp", "amqps")
POLL_INTERVAL = 0.005


_sequence = itertools.count()
_sequence_lock = threading.Lock()


class _OrderedChannel(filesystem.Channel):
    """Filesystem channel with publish order kept per publisher and O(1) reads from a backlog.

    A directory listing taken while files are renamed into the directory may return a later
    message and miss an earlier one (readdir gives no guarantee for entries added during the
    scan). Publishers therefore rename under a shared lock and a consumer lists under an
    exclusive one: a listing holds every message published before it, and none after.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing: dict[str, deque[str]] = {}
        self._lock_fds: dict[str, int] = {}

    def _folder_lock(self, folder: str) -> int:
        fd = self._lock_fds.get(folder)
        if fd is None:
            fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_fds[folder] = fd
        return fd

    def close(self) -> None:
        for fd in self._lock_fds.values():
            os.close(fd)
        self._lock_fds.clear()
        super().close()

    # kombu's own stubs disagree on the argument's name (message/payload); we match our parent.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        with _sequence_lock:
            seq = next(_sequence)
        name = f"{time.monotonic_ns():020d}_{os.getpid():010d}_{seq:016d}.{queue}.msg"
        folder = self.data_folder_out
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(dumps(payload).encode())
        lock = self._folder_lock(folder)
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            os.rename(tmp, os.path.join(folder, name))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        pending = self._listing.get(queue)
        if not pending:
            suffix = f".{queue}.msg"
            lock = self._folder_lock(self.data_folder_in)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                listing = os.listdir(self.data_folder_in)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
            names = [
                n for n in listing if not n.startswith(".") and n.partition(".")[2] == suffix[1:]
            ]
            names.sort()
            pending = self._listing[queue] = deque(names)
        claimed_dir = os.path.join(self.data_folder_in, ".claimed")
        while pending:
            name = pending.popleft()
            claimed = os.path.join(claimed_dir, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer took it, or it was purged
            with open(claimed, "rb") as fh:
                payload = fh.read()
            os.unlink(claimed)
            return loads(payload)
        raise Empty()

    def _purge(self, queue: str) -> int:
        self._listing.pop(queue, None)
        return int(super()._purge(queue))


class _OrderedTransport(filesystem.Transport):
    Channel = _OrderedChannel
    global_state = filesystem.Transport.global_state


def default_bus_dir() -> Path:
    """Where the embedded transport lives when no URL is given: $CEI_HOME/bus."""
    home = os.environ.get("CEI_HOME") or os.path.join(os.path.expanduser("~"), ".cei")
    return Path(home) / "bus"


def filesystem_url(directory: str | Path) -> str:
    """The explicit URL of the embedded transport in `directory`."""
    return f"{FILESYSTEM_SCHEME}://{Path(directory).resolve()}"


def resolve_url(url: str | None) -> str:
    """Normalise a transport URL; None means the embedded transport in default_bus_dir()."""
    if url is None or url == "":
        return filesystem_url(default_bus_dir())
    scheme = urlparse(url).scheme
    if scheme == FILESYSTEM_SCHEME:
        return filesystem_url(_filesystem_dir(url))
    if scheme in AMQP_SCHEMES:
        return url
    raise MessagingError(
        f"unsupported transport URL {url!r}: use filesystem:///ABS/DIR or amqp://HOST:PORT/"
    )


def _filesystem_dir(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.netloc or not parsed.path.startswith("/"):
        raise MessagingError(f"filesystem URL must be filesystem:///ABSOLUTE/DIR, not {url!r}")
    return Path(unquote(parsed.path))


# Where a process finds its broker password, so it never travels in argv or sits in cei's store.
PASSWORD_ENV = "CEI_TRANSPORT_PASSWORD"


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without its password, and the password (None when it has none)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url, None
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    user = f"{parsed.username}@" if parsed.username else ""
    return parsed._replace(netloc=f"{user}{host}{port}").geturl(), unquote(parsed.password)


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` put back (a URL that has one, or no password, is kept as it is)."""
    parsed = urlparse(url)
    if password is None or parsed.password is not None or not parsed.username:
        return url
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    netloc = f"{parsed.username}:{quote(password, safe='')}@{host}{port}"
    return parsed._replace(netloc=netloc).geturl()


def redact_url(url: str) -> str:
    """The URL without its password, for logs and output."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    user = f"{parsed.username}:***@" if parsed.username else ""
    return parsed._replace(netloc=f"{user}{host}{port}").geturl()


class Bus:
    """One kombu connection with JSON publish/consume helpers on named queues.

    Not thread-safe: use one Bus per thread. Messages are acknowledged when `get` hands them
    out, so with RabbitMQ a consumer that dies keeps at most `prefetch` unread messages queued.
    """

    def __init__(self, url: str, connection: Connection, prefetch: int = 64) -> None:
        self.url = url
        self._conn = connection
        self._prefetch = prefetch
        self._declared: set[str] = set()
        self._producer: Producer | None = None
        self._consumers: dict[str, Consumer] = {}
        self._buffers: dict[str, deque[tuple[Any, Message]]] = {}

    @property
    def is_embedded(self) -> bool:
        """True for the filesystem transport."""
        return self.url.startswith(f"{FILESYSTEM_SCHEME}:")

    def _queue(self, name: str) -> Queue:
        return Queue(name, routing_key=name, durable=False, auto_delete=False)

    def declare(self, *queues: str) -> None:
        """Create the queues (idempotent) so messages published to them are kept."""
        for name in queues:
            if name not in self._declared:
                self._queue(name)(self._conn.default_channel).declare()
                self._declared.add(name)

    def purge(self, queue: str) -> int:
        """Drop every message waiting in `queue` (and any delivered here unread); how many."""
        self.declare(queue)
        consumer = self._consumers.pop(queue, None)
        if consumer is not None:
            # Cancelling waits for the broker's cancel-ok, which follows every delivery made
            # to this consumer, so afterwards all prefetched messages are in the buffer.
            consumer.cancel()
        buffered = self._buffers.pop(queue, deque())
        for _, message in buffered:
            message.ack()
        return len(buffered) + int(self._queue(queue)(self._conn.default_channel).purge() or 0)

    def publish(self, queue: str, document: Any) -> None:
        """Publish one JSON document to `queue`."""
        self.declare(queue)
        if self._producer is None:
            self._producer = Producer(self._conn.default_channel, serializer="json")
        self._producer.publish(document, exchange="", routing_key=queue, retry=False)

    def _consumer(self, queue: str) -> deque[tuple[Any, Message]]:
        buffer = self._buffers.setdefault(queue, deque())
        if queue not in self._consumers:
            self.declare(queue)
            consumer = Consumer(
                self._conn.default_channel,
                queues=[self._queue(queue)],
                callbacks=[lambda body, message: buffer.append((body, message))],
                accept=["json"],
                prefetch_count=self._prefetch,
            )
            consumer.consume()
            self._consumers[queue] = consumer
        return buffer

    def get(self, queue: str, timeout: float) -> Any | None:
        """The next document from `queue`, waiting at most `timeout` seconds; None if none came."""
        buffer = self._consumer(queue)
        deadline = time.monotonic() + max(0.0, timeout)
        while not buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                return None if not buffer else self._pop(buffer)
        return self._pop(buffer)

    @staticmethod
    def _pop(buffer: deque[tuple[Any, Message]]) -> Any:
        body, message = buffer.popleft()
        message.ack()
        return body

    def iter(self, queue: str, *, idle_timeout: float, limit: int | None = None) -> Iterator[Any]:
        """Yield documents from `queue` until `limit` were read or none came for `idle_timeout`."""
        count = 0
        while limit is None or count < limit:
            doc = self.get(queue, idle_timeout)
            if doc is None:
                return
            count += 1
            yield doc

    def close(self) -> None:
        """Cancel consumers and release the connection."""
        for consumer in self._consumers.values():
            try:
                consumer.cancel()
            except Exception:  # the connection may already be gone; release it regardless
                break
        self._consumers.clear()
        self._conn.release()

    def __enter__(self) -> Bus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(url: str | None = None, *, timeout: float = 10.0, prefetch: int = 64) -> Bus:
    """Open a Bus on `url` (see resolve_url); MessagingError if the broker cannot be reached."""
    resolved = resolve_url(url)
    if resolved.startswith(f"{FILESYSTEM_SCHEME}:"):
        folder = _filesystem_dir(resolved)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # messages may carry secrets
        (folder / ".claimed").mkdir(mode=0o700, exist_ok=True)
        (folder / "control").mkdir(mode=0o700, exist_ok=True)
        conn = Connection(
            transport=_OrderedTransport,
            transport_options={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "control_folder": str(folder / "control"),
                "polling_interval": POLL_INTERVAL,
            },
        )
    else:
        conn = Connection(resolved, connect_timeout=timeout, heartbeat=0)
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        conn.release()
        raise MessagingError(f"cannot connect to {redact_url(resolved)}: {exc}") from exc
    return Bus(resolved, conn, prefetch=prefetch)
