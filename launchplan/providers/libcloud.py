"""Any apache-libcloud compute driver, by its provider name ("ec2", "openstack", ...).

libcloud serves create, describe, destroy and list only: SSH stays in cei's own layer with pinned
host keys (libcloud's deploy_node would accept any host key). Drivers differ, so the provider's
capabilities come from what the driver class's create_node takes, and each optional feature is
used only where it exists:
- user-data through `ex_userdata` (a plan with user-data on a driver without it is refused);
- tags through `ex_metadata` (EC2 turns them into instance tags, OpenStack into metadata);
  without it, nodes are found by their name prefix `cei-<run>-<hash>-`;
- the idempotency token through `ex_clienttoken`; without it, an existing node of the same name
  is looked up before creating.
Images, sizes, locations and the names inside `create_args` are resolved by libcloud_names.
Transient failures (rate limits, 5xx, dropped connections) are retried with capped backoff.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from launchplan.errors import CeiError, ProviderError, UsageError
from launchplan.providers.base import (
    ERROR,
    PENDING,
    RUNNING,
    STOPPED,
    TERMINATED,
    UNKNOWN,
    Capabilities,
    NodeInfo,
    NodeRequest,
    Problem,
    Provider,
)
from launchplan.providers.libcloud_names import Names
from launchplan.providers.retry import Backoff, is_transient_message, retry_call
from launchplan.providers.tags import RUN, TOKEN, client_token, merged_tags

T = TypeVar("T")

# libcloud NodeState values (lower-case strings) -> cei's normalised states.
_STATES = {
    "running": RUNNING,
    "pending": PENDING,
    "starting": PENDING,
    "rebooting": PENDING,
    "migrating": PENDING,
    "reconfiguring": PENDING,
    "stopping": STOPPED,
    "stopped": STOPPED,
    "suspended": STOPPED,
    "paused": STOPPED,
    "terminated": TERMINATED,
    "error": ERROR,
}
# Raw cloud states that libcloud reports as "unknown" but that mean the node is going away.
_GOING = frozenset({"shutting-down", "terminated", "deleted", "deleting"})
_NOT_FOUND = ("InvalidInstanceID.NotFound", "NotFound", "not found", "does not exist")


def node_name(run: str, node: str) -> str:
    """The cloud-side name of a node: `cei-<run>-<6 hex>-<service>-<index>`.

    The hash of the run name keeps the prefix of one run from matching another run whose
    name merely starts with it ("a" and "a-b"), for drivers found by name alone.
    """
    return _clean(name_prefix(run) + node.replace("/", "-"))


def name_prefix(run: str) -> str:
    digest = hashlib.sha256(run.encode("utf-8")).hexdigest()[:6]
    return _clean(f"cei-{run}-{digest}-")


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def is_transient(exc: BaseException) -> bool:
    """Rate limits, 5xx, throttling codes and dropped or refused connections."""
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError

    if isinstance(exc, RateLimitReachedError):
        return True
    if isinstance(exc, BaseHTTPError):
        code = int(exc.code or 0)
        return code >= 500 or code == 429 or is_transient_message(str(exc.message or ""))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # requests is a libcloud dependency; be tolerant anyway
        pass
    return is_transient_message(str(exc))


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    if value is None:
        headers = getattr(exc, "headers", None) or {}
        value = headers.get("retry-after") if isinstance(headers, Mapping) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text or type(exc).__name__


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


class LibcloudProvider(Provider):
    """Nodes through one libcloud compute driver, built lazily from the cloud profile."""

    driver: ClassVar[str] = "libcloud"
    backoff: ClassVar[Backoff] = Backoff()
    # The user-data limit is the smallest among common drivers (EC2: 16 KiB; OpenStack:
    # 64 KiB): always safe. The rest depends on the driver (see `capabilities`).
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(userdata_limit=16384)

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        super().__init__(options, run_dir)
        self.provider_name = str(options.get("provider") or "").strip()
        if not self.provider_name:
            raise UsageError("libcloud: the cloud profile needs `provider` (e.g. ec2, openstack)")
        address = options.get("address") or "public"
        if address not in ("public", "private"):
            raise UsageError(f"libcloud: address must be 'public' or 'private', not {address!r}")
        self.address_kind: str = address
        self._driver: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LibcloudProvider(provider={self.provider_name!r})"

    # -- the driver ----------------------------------------------------------------------------

    @cached_property
    def driver_class(self) -> Any:
        """The libcloud driver class: known without credentials, so capabilities are too."""
        from libcloud.compute.providers import get_driver

        try:
            return get_driver(self.provider_name)
        except AttributeError:
            raise UsageError(
                f"libcloud: unknown compute provider {self.provider_name!r} "
                "(see libcloud.compute.types.Provider)"
            ) from None

    @property
    def capabilities(self) -> Capabilities:
        """What this driver's create_node takes, and whether it can read a console."""
        create = self.driver_class.create_node
        return replace(
            self.CAPABILITIES,
            takes_userdata=_accepts(create, "ex_userdata"),
            tags=_accepts(create, "ex_metadata"),
            client_token=_accepts(create, "ex_clienttoken"),
            console=hasattr(self.driver_class, "ex_get_console_output"),
        )

    @property
    def compute(self) -> Any:
        """The libcloud driver instance; credentials go in as its positional key and secret."""
        with self._lock:
            if self._driver is None:
                self._driver = self._make_driver()
            return self._driver

    def _make_driver(self) -> Any:
        cls = self.driver_class
        credentials = dict(self.options.get("credentials") or {})
        key = credentials.pop("key", None)
        secret = credentials.pop("secret", None)
        if key is None:
            raise UsageError("libcloud: credentials.key is required")
        if key == "":
            raise UsageError(
                "libcloud: credentials.key is empty (is the environment variable set?)"
            )
        kwargs = {**dict(self.options.get("options") or {}), **credentials}
        args = [key] if secret is None else [key, secret]
        try:
            return cls(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"libcloud {self.provider_name}: bad driver options: {exc}") from exc
        except Exception as exc:
            raise ProviderError(
                f"libcloud {self.provider_name}: cannot build the driver: {_message(exc)}"
            ) from exc

    @property
    def names(self) -> Names:
        return Names(self.compute, self._call, f"libcloud {self.provider_name}")

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return retry_call(
            call,
            classify=is_transient,
            describe=lambda exc: f"{what} failed: {_message(exc)}",
            what=what,
            backoff=self.backoff,
            retry_after=_retry_after,
        )

    def _is_ec2(self) -> bool:
        from libcloud.compute.drivers.ec2 import BaseEC2NodeDriver

        return isinstance(self.compute, BaseEC2NodeDriver)

    # -- node info -----------------------------------------------------------------------------

    @staticmethod
    def _tags(node: Any) -> dict[str, str]:
        extra = getattr(node, "extra", None) or {}
        tags: dict[str, str] = {}
        for key in ("metadata", "tags"):
            value = extra.get(key)
            if isinstance(value, Mapping):
                tags.update({str(k): str(v) for k, v in value.items()})
        return tags

    def _info(self, node: Any) -> NodeInfo:
        state = _STATES.get(str(node.state).lower(), UNKNOWN)
        extra = getattr(node, "extra", None) or {}
        raw = str(extra.get("status") or extra.get("vm_state") or "").lower()
        if state == UNKNOWN and raw in _GOING:
            state = TERMINATED
        public = next(iter(node.public_ips or ()), None)
        private = next(iter(node.private_ips or ()), None)
        if self.address_kind == "public":
            address, hostname = public, extra.get("dns_name") or None
        else:
            address, hostname = private, extra.get("private_dns") or None
        return NodeInfo(
            resource_id=str(node.id),
            state=state,
            address=address,
            hostname=hostname,
            private_address=private,
            tags=self._tags(node),
            error=(str(extra.get("fault") or "") or None) if state == ERROR else None,
        )

    def _belongs(self, node: Any, run: str) -> bool:
        tags = self._tags(node)
        if RUN in tags:
            return tags[RUN] == run
        return str(node.name or "").startswith(name_prefix(run))

    def _list(self, what: str, run: str | None = None) -> list[Any]:
        compute = self.compute
        if run is not None and self._is_ec2():
            return self._call(what, lambda: compute.list_nodes(ex_filters={f"tag:{RUN}": run}))
        return self._call(what, compute.list_nodes)

    # -- the verbs -----------------------------------------------------------------------------

    def create_kwargs(self, request: NodeRequest) -> dict[str, Any]:
        """The create_node keyword arguments for a request, shaped by what the driver takes:
        the plan's `create_args` (names resolved), then cei's own arguments."""
        options = request.options or self.options
        image, size = options.get("image"), options.get("size")
        if not image or not size:
            raise UsageError(f"libcloud: node {request.node} needs both image and size")
        capabilities, names = self.capabilities, self.names
        kwargs: dict[str, Any] = names.create_args(options.get("create_args") or {})
        kwargs.update(name=node_name(request.run, request.node), image=names.image(str(image)),
                      size=names.size(str(size)))
        if options.get("location"):
            kwargs["location"] = names.location(str(options["location"]))
        if request.userdata:
            if not capabilities.takes_userdata:
                raise ProviderError(
                    f"the libcloud {self.provider_name} driver cannot pass user-data",
                    transient=False,
                )
            try:
                kwargs["ex_userdata"] = request.userdata.decode("utf-8")
            except UnicodeDecodeError:  # gzipped user-data stays bytes
                kwargs["ex_userdata"] = request.userdata
        if capabilities.tags:
            user = {**(kwargs.get("ex_metadata") or {}), **(options.get("tags") or {})}
            kwargs["ex_metadata"] = merged_tags(user, request.tags, request.run,
                                                request.service, request.node, request.token)
        if capabilities.client_token:
            kwargs["ex_clienttoken"] = client_token(request.token)
        return kwargs

    def check(self) -> list[Problem]:
        """Read-only: the credentials (by listing sizes), then the image, size, location and
        every name in `create_args`, each looked up the way create would."""
        try:
            self._call(f"libcloud {self.provider_name}: listing sizes", self.compute.list_sizes)
        except CeiError as exc:
            return [Problem(("credentials",), str(exc))]
        names, options = self.names, self.options
        lookups: list[tuple[tuple[str, ...], Callable[[], Any]]] = []
        for key, resolve in (("image", names.image), ("size", names.size),
                             ("location", names.location)):
            if options.get(key):
                lookups.append(((key,), partial(resolve, str(options[key]))))
        for argument, value in (options.get("create_args") or {}).items():
            lookups.append((("create_args", argument), partial(names.create_args,
                                                               {argument: value})))
        problems = []
        for option, lookup in lookups:
            try:
                lookup()
            except CeiError as exc:
                problems.append(Problem(option, str(exc)))
        return problems

    def _existing(self, request: NodeRequest, kwargs: Mapping[str, Any]) -> NodeInfo | None:
        """A live node already created for this token (or, without tags, with this name)."""
        for node in self._list(f"libcloud: looking for node {request.node}", request.run):
            info = self._info(node)
            if info.state == TERMINATED or not self._belongs(node, request.run):
                continue
            if info.tags.get(TOKEN) == client_token(request.token):
                return info
            if not self.capabilities.tags and node.name == kwargs["name"]:
                return info
        return None

    def create(self, request: NodeRequest) -> NodeInfo:
        """create_node with user-data, tags and client token where the driver takes them."""
        kwargs = self.create_kwargs(request)
        what = f"libcloud {self.provider_name}: creating node {request.node}"
        existing = self._existing(request, kwargs)
        if existing is not None:
            return existing
        if self.capabilities.client_token:
            node = self._call(what, lambda: self.compute.create_node(**kwargs))
        else:
            # Without a client token a retried call could make a second node: look first.
            def attempt() -> Any:
                found = self._existing(request, kwargs)
                return found if found is not None else self.compute.create_node(**kwargs)

            node = self._call(what, attempt)
        if isinstance(node, NodeInfo):
            return node
        if isinstance(node, list):
            node = node[0]
        return self._info(node)

    def _lookup(self, resource_id: str) -> Any | None:
        compute = self.compute
        what = f"libcloud {self.provider_name}: describing {resource_id}"
        try:
            if _accepts(compute.list_nodes, "ex_node_ids"):
                nodes = self._call(what, lambda: compute.list_nodes(ex_node_ids=[resource_id]))
            elif hasattr(compute, "ex_get_node_details"):
                node = self._call(what, lambda: compute.ex_get_node_details(resource_id))
                nodes = [node] if node is not None else []
            else:
                nodes = self._call(what, compute.list_nodes)
        except ProviderError as exc:
            if not exc.transient and any(marker in str(exc) for marker in _NOT_FOUND):
                return None
            raise
        return next((n for n in nodes if str(n.id) == resource_id), None)

    def describe(self, resource_id: str) -> NodeInfo:
        node = self._lookup(resource_id)
        if node is None:
            return NodeInfo(resource_id=resource_id, state=TERMINATED)
        return self._info(node)

    def destroy(self, resource_id: str) -> None:
        """destroy_node on the node as the driver lists it (drivers such as GCE need its
        extra data); a node already gone, by a look or by the API's word, is fine."""
        node = self._lookup(resource_id)
        if node is None or self._info(node).state == TERMINATED:
            return
        what = f"libcloud {self.provider_name}: destroying {resource_id}"
        try:
            self._call(what, lambda: self.compute.destroy_node(node))
        except ProviderError as exc:
            if exc.transient:
                raise
            try:
                gone = self.describe(resource_id).state == TERMINATED
            except CeiError:
                gone = False
            if not gone:
                raise

    def console_output(self, resource_id: str) -> str | None:
        """The node's console text where the driver can read it (host_key_policy: console)."""
        compute = self.compute
        read = getattr(compute, "ex_get_console_output", None)
        if read is None:
            raise ProviderError(
                f"the libcloud {self.provider_name} driver cannot read console output"
            )
        node = self._lookup(resource_id)
        if node is None:
            return None
        what = f"libcloud {self.provider_name}: reading the console of {resource_id}"
        result = self._call(what, lambda: read(node))
        if isinstance(result, Mapping):
            result = result.get("output")
        return str(result) if result else None

    def find(self, run: str) -> list[NodeInfo]:
        nodes = self._list(f"libcloud {self.provider_name}: listing the nodes of {run}", run)
        infos = (self._info(n) for n in nodes if self._belongs(n, run))
        return [info for info in infos if info.state != TERMINATED]
