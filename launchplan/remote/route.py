"""How to reach a node: the plan's SSH settings first, then the user's ssh config, then ssh's
defaults, into one SSHTarget with its chain of bastions.

Each bastion is looked up in the ssh config too (its HostName, Port, User, IdentityFile), and
the first one's own ProxyJump is followed, as ssh does. Every bastion's host key must be known
before cei connects: pinned in the plan (`ssh_jump: [{host: ..., host_key: ...}]`), pinned by
this run (a bastion that is one of the run's own nodes), or in known_hosts. An unknown one is
refused with a message naming it; cei never trusts a bastion on first use.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launchplan.errors import RemoteError, UsageError
from launchplan.remote import knownhosts, sshconfig
from launchplan.remote.target import POLICY_PINNED, SSHTarget

MAX_HOPS = 8
# [ssh://][user@]host[:port], host possibly an [IPv6] literal
_HOP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@\s/]+)@)?"
                  r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\s/\[\]]+))"
                  r"(?::(?P<port>[0-9]{1,5}))?/?$")

Pins = Mapping[tuple[str, int], str]  # (host, port) -> host key line cei pinned itself


@dataclass(frozen=True)
class Settings:
    """A node's SSH settings beyond user, key and port, as the plan wrote them."""

    ssh_config: str | None = None  # None: ~/.ssh/config; "none": no file
    ssh_jump: tuple[Mapping[str, str], ...] | None = None  # None: the config's ProxyJump
    ssh_key_passphrase_env: str | None = None

    @classmethod
    def from_record(cls, stored: Mapping[str, Any]) -> Settings:
        jump = stored.get("ssh_jump")
        return cls(stored.get("ssh_config"), None if jump is None else tuple(jump),
                   stored.get("ssh_key_passphrase_env"))


@dataclass(frozen=True)
class Hop:
    """A bastion as written: "[ssh://][user@]host[:port]"."""

    text: str
    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Hop:
        match = _HOP.match(text.strip())
        port = int(match.group("port")) if match and match.group("port") else None
        if match is None or (port is not None and not 0 < port < 65536):
            raise UsageError(f"bad jump host {text!r}: write [user@]host[:port]")
        return cls(text, match.group("user"), match.group("v6") or match.group("host"), port)


def node_target(host: str, *, port: int | None, user: str | None, key_path: str | None,
                host_key: str | None, policy: str = POLICY_PINNED,
                fingerprints: tuple[str, ...] = (), settings: Settings = Settings(),
                pins: Pins | None = None) -> SSHTarget:
    """The target for a node at `host` (an address or an ssh config alias); what the plan
    sets (port, user, key, jumps) wins over the ssh config."""
    found = sshconfig.lookup(host, settings.ssh_config)
    jump = jump_hosts(settings, key_path, pins, found, port)
    return SSHTarget(
        host=found.hostname,
        port=port or found.port or 22,
        user=user or found.user or getpass.getuser(),
        key_path=key_path,
        host_key=host_key,
        policy=policy,
        fingerprints=fingerprints,
        identity_files=found.identity_files,
        identities_only=found.identities_only,
        passphrase_env=settings.ssh_key_passphrase_env,
        jump=jump,
        connect_timeout=found.connect_timeout,
        keepalive=found.server_alive_interval,
        persist=found.control_persist,
    )


def jump_hosts(settings: Settings, key_path: str | None = None, pins: Pins | None = None,
               found: sshconfig.HostConfig | None = None,
               port: int | None = None) -> tuple[SSHTarget, ...]:
    """The bastions on the way to a node: the plan's `ssh_jump`, else the ProxyJump of the
    node's ssh config entry `found` (None: the node's address is not known yet)."""
    if settings.ssh_jump is not None:
        hops = [(Hop.parse(h["host"]), h.get("host_key")) for h in settings.ssh_jump]
    else:
        hops = [(Hop.parse(text), None) for text in (found.proxy_jump if found else None) or ()]
    seen = (_endpoint(found, port),) if found else ()
    return _chain(hops, key_path, settings, {} if pins is None else pins, seen)


def known_host_key(host: str, port: int | None,
                   ssh_config: str | None = None) -> tuple[str | None, str]:
    """The key known_hosts holds for a host cei did not make (looked up as ssh would: by its
    HostKeyAlias or HostName and port), and the name:port it was looked up as."""
    found = sshconfig.lookup(host, ssh_config)
    name, number = found.host_key_alias or found.hostname, port or found.port or 22
    return knownhosts.known_host_key(name, number, found.known_hosts_files), f"{name}:{number}"


def _endpoint(found: sshconfig.HostConfig, port: int | None) -> tuple[str, int]:
    return found.hostname, port or found.port or 22


def _chain(hops: Sequence[tuple[Hop, str | None]], key_path: str | None, settings: Settings,
           pins: Pins, seen: tuple[tuple[str, int], ...]) -> tuple[SSHTarget, ...]:
    """The bastions in order, the first one's own ProxyJump (from the ssh config) before it."""
    if not hops:
        return ()
    if len(seen) + len(hops) > MAX_HOPS + 1:
        raise UsageError(f"more than {MAX_HOPS} jump hosts on the way to a node: is there a "
                         "ProxyJump loop?")
    targets = []
    for hop, pinned in hops:
        found = sshconfig.lookup(hop.host, settings.ssh_config)
        endpoint = _endpoint(found, hop.port)
        if endpoint in seen:
            raise UsageError(f"jump host {hop.text} ({endpoint[0]}:{endpoint[1]}) appears "
                             "twice on the way to the node: a ProxyJump loop")
        seen = (*seen, endpoint)
        key = pinned or pins.get(endpoint) or knownhosts.known_host_key(
            found.host_key_alias or endpoint[0], endpoint[1], found.known_hosts_files)
        if key is None:
            raise RemoteError(
                f"jump host {hop.text} ({endpoint[0]}:{endpoint[1]}): no host key is known "
                "for it, and cei never trusts a bastion on first use: add it to "
                "~/.ssh/known_hosts (check what ssh-keyscan prints), or pin it with "
                "ssh_jump: [{host: ..., host_key: \"ssh-ed25519 AAAA...\"}]")
        targets.append((found, SSHTarget(
            host=endpoint[0], port=endpoint[1],
            user=hop.user or found.user or getpass.getuser(),
            key_path=key_path, host_key=key,
            identity_files=found.identity_files, identities_only=found.identities_only,
            passphrase_env=settings.ssh_key_passphrase_env,
            connect_timeout=found.connect_timeout, keepalive=found.server_alive_interval,
            name=hop.text)))
    first = targets[0][0]
    before = [(Hop.parse(text), None) for text in first.proxy_jump or ()]
    return (*_chain(before, key_path, settings, pins, seen), *(t for _, t in targets))
