"""A cloudinit.d plan converted into a cei plan document, with a comment for every piece.

Every service gets `compat: cloudinitd`, so its programs find bootconf.json, bootenv.sh and
bootout.json as before. Its deps become its `config`; program paths become paths relative to
the new plan; `*_args` are split as cloudinit.d split them (shlex) into `args`. Launched
services use cloud profiles made from their iaas keys (ec2 regions and EC2-compatible
endpoints: driver ec2; `libcloud-NAME`: driver libcloud); `hostname` services are existing
hosts. Credentials are always read from the environment at launch.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from launchplan.plan.compat import CLOUDINITD, bootconf_problems

from .expand import Expander, env_name, env_template
from .ini import Entry
from .problems import Report
from .source import CloudinitdPlan, Service, resolve
from .yamlout import Comments

LOCAL = "local"
DEFAULT_REGION = "us-east-1"  # boto's region when a service names none
LIBCLOUD_PREFIX = "libcloud-"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# cloud-specific service keys, by the cei driver that knows them
_DRIVER_KEYS = {
    "ec2": ("image", "size", "key_name", "security_groups", "ssh_user", "ssh_key"),
    "libcloud": ("image", "size", "ssh_user", "ssh_key"),
    "local": (),
}
_PROGRAMS = (("bootpgm", "boot"), ("readypgm", "ready"), ("terminatepgm", "terminate"))


@dataclass
class Imported:
    """The cei plan: its document, its comments, and how big it is."""

    data: dict[str, Any]
    comments: Comments
    header: list[str]
    levels: int = 0
    services: int = 0


@dataclass
class _Profile:
    name: str
    body: dict[str, Any]
    origin: str


@dataclass
class Converter:
    plan: CloudinitdPlan
    report: Report
    # how a local file is written in the new plan (relative to it, or absolute)
    path_for: Callable[[Path], str]
    cloud: str | None = None  # --cloud: every launched service on this profile
    name: str | None = None  # the plan's name (default: the top file's)
    comments: Comments = field(default_factory=Comments)
    profiles: dict[str, _Profile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.expand = Expander(self.plan, self.report)

    def origin(self, entry: Entry) -> str:
        """How a comment names where a value came from: "level1.conf:7"."""
        return f"{self._file(entry.file)}:{entry.line}"

    def _file(self, path: Path) -> str:
        return os.path.relpath(path, self.plan.top.parent)

    def convert(self) -> Imported:
        plan = self.plan
        launched = {s.name: self._profile(s) for s in plan.services() if self._launched(s)}
        if self.cloud is not None and self.cloud != LOCAL and self.cloud not in self.profiles:
            choices = ", ".join([LOCAL, *self.profiles])
            self.report.error(plan.top, None, f"--cloud {self.cloud}: no such cloud in the "
                                              f"imported plan (choose one of: {choices})")
        data: dict[str, Any] = {"plan": _name(self.name or plan.top.stem) or "imported"}
        variables = self._variables()
        if variables:
            data["variables"] = variables
        used = {p for p in launched.values() if p is not None} if self.cloud is None else (
            {self.cloud} & set(self.profiles))
        clouds = {name: self.profiles[name].body for name in self.profiles if name in used}
        for name in clouds:
            self.comments.trailing(("clouds", name), self.profiles[name].origin)
        if clouds:
            data["clouds"] = clouds
        levels = []
        for i, level in enumerate(plan.levels):
            self.comments.above(("levels", i), f"from {self.origin(level.entry)} "
                                               f"({level.name}: {level.entry.value})")
            services = {}
            for service in level.services:
                path = ("levels", i, "services", service.name)
                self.comments.above(path, f"from {self._file(service.section.file)} "
                                          f"[{service.section.name}]")
                services[service.name] = self._service(service, path, launched.get(service.name))
            levels.append({"name": level.name, "services": services})
        data["levels"] = levels
        return Imported(data, self.comments, self._header(), len(levels),
                        len(plan.services()))

    def _header(self) -> list[str]:
        lines = [
            f"cei launch plan imported from the cloudinit.d plan {self.plan.top.name} "
            "by `cei import`.",
            "Services run with compat: cloudinitd: their programs find bootconf.json and",
            "bootenv.sh in their working directory and leave outputs in bootout.json.",
            "Credentials and env.NAME values are read from the environment at launch.",
        ]
        if self.report.warnings:
            lines += ["", "Not imported or changed (the warnings of `cei import`):"]
            lines += [f"  {self._file(w.file)}" + (f":{w.line}" if w.line else "")
                      + f": {w.message}" for w in self.report.warnings]
        return lines

    def _variables(self) -> dict[str, str]:
        out = {}
        for key, entry in self.plan.globals.items():
            if env_name(entry.value):  # read where it is used, at launch
                continue
            if not _SHELL_NAME.match(key):
                self.report.warn(entry.file, entry.line, f"[globals] {key}: not a cei variable "
                                 "name (letters, digits, '_'); its value is written where used")
                continue
            out[key] = entry.value
            self.comments.trailing(("variables", key), f"{self.origin(entry)} [globals]")
        return out

    # ---------------------------------------------------------------- clouds

    def _launched(self, service: Service) -> bool:
        launch = service.settings.get("iaas_launch")
        flag = self._flag(service, launch) if launch is not None else None
        hostname = service.settings.get("hostname")
        if flag is None:
            flag = hostname is None
        elif flag and hostname is not None:
            self.report.warn(hostname.file, hostname.line, f"[{service.section.name}] "
                             "hostname is ignored: iaas_launch is true, so a node is launched")
        if not flag and hostname is None:
            self.report.error(service.section.file, service.section.line,
                              f"[{service.section.name}]: iaas_launch is false and no hostname "
                              "is given: there is no machine to run on")
        if flag and "image" not in service.settings:
            self.report.error(service.section.file, service.section.line,
                              f"[{service.section.name}]: needs an image (to launch) or a "
                              "hostname (an existing machine)")
        return flag

    def _profile(self, service: Service) -> str | None:
        """The name of the cloud profile a launched service's iaas keys make."""
        s = service.settings
        iaas = s.get("iaas")
        kind = iaas.value if iaas is not None else DEFAULT_REGION
        url = s.get("iaas_url")
        body: dict[str, Any]
        if kind.startswith(LIBCLOUD_PREFIX):
            body = {"driver": "libcloud", "provider": kind[len(LIBCLOUD_PREFIX):]}
            if url is not None:
                body["options"] = self._libcloud_options(service, url)
            fields = {"iaas_key": "key", "iaas_secret": "secret"}
            name = kind
        else:
            body = {"driver": "ec2",
                    "region": self.expand.plain(iaas) if iaas is not None else DEFAULT_REGION}
            if url is not None:
                body["endpoint_url"] = self.expand.plain(url)
            fields = {"iaas_key": "access_key", "iaas_secret": "secret_key"}
            host = urlsplit(url.value).hostname if url is not None else None
            name = host or (kind if env_name(kind) is None else "ec2")
        credentials = {field_: self._credential(service, key) for key, field_ in fields.items()
                       if key in s}
        if credentials:
            body["credentials"] = credentials
        if service.cloud is not None:
            name = service.cloud[len("cloud-"):] or name
        sources = [s[k] for k in ("iaas", "iaas_url", "iaas_key", "iaas_secret") if k in s]
        origin = ", ".join(f"{self.origin(e)} {e.key}" for e in sources) or "cloudinit.d's " \
            f"default region {DEFAULT_REGION}"
        return self._add_profile(_name(name) or "cloud", body, origin)

    def _add_profile(self, name: str, body: dict[str, Any], origin: str) -> str:
        candidate, n = name, 1
        while candidate in self.profiles or candidate in (LOCAL, "static"):
            existing = self.profiles.get(candidate)
            if existing is not None and existing.body == body:
                return candidate
            n += 1
            candidate = f"{name}-{n}"
        self.profiles[candidate] = _Profile(candidate, body, origin)
        return candidate

    def _libcloud_options(self, service: Service, url: Entry) -> dict[str, Any]:
        parts = urlsplit(url.value)
        if not parts.hostname:
            self.report.error(url.file, url.line, f"[{service.section.name}] iaas_url "
                              f"{url.value!r} is not a URL (https://host:port/)")
            return {}
        options: dict[str, Any] = {"host": parts.hostname, "secure": parts.scheme == "https"}
        if parts.port:
            options["port"] = parts.port
        return options

    def _credential(self, service: Service, key: str) -> str:
        entry = service.settings[key]
        name = env_name(entry.value)
        if name:
            return env_template(name)
        section = entry_section(service, entry)
        variable = _NAME_CHARS.sub("_", f"{section}_{key}").upper().replace("-", "_")
        self.report.warn(entry.file, entry.line, f"[{section}] {key} is written in the plan: "
                         f"not copied; the imported plan reads ${variable} at launch (better: "
                         f"{key}: env.NAME)")
        return env_template(variable)

    # -------------------------------------------------------------- services

    def _service(self, service: Service, path: tuple[Any, ...],
                 profile: str | None) -> dict[str, Any]:
        s = service.settings
        out: dict[str, Any] = {"compat": CLOUDINITD}
        note = self._noter(service, path, out)
        if profile is None:
            hostname = s.get("hostname")
            if hostname is not None:
                note("host", self.expand.text(service, hostname), hostname)
                if "${" in hostname.value:
                    self.report.warn(hostname.file, hostname.line, f"[{service.section.name}] "
                                     "hostname: cei reaches it as an existing host; pin its "
                                     "host key (host_key:, ~/.ssh/known_hosts) before launch")
            driver = "static"
        else:
            cloud = self.cloud or profile
            out["cloud"] = cloud
            driver = LOCAL if cloud == LOCAL else self.profiles[cloud].body["driver"] \
                if cloud in self.profiles else LOCAL
        self._count(service, note, static=profile is None)
        self._machine(service, note, path, driver)
        if "local_exe" in s:
            note("local_exe", self._flag(service, s["local_exe"]), s["local_exe"])
        timeout = self._timeout(service)
        if timeout is not None:
            note("timeout", timeout, s["pgm_timeout"])
        if service.deps:
            out["config"] = self._config(service, path)
        if "bootconf" in s:
            note("bootconf", self._file_value(service, s["bootconf"], "bootconf"), s["bootconf"])
            self._check_bootconf(service, s["bootconf"])
        if "userdata" in s:
            note("userdata", self._file_value(service, s["userdata"], "userdata"), s["userdata"])
        for key, kind in _PROGRAMS:
            if key in s:
                out[kind] = self._program(service, key, kind, timeout, (*path, kind))
        return out

    def _noter(self, service: Service, path: tuple[Any, ...],
               out: dict[str, Any]) -> Callable[[str, Any, Entry], None]:
        def note(key: str, value: Any, entry: Entry) -> None:
            out[key] = value
            self.comments.trailing((*path, key), self._where(service, entry))

        return note

    def _where(self, service: Service, entry: Entry) -> str:
        section = entry_section(service, entry)
        suffix = "" if section == service.section.name else f" [{section}]"
        return f"{self.origin(entry)}{suffix} {entry.key}"

    def _count(self, service: Service, note: Callable[[str, Any, Entry], None],
               static: bool) -> None:
        entry = service.settings.get("replica_count")
        if entry is None:
            return
        name = env_name(entry.value)
        if name:
            note("count", env_template(name), entry)
            return
        try:
            count = int(entry.value)
        except ValueError:
            count = 0
        if count < 1:
            self.report.error(entry.file, entry.line, f"[{service.section.name}] replica_count "
                              f"must be a whole number >= 1, got {entry.value!r}")
        elif count > 1 and static:
            self.report.error(entry.file, entry.line, f"[{service.section.name}] replica_count "
                              f"{count} with a hostname: one existing machine is one node")
        elif count > 1:
            note("count", count, entry)

    def _machine(self, service: Service, note: Callable[[str, Any, Entry], None],
                 path: tuple[Any, ...], driver: str) -> None:
        """image, size, key pair, groups and SSH login, where the service's cloud knows them."""
        s = service.settings
        keys = {"image": "image", "allocation": "size", "sshkeyname": "key_name",
                "securitygroups": "security_groups", "ssh_username": "ssh_user",
                "localsshkeypath": "ssh_key"}
        allowed = _DRIVER_KEYS.get(driver, ("ssh_user", "ssh_key"))
        for key, cei_key in keys.items():
            entry = s.get(key)
            if entry is None:
                continue
            if driver == "static" and key in ("image", "allocation", "sshkeyname",
                                              "securitygroups"):
                continue  # a cloud key from [defaults] or a profile: no cloud here
            if cei_key not in allowed:
                if driver == LOCAL:
                    self.comments.above((*path, "compat"), f"{self._where(service, entry)}: "
                                        f"{entry.value} (not used on the local cloud)")
                else:
                    section = entry_section(service, entry)
                    self.report.warn(entry.file, entry.line, f"[{section}] {key} (service "
                                     f"'{service.name}'): cei's {driver} driver has no "
                                     "equivalent; not imported")
                continue
            if cei_key == "ssh_key":
                value: Any = self._file_value(service, entry, key)
            elif cei_key == "security_groups":
                value = [self.expand.plain(entry)]
            else:
                value = self.expand.plain(entry)
            note(cei_key, value, entry)

    def _config(self, service: Service, path: tuple[Any, ...]) -> dict[str, Any]:
        config = {}
        for key, entry in service.deps.items():
            config[key] = self.expand.text(service, entry)
            self.comments.trailing((*path, "config", key), f"{self.origin(entry)} [deps]")
            if not _SHELL_NAME.match(key):
                self.report.warn(entry.file, entry.line, f"deps key {key!r} of service "
                                 f"'{service.name}' is not a shell name: bootenv.sh leaves it out")
        return config

    def _program(self, service: Service, key: str, kind: str, timeout: float | None,
                 path: tuple[Any, ...]) -> dict[str, Any]:
        entry = service.settings[key]
        body: dict[str, Any] = {"run": self._file_value(service, entry, key)}
        self.comments.trailing((*path, "run"), self._where(service, entry))
        if entry.value.endswith(".tar.gz"):
            self.report.error(entry.file, entry.line, f"[{service.section.name}] {key}: a "
                              ".tar.gz program (unpacked to run its run.sh) is not supported; "
                              "unpack it and name its run.sh")
        args = service.settings.get(f"{key}_args")
        if args is not None:
            try:
                words = shlex.split(args.value)
            except ValueError as exc:
                self.report.error(args.file, args.line, f"[{service.section.name}] {args.key}: "
                                  f"cannot split into arguments ({exc})")
                words = []
            body["args"] = [self.expand.text(service, args, word) for word in words]
            self.comments.trailing((*path, "args"), self._where(service, args))
        if timeout is not None and kind != "boot":  # boot's default is the service's timeout
            body["timeout"] = timeout
        return body

    def _file_value(self, service: Service, entry: Entry, key: str) -> str:
        file = resolve(service.directory, entry.value)
        if not file.is_file():
            self.report.error(entry.file, entry.line, f"[{service.section.name}] {key}: file "
                              f"not found: {file}")
        return self.path_for(file)

    def _check_bootconf(self, service: Service, entry: Entry) -> None:
        file = resolve(service.directory, entry.value)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return  # reported as a missing file
        for line, message in bootconf_problems(text, service.deps):
            self.report.error(file, line, f"bootconf of [{service.section.name}]: {message}")

    def _timeout(self, service: Service) -> float | None:
        entry = service.settings.get("pgm_timeout")
        if entry is None:
            return None
        try:
            value = float(entry.value)
        except ValueError:
            value = 0.0
        if value <= 0:
            self.report.error(entry.file, entry.line, f"[{service.section.name}] pgm_timeout "
                              f"must be a number of seconds > 0, got {entry.value!r}")
            return None
        return int(value) if value.is_integer() else value

    def _flag(self, service: Service, entry: Entry) -> bool:
        word = entry.value.strip().lower()
        if word not in _TRUE | _FALSE:
            self.report.error(entry.file, entry.line, f"[{service.section.name}] {entry.key} "
                              f"must be true or false, got {entry.value!r}")
        return word in _TRUE


def entry_section(service: Service, entry: Entry) -> str:
    """The section a service's setting came from: its own, its cloud profile or [defaults]."""
    return service.origins.get(entry.key, service.section.name)


def _name(text: str) -> str:
    """A cei name (letters, digits, '_', '.', '-') made from `text`."""
    return _NAME_CHARS.sub("-", text).strip(".-")
