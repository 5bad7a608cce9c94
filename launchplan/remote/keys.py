"""The keys cei offers when it logs in: the plan's key file, the ssh config's IdentityFiles,
and the keys an ssh-agent holds.

A passphrase-protected key is used through the agent when the agent holds it (matched by its
public half, from the `.pub` beside it or the key file's own header), else decrypted with the
passphrase from the environment variable the plan names; cei never asks on a terminal and
never stores a passphrase. Without a plan key or IdentityFile, ssh's default key files are
tried. IdentitiesOnly limits the agent to the keys named in files.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launchplan.errors import RemoteError
from launchplan.remote.sshlib import paramiko

log = logging.getLogger("launchplan.remote")

DEFAULT_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\0"

_parsed_keys: dict[tuple[str, int, int, str | None], paramiko.PKey] = {}
_parsed_lock = threading.Lock()


@dataclass(frozen=True)
class LoginKey:
    """One key to offer, and how messages name it."""

    label: str
    key: paramiko.PKey


class KeyRing:
    """The keys to offer, in order, with the agent connection their agent copies sign
    through; close() it once logged in."""

    def __init__(self, key_path: str | None, identity_files: Sequence[str],
                 identities_only: bool, passphrase_env: str | None) -> None:
        self._agent = paramiko.Agent() if os.environ.get("SSH_AUTH_SOCK") else None
        agent_keys = list(self._agent.get_keys()) if self._agent is not None else []
        by_blob = {k.asbytes(): k for k in agent_keys}
        named = [p for p in (key_path, *identity_files) if p]
        files = list(dict.fromkeys(named or DEFAULT_FILES))
        self.keys: list[LoginKey] = []
        self.skipped: list[str] = []
        for path in files:
            loaded = self._load(path, path == key_path, by_blob, passphrase_env)
            if loaded is not None and all(k.key.asbytes() != loaded.asbytes() for k in self.keys):
                self.keys.append(LoginKey(path, loaded))
        if not identities_only:
            offered = {k.key.asbytes() for k in self.keys}
            self.keys.extend(LoginKey(f"ssh-agent key {_comment(k)}", k)
                             for k in agent_keys if k.asbytes() not in offered)

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def _load(self, path: str, required: bool, by_blob: dict[bytes, paramiko.AgentKey],
              passphrase_env: str | None) -> paramiko.PKey | None:
        file = Path(path).expanduser()
        if not file.is_file():
            if required:
                raise RemoteError(f"cannot use SSH key {path}: no such file")
            return None
        if not encrypted(file):
            try:
                return _parsed(file, None, None)
            except (OSError, paramiko.SSHException, ValueError, TypeError) as exc:
                self._refuse(required, f"cannot use SSH key {path}: {exc}")
                return None
        agent_copy = by_blob.get(public_blob(file) or b"")
        if agent_copy is not None:
            return agent_copy
        passphrase = os.environ.get(passphrase_env) if passphrase_env else None
        if passphrase is None:
            where = (f"set {passphrase_env}, which the plan names for its passphrase, or "
                     if passphrase_env else "")
            self._refuse(required, f"SSH key {path} is protected by a passphrase: "
                         f"{where}add it to ssh-agent (ssh-add {path})"
                         + ("" if passphrase_env else
                            ", or name a variable that holds it with ssh_key_passphrase_env"))
            return None
        try:
            return _parsed(file, passphrase_env, passphrase)
        except (paramiko.SSHException, ValueError, TypeError):
            self._refuse(required, f"cannot use SSH key {path}: the passphrase in "
                         f"{passphrase_env} does not decrypt it")
            return None

    def _refuse(self, required: bool, message: str) -> None:
        """A plan's own key must work; an IdentityFile that does not is skipped, as by ssh."""
        if required:
            raise RemoteError(message)
        log.debug("skipping: %s", message)
        self.skipped.append(message)
        return None


def _parsed(file: Path, passphrase_env: str | None, passphrase: str | None) -> paramiko.PKey:
    """The key in `file`, parsed once per process while the file stays the same: every node
    of a run logs in with it, and decrypting a passphrase-protected key takes long on purpose.

    Only what parsed is kept (in memory, as while logging in); agent keys never are, since
    they sign through their own KeyRing's agent connection."""
    info = file.stat()
    key = (str(file), info.st_mtime_ns, info.st_size, passphrase_env)
    with _parsed_lock:
        cached = _parsed_keys.get(key)
    if cached is not None:
        return cached
    # paramiko wants the passphrase as bytes, whatever its stubs say
    secret = passphrase.encode() if passphrase is not None else None
    loaded = paramiko.PKey.from_path(file, password=secret)  # type: ignore[arg-type]
    with _parsed_lock:
        _parsed_keys[key] = loaded
    return loaded


def encrypted(file: Path) -> bool:
    """Whether a private key file needs a passphrase (OpenSSH format or legacy PEM)."""
    header = _openssh_header(file)
    if header is not None:
        return header[0] != "none"
    try:
        return "ENCRYPTED" in file.read_text(encoding="ascii", errors="replace")[:200]
    except OSError:
        return False


def public_blob(file: Path) -> bytes | None:
    """A private key's public half, from the `.pub` beside it or an OpenSSH-format key's
    unencrypted header; None when neither has it."""
    try:
        fields = Path(f"{file}.pub").read_text(encoding="ascii").split()
        return base64.b64decode(fields[1], validate=True)
    except (OSError, IndexError, UnicodeDecodeError, binascii.Error):
        pass
    header = _openssh_header(file)
    return header[1] if header is not None else None


def _openssh_header(file: Path) -> tuple[str, bytes] | None:
    """(cipher name, public key blob) from an OpenSSH-format private key, whose header is
    never encrypted; None for other formats and unreadable files."""
    try:
        text = file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    if _OPENSSH_BEGIN not in text:
        return None
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    try:
        data = base64.b64decode(body)
    except binascii.Error:
        return None
    if not data.startswith(_OPENSSH_MAGIC):
        return None
    message = paramiko.Message(data[len(_OPENSSH_MAGIC):])
    cipher = message.get_text()
    message.get_string()  # kdf name
    message.get_string()  # kdf options
    if message.get_int() < 1:
        return None
    return cipher, bytes(message.get_binary())


def _comment(key: paramiko.AgentKey) -> str:
    comment = getattr(key, "comment", "")
    if isinstance(comment, bytes):
        comment = comment.decode("utf-8", "replace")
    return comment or key.fingerprint
