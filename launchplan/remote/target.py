"""Where a node's SSH server is and how cei decides to trust it."""

from __future__ import annotations

from dataclasses import dataclass

from launchplan.errors import UsageError

POLICY_PINNED = "pinned"
POLICY_ACCEPT_NEW = "accept-new"
POLICIES = (POLICY_PINNED, POLICY_ACCEPT_NEW)


@dataclass(frozen=True)
class SSHTarget:
    """One node's SSH endpoint.

    `host_key` is the OpenSSH public-key line ("ssh-ed25519 AAAA... [comment]") cei pinned for
    the node. Policy "pinned" accepts only that key; "accept-new" is the explicit, logged
    opt-in to trust whatever key the node presents. `key_path` None means the ssh-agent and
    the default keys in ~/.ssh.
    """

    host: str
    port: int
    user: str
    key_path: str | None
    host_key: str | None
    policy: str = POLICY_PINNED
    fingerprints: tuple[str, ...] = ()

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
