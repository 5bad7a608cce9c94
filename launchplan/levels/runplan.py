"""The plan a run was launched from, as later commands (watch, scale, repair) load it again.

Nodes added after the launch are rendered from the same plan file with the same variables.
`--var` values that look like secrets (state.codec.scrub_secrets) and the values of secret
variables (`--secret-var`, `secret: true`) are not stored; their names are, so that a later
command asks for them instead of silently using the plan's defaults.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchplan.errors import UsageError
from launchplan.plan import load_plan
from launchplan.plan.model import Plan
from launchplan.state import RunRecord, scrub_secrets


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def launch_settings(plan: Plan, overrides: Mapping[str, str],
                    vars_files: Sequence[Path]) -> dict[str, Any]:
    """What the store keeps of how a run was launched (RunRecord.launch)."""
    kept = {k: v for k, v in scrub_secrets(dict(overrides)).items() if k not in plan.secrets}
    return {
        "overrides": kept,
        "withheld": sorted(set(overrides) - set(kept)),
        "masked": sorted(plan.secrets),  # the key must not look secret to the store
        "vars_files": [str(Path(f).expanduser().resolve()) for f in vars_files],
        "plan_sha256": file_digest(plan.path),
    }


def load_run_plan(run: RunRecord, overrides: Mapping[str, str] | None = None,
                  vars_files: Sequence[Path] = ()) -> tuple[Plan, list[str]]:
    """The run's plan with its launch variables (`overrides` and `vars_files` on top), and
    warnings to show (the file changed since the launch)."""
    launch = run.launch
    given = dict(overrides or {})
    missing = [name for name in launch.get("withheld", []) if name not in given]
    if missing:
        flags = " ".join(f"--secret-var {name}=..." for name in missing)
        raise UsageError(f"run {run.name} was launched with {', '.join(missing)} on the command "
                         f"line; cei does not store values that look like secrets: pass them "
                         f"again ({flags})")
    path = Path(run.plan_path)
    if not path.is_file():
        raise UsageError(f"run {run.name} was launched from {path}, which is gone; new nodes "
                         "are rendered from the plan file, so restore it there")
    plan = load_plan(path, {**launch.get("overrides", {}), **given},
                     [*launch.get("vars_files", []), *vars_files],
                     secrets=launch.get("masked", ()))
    warnings = []
    if launch.get("plan_sha256") not in (None, file_digest(path)):
        warnings.append(f"{path} changed since run {run.name} was launched; nodes added now "
                        "follow the file as it is")
    return plan, warnings
