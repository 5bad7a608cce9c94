"""`compat: cloudinitd`: the files cloudinit.d put beside a service's programs.

cloudinit.d filled a service's `bootconf` template (Python's string.Template: `$name` and
`${name}`) from the service's deps, staged it as `bootconf.json` in the program's working
directory with a `bootenv.sh` of `export` lines, and read the boot program's outputs from
`bootout.json` there. In cei the deps are the service's `config`, so programs written for
cloudinit.d run unchanged.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from launchplan.errors import PlanError

from .yamlsrc import read_text

CLOUDINITD = "cloudinitd"
BOOTCONF = "bootconf.json"
BOOTENV = "bootenv.sh"
BOOTOUT = "bootout.json"

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def bag(config: Mapping[str, Any]) -> dict[str, str]:
    """The service's deps as cloudinit.d saw them: every top-level config key, as text."""
    return {str(k): _text(v) for k, v in config.items()}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, sort_keys=True)


def bootconf_problems(text: str, names: Iterable[str]) -> list[tuple[int, str]]:
    """(line, message) for every placeholder of a bootconf template that `names` cannot fill."""
    known = set(names)
    problems = []
    for match in string.Template.pattern.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        name = match.group("named") or match.group("braced")
        if match.group("invalid") is not None:
            problems.append((line, "a '$' that starts no placeholder (write $$ for a literal $)"))
        elif name is not None and name not in known:
            have = ", ".join(sorted(known)) or "none"
            problems.append((line, f"${name} is not a key of the service's config "
                                   f"(its deps; keys: {have})"))
    return problems


def stage_files(config: Mapping[str, Any], bootconf: str | None) -> dict[str, str]:
    """bootconf.json (also under the template's own name) and bootenv.sh for one node.

    `bootconf` is the template file's absolute path. bootenv.sh exports every deps value and,
    as cloudinit.d did, every top-level key of the filled bootconf (those win).
    """
    values = bag(config)
    files: dict[str, str] = {}
    exports = dict(values)
    if bootconf is not None:
        path = Path(bootconf)
        text = read_text(path, "bootconf template")
        problems = bootconf_problems(text, values)
        if problems:
            line, message = problems[0]
            raise PlanError(f"bootconf: {message}", str(path), line)
        filled = string.Template(text).substitute(values)
        files[BOOTCONF] = filled
        files.setdefault(path.name, filled)
        exports.update(_top_level(filled))
    files[BOOTENV] = bootenv(exports)
    return files


def _top_level(document: str) -> dict[str, str]:
    """A filled bootconf's top-level keys as text; nothing when it is not a JSON object."""
    try:
        value = json.loads(document)
    except ValueError:
        return {}
    return bag(value) if isinstance(value, dict) else {}


def bootenv(values: Mapping[str, str]) -> str:
    """`export NAME='value'` lines; names a shell cannot export are left out."""
    lines = ["# written by cei for compat: cloudinitd (the service's deps and bootconf keys)"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items() if _SHELL_NAME.match(k)]
    return "\n".join(lines) + "\n"
