"""What cei's start-up loads: each module kept out here is time every command saves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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


def test_jinja2_loads_with_a_plans_first_template(tmp_path: Path) -> None:
    """A plan without a template is loaded and rendered without Jinja2 (the sandbox and
    the renderer live in plan/engine.py); the first template loads it and renders."""
    plain = tmp_path / "plain.yml"
    plain.write_text("plan: p\nclouds:\n  hosts: {driver: static}\ndefaults: {cloud: hosts}\n"
                     "levels:\n  - services:\n      a: {host: [h1, h2]}\n")
    templated = tmp_path / "templated.yml"
    templated.write_text(plain.read_text()
                         + "  - services:\n      b:\n        host: h3\n"
                           "        config: {peer: '{{ services.a.nodes[0].address }}'}\n")
    render = ("from launchplan.plan import load_plan\n"
              "from launchplan.plan.render import render_all\n"
              "specs = render_all(load_plan({path!r}))\n"
              "assert '<a/0.address>' in str([s.config for s in specs]) or len(specs) == 2\n")
    assert "jinja2" not in loaded_after(render.format(path=str(plain)))
    modules = loaded_after(render.format(path=str(templated)))
    assert {"jinja2", "launchplan.plan.engine"} <= modules
