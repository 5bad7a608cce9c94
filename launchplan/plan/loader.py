"""load_plan: read a plan file, check it against the schema and statically, build a Plan."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from launchplan.errors import PlanError

from . import refs, schema
from .model import LevelDecl, Plan, ServiceDecl, SourceLocation
from .problems import Problems
from .variables import merge_variables, secret_declarations
from .yamlsrc import SourceMap, load_yaml_file

IMPLICIT_CLOUDS: Mapping[str, Mapping[str, Any]] = {
    "local": {"driver": "local"},
    "static": {"driver": "static"},
}


def load_plan(
    path: str | Path,
    overrides: Mapping[str, str] | None = None,
    vars_files: Sequence[str | Path] = (),
    secrets: Collection[str] = (),
) -> Plan:
    """Load and fully check a plan; PlanError (exit 2, with file:line) for any problem, or
    PlanErrors for several: every problem found, not only the first."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise PlanError("the plan is a directory, not a file", str(path))
    data, smap = load_yaml_file(file, "plan")
    if data is None:
        raise PlanError("the plan is empty", str(file))
    if not isinstance(data, dict):
        raise smap.error("a plan must be a mapping (plan, variables, clouds, defaults, levels)", ())
    problems = Problems()
    with problems.collect():
        schema.validate(
            data,
            definition=None,
            raw=True,
            prefix=(),
            locate=lambda p, at_key: smap.key(p) if at_key else smap.value(p),
        )
    problems.raise_any()
    defaults, declared = secret_declarations(data.get("variables") or {})
    variables = merge_variables(defaults, vars_files, overrides)
    unset = sorted(declared - set(variables))
    if unset:
        raise PlanError(f"secret variable{'s' if len(unset) > 1 else ''} {', '.join(unset)} "
                        f"ha{'ve' if len(unset) > 1 else 's'} no value: give "
                        + " ".join(f"--secret-var {n}=..." for n in unset), str(file))
    plan = Plan(
        name=data.get("plan") or file.stem,
        path=file,
        base_dir=file.resolve().parent,
        variables=variables,
        secrets=frozenset(declared | set(secrets)),
        clouds={**IMPLICIT_CLOUDS, **(data.get("clouds") or {})},
        levels=_levels(data, smap, problems),
        locations={p: smap.value(p) for p in smap.values},
    )
    refs.check_plan(plan, problems)
    problems.raise_any()
    return plan


def _levels(data: Mapping[str, Any], smap: SourceMap,
            problems: Problems) -> tuple[LevelDecl, ...]:
    defaults = data.get("defaults") or {}
    seen: dict[str, tuple[Any, ...]] = {}
    levels = []
    for i, level in enumerate(data["levels"]):
        index = i + 1
        name = level.get("name") or f"level{index}"
        services = []
        for sname, body in level["services"].items():
            path = ("levels", i, "services", sname)
            if sname in seen:
                first = smap.key(seen[sname]).line
                problems.add(smap.error(
                    f"service '{sname}' is defined twice (first at line {first}); "
                    "service names are unique across the plan",
                    path,
                    at_key=True,
                ))
                continue
            seen[sname] = path
            services.append(_service(sname, index, name, body, defaults, path, smap))
        levels.append(LevelDecl(index=index, name=name, services=tuple(services)))
    return tuple(levels)


def _service(
    name: str,
    level: int,
    level_name: str,
    body: Mapping[str, Any],
    defaults: Mapping[str, Any],
    path: tuple[Any, ...],
    smap: SourceMap,
) -> ServiceDecl:
    from_defaults = frozenset(k for k in defaults if k not in body)
    locations: dict[tuple[Any, ...], SourceLocation] = {(): smap.key(path)}
    for doc_path in smap.values:
        if doc_path[: len(path)] == path and len(doc_path) > len(path):
            locations[doc_path[len(path):]] = smap.value(doc_path)
        elif doc_path[:1] == ("defaults",) and len(doc_path) > 1 and doc_path[1] in from_defaults:
            locations[doc_path[1:]] = smap.value(doc_path)
    return ServiceDecl(
        name=name,
        level=level,
        level_name=level_name,
        raw={**defaults, **body},
        location=smap.key(path),
        from_defaults=from_defaults,
        locations=locations,
    )
