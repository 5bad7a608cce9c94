"""What cei's start-up loads: each module kept out here is time every command saves."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_paramiko_loads_without_invoke_which_stays_importable() -> None:
    modules = loaded_after("import launchplan.remote.session")
    assert "paramiko" in modules
    assert not {"invoke", "unittest.mock", "asyncio"} & modules
    after = loaded_after("import launchplan.remote.session\nimport invoke\ninvoke.Context")
    assert "invoke.context" in after


def test_paramiko_built_its_config_support_without_invoke() -> None:
    """Match exec is refused by cei itself (remote/sshconfig.py), so paramiko never needs
    invoke; it must still parse everything else."""
    modules = loaded_after(
        "from launchplan.remote.sshlib import paramiko\n"
        "import io\n"
        "config = paramiko.SSHConfig.from_file(io.StringIO('Host a\\n  Port 2200\\n'))\n"
        "assert config.lookup('a')['port'] == '2200'")
    assert "paramiko.config" in modules and "invoke" not in modules


def test_help_loads_no_ssh_cloud_plan_or_store_library() -> None:
    modules = loaded_after(
        "import contextlib, io, sys\n"
        "from launchplan.cli.main import main\n"
        "sys.argv = ['cei', '--help']\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()")
    assert "click" in modules
    heavy = {"paramiko", "jinja2", "jsonschema", "boto3", "libcloud", "rich", "yaml", "sqlite3"}
    assert not {m.split(".")[0] for m in modules} & heavy
