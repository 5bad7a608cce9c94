"""Sliding-window averages over time-stamped streams.

For each value added at time t, the window holds the values of that variable with time in
(t - W, t]. Each value enters and leaves the window once, so the work is amortised O(1) and the
memory is the values inside the window. The running sum is compensated (Neumaier) and, once as
many values have left the window as it holds, re-summed exactly with math.fsum: that costs no
more than the evictions that triggered it and keeps long streams within rounding of an exact sum.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


class SlidingWindow:
    """The mean of one variable's values over the last `window` seconds."""

    __slots__ = ("_comp", "_evicted", "_items", "_last", "_sum", "window")

    def __init__(self, window: float) -> None:
        window = float(window)
        if not math.isfinite(window) or window <= 0:
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        self.window = window
        self._items: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._comp = 0.0
        self._evicted = 0
        self._last: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _accumulate(self, value: float) -> None:
        total = self._sum + value
        if abs(self._sum) >= abs(value):
            self._comp += (self._sum - total) + value
        else:
            self._comp += (value - total) + self._sum
        self._sum = total

    def add(self, time: float, value: float) -> tuple[float, int]:
        """Add one value; return (average, count) over the window ending at `time`."""
        time = float(time)
        value = float(value)
        if not math.isfinite(time) or not math.isfinite(value):
            raise ValueError(f"time and value must be finite numbers, got {time!r}, {value!r}")
        if self._last is not None and time < self._last:
            raise ValueError(f"time {time!r} is before the previous time {self._last!r}")
        self._last = time
        items = self._items
        items.append((time, value))
        self._accumulate(value)
        start = time - self.window
        while items[0][0] <= start:
            self._accumulate(-items.popleft()[1])
            self._evicted += 1
        if self._evicted >= len(items):
            self._sum = math.fsum(v for _, v in items)
            self._comp = 0.0
            self._evicted = 0
        count = len(items)
        return (self._sum + self._comp) / count, count

    def values(self) -> list[tuple[float, float]]:
        """The (time, value) pairs now inside the window, oldest first."""
        return list(self._items)


class MultiWindow:
    """One SlidingWindow per variable name, all with the same window length."""

    def __init__(self, window: float) -> None:
        SlidingWindow(window)  # validates before any state exists
        self.window = float(window)
        self._windows: dict[str, SlidingWindow] = {}

    def add(self, variable: str, time: float, value: float) -> tuple[float, int]:
        """Add a value of `variable`; return its (average, count)."""
        win = self._windows.get(variable)
        if win is None:
            win = self._windows[variable] = SlidingWindow(self.window)
        return win.add(time, value)

    def reset(self, window: float | None = None) -> None:
        """Forget every value (a new run of the stream), optionally with a new window length."""
        if window is not None:
            SlidingWindow(window)
            self.window = float(window)
        self._windows.clear()

    @property
    def variables(self) -> list[str]:
        """Names of the variables seen since the last reset, in first-seen order."""
        return list(self._windows)

    def sizes(self) -> dict[str, int]:
        """How many values each variable's window holds now."""
        return {name: len(win) for name, win in self._windows.items()}


def brute_force(
    rows: Iterable[tuple[str, float, float]], window: float
) -> list[tuple[float, int]]:
    """Reference (average, count) for each (variable, time, value), by exact summation.

    O(n * window) and independent of SlidingWindow's bookkeeping: used by tests and the demo's
    check, never on the hot path.
    """
    seen: dict[str, list[tuple[float, float]]] = {}
    out: list[tuple[float, int]] = []
    for variable, time, value in rows:
        history = seen.setdefault(variable, [])
        history.append((float(time), float(value)))
        start = float(time) - window
        inside = [v for t, v in history if t > start]
        out.append((math.fsum(inside) / len(inside), len(inside)))
    return out
