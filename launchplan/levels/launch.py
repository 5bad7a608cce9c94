"""The level engine: levels strictly in order, the nodes of a level in parallel."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchplan.ctx.environment import (
    LevelContext,
    local_stage_dir,
    node_environment,
    stage_dir,
)
from launchplan.ctx.hostkeys import HostKey
from launchplan.ctx.userdata import build_userdata
from launchplan.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CeiError,
    StateUnavailableError,
    StepTimeout,
)
from launchplan.levels import events as ev
from launchplan.levels import hostkeys, states
from launchplan.levels.agents import install_agent
from launchplan.levels.masking import Masker
from launchplan.levels.nodelog import NodeLog, node_log_path
from launchplan.levels.programs import Stage
from launchplan.levels.runtime import RUN_KEY_MARK, RunContext
from launchplan.plan import render_service
from launchplan.plan.model import NodeSpec, NodeView, Plan, ServiceView
from launchplan.providers import driver_capabilities
from launchplan.providers.base import RUNNING, NodeInfo, NodeRequest, Provider
from launchplan.providers.tags import node_tags
from launchplan.remote.local import LocalSession
from launchplan.state import ElasticRecord, NodeRecord, Store

if TYPE_CHECKING:
    from launchplan.remote import Session

DEFAULT_PARALLEL = 64
# Nodes in these states are going or gone: peers are no longer told about them.
GONE_STATES = frozenset({states.FAILED, states.RETIRING, states.TERMINATING, states.TERMINATED})
CLOUD_INIT_WAIT = "if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait; fi"


@dataclass
class Failure:
    node: str
    message: str
    timeout: bool = False
    interrupted: bool = False  # cut short by an interrupt (or the launch's deadline)


@dataclass
class LaunchResult:
    run: str
    status: str  # ready | failed | interrupted
    failures: list[Failure] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.status == states.RUN_INTERRUPTED:
            return EXIT_INTERRUPTED
        if not self.failures:
            return EXIT_OK
        return EXIT_TIMEOUT if all(f.timeout for f in self.failures) else EXIT_FAILED


class _Stopped(Exception):
    """A node stops between steps: the run was interrupted or another node failed."""


class Launcher:
    """Launches a plan as a run. `interrupt()` may be called from a signal handler."""

    def __init__(self, ctx: RunContext, plan: Plan, parallel: int = DEFAULT_PARALLEL) -> None:
        self.ctx = ctx
        self.plan = plan
        self.parallel = max(1, parallel)
        self._out_of_time: str | None = None

    def interrupt(self) -> None:
        self.ctx.interrupt()

    def time_out(self, why: str) -> None:
        """The launch ran past its deadline: stop as on Ctrl-C, but fail as timed out (exit 3)."""
        self._out_of_time = why
        self.ctx.interrupt()

    def launch(self) -> LaunchResult:
        ctx = self.ctx
        started = time.monotonic()
        result = LaunchResult(ctx.run, states.RUN_LAUNCHING)
        with ctx.store.locked(ctx.run):
            ctx.emit(ev.RUN_STARTED, plan=self.plan.name, path=str(self.plan.path),
                     levels=len(self.plan.levels))
            try:
                with ctx.keeping_sessions(self.parallel):  # for later levels on the same host
                    self._launch_levels(result)
            except StateUnavailableError:
                with contextlib.suppress(StateUnavailableError):  # recorded once it is back
                    ctx.store.set_run_status(ctx.run, states.RUN_FAILED)
                raise
            cancelled = ctx.cancel.is_set()
            out_of_time = self._out_of_time if cancelled else None
            if out_of_time is not None:
                result.status = states.RUN_FAILED
                result.failures = self._timed_out(result.failures, out_of_time)
            elif cancelled:
                result.status = states.RUN_INTERRUPTED
            elif result.failures:
                result.status = states.RUN_FAILED
            else:
                result.status = states.RUN_READY
            result.elapsed = time.monotonic() - started
            ctx.store.set_run_status(ctx.run, result.status)
            ctx.emit(ev.RUN_FINISHED, state=result.status, elapsed=round(result.elapsed, 3),
                     failures=[{"node": f.node, "message": f.message, "timeout": f.timeout}
                               for f in result.failures],
                     **({"deadline": out_of_time} if out_of_time else {}))
        return result

    def _launch_levels(self, result: LaunchResult) -> None:
        for level in self.plan.levels:
            if self.ctx.cancel.is_set():
                return
            failures = self._launch_level(level.index, level.name)
            result.failures.extend(failures)
            if failures:
                return

    def _timed_out(self, failures: list[Failure], why: str) -> list[Failure]:
        """What the deadline cut short fails as timed out; failures of their own stay."""
        timed_out = [Failure(f.node, f"{why}; {f.message}", timeout=True) if f.interrupted else f
                     for f in failures]
        if not any(f.interrupted for f in failures):
            timed_out.append(Failure(self.ctx.run, why, timeout=True))
        return timed_out

    def _launch_level(self, index: int, name: str) -> list[Failure]:
        ctx = self.ctx
        ctx.emit(ev.LEVEL_STARTED, level=name, index=index)
        views = service_views(ctx.store, ctx.run)
        specs: list[NodeSpec] = []
        failures: list[Failure] = []
        for decl in self.plan.levels[index - 1].services:
            try:
                rendered = render_service(self.plan, decl.name, ctx.run, views)
            except CeiError as exc:
                failures.append(Failure(f"{decl.name}/*", str(exc)))
                continue
            specs.extend(rendered)
            record_elastic(ctx, rendered)
        if failures:
            ctx.emit(ev.LEVEL_FINISHED, level=name, index=index, state=states.RUN_FAILED)
            return failures
        failures = launch_nodes(ctx, specs, self.parallel, stop_together=True)
        ctx.emit(ev.LEVEL_FINISHED, level=name, index=index,
                 state=states.RUN_FAILED if failures else states.READY)
        return failures


def launch_nodes(ctx: RunContext, specs: Sequence[NodeSpec], parallel: int,
                 stop_together: bool) -> list[Failure]:
    """Launch `specs` in parallel, each from pending to ready; the failures (empty: all ready).

    `stop_together`: a failed node stops the others at their next step (a level of a launch);
    otherwise each node stands alone (nodes a controller adds).
    """
    reserve_nodes(ctx, specs)
    return run_launches(ctx, specs, parallel, stop_together)


def reserve_nodes(ctx: RunContext, specs: Sequence[NodeSpec], origin: str = "launch") -> None:
    """Record each node `pending`: its identity is taken before anything is made for it.

    `origin` says who launches it ("launch", or "controller" for nodes `cei watch`, `cei
    scale` and `cei repair` add), so a later controller knows which half-launched nodes were
    left by one of its kind and are its to roll back.
    """
    ctx.store.save_nodes([_pending_record(ctx, spec, origin) for spec in specs])
    for spec in specs:
        ctx.emit(ev.NODE_STATE, node=spec.node, state=states.PENDING, service=spec.service,
                 level=spec.level_name)


def run_launches(ctx: RunContext, specs: Sequence[NodeSpec], parallel: int,
                 stop_together: bool) -> list[Failure]:
    """Take reserved nodes from pending to ready in parallel (see launch_nodes)."""
    if not specs:
        return []
    level_failed = threading.Event()
    launching = {spec.node for spec in specs}
    context = LevelContext(ctx.run, [n for n in known_nodes(ctx.store, ctx.run)
                                     if n["node"] not in launching])
    launchers = [_NodeLauncher(ctx, spec, level_failed if stop_together else None, context)
                 for spec in specs]

    def one(launcher: _NodeLauncher) -> Failure | None:
        try:
            return launcher.run()
        except StateUnavailableError:
            ctx.interrupt()  # nothing more can be recorded: stop every node's work now
            raise

    with ThreadPoolExecutor(max_workers=min(max(1, parallel), len(specs)),
                            thread_name_prefix="launch") as pool:
        _create_together(ctx, launchers, pool, parallel)
        list(pool.map(one, [launcher for launcher in launchers if not launcher.done]))
    return [launcher.failure for launcher in launchers if launcher.failure is not None]


def _create_together(ctx: RunContext, launchers: Sequence[_NodeLauncher],
                     pool: ThreadPoolExecutor, parallel: int) -> None:
    """Create together the nodes whose cloud makes many in one call (capabilities.batches).

    Every node's intent is committed first (in parallel), then one provider.create_many makes
    as few cloud calls as it can (none more after an interrupt), and each id is committed the
    moment the cloud gives it. A node that fails or is stopped here is `done`; the others go
    on from booting in their own threads. Nodes of other clouds are each created in their own
    thread, so that one boots while the next is still being made.
    """
    groups: dict[int, tuple[Provider, list[_NodeLauncher]]] = {}
    for launcher in launchers:
        provider = launcher.batching_provider()
        if provider is not None:
            groups.setdefault(id(provider), (provider, []))[1].append(launcher)
    for provider, group in groups.values():
        requests = list(pool.map(_NodeLauncher.intend, group, [provider] * len(group)))
        _create_group(provider, [(launcher, request) for launcher, request
                                 in zip(group, requests, strict=True)
                                 if request is not None and launcher.may_create()],
                      parallel, ctx.cancel)


def _create_group(provider: Provider, asking: Sequence[tuple[_NodeLauncher, NodeRequest]],
                  parallel: int, cancel: threading.Event) -> None:
    by_token = {request.token: launcher for launcher, request in asking}
    try:
        results: Sequence[NodeInfo | Exception] = provider.create_many(
            [request for _, request in asking],
            lambda request, info: by_token[request.token].created(request, info),
            parallel, cancel)
    except Exception as exc:  # a bug: the nodes not yet made fail, the run goes on
        results = [exc] * len(asking)
    for (launcher, _), result in zip(asking, results, strict=True):
        if isinstance(result, Exception):
            launcher.failed(result)


def record_elastic(ctx: RunContext, specs: Sequence[NodeSpec]) -> None:
    """Record the desired state of an elastic service the first time it is launched."""
    spec = specs[0] if specs else None
    if spec is None or spec.elastic is None:
        return
    if ctx.store.find_elastic(ctx.run, spec.service) is not None:
        return
    ctx.store.save_elastic(ElasticRecord(
        run=ctx.run, service=spec.service, level=spec.level, spec=spec.elastic.to_dict(),
        min=spec.elastic.min, desired=spec.count, max=spec.elastic.max,
        decision={"desired": spec.count, "reason": f"launched with {spec.count} node(s)"}))


def service_views(store: Store, run: str) -> dict[str, ServiceView]:
    """What later levels' templates see: the ready nodes of each service, by index."""
    by_service: dict[str, list[NodeRecord]] = defaultdict(list)
    for node in store.nodes(run):
        if node.state == states.READY:
            by_service[node.service].append(node)
    return {
        name: ServiceView(name, tuple(
            NodeView(n.address, n.hostname, dict(n.outputs))
            for n in sorted(nodes, key=lambda n: n.index)))
        for name, nodes in by_service.items()
    }


def known_nodes(store: Store, run: str) -> list[dict[str, Any]]:
    """The context document's nodes: every node that has an address and is not going away."""
    return [_known(n) for n in store.nodes(run) if n.address and n.state not in GONE_STATES]


def _known(node: NodeRecord) -> dict[str, Any]:
    return {"service": node.service, "index": node.index, "node": node.node,
            "address": node.address, "hostname": node.hostname,
            "host_key_fingerprint": node.host_key_fingerprint, "outputs": node.outputs}


def uses_run_key(spec: NodeSpec) -> bool:
    """Whether cei logs in to the node with the run's own key: the plan names no key for it, and
    its cloud makes it and can hand it the key in its user-data (not an existing host)."""
    capabilities = driver_capabilities(spec.cloud.driver)
    return (spec.ssh_key is None and capabilities.creates_machines
            and capabilities.takes_userdata)


def _pending_record(ctx: RunContext, spec: NodeSpec, origin: str) -> NodeRecord:
    return NodeRecord(
        run=spec.run, node=spec.node, service=spec.service, index=spec.index,
        level=spec.level, level_name=spec.level_name, driver=spec.cloud.driver,
        cloud=ctx.cloud_record(spec.cloud), state=states.PENDING,
        ssh_user=spec.ssh_user, ssh_key=spec.ssh_key,
        programs={
            kind: _masked(program.to_dict(), Masker(spec.secrets)) if program else None
            for kind, program in (("ready", spec.ready), ("terminate", spec.terminate),
                                  ("reconfigure", spec.reconfigure), ("metrics", spec.metrics))
        } | {
            "stage": stage_dir(spec.run, spec.service, spec.index),
            "host_key_policy": spec.host_key_policy,
            "origin": origin,
            "ssh": spec.ssh_settings(),
            **({"local_exe": True} if spec.local_exe else {}),
            **({RUN_KEY_MARK: True} if uses_run_key(spec) else {}),
        },
    )


def _masked(value: Any, masker: Masker) -> Any:
    """`value` (a program as stored) with the plan's secret values masked."""
    if isinstance(value, str):
        return masker.text(value)
    if isinstance(value, dict):
        return {k: _masked(v, masker) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, masker) for v in value]
    return value


def creation_token(run: str, node: str, attempt: int = 1) -> str:
    """The idempotency token: the same run, node and attempt never make a second node."""
    return "cei-" + hashlib.sha256(f"{run}/{node}/{attempt}".encode()).hexdigest()[:32]


class _NodeLauncher:
    """One node's way from pending to ready (or failed)."""

    def __init__(self, ctx: RunContext, spec: NodeSpec,
                 level_failed: threading.Event | None, context: LevelContext) -> None:
        self.ctx = ctx
        self.spec = spec
        self.level_failed = level_failed
        self.context = context  # the nodes known when its level started
        self.state = states.PENDING
        self.done = False  # failed, or stopped by another's failure or an interrupt
        self.failure: Failure | None = None
        self.resource_id: str | None = None  # set once created
        self._intent: int | None = None
        self._host_key: HostKey | None = None

    def run(self) -> Failure | None:
        """From pending (or from created, when _create_together made it) to ready or failed."""
        self._guarded(self._launch)
        return self.failure

    def _guarded(self, step: Callable[[NodeLog], object]) -> bool:
        """Run a step of the node; False when that ended the node (`done`, and its `failure`
        unless another's failure or an interrupt stopped it)."""
        log = NodeLog(node_log_path(self.ctx.run_dir, self.spec.node))
        try:
            step(log)
            return True
        except _Stopped as why:  # not a root cause: the failure that stopped it is reported
            self._set(states.FAILED, last_error=str(why), message=str(why))
        except CeiError as exc:
            self.failure = self._fail(log, str(exc), timeout=isinstance(exc, StepTimeout))
        except Exception as exc:  # a bug must still fail one node, not the whole run
            log.note("internal error:\n" + traceback.format_exc())
            self.failure = self._fail(log, f"internal error: {exc!r} (see {log.path})")
        finally:
            log.close()
        self.done = True
        return False

    # -- steps of a create made together with the rest of the level (_create_together) ------

    def batching_provider(self) -> Provider | None:
        """The node's provider if it creates many nodes in one call, else None."""
        found: list[Provider] = []
        self._guarded(lambda log: found.append(self._provider()))
        return found[0] if found and found[0].capabilities.batches else None

    def intend(self, provider: Provider) -> NodeRequest | None:
        """The node's create request, its intent committed (None: that ended the node)."""
        made: list[NodeRequest] = []

        def step(log: NodeLog) -> None:
            self._step(states.CREATING)
            made.append(self._intend(provider, hostkeys.key_to_send(self.spec, provider)))

        return made[0] if self._guarded(step) else None

    def may_create(self) -> bool:
        """Whether the node is still to be made (no interrupt, no failure of the level)."""
        return self._guarded(lambda log: self._check(states.CREATING))

    def created(self, request: NodeRequest, info: NodeInfo) -> None:
        self._guarded(lambda log: self._created(request, info, log))

    def failed(self, error: Exception) -> None:
        def step(log: NodeLog) -> None:
            raise error

        if not self.done:
            self._guarded(step)

    # -----------------------------------------------------------------------------------------

    def _fail(self, log: NodeLog, message: str, timeout: bool = False) -> Failure:
        if self.ctx.cancel.is_set():
            why = f"interrupted while {self.state}"
            self._set(states.FAILED, last_error=why, message=why)
            return Failure(self.spec.node, why, interrupted=True)
        if self.level_failed is not None:
            self.level_failed.set()
        log.note(f"failed while {self.state}: {message}")
        failure = Failure(self.spec.node, f"{message}\n(log: {log.path})", timeout)
        self._set(states.FAILED, last_error=message, message=message)
        return failure

    def _set(self, state: str, message: str = "", **fields: object) -> None:
        if state != states.FAILED:
            self.state = state
        self.ctx.store.update_node(self.ctx.run, self.spec.node, state=state, **fields)
        self.ctx.emit(ev.NODE_STATE, node=self.spec.node, state=state, message=message)

    def _check(self, state: str) -> None:
        if self.ctx.cancel.is_set():
            raise _Stopped(f"interrupted before {state}")
        if self.level_failed is not None and self.level_failed.is_set():
            raise _Stopped(f"stopped before {state}: another node of the level failed")

    def _step(self, state: str) -> None:
        self._check(state)
        self._set(state)

    def _provider(self) -> Provider:
        options = dict(self.spec.cloud.options)
        if self.spec.host:
            options["host"] = self.spec.host
        return self.ctx.provider(self.spec.cloud.driver, options)

    def _launch(self, log: NodeLog) -> None:
        spec, ctx = self.spec, self.ctx
        deadline = time.monotonic() + spec.timeout
        provider = self._provider()

        resource_id = self.resource_id
        if resource_id is None:  # not made together with its level
            self._step(states.CREATING)
            resource_id = self._create(provider, hostkeys.key_to_send(spec, provider), log)

        self._step(states.BOOTING)
        info = provider.wait_running(resource_id, timeout=_left(deadline, "the node to run"),
                                     cancel=ctx.cancel)
        if ctx.cancel.is_set():
            raise _Stopped("interrupted while booting")
        if info.state != RUNNING:
            raise CeiError(f"the {spec.cloud.driver} cloud reports the node {info.state}"
                           + (f": {info.error}" if info.error else ""))
        # a local node picks its own port; on a cloud or an existing host it is the plan's
        port = info.port if provider.capabilities.port_per_node else spec.ssh_port
        changes: dict[str, Any] = {"address": info.address, "port": port,
                                   "hostname": info.hostname}
        record = dataclasses.replace(self._record(), **changes)
        ssh = spec.needs_ssh and not spec.local_exe
        console = ssh and hostkeys.reads_console(spec, provider)
        try:  # a key known at once (an existing host's) goes with the address: one write
            if ssh and not console:
                changes.update(hostkeys.pin_before_connecting(ctx, spec, provider, record,
                                                              deadline, log))
        finally:  # the address, even when no key is known
            ctx.store.update_node(ctx.run, spec.node, **changes)
        if console:  # polled for while the address shows
            changes = hostkeys.pin_before_connecting(ctx, spec, provider, record, deadline, log)
            if changes:
                ctx.store.update_node(ctx.run, spec.node, **changes)
        record = dataclasses.replace(record, **changes)
        if spec.local_exe:  # its programs run here, as cloudinit.d's local_exe did
            with LocalSession() as here:
                self._contextualize(here, record, log,
                                    str(local_stage_dir(ctx.run_dir, spec.node)))
            self._set(states.READY)
            return
        if not spec.needs_ssh:
            self._set(states.READY)
            return

        session = ctx.open_session(record, retry_for=_left(deadline, "SSH to answer"))
        worked = False
        try:
            hostkeys.pin_after_connecting(ctx, spec, record, session, log)
            if provider.capabilities.runs_cloud_init:
                result = session.run(CLOUD_INIT_WAIT, timeout=_left(deadline, "cloud-init"))
                if result.status not in (0, 2):  # 2: finished with recoverable errors
                    raise CeiError("cloud-init reported an error on the node: "
                                   + (result.stdout_tail + result.stderr_tail).strip())
            # relative to the login directory, which the first command tells (see Stage)
            self._contextualize(session, record, log,
                                stage_dir(ctx.run, spec.service, spec.index))
            worked = True
        finally:
            ctx.release(record, session, worked)
        self._set(states.READY)

    def _create(self, provider: Provider, host_key: HostKey | None, log: NodeLog) -> str:
        request = self._intend(provider, host_key)
        return self._created(request, provider.create(request), log)

    def _intend(self, provider: Provider, host_key: HostKey | None) -> NodeRequest:
        """The node's create request; where the cloud creates, its intent is durable first."""
        spec, ctx = self.spec, self.ctx
        authorized = []
        if uses_run_key(spec):
            authorized.append(ctx.client_key(create=True)[1])
        elif spec.ssh_key and Path(spec.ssh_key + ".pub").is_file():
            authorized.append(Path(spec.ssh_key + ".pub").read_text().strip())
        userdata = None
        creates = provider.capabilities.creates_machines  # existing hosts are never created
        if creates:
            userdata = build_userdata(spec.userdata, host_key=host_key,
                                      authorized_keys=authorized,
                                      limit=provider.capabilities.userdata_limit) or None
        token = creation_token(ctx.run, spec.node)
        if creates:  # the intent is durable before the cloud is asked
            self._intent = ctx.store.record_intent(ctx.run, spec.node, spec.cloud.driver,
                                                   ctx.cloud_record(spec.cloud), token)
        self._host_key = host_key
        tags = node_tags(ctx.run, spec.service, spec.node)
        return NodeRequest(
            run=ctx.run, service=spec.service, node=spec.node, token=token,
            options=provider.options, userdata=userdata, tags=tags)

    def _created(self, request: NodeRequest, info: NodeInfo, log: NodeLog) -> str:
        """Commit the id the cloud gave the node, at once."""
        spec, ctx, host_key = self.spec, self.ctx, self._host_key
        try:
            if self._intent is not None:
                ctx.store.record_resource_id(self._intent, info.resource_id)
        finally:  # the node learns its id too, even if the database is away (then later)
            ctx.store.update_node(
                ctx.run, spec.node, resource_id=info.resource_id, token=request.token,
                host_key=host_key.public if host_key else None,
                host_key_fingerprint=host_key.fingerprint if host_key else None)
        log.note(f"created {spec.cloud.driver} node {info.resource_id}")
        ctx.emit(ev.RESOURCE, node=spec.node, state="created", driver=spec.cloud.driver,
                 resource_id=info.resource_id)
        self.resource_id = info.resource_id
        return info.resource_id

    def _contextualize(self, session: Session | LocalSession, record: NodeRecord,
                       log: NodeLog, stage_path: str) -> None:
        """Stage, boot, agent, ready; `record` is the node as stored."""
        spec, ctx = self.spec, self.ctx
        self._check(states.CONTEXTUALIZING)
        env = node_environment(spec, stage_path)
        programs = {**record.programs, "env": env}
        self._set(states.CONTEXTUALIZING, programs=programs)  # teardown finds the stage
        stage = Stage(session, stage_path, env, log, cancel=ctx.cancel,
                      observer=lambda run: ctx.emit(ev.NODE_PROGRAM, node=spec.node,
                                                    **run.event_data()),
                      secrets=spec.secrets)
        stage.prepare(spec.config, self.context.document(_known(record)), spec.stage_files)
        outputs = stage.boot(spec.boot, spec.output_limit) if spec.boot is not None else None
        stage.flush()
        # the outputs, and the environment with its paths absolute now that the node told
        # its login directory, in one write (teardown reads absolute paths as the programs
        # seen through: programs.seen_through)
        changes: dict[str, Any] = {} if outputs is None else {"outputs": outputs}
        if stage.env != env:
            programs = {**programs, "env": stage.env}
            changes["programs"] = programs
        if changes:
            ctx.store.update_node(ctx.run, spec.node, **changes)
        agent = (install_agent(session, stage.path, spec, ctx.run_dir)
                 if not isinstance(session, LocalSession) else None)  # local_exe has no agent
        if agent is not None:
            ctx.store.update_node(ctx.run, spec.node, programs={**programs, "agent": agent})
            ctx.emit(ev.NODE_PROGRAM, node=spec.node, program="agent", status=0,
                     pid=agent.get("pid"), slots=agent.get("slots"))
        if spec.ready is not None:
            stage.wait_ready(spec.ready)

    def _record(self) -> NodeRecord:
        return self.ctx.store.get_node(self.ctx.run, self.spec.node)


def _left(deadline: float, what: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StepTimeout(f"the node's timeout ran out before {what}")
    return remaining
