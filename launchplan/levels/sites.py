"""Where a local-cloud node lives: the machine (host and $CEI_HOME) whose cei made it.

A local node is a process under one machine's $CEI_HOME/runs/RUN/nodes: no other machine can
reach, stop or even see it. So its node and resource records name that machine (`site` in
their cloud profile), and a cei elsewhere, sharing the store, reports such a node as
unreachable and refuses to destroy it instead of taking its absence for its end.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launchplan.errors import CeiError
from launchplan.providers import DRIVERS, driver_capabilities

SITE_KEY = "site"


def _on_one_machine(driver: object) -> bool:
    """Whether nodes of `driver` exist on the machine that made them only."""
    return driver in DRIVERS and driver_capabilities(str(driver)).on_this_machine


class Elsewhere(CeiError):
    """The node lives on another machine; its message is what status and terminate show."""


def this_site(home: Path) -> str:
    """This machine's name for nodes it makes: host name and $CEI_HOME."""
    return f"{socket.gethostname()}:{Path(home).resolve()}"


def unreachable(driver: str, cloud: Mapping[str, Any], site: str) -> str | None:
    """Why a node of `cloud` cannot be reached from `site`, or None when it can.

    Records made before sites were kept name none: they count as this machine's.
    """
    other = cloud.get(SITE_KEY)
    if not _on_one_machine(driver) or not other or other == site:
        return None
    host, _, home = str(other).partition(":")
    where = host if host != site.partition(":")[0] else f"{host}, CEI_HOME {home}"
    return f"unreachable (local node on {where})"


def claim_local_nodes(document: dict[str, Any], home: Path) -> None:
    """Name this machine as the site of a run document's local nodes that name none (made
    before sites were kept), before the run moves to a store other machines share."""
    site = this_site(home)
    for part in ("nodes", "resources"):
        for record in document.get(part) or []:
            cloud = record.get("cloud")
            if _on_one_machine(record.get("driver")) and isinstance(cloud, dict):
                cloud.setdefault(SITE_KEY, site)
