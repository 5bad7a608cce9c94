"""Host keys the user already trusts, from OpenSSH's known_hosts (for existing hosts)."""

from __future__ import annotations

from pathlib import Path

import paramiko

# When a host has several keys, pin the one OpenSSH would negotiate first.
_PREFERRED = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def default_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


def known_host_key(host: str, port: int = 22, path: Path | None = None) -> str | None:
    """The OpenSSH public key line known_hosts holds for `host` ("[host]:port" off port 22).

    Hashed entries match too (paramiko's lookup). None when the file or the entry is missing
    or unreadable: the caller then says how else to pin the host.
    """
    path = path or default_known_hosts()
    if not path.is_file():
        return None
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except (OSError, paramiko.SSHException, ValueError):
        return None
    entry = keys.lookup(host if port == 22 else f"[{host}]:{port}")
    if not entry:
        return None
    kinds = sorted(entry.keys(), key=lambda k: _PREFERRED.index(k) if k in _PREFERRED else 99)
    key = entry[kinds[0]]
    return f"{key.get_name()} {key.get_base64()}"
