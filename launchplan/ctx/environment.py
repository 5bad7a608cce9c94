"""The node environment contract: where a node's programs run and what CEI_* variables they see.

See ARCHITECTURE.md "The node environment": programs run in the node's own stage directory
`~/.cei/RUN/SERVICE/INDEX/` (two nodes on one existing host never share one) with the paths
of the config, context and output documents in the environment.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchplan.errors import UsageError
from launchplan.plan.compat import BOOTOUT, CLOUDINITD
from launchplan.plan.model import NodeSpec

CONFIG_FILE = "config.json"
CONTEXT_FILE = "context.json"
OUTPUT_FILE = "output.json"


def _component(kind: str, name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UsageError(f"{kind} name {name!r} cannot be used as a directory name")
    return name


def stage_dir(run: str, service: str, index: int) -> str:
    """A node's stage directory, relative to the login home: ".cei/RUN/SERVICE/INDEX"."""
    return posixpath.join(".cei", _component("run", run), _component("service", service),
                          str(int(index)))


def local_stage_dir(run_dir: Path, node: str) -> Path:
    """Where a `local_exe` node's programs run on this machine: runs/RUN/stage/SERVICE-INDEX."""
    return run_dir / "stage" / _component("node", node.replace("/", "-"))


def node_environment(spec: NodeSpec, stage: str) -> dict[str, str]:
    """The CEI_* variables for a node's programs; `stage` is the absolute stage directory.

    Under compat: cloudinitd the outputs file is bootout.json, where cloudinit.d read them.
    """
    output = BOOTOUT if spec.compat == CLOUDINITD else OUTPUT_FILE
    return {
        "CEI_RUN": spec.run,
        "CEI_SERVICE": spec.service,
        "CEI_NODE": spec.node,
        "CEI_NODE_INDEX": str(spec.index),
        "CEI_LEVEL": spec.level_name,
        "CEI_CONFIG": posixpath.join(stage, CONFIG_FILE),
        "CEI_CONTEXT": posixpath.join(stage, CONTEXT_FILE),
        "CEI_OUTPUT": posixpath.join(stage, output),
        "CEI_STAGE": stage,
    }


def context_document(run: str, nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The context document: every node known so far, and only what programs may see.

    Each mapping needs `service` and `index`; `node`, `address`, `hostname`,
    `host_key_fingerprint` and `outputs` are taken when present. Other keys (keys, tokens,
    cloud options) are left out on purpose.
    """
    return {"run": run, "nodes": [context_entry(node) for node in nodes]}


def context_entry(node: Mapping[str, Any]) -> dict[str, Any]:
    """One node's entry in the context document (see context_document)."""
    service = str(node["service"])
    index = int(node["index"])
    return {
        "service": service,
        "index": index,
        "node": node.get("node") or f"{service}/{index}",
        "address": node.get("address"),
        "hostname": node.get("hostname"),
        "host_key_fingerprint": node.get("host_key_fingerprint"),
        "outputs": dict(node.get("outputs") or {}),
    }


def encode_document(value: Mapping[str, Any]) -> bytes:
    """A config or context document as its file holds it: compact JSON, keys sorted."""
    return _encode(value) + b"\n"


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


class LevelContext:
    """The context documents of a level's nodes, encoded once for the whole level (a
    document per node would make a level of N nodes cost N^2): the nodes known when the
    level starts, then the node itself."""

    def __init__(self, run: str, nodes: Sequence[Mapping[str, Any]]) -> None:
        self._head = b'{"nodes":[' + b"".join(_encode(context_entry(n)) + b"," for n in nodes)
        self._tail = b'],"run":' + _encode(run) + b"}\n"

    def document(self, node: Mapping[str, Any] | None = None) -> bytes:
        """The encoded document, with `node`'s own entry last when given."""
        own = _encode(context_entry(node)) if node is not None else b""
        head = self._head if own else self._head.removesuffix(b",")
        return head + own + self._tail
