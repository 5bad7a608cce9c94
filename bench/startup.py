"""Time cei the way an installed copy starts: with its modules compiled once.

pip compiles a package's modules when it installs it. A shell with PYTHONDONTWRITEBYTECODE
set (some set it for development) would instead have every timed start-up compile cei's
modules again, and start-up figures would then mostly show the compiler.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path


def as_installed(*checkouts: Path) -> None:
    """Let the processes started from here write and use .pyc files, and compile each
    checkout's launchplan package now, before anything is timed."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for checkout in checkouts:
        compileall.compile_dir(checkout / "launchplan", quiet=1)
