"""User-data: cloud-init's part detection, building with cei's keys, limits, checks, redaction."""

from __future__ import annotations

import base64
import email
import email.message
import gzip
import json
import random
from pathlib import Path

import pytest
import yaml

from launchplan.ctx import userdata as ud
from launchplan.ctx.hostkeys import generate_host_key
from launchplan.ctx.userdata import (
    UserDataPart,
    build_userdata,
    check_cloud_config,
    parse_userdata,
    redact_userdata,
)
from launchplan.errors import UsageError

SHELL = "#!/bin/sh\necho hello > /tmp/hello\n"
CLOUD = "#cloud-config\n# keep this comment\npackages: [nginx]\nruncmd:\n  - [touch, /tmp/x]\n"
JINJA = (
    "## template: jinja\n#cloud-config\n"
    "hostname: {{ v1.local_hostname }}  \n{%- if x %}\nfqdn: {{ x }}\n{% endif %}"
)
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUser user@laptop"
CEI_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICei cei-client-key"


def _config(part: UserDataPart) -> dict:
    assert part.content_type == "text/cloud-config"
    loaded = yaml.safe_load(part.text)
    assert isinstance(loaded, dict)
    return loaded


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,ctype",
    [
        ("#cloud-config\na: 1\n", "text/cloud-config"),
        ("#!/bin/bash\ntrue\n", "text/x-shellscript"),
        ("## template: jinja\n#!/bin/sh\n", "text/jinja2"),
        ("#cloud-boothook\n#!/bin/sh\n", "text/cloud-boothook"),
        ("#include\nhttp://127.0.0.1/x\n", "text/x-include-url"),
        ("#cloud-config-archive\n- type: x\n", "text/cloud-config-archive"),
        ("just words\n", "text/plain"),
    ],
)
def test_parse_single_part_by_first_line(text: str, ctype: str) -> None:
    assert parse_userdata(text.encode()) == [UserDataPart(ctype, text, None)]


def test_parse_empty_and_gzip() -> None:
    assert parse_userdata(b"") == []
    assert parse_userdata(b"  \n") == []
    assert parse_userdata(gzip.compress(SHELL.encode())) == [
        UserDataPart("text/x-shellscript", SHELL, None)
    ]


def test_parse_mime_detects_untyped_parts() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=XX\nMIME-Version: 1.0\n\n"
        b"--XX\nContent-Type: text/plain\n\n#!/bin/sh\necho a\n"
        b"--XX\nContent-Type: text/x-shellscript\nContent-Disposition: attachment; "
        b'filename="b.sh"\n\nno shebang\n'
        b"--XX--\n"
    )
    assert parse_userdata(data) == [
        UserDataPart("text/x-shellscript", "#!/bin/sh\necho a", None),
        UserDataPart("text/x-shellscript", "no shebang", "b.sh"),
    ]


# --- building ---------------------------------------------------------------------------------


def test_nothing_to_send() -> None:
    assert build_userdata([]) == b""
    assert build_userdata(["", "  \n"]) == b""


@pytest.mark.parametrize("text", [SHELL, CLOUD, JINJA])
def test_single_part_without_keys_is_unchanged(text: str) -> None:
    assert build_userdata([text]) == text.encode()


def test_keys_only_is_one_cloud_config() -> None:
    key = generate_host_key()
    data = build_userdata([], host_key=key, authorized_keys=[CEI_KEY, CEI_KEY])
    assert data.startswith(b"#cloud-config\n")
    [part] = parse_userdata(data)
    assert _config(part) == {
        "ssh_keys": {"ed25519_private": key.private_openssh, "ed25519_public": key.public},
        "ssh_deletekeys": True,
        "ssh_authorized_keys": [CEI_KEY],
    }


def test_one_cloud_config_is_merged_keeping_user_text() -> None:
    key = generate_host_key()
    data = build_userdata([CLOUD], host_key=key, authorized_keys=[CEI_KEY])
    text = data.decode()
    assert text.startswith(CLOUD)  # comments and layout survive
    [part] = parse_userdata(data)
    config = _config(part)
    assert config["packages"] == ["nginx"]
    assert config["ssh_keys"]["ed25519_public"] == key.public
    assert config["ssh_authorized_keys"] == [CEI_KEY]
    assert config["ssh_deletekeys"] is True


def test_merge_rules_user_wins_but_cei_owns_ssh_keys() -> None:
    key = generate_host_key()
    user = (
        "#cloud-config\nssh_deletekeys: false\n"
        f"ssh_authorized_keys: ['{USER_KEY}', '{CEI_KEY}']\n"
        "ssh_keys: {rsa_private: secret, rsa_public: ssh-rsa AAAA}\n"
    )
    [part] = parse_userdata(build_userdata([user], host_key=key, authorized_keys=[CEI_KEY]))
    config = _config(part)
    assert config["ssh_deletekeys"] is False
    assert config["ssh_authorized_keys"] == [USER_KEY, CEI_KEY]
    assert config["ssh_keys"] == {
        "ed25519_private": key.private_openssh,
        "ed25519_public": key.public,
    }


def test_user_authorized_keys_kept_without_host_key() -> None:
    user = f"#cloud-config\nssh_authorized_keys:\n  - {USER_KEY}\n"
    [part] = parse_userdata(build_userdata([user], authorized_keys=[CEI_KEY]))
    assert _config(part) == {"ssh_authorized_keys": [USER_KEY, CEI_KEY]}


def test_bad_user_cloud_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"part 1.*not valid YAML"):
        build_userdata(["#cloud-config\na: [\n"], authorized_keys=[CEI_KEY])
    with pytest.raises(UsageError, match="must be a mapping"):
        build_userdata(["#cloud-config\n- a\n"], authorized_keys=[CEI_KEY])
    with pytest.raises(UsageError, match="ssh_authorized_keys must be a list"):
        build_userdata(["#cloud-config\nssh_authorized_keys: x\n"], authorized_keys=[CEI_KEY])


def test_two_parts_script_gets_cei_part_first() -> None:
    key = generate_host_key()
    data = build_userdata([SHELL, JINJA], host_key=key)
    msg = email.message_from_bytes(data)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["MIME-Version"] == "1.0"
    subs = [s for s in msg.get_payload() if isinstance(s, email.message.Message)]
    assert [s.get_content_type() for s in subs] == [
        "text/cloud-config",
        "text/x-shellscript",
        "text/jinja2",
    ]
    names = [s.get_filename() for s in subs]
    assert names[0] == "cei.cfg" and len(set(names)) == 3 and all(names)
    parts = parse_userdata(data)
    assert _config(parts[0])["ssh_keys"]["ed25519_public"] == key.public
    assert parts[1].text == SHELL
    assert parts[2].text == JINJA  # byte for byte, trailing spaces and no final newline


def test_three_parts_with_one_cloud_config_merge_in_place() -> None:
    key = generate_host_key()
    parts = parse_userdata(build_userdata([SHELL, CLOUD, JINJA], host_key=key))
    assert [p.content_type for p in parts] == [
        "text/x-shellscript",
        "text/cloud-config",
        "text/jinja2",
    ]
    assert parts[1].text.startswith(CLOUD)
    assert _config(parts[1])["ssh_keys"]["ed25519_public"] == key.public
    assert (parts[0].text, parts[2].text) == (SHELL, JINJA)


def test_two_cloud_configs_mime_and_conflicts_merged() -> None:
    key = generate_host_key()
    second = f"#cloud-config\nssh_authorized_keys: ['{USER_KEY}']\n"
    parts = parse_userdata(build_userdata([CLOUD, second], host_key=key, authorized_keys=[CEI_KEY]))
    assert parts[0].filename == "cei.cfg"
    assert _config(parts[0])["ssh_authorized_keys"] == [CEI_KEY]
    assert parts[1].text == CLOUD  # no conflict: untouched
    assert _config(parts[2])["ssh_authorized_keys"] == [USER_KEY, CEI_KEY]
    assert _config(parts[2])["ssh_keys"]["ed25519_public"] == key.public


def test_round_trip_without_keys_for_several_parts() -> None:
    texts = [SHELL, CLOUD, JINJA]
    for count in range(4):
        data = build_userdata(texts[:count])
        parsed = parse_userdata(data)
        assert [p.text for p in parsed] == texts[:count]


def test_jinja_non_ascii_byte_for_byte() -> None:
    jinja = "## template: jinja\n#!/bin/sh\necho 'héllo → {{ v1.region }}'\r\nexit 0"
    parts = parse_userdata(build_userdata([SHELL, jinja]))
    assert parts[1].text.encode() == jinja.encode()
    assert parts[1].content_type == "text/jinja2"


def test_user_mime_part_is_flattened() -> None:
    inner = build_userdata([SHELL, JINJA]).decode()
    parts = parse_userdata(build_userdata([inner, CLOUD]))
    assert [p.text for p in parts] == [SHELL, JINJA, CLOUD]


def test_gzip_only_over_limit() -> None:
    script = "#!/bin/sh\n" + "echo 'the same line again and again'\n" * 1000
    assert build_userdata([script], limit=len(script)) == script.encode()
    data = build_userdata([script], limit=16384)
    assert data[:2] == b"\x1f\x8b" and len(data) <= 16384
    assert parse_userdata(data) == [UserDataPart("text/x-shellscript", script, None)]


def test_too_big_after_gzip_is_a_usage_error() -> None:
    noise = base64.b64encode(random.Random(7).randbytes(20000)).decode()
    with pytest.raises(UsageError, match=r"user-data is \d+ bytes after gzip; .* at most 16384"):
        build_userdata([f"#!/bin/sh\n: '{noise}'\n"], limit=16384)


# --- redaction --------------------------------------------------------------------------------


def test_redaction_hides_private_key_in_mime() -> None:
    key = generate_host_key()
    data = build_userdata([SHELL], host_key=key, authorized_keys=[CEI_KEY])
    shown = redact_userdata(data)
    body = key.private_openssh.splitlines()[1]
    assert body not in shown and "PRIVATE KEY-----" not in shown
    assert "<private host key generated by cei, not shown>" in shown
    assert key.public in shown and CEI_KEY in shown and SHELL.strip() in shown
    assert "part 1/2: text/cloud-config (cei.cfg)" in shown
    assert "part 2/2: text/x-shellscript" in shown


def test_redaction_single_part_and_gzip() -> None:
    key = generate_host_key()
    big = CLOUD + "".join(f"# padding line {i}\n" for i in range(2000))
    data = build_userdata([big], host_key=key, limit=16384)
    assert data[:2] == b"\x1f\x8b"
    shown = redact_userdata(data)
    assert shown.startswith("# gzip-compressed user-data")
    assert key.private_openssh.splitlines()[1] not in shown
    yaml.safe_load(shown)  # still valid YAML: the placeholder sits in the literal block
    assert redact_userdata(b"") == "# (empty user-data)\n"
    assert redact_userdata(SHELL.encode()) == SHELL


def test_redaction_of_unterminated_key() -> None:
    text = "#!/bin/sh\ncat <<E\n-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n"
    assert "MIIEsecret" not in redact_userdata(text.encode())


# --- cloud-config checks ----------------------------------------------------------------------


@pytest.fixture
def builtin_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the built-in structural check, whatever is installed on this machine."""
    monkeypatch.setattr(ud, "_check_with_cloudinit", lambda config: None)
    monkeypatch.setattr(ud, "SCHEMA_GLOBS", ())


GOOD = """\
#cloud-config
some_module_cei_does_not_know: {x: 1}
write_files:
  - path: /etc/app.conf
    content: "a=1\\n"
    permissions: '0644'
    encoding: text/plain
runcmd: [echo hi, [ls, -l]]
bootcmd: ["echo boot"]
ssh_authorized_keys: [ssh-ed25519 AAAA x]
packages: [nginx, [postgresql, "15"]]
users: [default, {name: app, shell: /bin/sh}]
"""


@pytest.mark.usefixtures("builtin_check")
def test_builtin_check_accepts_good_config() -> None:
    assert check_cloud_config(GOOD) == []
    assert check_cloud_config("#cloud-config\n") == []
    key = generate_host_key()
    assert (
        check_cloud_config(build_userdata([], host_key=key, authorized_keys=[CEI_KEY]).decode())
        == []
    )


@pytest.mark.usefixtures("builtin_check")
def test_builtin_check_catches_bad_write_files() -> None:
    bad = (
        "#cloud-config\nwrite_files:\n"
        "  - content: no path\n"
        "  - path: /x\n    permissions: 0644\n    encoding: rot13\n    append: yes-please\n"
        "  - just a string\n"
    )
    problems = check_cloud_config(bad)
    assert "write_files.0: 'path' is a required property" in problems
    assert any(p.startswith("write_files.1.permissions:") for p in problems)
    assert any(p.startswith("write_files.1.encoding:") for p in problems)
    assert any(p.startswith("write_files.1.append:") for p in problems)
    assert any(p.startswith("write_files.2:") for p in problems)
    assert check_cloud_config("#cloud-config\nwrite_files: {path: /x}\n") == [
        "write_files: must be a list, not dict"
    ]


@pytest.mark.usefixtures("builtin_check")
def test_builtin_check_other_modules() -> None:
    bad = (
        "#cloud-config\nruncmd: [[ls, 1]]\nbootcmd: [{a: b}]\nssh_authorized_keys: [1]\n"
        "ssh_keys: {dsa_private: x, ed25519_public: 3}\nssh_deletekeys: maybe\n"
        "packages: [{a: b}]\nusers: [{shell: /bin/sh}, 7]\n"
    )
    problems = check_cloud_config(bad)
    for where in (
        "runcmd.0:",
        "bootcmd.0:",
        "ssh_authorized_keys.0:",
        "ssh_keys.dsa_private:",
        "ssh_keys.ed25519_public:",
        "ssh_deletekeys:",
        "packages.0:",
        "users.0:",
        "users.1:",
    ):
        assert any(p.startswith(where) for p in problems), where
    assert check_cloud_config("#cloud-config\nusers: 5\n") == ["users: must be a list, not int"]


def test_check_rejects_non_mapping_and_bad_yaml() -> None:
    assert check_cloud_config("#cloud-config\n- a\n") == [
        "(top level): must be a mapping, not list"
    ]
    [problem] = check_cloud_config("#cloud-config\na: [\n")
    assert problem.startswith("(top level): not valid YAML")


def test_check_uses_installed_schema_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "write_files": {
                "type": "array",
                "items": {"type": "object", "required": ["path"]},
            }
        },
    }
    path = tmp_path / "schemas" / "schema-cloud-config-v1.json"
    path.parent.mkdir()
    path.write_text(json.dumps(schema))
    monkeypatch.setattr(ud, "_check_with_cloudinit", lambda config: None)
    monkeypatch.setattr(ud, "SCHEMA_GLOBS", (str(tmp_path / "none.json"), str(path)))
    problems = check_cloud_config("#cloud-config\nunknown_key: 1\nwrite_files: [{content: x}]\n")
    assert problems == ["write_files.0: 'path' is a required property"]


def test_check_with_whatever_this_machine_has() -> None:
    """No overrides: cloud-init, its schema file or the built-in check, all name the path."""
    assert check_cloud_config(GOOD) == []
    problems = check_cloud_config("#cloud-config\nwrite_files: [{content: x}]\n")
    assert problems and all(p.startswith("write_files.0") for p in problems)
