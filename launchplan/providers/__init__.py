"""Cloud providers, one module per driver, imported only when a plan uses them."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launchplan.errors import UsageError
from launchplan.providers.base import NodeInfo, NodeRequest, Provider

_DRIVERS = {
    "local": "launchplan.providers.local:LocalProvider",
    "ec2": "launchplan.providers.ec2:EC2Provider",
    "libcloud": "launchplan.providers.libcloud:LibcloudProvider",
    "static": "launchplan.providers.static:StaticProvider",
}

DRIVERS = tuple(_DRIVERS)


def get_provider(driver: str, options: Mapping[str, Any], run_dir: Path) -> Provider:
    """Instantiate the provider for `driver`, importing its module only now (fast start-up)."""
    try:
        target = _DRIVERS[driver]
    except KeyError:
        known = ", ".join(DRIVERS)
        raise UsageError(f"unknown cloud driver {driver!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    provider: Provider = cls(options, run_dir)
    return provider


__all__ = ["DRIVERS", "NodeInfo", "NodeRequest", "Provider", "get_provider"]
