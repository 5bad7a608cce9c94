"""Sealing the one secret the store keeps: a run's own SSH private key, for a second machine.

It is stored only encrypted, with Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`)
under the key in CEI_STATE_KEY: the key itself (44 characters of URL-safe base64, as
`cei state keygen` prints it) or the path of a file that holds it (readable by its owner only).
Without CEI_STATE_KEY nothing secret is stored; the database never holds the key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from launchplan.errors import StateKeyError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_ENV = "CEI_STATE_KEY"


def new_key() -> str:
    """A fresh random key for CEI_STATE_KEY."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def _key_text(value: str) -> str:
    """The key CEI_STATE_KEY holds, or reads from the file it names."""
    if not value.startswith(("/", "~", ".")):
        return value
    path = Path(value).expanduser()
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateKeyError(f"{KEY_ENV} names the file {path}, which cannot be read: "
                            f"{exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StateKeyError(f"{KEY_ENV} file {path} is readable by others (mode "
                            f"{info.st_mode & 0o777:04o}); chmod 600 it")
    return text


def state_key() -> Fernet | None:
    """The sealing key from CEI_STATE_KEY, None when it is not set."""
    value = os.environ.get(KEY_ENV)
    if not value:
        return None
    from cryptography.fernet import Fernet  # only where a key is set

    try:
        return Fernet(_key_text(value).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise StateKeyError(
            f"{KEY_ENV} is not a key (44 characters of URL-safe base64; `cei state keygen` "
            "makes one) nor the path of a file holding one") from None


def seal(secret: str) -> str | None:
    """`secret` encrypted under CEI_STATE_KEY; None (store nothing) when it is not set."""
    key = state_key()
    return None if key is None else key.encrypt(secret.encode()).decode("ascii")


def unseal(token: str, what: str) -> str:
    """The secret `token` seals; StateKeyError says why it cannot be had (`what` names it)."""
    key = state_key()
    if key is None:
        raise StateKeyError(f"{what} is stored encrypted: set {KEY_ENV} to the key it was "
                            "stored with")
    from cryptography.fernet import InvalidToken

    try:
        return key.decrypt(token.encode("ascii")).decode()
    except InvalidToken:
        raise StateKeyError(f"{what} was stored with another key than {KEY_ENV} "
                            "holds") from None
