"""The controller machine as a node's program host (`local_exe: true`).

The same operations a Stage uses on an SSH session (directories, files, running a program),
done here: programs start from an argv list (no shell), in their own process group, which a
timeout or Ctrl-C stops whole, as on a node.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from launchplan.errors import CommandTimeout, Interrupted, RemoteError
from launchplan.remote.results import CommandResult, OutputCallback, Tail
from launchplan.remote.staging import Staging

_POLL = 0.25
_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a stopped program's group
_CHUNK = 32768


class LocalSession:
    """Runs programs and handles files on this machine, with a Session's interface."""

    @property
    def home(self) -> str:
        return str(Path.home())

    def close(self) -> None:
        """Nothing to close; here for symmetry with Session."""

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        target = Path(path).expanduser()
        try:
            target.mkdir(mode=mode, parents=True, exist_ok=True)
            target.chmod(mode)
        except OSError as exc:
            raise RemoteError(f"cannot create directory {path}: {exc.strerror or exc}") from exc

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write `data` to `path` atomically (temporary file, then rename), with `mode`."""
        target = Path(path).expanduser()
        tmp = target.with_name(f"{target.name}.cei-tmp-{uuid.uuid4().hex[:12]}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RemoteError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def upload(self, local: str | Path, path: str, mode: int = 0o700) -> None:
        """Copy a local file to `path` atomically, with `mode` (executable by default)."""
        try:
            data = Path(local).expanduser().read_bytes()
        except OSError as exc:
            raise RemoteError(f"cannot read {local}: {exc}") from exc
        self.put(data, path, mode)

    def get(self, path: str, limit: int | None = None) -> bytes | None:
        """The file's contents (at most `limit` bytes), or None when it does not exist."""
        try:
            with Path(path).expanduser().open("rb") as handle:
                return handle.read(-1 if limit is None else limit)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def run_argv(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Run `argv` (no shell) in `cwd` with `env` added to this process's environment.

        A program that cannot start ends with status 127 (not found) or 126 (not executable),
        as a shell reports it. Past `timeout`, or when `cancel` is set, the program's whole
        process group is stopped and CommandTimeout or Interrupted raised.
        """
        words = [str(word) for word in argv]
        try:
            proc = subprocess.Popen(
                words, cwd=cwd, env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            status = 127 if isinstance(exc, FileNotFoundError) else 126
            return CommandResult(status, "", f"{words[0]}: {exc.strerror or exc}\n")
        out, err = Tail(), Tail()
        deadline = None if timeout is None else time.monotonic() + timeout
        with proc, selectors.DefaultSelector() as selector:
            assert proc.stdout is not None and proc.stderr is not None
            selector.register(proc.stdout, selectors.EVENT_READ, ("stdout", out))
            selector.register(proc.stderr, selectors.EVENT_READ, ("stderr", err))
            while selector.get_map():
                if cancel is not None and cancel.is_set():
                    _stop_group(proc)
                    raise Interrupted(f"{words[0]}: program interrupted")
                wait = _POLL
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        _stop_group(proc)
                        raise CommandTimeout(f"{words[0]} ran past its timeout of {timeout:g} s "
                                             "and was stopped")
                    wait = min(wait, left)
                for key, _ in selector.select(wait):
                    chunk = os.read(key.fd, _CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    stream, tail = key.data
                    tail.add(chunk)
                    if on_output is not None:
                        on_output(stream, chunk)
            rest = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                status = proc.wait(timeout=rest)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                raise CommandTimeout(f"{words[0]} ran past its timeout of {timeout:g} s "
                                     "and was stopped") from None
        return CommandResult(status if status >= 0 else 128 - status, out.text(), err.text())

    def run_staged(
        self,
        staging: Staging,
        argv: Sequence[str] | None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Session.run_staged, here: the files, the removals, then run_argv and the report."""
        if staging.files:
            self.makedirs(staging.directory, 0o700)
        for item in staging.files:
            self.put(item.data, os.path.join(staging.directory, item.name), item.mode)
        for path in staging.remove:
            try:
                Path(path).expanduser().unlink(missing_ok=True)
            except OSError as exc:
                raise RemoteError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        if argv is None:
            return CommandResult(0, "", "")
        result = self.run_argv(argv, cwd=staging.directory, env=env, timeout=timeout,
                               on_output=on_output, cancel=cancel)
        if result.status != 0 or staging.report is None:
            return result
        return replace(result, report=self.get(staging.report, limit=staging.limit + 1))


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the program's process group, then KILL what is left after a short grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=_GRACE)
