"""Regenerate sample.csv: ~100 irregular time steps of three ocean-like variables.

Deterministic (fixed seed), so the file in the repository is exactly what this prints:
    python3 plans/data/make_sample.py > plans/data/sample.csv
"""

from __future__ import annotations

import math
import random
import sys

STEPS = 100
SEED = 20131001


def rows(steps: int = STEPS, seed: int = SEED) -> list[list[str]]:
    """Header plus one row per time step; times increase by 0.5-2 s."""
    rng = random.Random(seed)
    out = [["time", "temperature", "salinity", "pressure"]]
    t = 0.0
    for _ in range(steps):
        t += rng.choice((0.5, 1.0, 1.0, 1.0, 1.5, 2.0))
        temperature = 12.0 + 3.0 * math.sin(t / 15.0) + rng.gauss(0.0, 0.4)
        salinity = 34.5 + 0.2 * math.cos(t / 40.0) + rng.gauss(0.0, 0.05)
        pressure = 1013.25 + 0.05 * t + rng.gauss(0.0, 0.8)
        out.append([f"{t:.1f}", f"{temperature:.4f}", f"{salinity:.4f}", f"{pressure:.3f}"])
    return out


def main() -> int:
    """Print the CSV on stdout."""
    for row in rows():
        sys.stdout.write(",".join(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
