"""Where a node's SSH server is, how to get there, and how cei decides to trust it."""

from __future__ import annotations

from dataclasses import dataclass

from launchplan.errors import UsageError

POLICY_PINNED = "pinned"
POLICY_ACCEPT_NEW = "accept-new"
POLICIES = (POLICY_PINNED, POLICY_ACCEPT_NEW)


@dataclass(frozen=True)
class SSHTarget:
    """One SSH endpoint: a node, or a bastion on the way to one.

    `host_key` is the OpenSSH public-key line ("ssh-ed25519 AAAA... [comment]") cei pinned for
    it. Policy "pinned" accepts only that key (or a key whose fingerprint is listed); a node
    may instead use "accept-new", the explicit, logged opt-in to trust whatever key it
    presents first. `key_path` is the plan's key file; `identity_files` come from the ssh
    config; the ssh-agent's keys are offered too unless `identities_only`. Without any, ssh's
    default key files are tried. `jump` lists the bastions in order, each an SSHTarget whose
    `name` says how the plan or the ssh config wrote it. `persist`, from the ssh config's
    ControlMaster and ControlPersist, is how long the connection may wait for the next node
    on the same host (remote/idle.py).
    """

    host: str
    port: int
    user: str
    key_path: str | None
    host_key: str | None
    policy: str = POLICY_PINNED
    fingerprints: tuple[str, ...] = ()
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    passphrase_env: str | None = None
    jump: tuple[SSHTarget, ...] = ()
    connect_timeout: float | None = None
    keepalive: float | None = None  # ServerAliveInterval; 0 turns keepalives off
    persist: float = 0.0  # ControlPersist: seconds the connection may wait for a next node
    name: str | None = None  # a bastion as written ("bastion", "admin@192.0.2.1:2222")

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UsageError(
                f"unknown host key policy {self.policy!r} (use one of: {', '.join(POLICIES)})"
            )
        if self.policy == POLICY_PINNED and not (self.host_key or self.fingerprints):
            raise UsageError(
                f"no host key pinned for {self.host}:{self.port} and policy is 'pinned'"
            )

    @property
    def address(self) -> str:
        """host:port as messages name it ([v6]:port for IPv6 literals)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """How messages name this endpoint: its address, or the bastion it is."""
        return f"jump host {self.name} ({self.address})" if self.name else self.address
