"""Collect every problem of a plan instead of stopping at the first (capped for the screen)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from launchplan.errors import PlanError, PlanErrors

from . import budgets


class Problems:
    """A plan's problems so far; `collect()` blocks record theirs and let checking go on."""

    def __init__(self) -> None:
        self.errors: list[PlanError] = []
        self.total = 0
        self._seen: set[str] = set()

    def add(self, error: PlanError) -> None:
        for one in error.errors if isinstance(error, PlanErrors) else [error]:
            text = str(one)
            if text in self._seen:
                continue
            self._seen.add(text)
            self.total += 1
            if len(self.errors) < budgets.ERRORS_SHOWN:
                self.errors.append(one)
        if isinstance(error, PlanErrors):
            self.total += error.total - len(error.errors)

    @contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except PlanError as error:
            self.add(error)

    def raise_any(self) -> None:
        """Raise every problem collected so far, if there is one."""
        if self.errors:
            raise PlanErrors(list(self.errors), self.total)
