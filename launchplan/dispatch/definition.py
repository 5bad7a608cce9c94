"""Process definitions for `cei process run`: YAML files checked before anything is placed.

A definition is what the agent runs (see docs/agents.md): `name`, exactly one of `exec` (with
`argv`) or `module` (`pkg.mod:callable`, with `args`, `python`, `pythonpath`), and `env`,
`cwd`, `restart` (never | always | abnormal), `min_restart_interval`, `max_restarts`,
`description`. The agent's own checker decides what is valid, so cei and the agent never
disagree; errors name the file and the line of the key at fault.

Two keys are cei's own: `env_from` maps a process environment variable to the name of a variable
in cei's environment, read when the process is placed (or placed again). Secrets go that way:
the store and the definition keep only the names. `queue: true` makes a process that finds no
free slot wait for one instead of being refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from launchplan.agent.supervisor import normalize_definition
from launchplan.errors import AgentError, PlanError, UsageError

ENV_FROM = "env_from"
QUEUE = "queue"  # wait for a free slot instead of being refused (cei's own key)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_definition(definition: Any, source: str = "definition",
                     lines: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The definition as it will be sent to the agent, or PlanError naming what is wrong.

    Defaults that depend on the node (the python that runs a module) are left to the agent.
    """
    if not isinstance(definition, dict):
        raise PlanError("a process definition is a mapping (name, exec or module, ...)", source)
    env_from = definition.get(ENV_FROM, {})
    if not isinstance(env_from, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _NAME.fullmatch(k) and _NAME.fullmatch(v)
            for k, v in env_from.items()):
        raise PlanError(f"{ENV_FROM} maps process variable names to names of variables in "
                        "cei's environment (NAME: NAME)", source, (lines or {}).get(ENV_FROM))
    if not isinstance(definition.get(QUEUE, False), bool):
        raise PlanError(f"{QUEUE} is true or false", source, (lines or {}).get(QUEUE))
    try:
        normalize_definition(for_agent(definition, None))
    except AgentError as exc:
        message = str(exc)
        line = None
        for key, key_line in (lines or {}).items():
            if key in message:
                line = key_line
                break
        raise PlanError(message, source, line) from None
    return dict(definition)


def for_agent(definition: Mapping[str, Any],
              environ: Mapping[str, str] | None) -> dict[str, Any]:
    """The definition as the agent takes it, `env_from` resolved from `environ` into `env`.

    `environ` None only checks the shape (values left empty); otherwise UsageError names a
    variable that `env_from` needs and `environ` lacks.
    """
    sent = {k: v for k, v in definition.items() if k not in (ENV_FROM, QUEUE)}
    env_from = definition.get(ENV_FROM) or {}
    if not env_from:
        return sent
    if environ is not None:
        missing = sorted(v for v in env_from.values() if v not in environ)
        if missing:
            raise UsageError(f"set {', '.join(missing)} in cei's environment: process "
                             f"{definition.get('name')!r} reads it (env_from)")
    values = environ or {}
    sent["env"] = {**(definition.get("env") or {}),
                   **{k: values.get(v, "") for k, v in env_from.items()}}
    return sent


def load_definition(path: Path, name: str | None = None) -> dict[str, Any]:
    """Read a YAML definition file; `name` (from --name) replaces the file's name."""
    if not path.is_file():
        raise UsageError(f"no such process definition file: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PlanError(f"not valid YAML: {getattr(exc, 'problem', exc)}", str(path),
                        mark.line + 1 if mark else None) from None
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            lines[str(key.value)] = key.start_mark.line + 1
    if isinstance(data, dict) and name is not None:
        data["name"] = name
    if isinstance(data, dict) and "name" not in data:
        raise PlanError("the definition has no name: add `name:` or pass --name", str(path))
    return check_definition(data, str(path), lines)
