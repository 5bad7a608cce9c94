"""Masking secrets in what a program prints, before it reaches a log, an event or a report.

A program's secrets are the values of its environment variables whose names mark them as
secret by the rule the store scrubs by (`state.secret_name`: ..._PASSWORD, ..._SECRET, ...),
and the values of the plan's secret variables (`--secret-var`, `secret: true`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from launchplan.remote.results import TAIL_BYTES, CommandResult
from launchplan.state import secret_name

MASK = b"***"
# A line that grows past this without a newline is passed on anyway (keeping enough back that
# a secret cut in two by the flush is still caught whole).
_MAX_HELD = 64 * 1024

OutputCallback = Callable[[str, bytes], None]


class Masker:
    """Replaces every occurrence of known secret values with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # a value inside the mask itself could never be told from it (and would grow it)
        values = {s.encode() for s in secrets if s.strip() and s.encode() not in MASK}
        self._secrets = sorted(values, key=len, reverse=True)  # longest first: no partial hits
        self.multiline = any(b"\n" in s for s in values)

    @classmethod
    def for_env(cls, env: Mapping[str, str], secrets: Iterable[str] = ()) -> Masker:
        """Masks the values of `env`'s secret-named variables and `secrets` (the values of the
        plan's secret variables)."""
        return cls([*(value for name, value in env.items() if secret_name(name)), *secrets])

    def __bool__(self) -> bool:
        return bool(self._secrets)

    @property
    def longest(self) -> int:
        return len(self._secrets[0]) if self._secrets else 0

    def mask(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, MASK)
        return data

    def text(self, text: str) -> str:
        return self.mask(text.encode()).decode("utf-8", errors="replace")

    def stream(self, forward: OutputCallback | None) -> MaskedOutput:
        return MaskedOutput(self, forward)


class MaskedOutput:
    """An output callback for Session.run that masks before passing chunks on.

    Output is passed on a line at a time, holding back what a secret split across two chunks
    could start in, so that it is still seen whole; `finish()` passes on the rest. It keeps its own
    tails of the masked streams, since the session's tails hold the output unmasked.
    """

    def __init__(self, masker: Masker, forward: OutputCallback | None) -> None:
        self.masker = masker
        self.forward = forward
        self._held: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._tails: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, chunk: bytes) -> None:
        data = self.masker.mask(self._held.get(stream, b"") + chunk)
        # No whole secret is left in `data`; one still arriving starts in its last longest-1
        # bytes, and after its last newline unless a secret spans lines.
        safe = max(len(data) - (self.masker.longest - 1), 0)
        cut = data.rfind(b"\n", 0, safe if self.masker.multiline else len(data)) + 1
        if cut == 0 and len(data) > _MAX_HELD:
            cut = safe
        self._held[stream] = data[cut:]
        self._pass_on(stream, data[:cut])

    def finish(self) -> None:
        for stream, data in self._held.items():
            self._held[stream] = b""
            self._pass_on(stream, self.masker.mask(data))

    def result(self, raw: CommandResult) -> CommandResult:
        """`raw` with the tails of the masked streams (call after finish())."""
        return replace(raw, stdout_tail=self._text("stdout"), stderr_tail=self._text("stderr"))

    def _pass_on(self, stream: str, data: bytes) -> None:
        if not data:
            return
        self._tails[stream] = (self._tails[stream] + data)[-TAIL_BYTES:]
        if self.forward is not None:
            self.forward(stream, data)

    def _text(self, stream: str) -> str:
        return self._tails[stream].decode("utf-8", errors="replace")
