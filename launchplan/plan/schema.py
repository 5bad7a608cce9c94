"""The plan's JSON Schema (schema.json) and the human messages for its errors.

One schema checks both the raw plan and each rendered node. In raw mode a string holding a
template ("{{" or "{%") is accepted wherever a number, boolean or null is expected, because only
its rendered value can be judged; render_service checks that value again in strict mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from launchplan.errors import PlanError
from launchplan.suggest import did_you_mean

from .model import SourceLocation
from .problems import Problems
from .templates import is_template

SCHEMA_PATH = Path(__file__).with_name("schema.json")

# Service keys that override the chosen cloud profile's keys of the same name.
OVERRIDE_KEYS = (
    "image", "size", "key_name", "security_groups", "subnet", "region", "location", "tags",
    "run_instances", "address", "zone", "create_args",
)  # fmt: skip
SSH_KEYS = frozenset({
    "ssh_user", "ssh_key", "ssh_port", "host_key", "ssh_config", "ssh_jump",
    "ssh_key_passphrase_env",
})  # fmt: skip

Locate = Callable[[tuple[Any, ...], bool], SourceLocation]


@cache
def load_schema() -> dict[str, Any]:
    """The shipped schema document."""
    with SCHEMA_PATH.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def driver_keys(driver: str) -> frozenset[str]:
    """Every key a cloud profile of `driver` may hold (empty for an unknown driver)."""
    defn = load_schema()["$defs"].get(f"cloud_{driver}")
    return frozenset(defn["properties"]) if defn else frozenset()


def drivers() -> tuple[str, ...]:
    return tuple(load_schema()["$defs"]["cloud"]["properties"]["driver"]["enum"])


def _skip_templates(check: Callable[..., Iterator[ValidationError]]) -> Callable[..., Any]:
    def wrapped(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if is_template(instance):
            return
        yield from check(validator, value, instance, schema)

    return wrapped


def _raw_type(name: str) -> Callable[[Any, Any], bool]:
    base = Draft202012Validator.TYPE_CHECKER

    def check(_checker: Any, instance: Any) -> bool:
        return base.is_type(instance, name) or is_template(instance)

    return check


@cache
def _validator_class(raw: bool) -> Any:
    if not raw:
        return Draft202012Validator
    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {t: _raw_type(t) for t in ("integer", "number", "boolean", "null")}
    )
    keywords = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "enum",
                "pattern")
    return jsonschema.validators.extend(
        Draft202012Validator,
        validators={k: _skip_templates(Draft202012Validator.VALIDATORS[k]) for k in keywords},
        type_checker=checker,
    )


@cache
def _validator(definition: str | None, raw: bool) -> Any:
    root = load_schema()
    schema = root if definition is None else {
        "$schema": root["$schema"],
        "$defs": root["$defs"],
        "$ref": f"#/$defs/{definition}",
    }
    return _validator_class(raw)(schema)


def validate(
    instance: Any,
    *,
    definition: str | None,
    raw: bool,
    prefix: tuple[Any, ...],
    locate: Locate,
) -> None:
    """Raise PlanErrors for every schema problem of `instance`, in file order.

    `prefix` is the document path of `instance` (for naming where the problem is) and
    `locate(path, at_key)` maps a document path to its source location.
    """
    problems = []
    for err in _validator(definition, raw).iter_errors(instance):
        path, message, at_key = _explain(err, prefix)
        loc = locate(path, at_key)
        problems.append(((loc.line or 0, loc.column or 0), message, loc))
    collected = Problems()
    for _, message, loc in sorted(problems, key=lambda p: p[0]):
        collected.add(PlanError(message, loc.file, loc.line, loc.column))
    collected.raise_any()


def where(path: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """Split a document path into a label ("service 'db'") and the path within it."""
    if len(path) >= 4 and path[0] == "levels" and path[2] == "services":
        return f"service '{path[3]}'", path[4:]
    if len(path) >= 2 and path[0] == "levels":
        return f"level {path[1] + 1}", path[2:]
    if len(path) >= 2 and path[0] == "clouds":
        return f"cloud '{path[1]}'", path[2:]
    if path and path[0] in ("defaults", "variables"):
        return str(path[0]), path[1:]
    return "plan", path


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def subject(path: tuple[Any, ...]) -> str:
    """How a message names the value at `path`: "service 'db': boot.timeout"."""
    label, rest = where(path)
    return f"{label}: {dotted(rest)}" if rest else label


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {len(str(value)) if value.bit_length() < 10_000 else 'many'} digits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text):,} characters)"


def describe(schema: Mapping[str, Any]) -> str:
    """Say in words what `schema` accepts: "an integer >= 1", "a string or a list of strings"."""
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    words = []
    for t in types:
        if t in ("integer", "number"):
            words.append(("an integer" if t == "integer" else "a number") + _bounds(schema))
        elif t == "string":
            words.append(_string_word(schema))
        elif t == "array":
            words.append("a list" + _items_word(schema.get("items", {})))
        elif t == "object":
            words.append("a mapping")
        elif t == "boolean":
            words.append("true or false")
    if "null" in types and words:
        words.append("null")
    return " or ".join(words) or "valid"


def _bounds(schema: Mapping[str, Any]) -> str:
    if "minimum" in schema and "maximum" in schema:
        return f" from {schema['minimum']} to {schema['maximum']}"
    if "minimum" in schema:
        return f" >= {schema['minimum']}"
    if "maximum" in schema:
        return f" <= {schema['maximum']}"
    if "exclusiveMinimum" in schema:
        return f" > {schema['exclusiveMinimum']}"
    return ""


def _string_word(schema: Mapping[str, Any]) -> str:
    pattern = schema.get("pattern")
    if pattern is None:
        return "a non-empty string" if schema.get("minLength") else "a string"
    return "a name " + _pattern_rule(pattern)


def _pattern_rule(pattern: str) -> str:
    if pattern.startswith("^[A-Za-z_]"):
        return "(letters, digits and '_', not starting with a digit)"
    return "(letters, digits, '_', '.' and '-', not starting with '.' or '-')"


def _items_word(items: Mapping[str, Any]) -> str:
    types = items.get("type")
    if types == "string":
        return " of strings"
    if isinstance(types, list):
        return " of scalars (strings, numbers, true/false)"
    return ""


def _explain(err: ValidationError, prefix: tuple[Any, ...]) -> tuple[tuple[Any, ...], str, bool]:
    """(document path, message, located at the key?) for one schema error."""
    path = (*prefix, *err.absolute_path)
    kind = err.validator
    schema = err.schema if isinstance(err.schema, Mapping) else {}
    instance = err.instance
    if "propertyNames" in err.absolute_schema_path:
        key_path = (*path, instance)
        rule = _pattern_rule(str(err.validator_value))
        return key_path, f"{subject(path)}: '{instance}' is not a valid name {rule}", True
    if kind == "additionalProperties" and isinstance(instance, Mapping):
        allowed = list(schema.get("properties", {}))
        extra = next(k for k in instance if k not in allowed)
        hint = did_you_mean(extra, allowed)
        return (*path, extra), f"{subject(path)}: unknown key '{extra}'{hint}", True
    if kind == "required" and isinstance(instance, Mapping):
        missing = next(k for k in err.validator_value if k not in instance)
        return path, f"{subject(path)} needs '{missing}'", True
    if kind in ("minProperties", "minItems"):
        return path, f"{subject(path)} must not be empty", False
    if kind == "minLength":
        return path, f"{subject(path)} must not be an empty string", False
    if kind == "oneOf" and "x-message" in schema:
        return path, f"{subject(path)} {schema['x-message']}", True
    if kind == "pattern" and "x-message" in schema:
        return path, f"{subject(path)} {schema['x-message']}, got {show(instance)}", False
    if kind in ("type", "minimum", "maximum", "exclusiveMinimum", "enum", "pattern"):
        hint = did_you_mean(instance, schema["enum"]) if kind == "enum" else ""
        message = f"{subject(path)} must be {describe(schema)}, got {show(instance)}{hint}"
        return path, message, False
    if kind == "maxItems":
        return path, f"{subject(path)} may hold at most {err.validator_value} items", False
    return path, f"{subject(path)}: {_clip(err.message)}", False


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
