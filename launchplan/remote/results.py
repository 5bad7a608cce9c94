"""How a remote command ended, and what keeps its output: without paramiko, so that what
only reads results (masking, local programs) does not load it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

TAIL_BYTES = 4096

OutputCallback = Callable[[str, bytes], None]


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended: exit status and the last ~4 KiB of each stream."""

    status: int
    stdout_tail: str
    stderr_tail: str
    report: bytes | None = None  # what a staged run reported (see remote.staging)
    login_dir: str | None = None  # where the command's login started, when it told


class Tail:
    """The last TAIL_BYTES of a stream."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > TAIL_BYTES:
            del self.data[: len(self.data) - TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")
