"""The user's OpenSSH client configuration (~/.ssh/config), read the way ssh reads it.

paramiko's SSHConfig applies Host and Match blocks as OpenSSH does (the first value found wins;
Match host, originalhost, user, localuser, canonical, final and all). It does not follow
Include, so this module splices each included file in first: glob patterns are expanded,
relative paths are taken under ~/.ssh, and an Include inside a Host or Match block applies the
included file only where that block matches, as ssh does, by adding the block's condition to
every Host or Match line of the included file. `Match exec` is refused: cei runs no commands
from a config file.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from launchplan.errors import UsageError
from launchplan.remote.sshlib import paramiko

DEFAULT_PATH = "~/.ssh/config"
NO_CONFIG = "none"  # ssh_config: none, like ssh -F none
MAX_DEPTH = 16  # how deep Includes nest, as in OpenSSH
_LINE = re.compile(r"(\w+)(?:\s*=\s*|\s+)(.+)")  # the line syntax paramiko parses
_DEFAULT_KNOWN_HOSTS = (
    "~/.ssh/known_hosts",
    "~/.ssh/known_hosts2",
    "/etc/ssh/ssh_known_hosts",
    "/etc/ssh/ssh_known_hosts2",
)


@dataclass(frozen=True)
class HostConfig:
    """What the config says about one host name, for the settings cei honours."""

    name: str  # the name looked up (an alias, an address)
    hostname: str  # HostName, else the name itself
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    proxy_jump: tuple[str, ...] | None = None  # None: not set; (): ProxyJump none
    connect_timeout: float | None = None
    server_alive_interval: float | None = None
    host_key_alias: str | None = None
    known_hosts_files: tuple[str, ...] = _DEFAULT_KNOWN_HOSTS
    control_persist: float = 0.0  # ControlMaster + ControlPersist: seconds (0: not kept)


def lookup(name: str, path: str | None = None) -> HostConfig:
    """The settings for `name` from the config at `path` (None: ~/.ssh/config if it exists;
    "none": no file at all). UsageError naming the file and line for what cannot be read."""
    config = _load(path)
    if config is None:
        return HostConfig(name=name, hostname=name)
    try:
        found = config.lookup(name)
    except (paramiko.SSHException, ValueError) as exc:
        raise UsageError(f"ssh config {path or DEFAULT_PATH}: {exc}") from None
    return HostConfig(
        name=name,
        hostname=str(found.get("hostname") or name),
        port=_number(found, "port", path),
        user=found.get("user"),
        identity_files=tuple(os.path.expanduser(f) for f in found.get("identityfile") or ()),
        identities_only=str(found.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=_jumps(found.get("proxyjump")),
        connect_timeout=_number(found, "connecttimeout", path),
        server_alive_interval=_number(found, "serveraliveinterval", path),
        host_key_alias=found.get("hostkeyalias"),
        known_hosts_files=_known_hosts(found),
        control_persist=_persist(found, path),
    )


def _number(found: dict[str, str], key: str, path: str | None) -> int | None:
    if found.get(key) is None:
        return None
    try:
        return int(found[key])
    except ValueError:
        raise UsageError(f"ssh config {path or DEFAULT_PATH}: {key} must be a number, "
                         f"not {found[key]!r}") from None


_MASTER = ("yes", "auto", "ask", "autoask")  # ControlMaster values that share a connection
_TIME = re.compile(r"(\d+)([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _persist(found: dict[str, str], path: str | None) -> float:
    """How long a connection stays open after its last use, as ControlPersist keeps an
    OpenSSH master connection: only with ControlMaster; `yes` and 0 mean for good (for cei:
    until the command ends); a time is in sshd_config's format (600, 10m, 1h30m)."""
    master = str(found.get("controlmaster", "no")).lower()
    persist = str(found.get("controlpersist", "no")).lower()
    if master not in _MASTER or persist == "no":
        return 0.0
    if persist == "yes":
        return math.inf
    parts = _TIME.findall(persist)
    if not parts or "".join(number + unit for number, unit in parts) != persist:
        raise UsageError(f"ssh config {path or DEFAULT_PATH}: ControlPersist must be yes, no "
                         f"or a time (600, 10m, 1h30m), not {found['controlpersist']!r}")
    seconds = sum(int(number) * _UNIT[unit] for number, unit in parts)
    return float(seconds) if seconds else math.inf


def _jumps(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    return tuple(hop.strip() for hop in value.split(",") if hop.strip())


def _known_hosts(found: dict[str, str]) -> tuple[str, ...]:
    user = found.get("userknownhostsfile")
    system = found.get("globalknownhostsfile")
    if user is None and system is None:
        return _DEFAULT_KNOWN_HOSTS
    files = [*(shlex.split(user) if user else _DEFAULT_KNOWN_HOSTS[:2]),
             *(shlex.split(system) if system else _DEFAULT_KNOWN_HOSTS[2:])]
    return tuple(f for f in files if f.lower() != "none")


def _load(path: str | None) -> paramiko.SSHConfig | None:
    if path == NO_CONFIG:
        return None
    file = Path(path or DEFAULT_PATH).expanduser()
    if path is None and not file.is_file():
        return None
    try:
        stamp = file.stat().st_mtime_ns
    except OSError as exc:
        raise UsageError(f"cannot read ssh config {file}: {exc.strerror}") from None
    return _parse(str(file), stamp)


@lru_cache(maxsize=8)
def _parse(file: str, _stamp: int) -> paramiko.SSHConfig:
    """The config at `file` with its Includes spliced in (cached while it is unchanged)."""
    text = "\n".join(_expand(Path(file), None, 0))
    try:
        return paramiko.SSHConfig.from_text(text)
    except paramiko.SSHException as exc:
        raise UsageError(f"ssh config {file}: {exc}") from None


def _expand(file: Path, condition: str | None, depth: int) -> list[str]:
    """The lines of `file`, Includes spliced in. `condition` is the Match criteria of the block
    that included it (None at the top level): its Host and Match lines get them too."""
    if depth > MAX_DEPTH:
        raise UsageError(f"ssh config {file}: Include nests deeper than {MAX_DEPTH} files")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read ssh config {file}: {exc}") from None
    out: list[str] = []
    block = condition  # the criteria under which the lines that follow apply
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise UsageError(f"{file}:{number}: cannot read this ssh config line: {line!r}")
        keyword, value = match.group(1).lower(), match.group(2)
        if keyword in ("host", "match"):
            criteria = _criteria(keyword, _words(value, file, number), file, number)
            block = _both(condition, criteria)
            if condition is None:
                out.append(line)
            else:
                out.append(f"Match {block}" if block else "Host *")
        elif keyword == "include":
            for pattern in _words(value, file, number):
                for included in _included(pattern):
                    out.extend(_expand(included, block, depth + 1))
            out.append(f"Match {block}" if block else "Host *")  # back in the block
        else:
            out.append(line)
    return out


def _words(value: str, file: Path, number: int) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise UsageError(f"{file}:{number}: {exc}") from None


def _criteria(keyword: str, words: list[str], file: Path, number: int) -> str | None:
    """A Host or Match line as Match criteria (None: it matches every host)."""
    if keyword == "host":
        return None if words == ["*"] else "originalhost " + shlex.quote(",".join(words))
    if "exec" in (w.lstrip("!") for w in words):
        raise UsageError(f"{file}:{number}: Match exec is not supported (cei runs no "
                         "commands from an ssh config); use ssh_config: in the plan to "
                         "name another file, or ssh_config: none")
    rest = [w for w in words if w != "all"]
    return " ".join(shlex.quote(w) for w in rest) or None


def _both(outer: str | None, inner: str | None) -> str | None:
    """Criteria that hold where both do."""
    return " ".join(c for c in (outer, inner) if c) or None


def _included(pattern: str) -> list[Path]:
    """The files an Include pattern names, in order; relative ones are under ~/.ssh."""
    expanded = os.path.expanduser(pattern)
    if not os.path.isabs(expanded):
        expanded = os.path.join(os.path.expanduser("~/.ssh"), expanded)
    return [Path(p) for p in sorted(glob.glob(expanded)) if os.path.isfile(p)]
