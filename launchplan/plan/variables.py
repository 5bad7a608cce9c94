"""Plan variables: plan defaults < each --vars-file (in order) < each --var KEY=VALUE."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchplan.errors import PlanError, UsageError

from .yamlsrc import load_yaml_file

VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME_RULE = "letters, digits and '_', not starting with a digit"


def parse_var(text: str) -> tuple[str, str]:
    """Split a `--var KEY=VALUE` argument; the value stays a string (templates type it)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"--var {text!r}: expected KEY=VALUE (for example --var nodes=3)")
    if not key:
        raise UsageError(f"--var {text!r}: the name before '=' is missing")
    if not VAR_NAME.match(key):
        raise UsageError(f"--var {text!r}: the name {key!r} must be {_NAME_RULE}")
    return key, value


def load_vars_file(path: str | Path) -> dict[str, Any]:
    """Read one --vars-file: a YAML mapping of variable names to values."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "not found"
        raise UsageError(f"vars file {what}: {path}")
    data, smap = load_yaml_file(file, "vars file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise smap.error("a vars file must be a mapping of NAME: value", ())
    for key in data:
        if not VAR_NAME.match(key):
            raise smap.error(f"variable name '{key}' must be {_NAME_RULE}", (key,), at_key=True)
    return data


def secret_declarations(defaults: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The plan's variables with `NAME: {secret: true[, value: V]}` declarations read: their
    values (V, or none until --var/--secret-var/--vars-file gives one) and their names."""
    values: dict[str, Any] = {}
    secrets: set[str] = set()
    for name, value in defaults.items():
        if isinstance(value, Mapping) and value.get("secret") is True \
                and set(value) <= {"secret", "value"}:
            secrets.add(name)
            if "value" in value:
                values[name] = value["value"]
        else:
            values[name] = value
    return values, secrets


def merge_variables(
    defaults: Mapping[str, Any],
    vars_files: Sequence[str | Path] = (),
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The variables templates see, later sources winning (`defaults` with declarations read,
    see secret_declarations)."""
    merged = dict(defaults)
    for vars_file in vars_files:
        merged.update(load_vars_file(vars_file))
    for key, value in (overrides or {}).items():
        if not VAR_NAME.match(key):
            raise UsageError(f"--var {key}={value}: the name must be {_NAME_RULE}")
        if not isinstance(value, str):
            raise PlanError(f"--var {key}: the value must be a string, got {type(value).__name__}")
        merged[key] = value
    return merged
