"""Apply user-data the way cloud-init would, inside the node directory.

Order (cloud-init's stages, flattened): bootcmd; write_files (not deferred); ssh_keys;
ssh_authorized_keys; deferred write_files; runcmd; then `#!` script parts. Files land under
NODE_DIR/root (a node never writes the machine's real /etc). Every module or part this cloud
cannot honour is reported on the console as cloud-init does for unknown modules, never dropped
silently. Several cloud-config parts are merged with lists appended and mappings merged (so
cei's own part never hides the user's commands); later scalars win.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launchplan.ctx.userdata import UserDataPart, parse_userdata
from launchplan.providers.localnode.commands import ProcessGroups, describe_exit, run_logged

# Accepted and meaningless here (the node's keys come from ssh_keys or are generated once).
SILENT_KEYS = frozenset({"ssh_deletekeys", "ssh_genkeytypes"})
HANDLED_KEYS = frozenset(
    {"bootcmd", "write_files", "ssh_keys", "ssh_authorized_keys", "users", "runcmd"}
)
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
_LIST_KEYS = frozenset({"bootcmd", "runcmd", "write_files", "ssh_authorized_keys", "users"})
_B64 = frozenset({"b64", "base64"})
_GZ = frozenset({"gz", "gzip"})
_GZ_B64 = frozenset({"gz+base64", "gzip+base64", "gz+b64", "gzip+b64"})
_PLAIN = frozenset({"", "text/plain"})


def unsupported(module: str) -> str:
    """The console line for something this cloud does not do."""
    return f"cloud-init (local cloud): {module} is not supported here; ignored"


@dataclass
class Applied:
    """What applying user-data left for the SSH server, and what went wrong."""

    host_keys: dict[str, str] = field(default_factory=dict)  # type -> private key text
    authorized_keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def merge_cloud_configs(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cloud-config from several parts: lists appended, mappings merged, scalars replaced."""
    merged: dict[str, Any] = {}
    for config in configs:
        for key, value in config.items():
            old = merged.get(key)
            if key in _LIST_KEYS and isinstance(old, list) and isinstance(value, list):
                merged[key] = old + value
            elif isinstance(old, dict) and isinstance(value, dict):
                merged[key] = {**old, **value}
            else:
                merged[key] = value
    return merged


def decode_content(content: Any, encoding: str) -> bytes:
    """write_files content as bytes, per cloud-init's `encoding` values."""
    raw = content if isinstance(content, bytes) else str(content).encode("utf-8")
    enc = encoding.strip().lower()
    if enc in _PLAIN:
        return raw
    if enc in _B64:
        return base64.b64decode(raw)
    if enc in _GZ:
        return gzip.decompress(raw)
    if enc in _GZ_B64:
        return gzip.decompress(base64.b64decode(raw))
    raise ValueError(f"unknown encoding {encoding!r}")


def parse_permissions(value: Any) -> int:
    """`permissions` as cloud-init takes it: an octal string ("0644") or an int."""
    if value is None:
        return 0o644
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not re.fullmatch(r"(0o?)?[0-7]{1,4}", text):
        raise ValueError(f"permissions {value!r} is not an octal mode")
    return int(text.replace("0o", ""), 8)


def remap(root: Path, path: str) -> Path:
    """The node's view of `path` under `root`; refuses paths that escape it."""
    target = Path(os.path.normpath(root / path.lstrip("/")))
    if target != root and root not in target.parents:
        raise ValueError(f"path {path!r} escapes the node's root")
    return target


def command_argv(item: Any) -> list[str]:
    """A bootcmd/runcmd entry: a string runs under /bin/sh -c, a list is an argv."""
    if isinstance(item, list):
        return [str(arg) for arg in item]
    return ["/bin/sh", "-c", str(item)]


class CloudInit:
    """Applies one node's user-data; `say` writes a line to the node's console."""

    def __init__(
        self,
        node_dir: Path,
        env: Mapping[str, str],
        groups: ProcessGroups,
        say: Callable[[str], None],
    ) -> None:
        self.node_dir = node_dir
        self.home = node_dir / "home"
        self.root = node_dir / "root"
        self.env = env
        self.groups = groups
        self.say = say
        self.result = Applied()

    async def apply(self, data: bytes) -> Applied:
        configs: list[dict[str, Any]] = []
        scripts: list[UserDataPart] = []
        try:
            parts = parse_userdata(data)
        except (OSError, ValueError, EOFError) as exc:
            self.result.errors.append(f"user-data could not be read: {exc}")
            return self.result
        for number, part in enumerate(parts):
            label = f"part {number}" + (f" ({part.filename})" if part.filename else "")
            if part.content_type == "text/cloud-config":
                config = self._load_config(part.text, label)
                if config is not None:
                    configs.append(config)
            elif part.content_type == "text/x-shellscript":
                scripts.append(part)
            else:
                self.say(unsupported(f"{part.content_type} user-data {label}"))
        config = merge_cloud_configs(configs)
        self._report_unsupported(config)
        await self._commands("bootcmd", config.get("bootcmd"))
        self._write_files(config.get("write_files"), deferred=False)
        self._ssh_keys(config.get("ssh_keys"))
        self._authorized_keys(config)
        self._write_files(config.get("write_files"), deferred=True)
        await self._commands("runcmd", config.get("runcmd"))
        await self._scripts(scripts)
        return self.result

    def _load_config(self, text: str, label: str) -> dict[str, Any] | None:
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            self.result.errors.append(f"cloud-config {label} is not valid YAML: {exc}")
            return None
        if config is None:
            return {}
        if not isinstance(config, dict):
            self.result.errors.append(f"cloud-config {label} is not a mapping")
            return None
        for key in ("merge_how", "merge_type"):
            if key in config:
                self.say(unsupported(f"{key} (parts are merged with lists appended)"))
                del config[key]
        return config

    def _report_unsupported(self, config: Mapping[str, Any]) -> None:
        for key in config:
            if key not in HANDLED_KEYS and key not in SILENT_KEYS:
                self.say(unsupported(f"module {key!r}"))

    async def _commands(self, module: str, items: Any) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            self.result.errors.append(f"{module} must be a list")
            return
        for index, item in enumerate(items):
            label = f"{module}[{index}]"
            self.say(f"cloud-init (local cloud): running {label}: {_shown(item)}")
            await self._run(label, command_argv(item))

    async def _run(self, label: str, argv: list[str]) -> None:
        try:
            status, tail = await run_logged(argv, cwd=self.home, env=self.env, groups=self.groups)
        except OSError as exc:
            self.result.errors.append(f"{label} could not start: {exc}")
            return
        if status != 0:
            message = describe_exit(label, status, tail)
            self.say(f"cloud-init (local cloud): {message}")
            self.result.errors.append(message)

    def _write_files(self, items: Any, *, deferred: bool) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            if not deferred:
                self.result.errors.append("write_files must be a list")
            return
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                if not deferred:
                    self.result.errors.append(f"write_files[{index}] must be a mapping")
                continue
            if bool(item.get("defer", False)) != deferred:
                continue
            try:
                self._write_file(index, item)
            except (OSError, ValueError, binascii.Error, EOFError, gzip.BadGzipFile) as exc:
                self.result.errors.append(f"write_files[{index}] failed: {exc}")

    def _write_file(self, index: int, item: Mapping[str, Any]) -> None:
        path = item.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError("path is missing")
        for key in ("owner", "source"):
            if key in item:
                self.say(unsupported(f"write_files[{index}].{key}"))
        data = decode_content(item.get("content", ""), str(item.get("encoding") or ""))
        mode = parse_permissions(item.get("permissions"))
        target = remap(self.root, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if item.get("append") else os.O_TRUNC)
        fd = os.open(target, flags, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(target, mode)
        self.say(f"cloud-init (local cloud): wrote {path} -> {target}")

    def _ssh_keys(self, keys: Any) -> None:
        if keys is None:
            return
        if not isinstance(keys, dict):
            self.result.errors.append("ssh_keys must be a mapping")
            return
        for name, value in keys.items():
            kind, _, half = str(name).rpartition("_")
            if kind in HOST_KEY_TYPES and half == "private":
                self.result.host_keys[kind] = str(value)
            elif not (kind in HOST_KEY_TYPES and half == "public"):
                self.say(unsupported(f"ssh_keys.{name}"))

    def _authorized_keys(self, config: Mapping[str, Any]) -> None:
        keys = config.get("ssh_authorized_keys") or []
        if not isinstance(keys, list):
            self.result.errors.append("ssh_authorized_keys must be a list")
            keys = []
        self.result.authorized_keys.extend(str(key) for key in keys)
        users = config.get("users") or []
        if not isinstance(users, list):
            users = [users]
        reported: set[str] = set()
        for user in users:
            if isinstance(user, dict):
                user_keys = user.get("ssh_authorized_keys") or []
                if isinstance(user_keys, list):
                    self.result.authorized_keys.extend(str(key) for key in user_keys)
                names = {f"users[].{k}" for k in user if k not in ("name", "ssh_authorized_keys")}
            else:
                names = {f"users[] {user!r}"}
            for name in sorted(names - reported):
                self.say(unsupported(name))
            reported |= names

    async def _scripts(self, scripts: list[UserDataPart]) -> None:
        if not scripts:
            return
        folder = self.node_dir / "scripts"
        folder.mkdir(mode=0o700, exist_ok=True)
        for number, part in enumerate(scripts):
            name = os.path.basename(part.filename or "") or "part"
            path = folder / f"{number:03d}-{name}"
            path.write_text(part.text, encoding="utf-8")
            path.chmod(0o700)
            label = f"script {path.name}"
            self.say(f"cloud-init (local cloud): running {label}")
            await self._run(label, [str(path)])


def _shown(item: Any) -> str:
    return shlex.join(str(a) for a in item) if isinstance(item, list) else str(item)
