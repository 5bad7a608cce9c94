"""Cloud providers, one module per driver, imported only when a plan uses them.

This registry is the one place that maps a driver's name to its module: everything else asks
a provider (or `driver_capabilities`) what it can do.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launchplan.errors import UsageError
from launchplan.providers.base import Capabilities, NodeInfo, NodeRequest, Problem, Provider

_DRIVERS = {
    "local": "launchplan.providers.local:LocalProvider",
    "ec2": "launchplan.providers.ec2:EC2Provider",
    "libcloud": "launchplan.providers.libcloud:LibcloudProvider",
    "static": "launchplan.providers.static:StaticProvider",
}

DRIVERS = tuple(_DRIVERS)


def provider_class(driver: str) -> type[Provider]:
    """The provider class of `driver`, importing its module only now (fast start-up)."""
    try:
        target = _DRIVERS[driver]
    except KeyError:
        known = ", ".join(DRIVERS)
        raise UsageError(f"unknown cloud driver {driver!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls


def driver_capabilities(driver: str) -> Capabilities:
    """What every provider of `driver` can do, for callers that hold only a stored node."""
    return provider_class(driver).CAPABILITIES


def get_provider(driver: str, options: Mapping[str, Any], run_dir: Path) -> Provider:
    """Instantiate the provider for `driver` with a cloud profile's options."""
    return provider_class(driver)(options, run_dir)


__all__ = [
    "DRIVERS",
    "Capabilities",
    "NodeInfo",
    "NodeRequest",
    "Problem",
    "Provider",
    "driver_capabilities",
    "get_provider",
    "provider_class",
]
