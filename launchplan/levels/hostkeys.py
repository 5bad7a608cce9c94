"""How a node's SSH host key becomes known before cei trusts an answer from it.

By policy: `pinned` (the default) — cei generates a cloud node's key and sends it in the
user-data; an existing host's key comes from the plan's `host_key` or ~/.ssh/known_hosts.
`console` — the fingerprints cloud-init prints on the node's console. `accept-new` — the first
key that answers, pinned from then on, with a warning.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from launchplan.ctx.hostkeys import (
    HostKey,
    fingerprint,
    generate_host_key,
    parse_console_fingerprints,
)
from launchplan.errors import CeiError, Interrupted, StepTimeout
from launchplan.levels import events as ev
from launchplan.levels.nodelog import NodeLog
from launchplan.levels.runtime import RunContext
from launchplan.plan.model import NodeSpec
from launchplan.providers.base import Provider
from launchplan.state import NodeRecord

if TYPE_CHECKING:
    from launchplan.remote import Session

CONSOLE_POLL = 1.0  # seconds between reads of a node's console


def key_to_send(spec: NodeSpec, provider: Provider) -> HostKey | None:
    """The key cei makes for a node it creates under `pinned`, so nothing is trusted on first
    use (the provider refuses the user-data that carries it if it cannot pass user-data)."""
    if not provider.capabilities.creates_machines or spec.host_key_policy != "pinned":
        return None
    return generate_host_key()


def reads_console(spec: NodeSpec, provider: Provider) -> bool:
    """Whether pin_before_connecting waits for the node's console (host_key_policy console)."""
    return spec.host_key_policy == "console" and provider.capabilities.creates_machines


def pin_before_connecting(ctx: RunContext, spec: NodeSpec, provider: Provider,
                          record: NodeRecord, deadline: float, log: NodeLog) -> dict[str, Any]:
    """What is known of a key cei did not make, before the first SSH connection: the node's
    fields to store (`record` is the node as stored, its address known)."""
    if record.host_key or spec.host_key_policy == "accept-new":
        return {}
    capabilities = provider.capabilities
    if spec.host_key_policy == "console" and not capabilities.console:
        known = "" if capabilities.creates_machines else ", with host_key: or known_hosts"
        raise CeiError(f"host_key_policy console needs a cloud console; the {spec.cloud.name} "
                       f"cloud has none (use host_key_policy: pinned{known})")
    if not capabilities.creates_machines:
        line = existing_host_key(spec, str(record.address), record.port)
        return {"host_key": line, "host_key_fingerprint": fingerprint(line)}
    if spec.host_key_policy == "console":
        found = _console_fingerprints(ctx, provider, str(record.resource_id), deadline)
        log.note(f"host key fingerprints from the console: {', '.join(found)}")
        return {"programs": {**record.programs, "host_key_fingerprints": found}}
    return {}


def existing_host_key(spec: NodeSpec, address: str, port: int | None) -> str:
    """The key of a host cei did not make: the plan's `host_key`, else known_hosts (looked up
    as ssh would, through the ssh config); CeiError saying how to pin it when neither has it."""
    if spec.host_key:
        return spec.host_key
    from launchplan.remote.route import known_host_key  # loads paramiko: only when needed

    line, looked_up = known_host_key(address, port, spec.ssh_config)
    if line is None:
        raise CeiError(
            f"no host key is known for the existing host {address} (known_hosts has none "
            f"for {looked_up}): set host_key: \"ssh-ed25519 AAAA...\" on service "
            f"{spec.service} (or its cloud), add the host to ~/.ssh/known_hosts, or opt in "
            "to trusting its first answer with host_key_policy: accept-new")
    return line


def pin_after_connecting(ctx: RunContext, spec: NodeSpec, record: NodeRecord,
                         session: Session, log: NodeLog) -> None:
    """Pin the key that answered when none was pinned before (console, accept-new)."""
    if record.host_key is not None:
        return
    ctx.store.update_node(ctx.run, spec.node, host_key=session.host_key,
                          host_key_fingerprint=session.host_key_fingerprint)
    if spec.host_key_policy == "accept-new":
        warning = (f"accepted the unverified host key {session.host_key_fingerprint} of "
                   f"{session.target.address} (host_key_policy: accept-new)")
        log.note(warning)
        ctx.emit(ev.WARNING, node=spec.node, message=warning)


def _console_fingerprints(ctx: RunContext, provider: Provider, resource_id: str,
                          deadline: float) -> list[str]:
    """Poll the node's console until cloud-init has printed its host key fingerprints."""
    while True:
        found = parse_console_fingerprints(provider.console_output(resource_id) or "")
        if found:
            return found
        if ctx.cancel.wait(CONSOLE_POLL):
            raise Interrupted("interrupted while reading the console")
        if time.monotonic() >= deadline:
            raise StepTimeout(
                f"no SSH host key fingerprints appeared on the console of {resource_id} "
                "within the node's timeout (host_key_policy: console)")
