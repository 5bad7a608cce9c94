"""`cei clouds check PLAN` through the real command: ec2 and libcloud's EC2 driver on the
emulator, libcloud's Dummy driver, and an existing host behind a bastion; every problem is
reported at once at its plan line, and nothing is created."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.integration.cli_helpers import cei
from tests.integration.cloud_emulator import ACCESS_KEY, SECRET_KEY, EC2Emulator
from tests.integration.conftest import keygen

pytestmark = pytest.mark.integration

MARK = "#<"


def write_plan(tmp_path: Path, emulator: EC2Emulator, image: str, body: str) -> Path:
    head = f"""\
        plan: check
        clouds:
          aws:
            driver: ec2
            region: {emulator.region}
            endpoint_url: {emulator.endpoint}
            image: {image}
            size: t3.micro
          lc:
            driver: libcloud
            provider: ec2
            options: {{host: {emulator.host}, port: {emulator.port}, secure: false,
                      signature_version: "4", region: {emulator.region}}}
            credentials:
              key: "{{{{ env('CEI_T_KEY') }}}}"
              secret: "{{{{ env('CEI_T_SECRET') }}}}"
            image: {image}
            size: t2.micro
          dummy:
            driver: libcloud
            provider: dummy
            credentials: {{key: "{{{{ env('CEI_T_KEY') }}}}"}}
            image: "1"
            size: Small
          hosts: {{driver: static}}
        """
    path = tmp_path / "check.yml"
    path.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    return path


def marked_lines(path: Path) -> list[int]:
    return [i for i, line in enumerate(path.read_text().splitlines(), 1) if MARK in line]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "user"
    (empty / ".ssh").mkdir(parents=True)
    return {"CEI_T_KEY": ACCESS_KEY, "CEI_T_SECRET": SECRET_KEY, "HOME": str(empty),
            "SSH_AUTH_SOCK": ""}


def test_every_problem_at_once_at_its_line(
    home: Path, tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str, env: dict[str, str]
) -> None:
    keygen(tmp_path / "locked", passphrase="secret words")
    plan = write_plan(tmp_path, ec2_emulator, ec2_image, """\
        levels:
          - services:
              web: {cloud: aws, key_name: nokey}  #<
              api: {cloud: aws, size: t3.mikro}  #<
              batch:
                cloud: lc
                create_args: {ex_subnet: nosuchnet}  #<
              bare: {cloud: dummy, boot: {command: "true"}, host_key_policy: pinned}  #<
              old:
                cloud: hosts
                host: 192.0.2.50  #<
                ssh_key: locked  #<
                ssh_key_passphrase_env: CEI_T_UNSET
                ssh_jump: [ops@bastion.invalid]  #<
                boot: {command: "true"}
              ghost: {cloud: aws, region: "{{ env('CEI_T_MISSING') }}"}  #<
          - services:
              later: {cloud: aws, image: "{{ services.web.outputs.ami }}"}
        """)
    proc = cei(home, "clouds", "check", str(plan), check=2, env=env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    found = sorted(int(line.split(":")[2]) for line in errors)
    assert found == marked_lines(plan), proc.stderr
    text = proc.stderr
    assert "InvalidKeyPair.NotFound" in text and "InvalidInstanceType" in text
    assert "create_args.ex_subnet: no subnet 'nosuchnet'" in text
    assert "cannot pass user-data, which carries the host key" in text
    assert "set CEI_T_UNSET" in text and "secret words" not in text
    assert "jump host ops@bastion.invalid (bastion.invalid:22): no host key is known" in text
    assert "environment variable CEI_T_MISSING is not set" in text
    assert "not checked: service 'later': image comes from an earlier level's outputs" \
        in proc.stdout
    assert ec2_emulator.instances() == []
    assert not (home / "cei.db").exists()  # nothing stored either


def test_a_plan_whose_clouds_have_everything_passes(
    home: Path, tmp_path: Path, ec2_emulator: EC2Emulator, ec2_image: str, ec2_key_pair: str,
    env: dict[str, str]
) -> None:
    plan = write_plan(tmp_path, ec2_emulator, ec2_image, f"""\
        levels:
          - services:
              web: {{cloud: aws, key_name: {ec2_key_pair}}}
              batch: {{cloud: lc, create_args: {{ex_keyname: {ec2_key_pair}}}}}
              bare: {{cloud: dummy, host_key_policy: accept-new, boot: {{command: "true"}}}}
        """)
    report = json.loads(cei(home, "clouds", "check", str(plan), "--json", check=0,
                            env=env).stdout)
    assert report["ok"] and report["problems"] == []
    assert report["clouds"]["dummy"]["capabilities"]["tags"] is False
    assert report["clouds"]["aws"]["capabilities"]["userdata_limit"] == 16384
    assert sorted(report["clouds"]) == ["aws", "dummy", "lc"]
