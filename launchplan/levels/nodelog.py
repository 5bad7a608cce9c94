"""The per-node log file: every program's stdout and stderr, as it streams."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


class NodeLog:
    """Append-only log of one node under $CEI_HOME/runs/RUN/logs/, mode 0600."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)

    def note(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write(f"--- {stamp} {text}\n".encode())

    def stream(self, program: str) -> Callable[[str, bytes], None]:
        """A callback for Session.run that tags each line with its program and stream."""

        def write(stream: str, chunk: bytes) -> None:
            prefix = b"[%s %s] " % (program.encode(), stream.encode())
            lines = chunk.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            self._write(b"".join(prefix + line + b"\n" for line in lines))

        return write

    def _write(self, data: bytes) -> None:
        with self._lock:
            self._file.write(data)

    def close(self) -> None:
        self._file.close()


def node_log_path(run_dir: Path, node: str) -> Path:
    return run_dir / "logs" / (node.replace("/", "-") + ".log")
