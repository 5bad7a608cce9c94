"""The local node's cloud-init: decoding, merging, remapping and what gets reported."""

from __future__ import annotations

import asyncio
import base64
import gzip
from pathlib import Path

import pytest

from launchplan.providers.localnode.cloudinit import (
    CloudInit,
    command_argv,
    decode_content,
    merge_cloud_configs,
    parse_permissions,
    remap,
    unsupported,
)
from launchplan.providers.localnode.commands import ProcessGroups, describe_exit


@pytest.mark.parametrize(
    ("content", "encoding", "expected"),
    [
        ("plain", "", b"plain"),
        ("plain", "text/plain", b"plain"),
        (base64.b64encode(b"\x00bin").decode(), "b64", b"\x00bin"),
        (base64.b64encode(b"x").decode(), "base64", b"x"),
        (gzip.compress(b"gz", mtime=0), "gzip", b"gz"),
        (gzip.compress(b"gz", mtime=0), "gz", b"gz"),
        (base64.b64encode(gzip.compress(b"both", mtime=0)).decode(), "gz+base64", b"both"),
        (base64.b64encode(gzip.compress(b"both", mtime=0)).decode(), "gzip+b64", b"both"),
        (42, "", b"42"),
    ],
)
def test_decode_content(content: object, encoding: str, expected: bytes) -> None:
    assert decode_content(content, encoding) == expected


def test_decode_content_rejects_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        decode_content("x", "rot13")


@pytest.mark.parametrize(
    ("value", "mode"),
    [(None, 0o644), ("0600", 0o600), ("755", 0o755), ("0o700", 0o700), (0o640, 0o640)],
)
def test_parse_permissions(value: object, mode: int) -> None:
    assert parse_permissions(value) == mode


def test_parse_permissions_rejects_non_octal() -> None:
    with pytest.raises(ValueError, match="octal"):
        parse_permissions("rwxr-xr-x")


def test_remap_keeps_paths_under_the_node_root(tmp_path: Path) -> None:
    assert remap(tmp_path, "/etc/hosts") == tmp_path / "etc/hosts"
    assert remap(tmp_path, "etc/a/../b") == tmp_path / "etc/b"
    with pytest.raises(ValueError, match="escapes"):
        remap(tmp_path, "/../../etc/passwd")


def test_command_argv() -> None:
    assert command_argv("echo $HOME; ls") == ["/bin/sh", "-c", "echo $HOME; ls"]
    assert command_argv(["printf", "%s", 3]) == ["printf", "%s", "3"]


def test_merge_appends_lists_and_merges_mappings() -> None:
    merged = merge_cloud_configs(
        [
            {"runcmd": ["a"], "ssh_keys": {"rsa_private": "r"}, "hostname": "x"},
            {"runcmd": ["b"], "ssh_keys": {"ed25519_private": "e"}, "hostname": "y"},
        ]
    )
    assert merged == {
        "runcmd": ["a", "b"],
        "ssh_keys": {"rsa_private": "r", "ed25519_private": "e"},
        "hostname": "y",
    }


def test_describe_exit() -> None:
    assert describe_exit("runcmd[1]", 3, "boom\n") == "runcmd[1] exited 3: boom"
    assert describe_exit("bootcmd[0]", -9, "") == "bootcmd[0] killed by signal 9"


def _apply(tmp_path: Path, data: bytes) -> tuple[list[str], CloudInit]:
    for sub in ("home", "root"):
        (tmp_path / sub).mkdir()
    said: list[str] = []
    init = CloudInit(tmp_path, {"PATH": "/usr/bin:/bin"}, ProcessGroups(), said.append)
    asyncio.run(init.apply(data))
    return said, init


def test_apply_collects_keys_and_reports_what_it_cannot_do(tmp_path: Path) -> None:
    data = b"""#cloud-config
ssh_keys:
  ed25519_private: PRIVATE
  ed25519_public: PUBLIC
  dsa_private: OLD
ssh_deletekeys: false
ssh_genkeytypes: [ed25519]
ssh_authorized_keys: [ssh-ed25519 AAAA top]
users:
  - default
  - {name: bob, ssh_authorized_keys: [ssh-ed25519 BBBB bob], groups: [wheel]}
packages: [nginx]
write_files:
  - {path: /etc/x, content: x, owner: "bob:bob"}
  - {path: /../escape, content: x}
merge_how: dict(recurse_array)+list(append)
"""
    said, init = _apply(tmp_path, data)
    result = init.result
    assert result.host_keys == {"ed25519": "PRIVATE"}
    assert result.authorized_keys == ["ssh-ed25519 AAAA top", "ssh-ed25519 BBBB bob"]
    assert (tmp_path / "root/etc/x").read_text() == "x"
    assert result.errors == ["write_files[1] failed: path '/../escape' escapes the node's root"]
    for module in (
        "module 'packages'",
        "ssh_keys.dsa_private",
        "users[] 'default'",
        "users[].groups",
        "write_files[0].owner",
    ):
        assert unsupported(module) in said
    assert unsupported("merge_how (parts are merged with lists appended)") in said
    assert not any("ssh_deletekeys" in line or "ssh_genkeytypes" in line for line in said)


def test_apply_reports_invalid_cloud_config(tmp_path: Path) -> None:
    _, init = _apply(tmp_path, b"#cloud-config\nruncmd: [unclosed\n")
    assert len(init.result.errors) == 1
    assert init.result.errors[0].startswith("cloud-config part 0 is not valid YAML")


def test_apply_empty_userdata_does_nothing(tmp_path: Path) -> None:
    said, init = _apply(tmp_path, b"")
    assert said == []
    assert init.result.errors == []
