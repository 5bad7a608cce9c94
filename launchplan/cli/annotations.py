"""The one summary line a CI log shows for a command, as an annotation where CI reads them.

Under GitHub Actions (GITHUB_ACTIONS=true) the line is a workflow command, `::notice` or
`::error`, which the runner turns into an annotation on the job; anywhere else it is a plain
line. The runner reads workflow commands from stdout and stderr alike.
"""

from __future__ import annotations

import os
import sys

from launchplan.cli.output import write


def github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def summary_line(ok: bool, title: str, line: str, details: str = "", *, err: bool) -> None:
    """Print `line`; under GitHub Actions, as an annotation titled `title` that also carries
    `details` (which plain output shows on lines of its own)."""
    if github_actions():
        text = line + (f"\n{details}" if details else "")
        line = f"::{'notice' if ok else 'error'} title={_property(title)}::{_data(text)}"
    write(line + "\n", sys.stderr if err else sys.stdout)


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
