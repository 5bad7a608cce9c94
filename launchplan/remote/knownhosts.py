"""Host keys the user already trusts, from OpenSSH known_hosts files.

Read line by line the way ssh reads them, not with paramiko's HostKeys.load, which gives up on
a whole file at the first line it cannot parse and knows no markers or patterns: hashed names
(`|1|salt|hash`), `[host]:port` for ports other than 22, comma-separated names, `*` and `?`
patterns and `!` negations, any whitespace between fields, `@revoked` keys (never returned) and
`@cert-authority` lines (skipped: cei does not use host certificates).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from launchplan.remote.sshlib import paramiko

# When a host has several keys, pin the one OpenSSH would negotiate first.
_PREFERRED = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "ssh-rsa")
DEFAULT_FILES = ("~/.ssh/known_hosts",)


def host_names(host: str, port: int) -> tuple[str, ...]:
    """How known_hosts names a host: `host` on port 22, `[host]:port` otherwise."""
    host = host.lower()
    return (host, f"[{host}]:22") if port == 22 else (f"[{host}]:{port}",)


def known_host_keys(host: str, port: int = 22,
                    files: Sequence[str] = DEFAULT_FILES) -> list[str]:
    """Every key line ("type base64") the files hold for the host, preferred type first."""
    names = host_names(host, port)
    found: list[str] = []
    revoked: set[str] = set()
    for marker, patterns, line in _entries(files):
        if marker == "@revoked":
            revoked.add(line)
        elif marker is None and _matches(patterns, names) and line not in found:
            found.append(line)
    keys = [line for line in found if line not in revoked]
    return sorted(keys, key=lambda k: _rank(k.split()[0]))


def known_host_key(host: str, port: int = 22,
                   files: Sequence[str] = DEFAULT_FILES) -> str | None:
    """The key line to pin for the host, or None when no file knows it."""
    keys = known_host_keys(host, port, files)
    return keys[0] if keys else None


def _rank(kind: str) -> int:
    return _PREFERRED.index(kind) if kind in _PREFERRED else len(_PREFERRED)


def _entries(files: Sequence[str]) -> Iterator[tuple[str | None, list[str], str]]:
    """(marker, host patterns, "type base64") of every readable, well-formed line."""
    for name in files:
        path = Path(name).expanduser()
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = fields.pop(0) if fields[0].startswith("@") else None
            if len(fields) < 3 or not _usable(fields[1], fields[2]):
                continue
            yield marker, fields[0].split(","), f"{fields[1]} {fields[2]}"


def _usable(kind: str, blob: str) -> bool:
    try:
        paramiko.PKey.from_type_string(kind, base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError, paramiko.SSHException):
        return False
    return True


def _matches(patterns: list[str], names: tuple[str, ...]) -> bool:
    """OpenSSH's rule: a negated pattern that matches rejects; else any pattern may match."""
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(_match(pattern.lstrip("!"), name) for name in names):
            if negated:
                return False
            hit = True
    return hit


def _match(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):  # |1|base64(salt)|base64(HMAC-SHA1(salt, name))
        parts = pattern.split("|")
        try:
            salt, digest = (base64.b64decode(p, validate=True) for p in parts[2:4])
        except (binascii.Error, ValueError):  # a damaged entry matches nothing
            return False
        mac = hmac.new(salt, name.encode(), "sha1").digest()
        return len(parts) == 4 and hmac.compare_digest(mac, digest)
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                    for c in pattern.lower())
    return re.fullmatch(regex, name) is not None
