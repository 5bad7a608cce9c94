"""The sliding-window average against an independent brute-force computation."""

from __future__ import annotations

import math
import os
import random

import pytest

from launchplan.demo.sliding_window import MultiWindow, SlidingWindow, brute_force
from launchplan.demo.worker import Transform

REL = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def _stream(rng: random.Random, n: int, variables: list[str], scale: float = 1.0,
            offset: float = 0.0) -> list[tuple[str, float, float]]:
    """Irregular, non-decreasing times (with runs of equal times) over several variables."""
    t = 1000.0
    rows = []
    for _ in range(n):
        r = rng.random()
        t += 0.0 if r < 0.15 else rng.expovariate(1.0) * 2.0
        rows.append((rng.choice(variables), t, offset + scale * rng.gauss(0.0, 1.0)))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("window", [0.5, 3.0, 10.0, 1e6])
def test_matches_brute_force_on_random_streams(seed: int, window: float) -> None:
    rng = random.Random(seed)
    rows = _stream(rng, 1500, ["a", "b", "c", "temp"])
    multi = MultiWindow(window)
    got = [multi.add(v, t, x) for v, t, x in rows]
    want = brute_force(rows, window)
    for (avg, count), (ref_avg, ref_count) in zip(got, want, strict=True):
        assert count == ref_count
        assert _close(avg, ref_avg), (avg, ref_avg)


def test_long_stream_with_large_offset_stays_within_1e9() -> None:
    # Values of 1e8 +- 1: a naive running sum drifts; compensation and re-summation must not.
    rng = random.Random(7)
    win = SlidingWindow(5.0)
    history: list[tuple[float, float]] = []
    t = 0.0
    worst = 0.0
    for i in range(60_000):
        t += rng.random()
        value = 1e8 + rng.uniform(-1, 1) if i % 2 else -1e8 + rng.uniform(-1, 1)
        avg, count = win.add(t, value)
        history.append((t, value))
        if i % 97 == 0:
            inside = [v for tt, v in history if tt > t - 5.0]
            ref = math.fsum(inside) / len(inside)
            assert count == len(inside)
            worst = max(worst, abs(avg - ref) / max(abs(ref), 1e-300))
        history = history[-200:]
    assert worst <= REL


def test_window_is_half_open_and_equal_times_all_count() -> None:
    win = SlidingWindow(10.0)
    assert win.add(0.0, 1.0) == (1.0, 1)
    assert win.add(0.0, 3.0) == (2.0, 2)
    assert win.add(5.0, 5.0) == (3.0, 3)
    # time 10: (0, 10] excludes the two values at time 0
    assert win.add(10.0, 7.0) == (6.0, 2)
    assert win.add(10.0, 9.0) == (7.0, 3)
    assert win.values() == [(5.0, 5.0), (10.0, 7.0), (10.0, 9.0)]


def test_memory_is_bounded_by_the_window() -> None:
    win = SlidingWindow(2.0)
    for i in range(10_000):
        win.add(i * 0.25, float(i))
        assert len(win) <= 8
    assert len(win) == 8


def test_decreasing_time_is_rejected_and_state_kept() -> None:
    win = SlidingWindow(3.0)
    win.add(5.0, 1.0)
    with pytest.raises(ValueError, match="before the previous time"):
        win.add(4.9, 2.0)
    assert win.add(5.0, 3.0) == (2.0, 2)


@pytest.mark.parametrize("window", [0, -1, float("nan"), float("inf")])
def test_bad_window(window: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindow(window)
    with pytest.raises(ValueError):
        MultiWindow(window)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values_rejected(value: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindow(1.0).add(0.0, value)


def test_multiwindow_keeps_variables_apart_and_resets() -> None:
    multi = MultiWindow(10.0)
    multi.add("x", 1.0, 10.0)
    multi.add("y", 2.0, 20.0)
    assert multi.add("x", 1.5, 30.0) == (20.0, 2)
    # y's time 2.0 does not constrain x: times are per variable
    assert multi.add("y", 2.0, 40.0) == (30.0, 2)
    assert multi.variables == ["x", "y"]
    assert multi.sizes() == {"x": 2, "y": 2}
    multi.reset(window=1.0)
    assert multi.window == 1.0 and multi.variables == []
    assert multi.add("x", 0.0, 5.0) == (5.0, 1)


def test_transform_messages() -> None:
    tr = Transform(10.0)
    out = tr.handle({"time": 1.0, "variable": "v", "value": 2.0})
    assert out == {"time": 1.0, "variable": "v", "value": 2.0, "average": 2.0, "count": 1}
    pong = tr.handle({"control": "ping"})
    assert pong["control"] == "pong" and pong["pid"] == os.getpid() and pong["processed"] == 1
    assert tr.handle({"control": "reset", "window": 4})["window"] == 4.0
    assert tr.handle({"time": 0.0, "variable": "v", "value": 6.0})["count"] == 1
    assert "error" in tr.handle({"time": -1.0, "variable": "v", "value": 1.0})
    assert "error" in tr.handle({"time": 1.0, "value": 1.0})
    assert "error" in tr.handle({"control": "reset", "window": -2})
    assert "error" in tr.handle({"control": "explode"})
    assert "error" in tr.handle([1, 2])
    assert tr.windows.window == 4.0
