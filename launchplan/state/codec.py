"""How the store encodes values: JSON with every secret scrubbed, and UTC time stamps."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

# Key fragments that mark a secret in any dict cei stores (matched on the lower-cased key).
_SECRET_FRAGMENTS = ("credential", "secret", "password", "passwd", "private_key", "session_token")
# In a cloud profile, tokens are credentials too (session tokens, API tokens).
_CLOUD_SECRET_FRAGMENTS = (*_SECRET_FRAGMENTS, "token")
_PRIVATE_KEY_MARK = "PRIVATE KEY-----"
_REDACTED_KEY = "<private key redacted>"


_SECRET = re.compile("|".join(map(re.escape, _SECRET_FRAGMENTS)))
_CLOUD_SECRET = re.compile("|".join(map(re.escape, _CLOUD_SECRET_FRAGMENTS)))


@lru_cache(maxsize=4096)
def secret_name(key: str, *, cloud: bool = False) -> bool:
    """Whether a key (or an environment variable's name) marks its value as a secret.

    Asked for every key of every dict the store writes, which are mostly the same few names:
    the answers are kept."""
    return (_CLOUD_SECRET if cloud else _SECRET).search(key.lower()) is not None


def scrub_secrets(value: Any, *, cloud: bool = False) -> Any:
    """Return `value` with every secret-named key dropped and private keys' text redacted.

    `cloud=True` also drops token-like keys, which in a cloud profile are credentials; other
    dicts keep theirs (a resource's idempotency token is not a secret). A dict under a key
    named "cloud" (say, in an event's data) is scrubbed as a cloud profile.
    """
    if isinstance(value, dict):
        return {
            key: scrub_secrets(item, cloud=cloud or str(key).lower() == "cloud")
            for key, item in value.items()
            if not secret_name(str(key), cloud=cloud)
        }
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(item, cloud=cloud) for item in value]
    if isinstance(value, str) and _PRIVATE_KEY_MARK in value:
        return _REDACTED_KEY
    return value


def encode(value: dict[str, Any] | None, *, cloud: bool = False) -> str:
    """A dict as stored: secrets scrubbed, keys sorted."""
    return json.dumps(scrub_secrets(dict(value or {}), cloud=cloud), sort_keys=True, default=str)


def decode(text: str | None) -> dict[str, Any]:
    """A stored JSON column back as a dict ({} for empty or non-object values)."""
    if not text:
        return {}
    decoded = json.loads(text)
    return decoded if isinstance(decoded, dict) else {}


def now() -> str:
    """The time stamp every row carries: UTC, ISO 8601, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
