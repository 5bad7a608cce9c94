"""import_plan: read a cloudinit.d plan, convert it, write it, and check it as cei will."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launchplan.errors import PlanError, UsageError
from launchplan.plan import load_plan

from .convert import Converter, Imported
from .problems import ImportRefused, Problem, Report
from .source import read_plan
from .yamlout import dump


@dataclass
class ImportResult:
    text: str  # the cei plan as YAML, with comments
    imported: Imported
    warnings: list[Problem]


def import_plan(top: Path, output: Path | None = None, cloud: str | None = None) -> ImportResult:
    """Convert the plan whose top file is `top`; ImportRefused lists every problem (exit 2).

    Program and file paths are written relative to `output`'s directory (the working directory
    when there is no output file). The result passes cei's own plan checks.
    """
    if not top.is_file():
        raise UsageError(f"no such cloudinit.d top file: {top}")
    base = output.absolute().parent if output is not None else Path.cwd()
    name = output.stem if output is not None else None
    result = _convert(top, cloud, name, lambda path: os.path.relpath(path, base))
    _check(top, cloud)
    return result


def _convert(top: Path, cloud: str | None, name: str | None,
             path_for: Callable[[Path], str]) -> ImportResult:
    report = Report()
    plan = read_plan(top, report)
    imported = Converter(plan, report, path_for, cloud, name=name).convert()
    if report.errors:
        raise ImportRefused(report.errors)
    return ImportResult(dump(imported.data, imported.comments, imported.header), imported,
                        report.warnings)


def _check(top: Path, cloud: str | None) -> None:
    """Load the plan (with absolute paths) the way `cei validate` does."""
    result = _convert(top, cloud, None, str)
    with tempfile.TemporaryDirectory(prefix="cei-import-") as tmp:
        path = Path(tmp) / "imported.yml"
        path.write_text(result.text, encoding="utf-8")
        try:
            load_plan(path)
        except PlanError as exc:
            where = f" (line {exc.line} of the imported plan)" if exc.line else ""
            raise ImportRefused([Problem(top.absolute(), None, "the imported plan does not "
                                         f"pass cei's checks{where}: {exc.message}")]) from None
