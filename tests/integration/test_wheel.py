"""cei as a user gets it: the wheel installed (not editable) in a fresh virtualenv, run outside
a checkout; the demo plan comes with the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import require
from tests.integration.cli_helpers import REPO

pytestmark = pytest.mark.integration


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of its sources (the checkout stays clean)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "launchplan", source / "launchplan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("cei-*.whl")
    return wheel


def test_the_installed_wheel_runs_the_demo_outside_a_checkout(tmp_path: Path) -> None:
    try:
        import wheel  # noqa: F401  (setuptools needs it to build a wheel)
    except ImportError:
        require(False, "the wheel package is not installed (pip install 'cei[test]')")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--no-index", "-q", str(build_wheel(tmp_path))],
                   check=True, capture_output=True, timeout=300)
    # cei's dependencies from this environment, after the venv's own packages, and without
    # this environment's editable install of the checkout (a .pth line is only a path)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (site / "cei-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CEI_HOME=str(tmp_path / "home"), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    where = subprocess.run([str(python), "-c", "import launchplan; print(launchplan.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout
    shutil.copy2(REPO / "plans" / "data" / "sample.csv", elsewhere / "data.csv")
    demo = subprocess.run(
        [str(venv / "bin" / "cei"), "demo", "sliding-window", "--input", "data.csv",
         "--window", "10", "--output", "out.csv"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    rows = (elsewhere / "out.csv").read_text().splitlines()
    assert rows[0] == "time,variable,value,average,count" and len(rows) > 100
    assert "run sliding-window terminated" in demo.stdout
