"""A cloudinit.d plan as cloudinit.d understood it: levels, services, deps, clouds, globals.

The top file's [runlevels] names the level files (`levelN: FILE`, ordered by N); each
`[svc-NAME]` section of a level file is a service, unique across the plan. A service's keys
come from its section, then its `cloud:` profile ([cloud-NAME], cloud keys only), then
[defaults]; an empty value falls through. Keys starting with `deps` name INI files whose
[deps] sections load in sorted key order, later values winning. Relative paths are relative
to the level file's directory, with `~` expanded. Every problem is reported, not raised.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from launchplan.suggest import did_you_mean

from .ini import Entry, IniFile, Section, read_ini
from .problems import Report, shown

# the keys a [cloud-NAME] profile supplies
CLOUD_KEYS = ("iaas", "iaas_url", "iaas_key", "iaas_secret", "sshkeyname", "localsshkeypath",
              "ssh_username", "scp_username", "securitygroups")
SERVICE_KEYS = (*CLOUD_KEYS, "image", "allocation", "hostname", "iaas_launch", "bootconf",
                "bootpgm", "bootpgm_args", "readypgm", "readypgm_args", "terminatepgm",
                "terminatepgm_args", "pgm_timeout", "local_exe", "replica_count", "cloud",
                "userdata", "pgm_commands")
# keys cloudinit.d knows that have no cei equivalent: why, for the warning
UNSUPPORTED = {
    "scp_username": "cei copies files over SFTP as the SSH login user (ssh_username)",
    "pgm_commands": "cei runs exactly the boot, ready and terminate programs",
}
TOP_SECTIONS = ("defaults", "runlevels", "globals")
CLOUD_PREFIX = "cloud-"
SERVICE_PREFIX = "svc-"
DEPS_SECTION = "deps"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


@dataclass
class Service:
    name: str
    level: int  # 1-based position of its level in the plan
    section: Section
    settings: dict[str, Entry] = field(default_factory=dict)  # effective, non-empty values
    origins: dict[str, str] = field(default_factory=dict)  # key -> section it came from
    deps: dict[str, Entry] = field(default_factory=dict)
    cloud: str | None = None  # the [cloud-NAME] section it uses

    @property
    def directory(self) -> Path:
        """Where its relative paths start: the level file's directory."""
        return self.section.file.parent

    def get(self, key: str) -> str | None:
        entry = self.settings.get(key)
        return entry.value if entry else None


@dataclass
class Level:
    name: str  # the [runlevels] key, such as level1
    number: int
    entry: Entry  # the [runlevels] line
    services: list[Service] = field(default_factory=list)


@dataclass
class CloudinitdPlan:
    top: Path
    levels: list[Level] = field(default_factory=list)
    globals: dict[str, Entry] = field(default_factory=dict)

    def services(self) -> list[Service]:
        return [s for level in self.levels for s in level.services]

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services() if s.name == name), None)


def resolve(directory: Path, value: str) -> Path:
    """A plan path made absolute: `~` expanded, relative to `directory`."""
    return Path(os.path.normpath(directory / Path(value).expanduser()))


def read_plan(top: Path, report: Report) -> CloudinitdPlan:
    """Read the whole plan; what is wrong is in `report` (the plan is as complete as it can be)."""
    top = top.absolute()
    plan = CloudinitdPlan(top)
    ini = read_ini(top, report, "top file")
    if ini is None:
        return plan
    for name, section in ini.sections.items():
        if name not in TOP_SECTIONS and not name.startswith(CLOUD_PREFIX):
            report.warn(top, section.line, f"section [{name}] is not one cloudinit.d reads in a "
                                           "top file; not imported")
    defaults = ini.section("defaults")
    if defaults is not None:
        _check_defaults(defaults, report)
    globals_ = ini.section("globals")
    plan.globals = dict(globals_.entries) if globals_ else {}
    clouds = {name: s for name, s in ini.sections.items() if name.startswith(CLOUD_PREFIX)}
    for cloud in clouds.values():
        for entry in cloud.entries.values():
            if entry.key not in CLOUD_KEYS:
                report.warn(entry.file, entry.line, f"[{cloud.name}] {entry.key}: a cloud "
                            f"profile supplies only {', '.join(CLOUD_KEYS)}; not imported")
    seen: dict[str, Service] = {}
    for level in _levels(ini, report):
        plan.levels.append(level)
        level_ini = _read_named(resolve(top.parent, level.entry.value), level.entry,
                                "[runlevels]", "level file", report)
        if level_ini is None:
            continue
        if not any(name.startswith(SERVICE_PREFIX) for name in level_ini.sections):
            report.error(level.entry.file, level.entry.line, f"[runlevels] {level.name}: the "
                         "level file has no [svc-NAME] section")
        for section in level_ini.sections.values():
            service = _service(section, len(plan.levels), report, seen)
            if service is None:
                continue
            _settings(service, defaults, clouds, report)
            _deps(service, report)
            level.services.append(service)
    return plan


def _read_named(path: Path, entry: Entry, section: str, what: str,
                report: Report) -> IniFile | None:
    """Read the file `entry` names; a missing one is reported where it is named."""
    if not path.is_file():
        report.error(entry.file, entry.line, f"{section} {entry.key}: {what} not found: "
                                             f"{shown(path)}")
        return None
    return read_ini(path, report, what)


def _levels(ini: IniFile, report: Report) -> list[Level]:
    runlevels = ini.section("runlevels")
    if runlevels is None:
        report.error(ini.path, None, "no [runlevels] section: a top file lists its level files "
                                     "there (level1: first-level.conf)")
        return []
    levels: dict[int, Level] = {}
    for key, entry in runlevels.entries.items():
        if not key.startswith("level"):
            report.warn(entry.file, entry.line, f"[runlevels] {key}: cloudinit.d reads only "
                                                "levelN keys; not imported")
            continue
        try:
            number = int(key[len("level"):])
        except ValueError:
            report.error(entry.file, entry.line, f"[runlevels] {key}: expected levelN with a "
                                                 "number N (level1, level2, ...)")
            continue
        if number in levels:
            first = levels[number].entry
            report.error(entry.file, entry.line, f"[runlevels] {key}: level {number} is also "
                                                 f"{first.key} (line {first.line})")
            continue
        if not entry.value:
            report.error(entry.file, entry.line, f"[runlevels] {key} names no level file")
            continue
        levels[number] = Level(key, number, entry)
    if runlevels.entries and not levels:
        report.error(ini.path, runlevels.line, "[runlevels] lists no levelN: FILE")
    return [levels[n] for n in sorted(levels)]


def _service(section: Section, level: int, report: Report,
             seen: dict[str, Service]) -> Service | None:
    file = section.file
    if not section.name.startswith(SERVICE_PREFIX):
        report.warn(file, section.line, f"section [{section.name}] is not a service "
                                        f"([{SERVICE_PREFIX}NAME]); not imported")
        return None
    name = section.name[len(SERVICE_PREFIX):]
    if not NAME.match(name):
        report.error(file, section.line, f"[{section.name}]: service name {name!r} must use "
                                         "letters, digits, '_', '.' and '-', not starting with "
                                         "'.' or '-'")
        return None
    if name in seen:
        first = seen[name].section
        report.error(file, section.line, f"service '{name}' is also defined in "
                                         f"{first.file.name}:{first.line}; service names are "
                                         "unique across the plan (one level each)")
        return None
    service = Service(name, level, section)
    seen[name] = service
    return service


def _check_defaults(defaults: Section, report: Report) -> None:
    for key, entry in defaults.entries.items():
        if key == "hostname":
            report.warn(entry.file, entry.line, "[defaults] hostname: cloudinit.d reads it but "
                                                "never applies it; not imported")
        elif key.startswith("deps"):
            report.warn(entry.file, entry.line, f"[defaults] {key}: deps files belong to "
                                                "services; not imported")
        elif key not in SERVICE_KEYS:
            _unknown(entry, "defaults", report)


def _unknown(entry: Entry, section: str, report: Report) -> None:
    hint = did_you_mean(entry.key, SERVICE_KEYS)
    report.warn(entry.file, entry.line, f"[{section}] unknown key '{entry.key}'{hint}; "
                                        "cloudinit.d ignores it; not imported")


def _settings(service: Service, defaults: Section | None, clouds: dict[str, Section],
              report: Report) -> None:
    """The effective keys: the service's own, then its cloud profile's, then [defaults]."""
    own = service.section
    for key, entry in own.entries.items():
        if key not in SERVICE_KEYS and not key.startswith("deps"):
            _unknown(entry, own.name, report)
    sources = [own]
    cloud = own.get("cloud")
    if (cloud is None or not cloud.value) and defaults is not None:
        cloud = defaults.get("cloud")
    if cloud is not None and cloud.value:
        profile = clouds.get(cloud.value)
        if profile is None:
            hint = did_you_mean(cloud.value, clouds)
            report.error(cloud.file, cloud.line, f"[{own.name}] cloud: no [{cloud.value}] "
                         f"section in the top file{hint}")
        else:
            service.cloud = cloud.value
            sources.append(profile)
    if defaults is not None:
        sources.append(defaults)
    for key in SERVICE_KEYS:
        for source in sources:
            if source.name.startswith(CLOUD_PREFIX) and key not in CLOUD_KEYS:
                continue
            if source is defaults and key == "hostname":
                continue
            found = source.get(key)
            if found is not None and found.value:
                service.settings[key] = found
                service.origins[key] = source.name
                break
    for key, why in UNSUPPORTED.items():
        if key in service.settings:
            entry = service.settings[key]
            report.warn(entry.file, entry.line, f"[{own.name}] {key} is not supported: {why}; "
                                                "not imported")


def _deps(service: Service, report: Report) -> None:
    own = service.section
    for key in sorted(k for k in own.entries if k.startswith("deps")):
        entry = own.entries[key]
        if not entry.value:
            continue
        path = resolve(service.directory, entry.value)
        ini = _read_named(path, entry, f"[{own.name}]", "deps file", report)
        if ini is None:
            continue
        deps = ini.section(DEPS_SECTION)
        if deps is None:
            report.error(path, None, f"no [{DEPS_SECTION}] section (named by [{own.name}] "
                                     f"{key} at {entry.file.name}:{entry.line})")
            continue
        for section in ini.sections.values():
            if section is not deps:
                report.warn(path, section.line, f"section [{section.name}] is not read from a "
                                                f"deps file (only [{DEPS_SECTION}]); not imported")
        service.deps.update(deps.entries)
