"""A cloudinit.d plan imported by `cei import` and launched end to end.

Services on the local cloud, one `hostname: localhost` service on a real OpenSSH sshd, and a
`local_exe` service; their programs use bootconf.json, bootenv.sh and bootout.json as they
did under cloudinit.d.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cli_helpers import cei, cei_json
from tests.integration.conftest import SSHDServer

pytestmark = pytest.mark.integration

WORD = "swordfish-4711"  # an env.NAME value: read at launch, never written down by cei

SCRIPTS = {
    "db-boot.sh": """\
        #!/bin/sh
        set -e
        . ./bootenv.sh
        word=$(python3 -c 'import json; print(json.load(open("bootconf.json"))["word"])')
        [ "$word" = "$secret_word" ] && ok=yes || ok=no
        printf '{"token": "tok-%s", "args": "%s|%s", "word_ok": "%s"}' \\
            "$port" "$1" "$2" "$ok" > bootout.json
        """,
    "here-boot.sh": """\
        #!/bin/sh
        printf '{"stage": "%s"}' "$PWD" > bootout.json
        """,
    "app-boot.sh": """\
        #!/bin/sh
        set -e
        . ./bootenv.sh
        printf '{"seen": "%s|%s|%s|%s", "host": "%s"}' \\
            "$db_token" "$db_port" "$1" "$2" "$db_host" > bootout.json
        """,
    "ctl-boot.sh": """\
        #!/bin/sh
        set -e
        . ./bootenv.sh
        printf '{"app1": "%s", "dir": "%s", "ssh": "%s"}' \\
            "$app1" "$PWD" "${SSH_CONNECTION:-}" > bootout.json
        """,
    "check-ready.sh": """\
        #!/bin/sh
        test -s bootout.json
        """,
}


def write_cloudinitd_plan(root: Path, sshd: SSHDServer) -> Path:
    files = {
        "top.conf": """\
            [globals]
            greeting: hello

            [runlevels]
            level1: first.conf
            level2: second.conf
            level3: third.conf
            """,
        "first.conf": f"""\
            [svc-db]
            image: any-image
            bootpgm: scripts/db-boot.sh
            bootpgm_args: --tag "${{global.greeting}} world"
            readypgm: scripts/check-ready.sh
            deps: db-deps.conf
            bootconf: db-bootconf.json

            [svc-here]
            hostname: localhost
            ssh_username: {sshd.user}
            localsshkeypath: {sshd.key_path}
            bootpgm: scripts/here-boot.sh
            readypgm: scripts/check-ready.sh
            """,
        "db-deps.conf": """\
            [deps]
            port: 5432
            secret_word: env.CEI_IMPORT_WORD
            """,
        "db-bootconf.json": '{"port": "$port", "word": "${secret_word}"}\n',
        "second.conf": """\
            [svc-app]
            image: any-image
            replica_count: 2
            bootpgm: scripts/app-boot.sh
            bootpgm_args: ${db.token} "two words"
            readypgm: scripts/check-ready.sh
            deps: app-deps.conf
            """,
        "app-deps.conf": """\
            [deps]
            db_token: ${db.token}
            db_port: ${db.port}
            db_host: ${db.hostname}
            here_stage: ${here.stage}
            """,
        "third.conf": """\
            [svc-ctl]
            image: any-image
            local_exe: True
            bootpgm: scripts/ctl-boot.sh
            readypgm: scripts/check-ready.sh
            deps: ctl-deps.conf
            """,
        "ctl-deps.conf": "[deps]\napp1: ${app-1.seen}\n",
    }
    (root / "scripts").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    for name, text in SCRIPTS.items():
        script = root / "scripts" / name
        script.write_text(textwrap.dedent(text))
        script.chmod(0o755)
    return root / "top.conf"


def outputs_by_node(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n["outputs"] for n in status["nodes"]}


def test_imported_plan_runs_as_under_cloudinitd(
    home: Path, tmp_path: Path, sshd: SSHDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = write_cloudinitd_plan(tmp_path / "old", sshd)
    plan = tmp_path / "new" / "plan.yml"
    plan.parent.mkdir()
    done = cei(home, "import", str(top), "-o", str(plan), "--cloud", "local", check=0)
    assert "warning" not in done.stderr
    assert WORD not in plan.read_text() and "env('CEI_IMPORT_WORD')" in plan.read_text()

    # the sshd of this test listens on its own port, and its host key is pinned the usual way
    doc = yaml.safe_load(plan.read_text())
    doc["levels"][0]["services"]["here"]["ssh_port"] = sshd.port
    plan.write_text(yaml.safe_dump(doc, sort_keys=False))
    user_home = tmp_path / "user"
    (user_home / ".ssh").mkdir(parents=True)
    (user_home / ".ssh" / "known_hosts").write_text(f"[localhost]:{sshd.port} {sshd.host_key}\n")
    monkeypatch.setenv("HOME", str(user_home))

    cei(home, "launch", str(plan), "--name", "imp", env={"CEI_IMPORT_WORD": WORD}, check=0)
    status = cei_json(home, "status", "imp")
    assert status["healthy"] is True  # every ready program passed again, local_exe's too
    outputs = outputs_by_node(status)
    assert outputs["db/0"] == {"token": "tok-5432", "args": "--tag|hello world",
                               "word_ok": "yes"}
    here_stage = Path(outputs["here/0"]["stage"])
    assert (here_stage.parent.name, here_stage.name) == ("here", "0")  # the node's own
    assert here_stage.is_dir()  # the sshd is this machine
    db_address = next(n["address"] for n in status["nodes"] if n["node"] == "db/0")
    for node in ("app/0", "app/1"):
        assert outputs[node] == {"seen": "tok-5432|5432|tok-5432|two words", "host": db_address}
    ctl = outputs["ctl/0"]
    assert ctl["app1"] == outputs["app/1"]["seen"]
    assert ctl["ssh"] == ""  # ran here, not over SSH
    ctl_stage = Path(ctl["dir"])
    assert ctl_stage == home / "runs" / "imp" / "stage" / "ctl-0"
    assert {p.name for p in ctl_stage.iterdir()} >= {"bootenv.sh", "bootout.json",
                                                     "config.json"}

    assert WORD.encode() not in (home / "cei.db").read_bytes()
    for log in (home / "runs" / "imp" / "logs").iterdir():
        assert WORD not in log.read_text(errors="replace")

    cei(home, "terminate", "imp", check=0)
    assert not ctl_stage.exists() and not here_stage.exists()


def test_import_refuses_a_broken_plan_with_every_problem(home: Path, tmp_path: Path) -> None:
    (tmp_path / "top.conf").write_text("[runlevels]\nlevel1: one.conf\nlevel2: gone.conf\n")
    (tmp_path / "one.conf").write_text("[svc-a]\nimage: i\ndeps: d.conf\n\n[svc-b]\nimage: i\n")
    (tmp_path / "d.conf").write_text("[deps]\nx: ${b.port}\ny: ${nobody.port}\n")
    done = cei(home, "import", str(tmp_path / "top.conf"), "--check", check=2)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 3, done.stderr
    assert any("top.conf:3:" in ln and "level file not found" in ln for ln in lines)
    assert any("d.conf:2:" in ln and "same level" in ln for ln in lines)
    assert any("d.conf:3:" in ln and "no service 'nobody'" in ln for ln in lines)
    assert "Traceback" not in done.stderr
    assert cei_json(home, "import", str(tmp_path / "top.conf"), "--check", check=2)[
        "imported"] is False
