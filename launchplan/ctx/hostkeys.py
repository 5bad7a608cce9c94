"""SSH keys cei makes itself: node host keys it can pin, and client keys it logs in with.

Generating a node's host key before the node exists lets cei verify the first SSH connection
without trust-on-first-use: the private half goes to the node in cloud-config `ssh_keys`, the
public half is pinned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HOST_KEY_COMMENT = "cei-host-key"
CLIENT_KEY_COMMENT = "cei-client-key"

_FP_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
_FP_END = "-----END SSH HOST KEY FINGERPRINTS-----"
_SHA256_RE = re.compile(r"\bSHA256:([A-Za-z0-9+/]+)")
_MD5_RE = re.compile(r"\b(?:MD5:)?((?:[0-9a-f]{2}:){15}[0-9a-f]{2})\b")


@dataclass(frozen=True)
class HostKey:
    """A generated host key; `private_openssh` is a secret and is never stored or logged."""

    private_openssh: str
    public: str  # OpenSSH public line: "ssh-ed25519 AAAA... cei-host-key"
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it

    def __repr__(self) -> str:
        return f"HostKey(public={self.public!r}, fingerprint={self.fingerprint!r})"


def _new_ed25519(comment: str) -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    return private, f"{public} {comment}"


def generate_host_key() -> HostKey:
    """A fresh ed25519 host key for one node."""
    private, public = _new_ed25519(HOST_KEY_COMMENT)
    return HostKey(private_openssh=private, public=public, fingerprint=fingerprint(public))


def fingerprint(public_line: str) -> str:
    """The SHA256 fingerprint of an OpenSSH public key line, exactly as `ssh-keygen -l` shows it.

    Accepts "TYPE BASE64 [COMMENT]" or the bare base64 blob; ValueError if it is not one.
    """
    fields = public_line.split()
    if not fields:
        raise ValueError("empty public key")
    blob_text = fields[1] if len(fields) > 1 else fields[0]
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not an OpenSSH public key: {public_line[:40]!r}") from exc
    if not blob:
        raise ValueError(f"not an OpenSSH public key: {public_line[:40]!r}")
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def generate_client_key(path: Path) -> str:
    """Write a new ed25519 private key to `path` (0600) and `path`.pub; return the public line.

    cei uses one such key per run to log in to nodes whose plan names no key of its own.
    """
    private, public = new_client_key()
    write_client_key(path, private, public)
    return public


def new_client_key() -> tuple[str, str]:
    """A fresh ed25519 client key pair: (private OpenSSH text, public line)."""
    return _new_ed25519(CLIENT_KEY_COMMENT)


def write_client_key(path: Path, private: str, public: str) -> None:
    """Put a key pair where SSH reads it: `path` (0600, in a 0700 directory) and `path`.pub."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private.encode("ascii"))
    finally:
        os.close(fd)
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_text(public + "\n", encoding="ascii")
    os.chmod(pub_path, 0o644)


def parse_console_fingerprints(console_text: str) -> list[str]:
    """Host key fingerprints from cloud-init's console block, for `host_key_policy: console`.

    cloud-init prints the block once per boot; the last complete block is the current one.
    Lines may carry a syslog/console prefix ("<14>... ec2: "). Returns "SHA256:..." (or
    "MD5:..." from old images) in the order printed; empty if no complete block was found.
    """
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in console_text.splitlines():
        if _FP_BEGIN in line:
            current = []
        elif _FP_END in line:
            if current is not None:
                blocks.append(current)
            current = None
        elif current is not None:
            sha = _SHA256_RE.search(line)
            if sha:
                current.append("SHA256:" + sha.group(1))
                continue
            md5 = _MD5_RE.search(line)
            if md5:
                current.append("MD5:" + md5.group(1))
    return blocks[-1] if blocks else []
