"""The tags cei puts on every node it creates, and the idempotency token a cloud sees.

One vocabulary for every provider: `cei terminate` sweeps a cloud by TAG_RUN, and a create that
is retried with the same token finds the node the first attempt made by TAG_TOKEN (or the
cloud's own client-token check). cei's own tags are applied last, so a plan's never replace them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

PREFIX = "cei:"
RUN = "cei:run"
SERVICE = "cei:service"
NODE = "cei:node"
TOKEN = "cei:token"
# On nodes one cloud call made together (EC2's MinCount/MaxCount): that call's client token.
# Such nodes get their own NODE and TOKEN tags just after the call.
BATCH = "cei:batch"

TOKEN_LIMIT = 64  # EC2's ClientToken limit, and short enough for every cloud's tag values


def node_tags(run: str, service: str, node: str) -> dict[str, str]:
    """The tags that say which run, service and node a cloud resource belongs to."""
    return {RUN: run, SERVICE: service, NODE: node}


def client_token(token: str) -> str:
    """The token as clouds take it: at most 64 printable ASCII characters, else its SHA-256."""
    if 0 < len(token) <= TOKEN_LIMIT and token.isascii() and token.isprintable():
        return token
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def merged_tags(
    user: Mapping[str, Any] | None,
    given: Mapping[str, str],
    run: str,
    service: str,
    node: str,
    token: str,
) -> dict[str, str]:
    """The plan's tags, then the engine's, then cei's own (which always win), and the token."""
    tags = {str(k): str(v) for k, v in (user or {}).items()}
    tags.update({str(k): str(v) for k, v in given.items()})
    tags.update(node_tags(run, service, node))
    tags[TOKEN] = client_token(token)
    return tags
