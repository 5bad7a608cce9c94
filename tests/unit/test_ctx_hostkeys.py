"""Host and client keys: OpenSSH formats, fingerprints equal to ssh-keygen's, console parsing."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
from pathlib import Path

import asyncssh
import paramiko
import pytest

from launchplan.ctx.hostkeys import (
    HostKey,
    fingerprint,
    generate_client_key,
    generate_host_key,
    parse_console_fingerprints,
)
from tests.conftest import require

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def _keygen_fingerprint(path: Path) -> str:
    require(Path(SSH_KEYGEN).exists(), "ssh-keygen (openssh-client) is not installed")
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.split()[1]


def test_host_key_formats() -> None:
    key = generate_host_key()
    assert key.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert key.private_openssh.rstrip().endswith("-----END OPENSSH PRIVATE KEY-----")
    kind, blob, comment = key.public.split()
    assert (kind, comment) == ("ssh-ed25519", "cei-host-key")
    assert blob.startswith("AAAA")
    assert key.fingerprint == fingerprint(key.public)
    assert key.fingerprint.startswith("SHA256:") and not key.fingerprint.endswith("=")


def test_host_keys_are_unique() -> None:
    assert generate_host_key().public != generate_host_key().public


def test_repr_hides_private_key() -> None:
    key = generate_host_key()
    assert "PRIVATE" not in repr(key)
    assert key.public in repr(key)


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = generate_host_key()
    pub = tmp_path / "host.pub"
    pub.write_text(key.public + "\n")
    assert _keygen_fingerprint(pub) == key.fingerprint
    private = tmp_path / "host"
    private.write_text(key.private_openssh)
    private.chmod(0o600)
    assert _keygen_fingerprint(private) == key.fingerprint


def test_fingerprint_of_ssh_keygen_rsa_key(tmp_path: Path) -> None:
    require(Path(SSH_KEYGEN).exists(), "ssh-keygen (openssh-client) is not installed")
    path = tmp_path / "rsa"
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "x y", "-f", str(path)],
        check=True,
        timeout=60,
    )
    line = (tmp_path / "rsa.pub").read_text()
    assert fingerprint(line) == _keygen_fingerprint(path)
    assert fingerprint(line.split()[1]) == fingerprint(line)


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-ed25519 not*base64", "ssh-rsa ===="])
def test_fingerprint_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        fingerprint(bad)


def test_host_key_loads_in_paramiko_and_asyncssh() -> None:
    key = generate_host_key()
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(key.private_openssh))
    assert f"{pkey.get_name()} {pkey.get_base64()}" == " ".join(key.public.split()[:2])
    imported = asyncssh.import_private_key(key.private_openssh)
    exported = imported.export_public_key("openssh").decode().split()
    assert exported[:2] == key.public.split()[:2]


def test_client_key_written_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "id_ed25519"
    public = generate_client_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "run" / "id_ed25519.pub").read_text().strip() == public
    assert public.startswith("ssh-ed25519 AAAA")
    pkey = paramiko.Ed25519Key.from_private_key_file(str(path))
    assert public.split()[1] == pkey.get_base64()
    assert _keygen_fingerprint(path) == fingerprint(public)
    asyncssh.read_private_key(str(path))


def test_client_key_overwrite_tightens_mode(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old")
    path.chmod(0o644)
    first = generate_client_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert generate_client_key(path) != first


CONSOLE = """\
[   12.1] cloud-init[800]: Cloud-init v. 23.1 running 'modules:config'
<14>Mar  1 10:00:00 ec2: #############################################################
<14>Mar  1 10:00:00 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Mar  1 10:00:00 ec2: 256 SHA256:oldoldoldoldoldoldoldoldoldoldoldoldoldold root@ip (ED25519)
<14>Mar  1 10:00:00 ec2: -----END SSH HOST KEY FINGERPRINTS-----
reboot
<14>Mar  1 11:00:00 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r
<14>Mar  1 11:00:00 ec2: 256 SHA256:AbC+/123xyzAbC+/123xyzAbC+/123xyzAbC+/123xyz root@ip (ECDSA)\r
<14>Mar  1 11:00:00 ec2: 256 SHA256:Zz9/Zz9+Zz9/Zz9+Zz9/Zz9+Zz9/Zz9+Zz9/Zz9+Zz9 root@ip (ED25519)\r
<14>Mar  1 11:00:00 ec2: -----END SSH HOST KEY FINGERPRINTS-----\r
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNh root@ip
-----END SSH HOST KEY KEYS-----
<14>Mar  1 11:00:01 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Mar  1 11:00:01 ec2: 256 SHA256:truncated
"""


def test_console_fingerprints_last_complete_block() -> None:
    assert parse_console_fingerprints(CONSOLE) == [
        "SHA256:AbC+/123xyzAbC+/123xyzAbC+/123xyzAbC+/123xyz",
        "SHA256:Zz9/Zz9+Zz9/Zz9+Zz9/Zz9+Zz9/Zz9+Zz9/Zz9+Zz9",
    ]


def test_console_fingerprints_md5_and_none() -> None:
    old = (
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        "2048 3f:9a:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd /etc/ssh/ssh_host_rsa_key.pub (RSA)\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\n"
    )
    assert parse_console_fingerprints(old) == [
        "MD5:3f:9a:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"
    ]
    assert parse_console_fingerprints("no cloud-init here\n") == []


def test_console_fingerprint_matches_generated_key() -> None:
    key = generate_host_key()
    console = (
        "ci-info: ++++\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        f"256 {key.fingerprint} root@node (ED25519)\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\n"
    )
    assert parse_console_fingerprints(console) == [key.fingerprint]
    assert isinstance(key, HostKey)
