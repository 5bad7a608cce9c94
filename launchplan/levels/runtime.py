"""What every engine operation on a run shares: the store, the event stream, providers, SSH."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchplan.ctx.hostkeys import new_client_key, write_client_key
from launchplan.errors import RemoteError, UsageError
from launchplan.levels.events import Emit, Event
from launchplan.levels.sites import SITE_KEY, Elsewhere, this_site, unreachable
from launchplan.plan.model import CloudSpec
from launchplan.plan.render import AUTH_ENV
from launchplan.providers import Provider, driver_capabilities, get_provider
from launchplan.remote import SSHTarget
from launchplan.remote.idle import IdleSessions
from launchplan.remote.local import LocalSession
from launchplan.state import EventRecord, NodeRecord, Store
from launchplan.state.runkeys import private_key

if TYPE_CHECKING:
    from launchplan.remote import Session

# The run's own SSH key, for nodes whose plan names no key: in runs/RUN/ and in the store.
CLIENT_KEY = "client_key"
# programs["run_key"] on a node: it authorised the run's own key (a local node always did).
RUN_KEY_MARK = "run_key"


class _PinnedHosts(Mapping[tuple[str, int], str]):
    """The host keys a run pinned, by address and port: a bastion that is one of the run's own
    nodes is verified by the key cei made for it. Read from the store only when a bastion asks,
    not for every node reached (which would read every node N times in a level of N)."""

    def __init__(self, store: Store, run: str) -> None:
        self._store, self._run = store, run
        self._pins: dict[tuple[str, int], str] | None = None

    def _read(self) -> dict[tuple[str, int], str]:
        if self._pins is None:
            self._pins = {(n.address, n.port or 22): n.host_key
                          for n in self._store.nodes(self._run) if n.address and n.host_key}
        return self._pins

    def __getitem__(self, endpoint: tuple[str, int]) -> str:
        return self._read()[endpoint]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


class RunContext:
    """One command's handle on one run. Thread-safe: node workers share it."""

    def __init__(
        self,
        store: Store,
        run: str,
        emit: Emit,
        cancel: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.run = run
        self.run_dir = store.run_dir(run)
        self.site = this_site(store.home)
        self._emit: Emit | None = emit
        self.cancel = cancel or threading.Event()
        self._lock = threading.Lock()
        self._providers: dict[str, Provider] = {}
        self._idle: IdleSessions | None = None

    # events -------------------------------------------------------------------------------
    def emit(self, kind: str, *, node: str | None = None, state: str | None = None,
             message: str = "", **data: Any) -> None:
        event = Event(kind, self.run, node=node, state=state, message=message, data=data)
        record = dict(data)
        if state is not None:
            record["state"] = state
        if message:
            record["message"] = message
        self.store.append_event(self.run, kind, node, record)
        self._show(event)

    def replay(self, record: EventRecord) -> None:
        """Hand an event another process stored (a controller's) to this command's views."""
        data = dict(record.data)
        state, message = data.pop("state", None), data.pop("message", "")
        when = datetime.fromisoformat(record.time).timestamp()
        self._show(Event(record.kind, self.run, node=record.node, state=state,
                         message=str(message), data=data, time=when))

    def notify(self, kind: str, message: str = "", **data: Any) -> None:
        """An event for the watching views only, not kept in the history (each tick's
        summary: the history keeps the decisions and actions it sums up)."""
        self._show(Event(kind, self.run, message=message, data=data))

    def _show(self, event: Event) -> None:
        """Hand `event` to the command's view. A view that fails (its reader went away: a
        closed pipe) is dropped, noted in the history, and never fails or strands the run."""
        emit = self._emit
        if emit is None:
            return
        try:
            emit(event)
        except Exception as exc:
            self._emit = None
            self.store.append_event(self.run, "warning", event.node, {
                "message": f"the command's output failed ({type(exc).__name__}: {exc}); "
                           "the run goes on without it"})

    # providers ----------------------------------------------------------------------------
    def cloud_record(self, cloud: CloudSpec) -> dict[str, Any]:
        """A cloud profile as a node or resource records it: no credentials, and for a cloud
        whose nodes live on one machine, which machine (sites.py)."""
        record = cloud.public_options()
        if driver_capabilities(cloud.driver).on_this_machine:
            record[SITE_KEY] = self.site
        return record

    def provider(self, driver: str, options: Mapping[str, Any]) -> Provider:
        """The provider for a cloud profile; a stored profile (credentials scrubbed) gets them
        back from the environment variables the plan named.

        Elsewhere when the profile's nodes live on another machine (a local cloud's)."""
        why = unreachable(driver, options, self.site)
        if why is not None:
            raise Elsewhere(why)
        options = {k: v for k, v in options.items() if k != SITE_KEY}
        if "credentials" not in options and options.get(AUTH_ENV):
            options = {**options, "credentials": self._credentials(driver, options)}
        key = driver + json.dumps(options, sort_keys=True, default=str)
        with self._lock:
            provider = self._providers.get(key)
            if provider is None:
                provider = get_provider(driver, options, self.run_dir)
                self._providers[key] = provider
            return provider

    def _credentials(self, driver: str, options: Mapping[str, Any]) -> dict[str, str]:
        credentials = {}
        for field, variable in options[AUTH_ENV]:
            value = os.environ.get(variable)
            if value is None:
                cloud = options.get("provider") or driver
                raise UsageError(f"set {variable} to reach the {cloud} cloud of run {self.run}")
            credentials[field] = value
        return credentials

    # SSH ----------------------------------------------------------------------------------
    def client_key(self, create: bool = False) -> tuple[Path, str]:
        """The run's own key pair, for nodes whose plan names no key: (private file, public).

        Made once per run (`create`, as a node is about to be made): kept in the run directory
        (0600) and in the store, the private half sealed under CEI_STATE_KEY (or not at all
        without it), so that another machine acting on the run takes it from there.
        """
        path = self.run_dir / CLIENT_KEY
        with self._lock:
            if path.exists():
                return path, Path(str(path) + ".pub").read_text().strip()
            record = self.store.run_key(self.run, CLIENT_KEY)
            if record is None:
                if not create:
                    raise RemoteError(f"run {self.run} has no SSH key of its own on record "
                                      f"(nothing in {path} or in the store)")
                private, public = new_client_key()
                record = self.store.save_run_key(self.run, CLIENT_KEY, public, private)
                if record.public_key == public:  # else another process made one first
                    write_client_key(path, private, public)
                    return path, public
            write_client_key(path, private_key(record), record.public_key)
            return path, record.public_key

    def target(self, node: NodeRecord) -> SSHTarget:
        if not node.address:
            raise RemoteError(f"{node.node} has no known address")
        key = node.ssh_key
        if key is None and (driver_capabilities(node.driver).generated_login_key
                            or node.programs.get(RUN_KEY_MARK)):
            key = str(self.client_key()[0])
        # once a key is pinned, every policy checks it (accept-new accepts only a first key)
        accept_new = not node.host_key and node.programs.get("host_key_policy") == "accept-new"
        fingerprints = tuple(node.programs.get("host_key_fingerprints") or ())
        if not (accept_new or node.host_key or fingerprints):
            raise RemoteError(
                f"{node.node}: no pinned host key is known for {node.address}; add it to "
                "~/.ssh/known_hosts, or opt in with host_key_policy: accept-new"
            )
        from launchplan.remote.route import Settings, node_target  # paramiko: only for SSH

        return node_target(
            node.address,
            port=node.port,
            user=node.ssh_user,
            key_path=key,
            host_key=node.host_key,
            policy="accept-new" if accept_new else "pinned",
            fingerprints=fingerprints,
            settings=Settings.from_record(node.programs.get("ssh") or {}),
            pins=_PinnedHosts(self.store, self.run),
        )

    def open_session(self, node: NodeRecord, retry_for: float) -> Session:
        """A session to the node: one kept open for its SSH target (keeping_sessions), else a
        new connection, tried for up to `retry_for` seconds. Give it back with `release`."""
        target = self.target(node)
        idle = self._idle
        kept = idle.take(target) if idle is not None else None
        if kept is not None:
            return kept
        from launchplan.remote import Session  # paramiko loads when a node is first reached

        return Session.open(target, retry_for=retry_for, cancel=self.cancel)

    def release(self, node: NodeRecord, session: Session | LocalSession, worked: bool) -> None:
        """Done with the node's session. Within keeping_sessions, a session to an existing
        host over which the node's work went through (`worked`) is kept for the next node on
        that host as long as the ssh config's ControlPersist says (remote/idle.py); any other
        is closed."""
        idle = self._idle
        if (idle is not None and worked and not isinstance(session, LocalSession)
                and not driver_capabilities(node.driver).creates_machines):
            idle.give(session)
        else:
            session.close()

    @contextmanager
    def keeping_sessions(self, limit: int) -> Iterator[None]:
        """Within: `release` keeps up to `limit` sessions to existing hosts open for the next
        node on the same host (a service per level on one host), where the ssh config shares
        connections (remote/idle.py); all closed at the end."""
        if self._idle is not None:  # already kept by an enclosing operation
            yield
            return
        idle = self._idle = IdleSessions(limit=limit)
        try:
            yield
        finally:
            self._idle = None
            idle.close()

    def open_host(self, node: NodeRecord, retry_for: float) -> Session | LocalSession:
        """Where the node's programs run: this machine for `local_exe`, else the node."""
        if node.programs.get("local_exe"):
            return LocalSession()
        return self.open_session(node, retry_for)

    def interrupt(self) -> None:
        """Stop starting new work; in-flight remote programs stop their own process groups."""
        self.cancel.set()
