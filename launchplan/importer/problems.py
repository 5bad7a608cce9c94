"""What an import found wrong: every error and warning, each naming its .conf file and line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from launchplan.errors import UsageError


def shown(path: Path) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(path)


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = shown(self.file) + (f":{self.line}" if self.line is not None else "")
        return f"{where}: {self.message}"


@dataclass
class Report:
    """Problems collected while importing, in the order they were found, each once (a value
    converted for several services is checked each time)."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, file: Path, line: int | None, message: str) -> None:
        _add(self.errors, Problem(file, line, message))

    def warn(self, file: Path, line: int | None, message: str) -> None:
        _add(self.warnings, Problem(file, line, message))


def _add(problems: list[Problem], problem: Problem) -> None:
    if problem not in problems:
        problems.append(problem)


class ImportRefused(UsageError):
    """The cloudinit.d plan cannot be imported; `problems` holds every reason (exit 2)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
