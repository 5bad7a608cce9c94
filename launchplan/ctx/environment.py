"""The node environment contract: where a node's programs run and what CEI_* variables they see.

See ARCHITECTURE.md "The node environment": programs run in the node's own stage directory
`~/.cei/RUN/SERVICE/INDEX/` (two nodes on one existing host never share one) with the paths
of the config, context and output documents in the environment.
"""

from __future__ import annotations

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
    entries = []
    for node in nodes:
        service = str(node["service"])
        index = int(node["index"])
        entries.append(
            {
                "service": service,
                "index": index,
                "node": node.get("node") or f"{service}/{index}",
                "address": node.get("address"),
                "hostname": node.get("hostname"),
                "host_key_fingerprint": node.get("host_key_fingerprint"),
                "outputs": dict(node.get("outputs") or {}),
            }
        )
    return {"run": run, "nodes": entries}
