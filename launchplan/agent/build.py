"""Build the agent zipapp that cei ships to nodes (`python3 cei-agent.pyz ...`)."""

from __future__ import annotations

import shutil
import tempfile
import zipapp
from pathlib import Path

PACKAGE = "cei_agent"
# Modules the node needs; this builder itself stays behind.
EXCLUDE = {"build.py"}
# Modules of launchplan the agent imports (standard library only), shipped beside it.
SHARED = ("__init__.py", "errors.py")


def build_zipapp(dest: Path) -> Path:
    """Write the agent package alone (as `cei_agent`) to `dest`, runnable by any python3."""
    source = Path(__file__).resolve().parent
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / PACKAGE
        package.mkdir()
        for path in sorted(source.glob("*.py")):
            if path.name not in EXCLUDE:
                shutil.copy2(path, package / path.name)
        # the error tree the agent raises from, standard library only like the agent
        shared = Path(tmp) / "launchplan"
        shared.mkdir()
        for name in SHARED:
            shutil.copy2(source.parent / name, shared / name)
        # Our own __main__ rather than zipapp's `main=`, which would drop the exit status.
        (Path(tmp) / "__main__.py").write_text(
            f"from {PACKAGE}.main import main\n\nraise SystemExit(main())\n"
        )
        zipapp.create_archive(tmp, target=dest, interpreter="/usr/bin/env python3")
    dest.chmod(0o755)
    return dest
