"""The immutable plan model: what the loader produces and the engine consumes.

A `Plan` keeps each service's declaration unrendered (its values may be templates that refer to
earlier levels' outputs); `launchplan.plan.render_service` turns a declaration into one
`NodeSpec` per node once those outputs are known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budgets import OUTPUT_BYTES
from .elastic import ElasticSpec


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True)
class ProgramSpec:
    """A boot, ready or terminate program: a local file to upload and run, or a shell line."""

    run: str | None = None  # absolute local path; uploaded and executed with `args` as argv
    command: str | None = None  # inline shell line, run by /bin/sh -c; `args` become $1...
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    interval: float = 2.0  # ready programs only: seconds between attempts
    retries: int = 0  # boot and terminate: runs again after a non-zero exit

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "command": self.command,
            "args": list(self.args),
            "env": dict(self.env),
            "timeout": self.timeout,
            "interval": self.interval,
            "retries": self.retries,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProgramSpec:
        return cls(
            run=data.get("run"),
            command=data.get("command"),
            args=tuple(data.get("args") or ()),
            env=dict(data.get("env") or {}),
            timeout=float(data.get("timeout", 600.0)),
            interval=float(data.get("interval", 2.0)),
            retries=int(data.get("retries", 0)),
        )


@dataclass(frozen=True)
class CloudSpec:
    """A rendered cloud profile, with a service's overrides merged in.

    `options` holds every profile key but `driver` (image, size, region, credentials, ...).
    `credentials` must never be persisted: use `public_options()` for anything stored.
    """

    name: str
    driver: str  # local | ec2 | libcloud | static
    options: Mapping[str, Any] = field(default_factory=dict)

    SECRET_KEYS = frozenset({"credentials"})

    def public_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k not in self.SECRET_KEYS}


@dataclass(frozen=True)
class NodeSpec:
    """One node of a service, fully rendered for launch."""

    run: str
    service: str
    index: int
    count: int
    level: int  # 1-based position of the level in the plan
    level_name: str
    cloud: CloudSpec
    host: str | None = None  # an existing host (static driver): no provider create/destroy
    userdata: tuple[str, ...] = ()  # rendered user-data parts, in plan order
    config: Mapping[str, Any] = field(default_factory=dict)
    boot: ProgramSpec | None = None
    ready: ProgramSpec | None = None
    terminate: ProgramSpec | None = None
    reconfigure: ProgramSpec | None = None  # run when the nodes it was told about change
    metrics: ProgramSpec | None = None  # prints custom metrics for an elastic policy
    elastic: ElasticSpec | None = None  # what `cei watch` keeps true of the service
    timeout: float = 600.0  # bound on the whole create-to-ready path of this node
    ssh_user: str | None = None
    ssh_key: str | None = None  # absolute path of the private key file, `~` expanded
    ssh_port: int | None = None  # None: the ssh config's Port, else 22
    # the OpenSSH client config to read (absolute path), "none", or None for ~/.ssh/config
    ssh_config: str | None = None
    # bastions in order ({"host": "[user@]host[:port]", "host_key": ...}); None: the ssh
    # config's ProxyJump decides, (): none at all
    ssh_jump: tuple[Mapping[str, str], ...] | None = None
    ssh_key_passphrase_env: str | None = None  # the variable's name, never its value
    host_key_policy: str = "pinned"  # pinned | console | accept-new
    host_key: str | None = None  # an existing host's public key line, pinned (driver static)
    # the execution-engine agent to start on the node ({"slots": N}), or None for no agent
    agent: Mapping[str, Any] | None = None
    compat: str | None = None  # "cloudinitd": programs see the files cloudinit.d staged
    stage_files: Mapping[str, str] = field(default_factory=dict)  # name -> text, in the stage
    local_exe: bool = False  # programs run on the controller machine, not over SSH
    output_limit: int = OUTPUT_BYTES  # largest outputs document of the boot program (bytes)
    # values of the plan's secret variables, masked wherever cei writes what it ran
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def node(self) -> str:
        return f"{self.service}/{self.index}"

    def ssh_settings(self) -> dict[str, Any]:
        """The SSH keys beyond user, key and port, as the node's record keeps them (plan names;
        only what the plan set, so the ssh config decides the rest)."""
        settings = {
            "ssh_config": self.ssh_config,
            "ssh_jump": None if self.ssh_jump is None else [dict(h) for h in self.ssh_jump],
            "ssh_key_passphrase_env": self.ssh_key_passphrase_env,
        }
        return {k: v for k, v in settings.items() if v is not None}

    @property
    def needs_ssh(self) -> bool:
        programs = (self.boot, self.ready, self.terminate, self.reconfigure, self.metrics)
        sensors = self.elastic is not None and self.elastic.uses_metric
        if self.agent is not None or sensors:
            return True
        return not self.local_exe and any(p is not None for p in programs)


@dataclass(frozen=True)
class ServiceDecl:
    """A service as written in the plan: values may still be templates."""

    name: str
    level: int
    level_name: str
    raw: Mapping[str, Any]  # defaults merged in; plain Python values (no YAML nodes)
    location: SourceLocation
    # keys of `raw` that came from the plan's `defaults` (not written in the service itself)
    from_defaults: frozenset[str] = frozenset()
    # where each value of `raw` was written, by its path within `raw` (() = the service's name)
    locations: Mapping[tuple[Any, ...], SourceLocation] = field(
        default_factory=dict, repr=False, compare=False
    )


@dataclass(frozen=True)
class LevelDecl:
    index: int  # 1-based
    name: str
    services: tuple[ServiceDecl, ...]


@dataclass(frozen=True)
class Plan:
    name: str
    path: Path
    base_dir: Path
    variables: Mapping[str, Any]
    clouds: Mapping[str, Mapping[str, Any]]  # unrendered profiles, implicit `local` included
    levels: tuple[LevelDecl, ...]
    # names of the variables whose values are secret (masked in logs, events, the store)
    secrets: frozenset[str] = frozenset()
    # where each value of the plan file was written, by its path in the document
    locations: Mapping[tuple[Any, ...], SourceLocation] = field(
        default_factory=dict, repr=False, compare=False
    )

    def service(self, name: str) -> ServiceDecl:
        for level in self.levels:
            for svc in level.services:
                if svc.name == name:
                    return svc
        raise KeyError(name)

    def services(self) -> tuple[ServiceDecl, ...]:
        return tuple(s for level in self.levels for s in level.services)


@dataclass(frozen=True)
class NodeView:
    """What templates of later levels see of one node (`services.X.nodes[i]`)."""

    address: str | None
    hostname: str | None
    outputs: Mapping[str, Any]


@dataclass(frozen=True)
class ServiceView:
    """What templates of later levels see of one service (`services.X`)."""

    name: str
    nodes: tuple[NodeView, ...]

    @property
    def outputs(self) -> Mapping[str, Any]:
        return self.nodes[0].outputs if self.nodes else {}

    @property
    def count(self) -> int:
        return len(self.nodes)
