"""JSON documents on named queues: the embedded transport or RabbitMQ, behind one `Bus`.

A transport URL picks the broker:
- `filesystem:///ABS/DIR`: the embedded transport, a SQLite queue in DIR (see `sqlitequeue`).
  It needs no server, and every process on the machine that opens the same DIR shares the
  queues. `connect(None)` uses `$CEI_HOME/bus` (default `~/.cei/bus`).
- `amqp://user:pass@host:port/vhost` (or `pyamqp://`): RabbitMQ through kombu (see `amqpbus`).

Both keep FIFO order per publisher and move documents in batches: `publish_many` sends many
documents as one message, and a consumer that `take`s a batch settles it with `commit`, which
publishes the batch's results and acknowledges the batch as one transaction. A consumer that
dies before its commit leaves the batch to be delivered again, and nothing it published is
seen: every document is processed into exactly one result.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlparse

from launchplan.errors import MessagingError

FILESYSTEM_SCHEME = "filesystem"
AMQP_SCHEMES = ("amqp", "pyamqp", "amqps")


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


@dataclass
class Batch:
    """Documents taken from one queue and not yet acknowledged: settle them with `commit`."""

    queue: str
    docs: list[Any]
    handle: Any  # the transport's own record of what to acknowledge


class Bus(ABC):
    """JSON documents on named queues over one connection.

    Not thread-safe: use one Bus per thread at a time. `get` acknowledges a message when it
    hands out its first document (what it has handed out is never delivered again); `take` and
    `commit` acknowledge a batch only together with the documents published for it.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def is_embedded(self) -> bool:
        """True for the embedded transport."""
        return self.url.startswith(f"{FILESYSTEM_SCHEME}:")

    @abstractmethod
    def declare(self, *queues: str) -> None:
        """Create the queues (idempotent) so messages published to them are kept."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Drop what waits in `queue` and what was delivered here unread; how many messages.

        Documents published together by `publish_many` count as one message while they wait
        in the broker, and one by one once delivered here."""

    def publish(self, queue: str, document: Any) -> None:
        """Publish one JSON document to `queue`."""
        self.publish_many(queue, [document])

    @abstractmethod
    def publish_many(self, queue: str, documents: Sequence[Any]) -> None:
        """Publish `documents` to `queue` in order, as one message."""

    @abstractmethod
    def get(self, queue: str, timeout: float) -> Any | None:
        """The next document from `queue`, waiting at most `timeout` seconds; None if none came."""

    @abstractmethod
    def take(self, queue: str, timeout: float) -> Batch | None:
        """The documents waiting in `queue` (at least one, waiting at most `timeout` seconds for
        it), unacknowledged; None if none came."""

    @abstractmethod
    def commit(self, batch: Batch, queue: str, documents: Sequence[Any]) -> None:
        """Publish `documents` to `queue` and acknowledge `batch`, both or neither."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; batches taken and not committed go back to their queue."""

    def iter(self, queue: str, *, idle_timeout: float, limit: int | None = None) -> Iterator[Any]:
        """Yield documents from `queue` until `limit` were read or none came for `idle_timeout`."""
        count = 0
        while limit is None or count < limit:
            doc = self.get(queue, idle_timeout)
            if doc is None:
                return
            count += 1
            yield doc

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
    """Open a Bus on `url` (see resolve_url); MessagingError if the broker cannot be reached.

    `prefetch` bounds how many messages a consumer holds unacknowledged."""
    resolved = resolve_url(url)
    if resolved.startswith(f"{FILESYSTEM_SCHEME}:"):
        from launchplan.demo.sqlitequeue import SqliteBus

        return SqliteBus(resolved, _filesystem_dir(resolved), prefetch=prefetch)
    from launchplan.demo.amqpbus import AmqpBus

    return AmqpBus.open(resolved, timeout=timeout, prefetch=prefetch)

