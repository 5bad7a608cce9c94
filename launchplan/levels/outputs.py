"""A node's outputs: data from a machine cei does not control, checked before it is trusted.

The document a boot program writes to $CEI_OUTPUT becomes part of the store, of every later
node's context and of templates; so it must be one JSON object, no larger than the service's
`output_limit` (default plan.budgets.OUTPUT_BYTES), nested at most OUTPUT_DEPTH deep, and
holding only finite numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

from launchplan.errors import CeiError
from launchplan.plan.budgets import OUTPUT_BYTES, OUTPUT_DEPTH


class OutputsRefused(CeiError):
    """The boot program's outputs cannot be used."""


def parse_outputs(raw: bytes | None, limit: int = OUTPUT_BYTES) -> dict[str, Any]:
    """The outputs in `raw` (read with at most `limit` + 1 bytes), or OutputsRefused."""
    if raw is None or not raw.strip():
        return {}
    if len(raw) > limit:
        raise OutputsRefused(f"the boot program wrote more than {limit:,} bytes to $CEI_OUTPUT "
                             "(the service's output_limit)")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise OutputsRefused(
            f"the boot program wrote invalid JSON to $CEI_OUTPUT: {exc}") from None
    if not isinstance(value, dict):
        raise OutputsRefused("the boot program must write one JSON object to $CEI_OUTPUT, "
                             f"not a {type(value).__name__}")
    _check_values(value)
    return value


def _too_deep() -> OutputsRefused:
    return OutputsRefused(f"the boot program's outputs nest deeper than {OUTPUT_DEPTH} levels")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_values(value: Any, depth: int = 1) -> None:
    """Finite numbers only (JSON has no Infinity), nested at most OUTPUT_DEPTH deep."""
    if depth > OUTPUT_DEPTH:
        raise _too_deep()
    if isinstance(value, float) and not math.isfinite(value):
        raise OutputsRefused("the boot program's outputs hold a number too large for JSON")
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        _check_values(item, depth + 1)
