"""EC2 and every EC2-compatible API (Nimbus, Eucalyptus, OpenStack's EC2 API, moto) via boto3.

Credentials come from the cloud profile's `credentials` (which a plan may fill only through
`env('...')`) or else from boto3's standard chain: environment, shared profiles, instance roles.
Retries of throttling and 5xx are botocore's own (standard mode); what still fails afterwards is
reported as a transient ProviderError, anything else as a fatal one carrying EC2's message.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from launchplan.errors import CeiError, Interrupted, ProviderError, StepTimeout, UsageError
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
from launchplan.providers.retry import is_transient_message
from launchplan.providers.tags import (
    BATCH,
    NODE,
    PREFIX,
    RUN,
    SERVICE,
    TOKEN,
    client_token,
    merged_tags,
)

# EC2 instance states -> cei's normalised states.
_STATES = {
    "pending": PENDING,
    "running": RUNNING,
    "stopping": STOPPED,
    "stopped": STOPPED,
    "shutting-down": TERMINATED,
    "terminated": TERMINATED,
}
LIVE_STATES = ("pending", "running", "stopping", "stopped")


def _live_filter() -> dict[str, Any]:
    """The filter on live states, first in every filtered DescribeInstances: an API that
    applies filters in the order given (moto does, looking each instance's tags up among every
    tag of the account) then never reads the tags of the terminated instances a run leaves."""
    return {"Name": "instance-state-name", "Values": list(LIVE_STATES)}


# botocore's retry configuration: "standard" backs off exponentially on throttling and 5xx.
RETRY_MODE = "standard"
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
POOL_SIZE = 10  # botocore's default: connections kept open to the endpoint

_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound"})
_STATUS_IDS = 100  # instance ids per DescribeInstanceStatus call
# Instances per RunInstances, and ids per DescribeInstances or TerminateInstances call (the
# most EC2 takes in one of those).
BATCH_SIZE = 1000
# Instances a create_many has made since the last DescribeInstances round that start one while
# it goes on (_Answers.begin_early): a page of DescribeInstances, as EC2 and moto page it.
EARLY_ROUND = 100
# A node's own tags: a batch's instances get them just after RunInstances, each its own.
_OWN_TAGS = (NODE, TOKEN, "Name")
_FINAL = (RUNNING, ERROR, TERMINATED)  # what a wait for a node to run ends on
_INSTANCE_ID = re.compile(r"\bi-[0-9a-f]+\b")
# Answers that mean the credentials (or the endpoint) are wrong: every other check would fail
# the same way, so `check` reports once and stops.
_AUTH_CODES = frozenset({
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId",
    "UnrecognizedClientException", "ExpiredToken", "RequestExpired",
})  # fmt: skip
# Answers of an EC2-compatible API that lacks a call: that check is skipped, not failed.
_UNSUPPORTED_CODES = frozenset(
    {"InvalidAction", "UnsupportedOperation", "NotImplemented", "UnknownOperation"}
)
# What `check` describes: RunInstances key, the plan option that sets it, the describe call,
# its parameters for the value, and the answer's list that must not come back empty.
_CHECKS: tuple[tuple[str, str, str, str, str], ...] = (
    ("ImageId", "image", "describe_images", "ImageIds", "Images"),
    ("InstanceType", "size", "describe_instance_types", "InstanceTypes", "InstanceTypes"),
    ("KeyName", "key_name", "describe_key_pairs", "KeyNames", "KeyPairs"),
    ("SubnetId", "subnet", "describe_subnets", "SubnetIds", "Subnets"),
    ("SecurityGroupIds", "security_groups", "describe_security_groups", "GroupIds",
     "SecurityGroups"),
)
_TRANSIENT_NETWORK = (
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ProxyConnectionError",
)


def error_code(exc: BaseException) -> str | None:
    """The EC2 error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def response_error(response: Mapping[str, Any], what: str) -> ProviderError:
    """A ProviderError from an EC2 error response: "CODE: message", transient for 5xx/throttling."""
    error = response.get("Error", {})
    code = str(error.get("Code") or "Error")
    message = str(error.get("Message") or "").strip()
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    text = f"{code}: {message}" if message else code
    transient = status >= 500 or status == 429 or is_transient_message(text)
    return ProviderError(f"{what} failed: {text}", transient=transient)


def to_provider_error(exc: BaseException, what: str) -> ProviderError:
    """Turn a boto3/botocore exception into a ProviderError with EC2's own message."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and "Error" in response:
        return response_error(response, what)
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return ProviderError(
            f"{what} failed: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or credentials: with env('...') in the "
            "cloud profile)",
            transient=False,
        )
    transient = name in _TRANSIENT_NETWORK or isinstance(exc, (ConnectionError, TimeoutError))
    return ProviderError(f"{what} failed: {name}: {exc}", transient=transient)


def _tags_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or ()}


def _shared(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A node's RunInstances parameters without what is its own (client token, node and token
    tags, Name), and those own tags: nodes whose shared parameters are equal can be one call."""
    shared = {k: v for k, v in kwargs.items() if k != "ClientToken"}
    own: dict[str, str] = {}
    specs = []
    for spec in kwargs.get("TagSpecifications") or []:
        if spec.get("ResourceType") == "instance":
            own = {t["Key"]: t["Value"] for t in spec["Tags"] if t["Key"] in _OWN_TAGS}
            spec = {**spec, "Tags": [t for t in spec["Tags"] if t["Key"] not in _OWN_TAGS]}
        specs.append(spec)
    shared["TagSpecifications"] = specs
    return shared, own


def batch_token(tokens: Sequence[str]) -> str:
    """The client token of one RunInstances for several nodes: their tokens in order, hashed,
    so the same nodes asked again make the same call (which EC2 answers with the same
    instances) and are recognised by it (tag cei:batch) if cei stopped before tagging them."""
    return hashlib.sha256(("\n".join(tokens)).encode()).hexdigest()


class _Earlier:
    """What one paged DescribeInstances found of a run's live instances: who each is by its
    cei:token tag, and the instances of each batch by launch index (the tagged and those cei
    stopped before tagging)."""

    def __init__(self, instances: Iterable[Mapping[str, Any]]) -> None:
        self.by_token: dict[str, Mapping[str, Any]] = {}
        self.batches: dict[str, dict[int, Mapping[str, Any]]] = {}
        self.untagged: dict[str, str] = {}  # instance id -> service, of batch members
        for instance in instances:
            tags = _tags_dict(instance.get("Tags"))
            if TOKEN in tags:
                self.by_token[tags[TOKEN]] = instance
            if BATCH in tags:
                members = self.batches.setdefault(tags[BATCH], {})
                members[int(instance.get("AmiLaunchIndex") or 0)] = instance
                if TOKEN not in tags:
                    self.untagged[str(instance["InstanceId"])] = tags.get(SERVICE, "")

    def strays(self, batches: Iterable[str]) -> set[str]:
        """Services with untagged instances of a batch other than `batches`: cei cannot tell
        which of their nodes those are, so it makes no new node of them."""
        ours = {str(i["InstanceId"]) for b in batches for i in self.batches.get(b, {}).values()}
        return {service for rid, service in self.untagged.items() if rid not in ours}


@dataclass
class _CreateCall:
    """What the groups of one create_many share."""

    requests: Sequence[NodeRequest]
    kwargs: Mapping[int, dict[str, Any]]  # each request's RunInstances parameters, by index
    earlier: _Earlier
    strays: set[str]  # services not to make new nodes of (_Earlier.strays)
    created: Callable[[NodeRequest, NodeInfo], None]
    parallel: int
    cancel: threading.Event | None
    memo: dict[tuple[str, ...], list[str]] = field(default_factory=dict)  # security groups

    def own(self, index: int) -> dict[str, str]:
        """The tags of the request's node alone (node, token, Name)."""
        return _shared(self.kwargs[index])[1]

    def go_on(self, what: str) -> None:
        """Interrupted, once `cancel` is set, before `what` is asked of the cloud."""
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted(f"interrupted before {what}")


class _Answers:
    """The latest state of each instance cei waits for, refreshed for all of them at once.

    Whenever a waiter needs a newer answer than it has, one round of DescribeInstances (up to
    BATCH_SIZE ids a call) asks about every instance being waited for and every one created
    since the last round, and the other waiters take their answers from it: N nodes of a level
    cost a call per round, not one per node per poll, and stay clear of EC2's rate limits on
    DescribeInstances. While a create_many goes on, every EARLY_ROUND instances it made start
    a round of their own (begin_early), so that their answers are in hand when their waiters
    come, instead of one long round for all of them once the last is made.
    """

    def __init__(self, describe: Callable[[list[str]], dict[str, NodeInfo]]) -> None:
        self._describe = describe
        self._cond = threading.Condition()
        self._answers: dict[str, tuple[float, NodeInfo]] = {}  # id -> (round start, answer)
        self._waiting: set[str] = set()  # ids a wait_running is waiting for
        self._created: set[str] = set()  # ids created since the last round began
        self._polling = False

    def expect(self, resource_ids: Iterable[str]) -> None:
        """Instances just created: the next round asks about them too."""
        with self._cond:
            self._created.update(resource_ids)

    def forget(self, resource_ids: Iterable[str]) -> None:
        with self._cond:
            for rid in resource_ids:
                self._waiting.discard(rid)
                self._created.discard(rid)
                self._answers.pop(rid, None)

    def latest(self, resource_id: str, newer_than: float) -> tuple[NodeInfo, float]:
        """The instance's state from a round begun after `newer_than` (time.monotonic()),
        and when that round began."""
        with self._cond:
            self._waiting.add(resource_id)
            while True:
                answer = self._answers.get(resource_id)
                if answer is not None and answer[0] > newer_than:
                    return answer[1], answer[0]
                if not self._polling:
                    break
                self._cond.wait()
            ids = self._begin({resource_id})
        return self.round(ids)[resource_id]

    def begin_early(self, least: int) -> list[str] | None:
        """A round begun now, before anyone waits, when at least `least` instances were
        created since the last one and no round runs: its ids, for round(); else None."""
        with self._cond:
            if self._polling or len(self._created) < least:
                return None
            return self._begin(set())

    def _begin(self, also: set[str]) -> list[str]:
        """Mark a round as running and take its ids (the caller holds the condition)."""
        self._polling = True
        ids = sorted(self._waiting | self._created | also)
        self._created.clear()
        return ids

    def round(self, ids: list[str]) -> dict[str, tuple[NodeInfo, float]]:
        """Describe the ids of a round begun by _begin, keep and return the answers (with the
        round's start), and end the round, failed or not: the next waiter then tries again."""
        started = time.monotonic()
        answers: dict[str, NodeInfo] = {}
        try:
            found = self._describe(ids)
            answers = {rid: found.get(rid) or NodeInfo(resource_id=rid, state=UNKNOWN)
                       for rid in ids}
        finally:
            with self._cond:
                self._polling = False
                self._answers.update((rid, (started, info)) for rid, info in answers.items())
                self._cond.notify_all()
        return {rid: (info, started) for rid, info in answers.items()}


class EC2Provider(Provider):
    """Nodes are EC2 instances, tagged with cei:run/cei:service/cei:node at creation."""

    driver: ClassVar[str] = "ec2"
    # EC2 refuses user-data over 16 KiB (counted before base64). RunInstances makes many
    # nodes at once and TerminateInstances takes many ids.
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(userdata_limit=16384, batches=True)

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        super().__init__(options, run_dir)
        address = options.get("address") or "public"
        if address not in ("public", "private"):
            raise UsageError(f"ec2: address must be 'public' or 'private', not {address!r}")
        self.address_kind: str = address
        self._client: Any = None
        self._pool_size = POOL_SIZE
        self._lock = threading.Lock()
        self._answers = _Answers(self._describe_ids)

    def __repr__(self) -> str:
        return f"EC2Provider(region={self.options.get('region')!r})"

    # -- the client ------------------------------------------------------------------------

    def _session_kwargs(self) -> dict[str, Any]:
        credentials = self.options.get("credentials") or {}
        if not credentials:
            return {}
        if not isinstance(credentials, Mapping):
            raise UsageError("ec2: credentials must be a mapping of access_key/secret_key")
        unknown = set(credentials) - {"access_key", "secret_key", "session_token"}
        if unknown:
            raise UsageError(f"ec2: unknown credentials key(s): {', '.join(sorted(unknown))}")
        for key in ("access_key", "secret_key"):
            if not credentials.get(key):
                raise UsageError(
                    f"ec2: credentials.{key} is empty (is the environment variable set?)"
                )
        kwargs = {
            "aws_access_key_id": str(credentials["access_key"]),
            "aws_secret_access_key": str(credentials["secret_key"]),
        }
        if credentials.get("session_token"):
            kwargs["aws_session_token"] = str(credentials["session_token"])
        return kwargs

    @property
    def client(self) -> Any:
        """The boto3 EC2 client, built once (boto3 clients are thread-safe, sessions are not)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                session = boto3.session.Session(
                    region_name=self.options.get("region") or None, **self._session_kwargs()
                )
                config = Config(
                    retries={"mode": RETRY_MODE, "max_attempts": MAX_ATTEMPTS},
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    max_pool_connections=self._pool_size,
                    user_agent_extra="cei",
                )
                try:
                    self._client = session.client(
                        "ec2",
                        endpoint_url=self.options.get("endpoint_url") or None,
                        config=config,
                    )
                except Exception as exc:  # NoRegionError, bad endpoint URL, ...
                    raise ProviderError(f"ec2: cannot build a client: {exc}") from exc
            return self._client

    def _widen_pool(self, parallel: int) -> None:
        """Keep a connection open for each of `parallel` calls at once: beyond its pool,
        botocore opens a connection per call and drops it after, which costs both ends a TCP
        handshake (and a server thread, on servers that have one per connection) per call."""
        with self._lock:
            if parallel > self._pool_size:
                self._pool_size = parallel
                self._client = None  # the next call builds one with the bigger pool

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except CeiError:
            raise
        except Exception as exc:
            raise to_provider_error(exc, what) from exc

    # -- node info ---------------------------------------------------------------------------

    def _info(self, instance: Mapping[str, Any]) -> NodeInfo:
        raw = str(instance.get("State", {}).get("Name", ""))
        state = _STATES.get(raw, UNKNOWN)
        public = instance.get("PublicIpAddress") or None
        private = instance.get("PrivateIpAddress") or None
        if self.address_kind == "public":
            address, hostname = public, instance.get("PublicDnsName") or None
        else:
            address, hostname = private, instance.get("PrivateDnsName") or None
        error = None
        reason = instance.get("StateReason", {}).get("Message")
        if state in (TERMINATED, STOPPED) and reason:
            error = str(reason)
        return NodeInfo(
            resource_id=str(instance["InstanceId"]),
            state=state,
            address=address,
            hostname=hostname,
            private_address=private,
            tags=_tags_dict(instance.get("Tags")),
            error=error,
        )

    def _paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("describe_instances").paginate(**kwargs)
        return [
            instance
            for page in pages
            for reservation in page.get("Reservations", [])
            for instance in reservation.get("Instances", [])
        ]

    def _instances(self, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The instances the filters in `kwargs` match, BATCH_SIZE a page."""
        try:
            return self._paginate(**kwargs, PaginationConfig={"PageSize": BATCH_SIZE})
        except CeiError:
            raise
        except Exception as exc:
            raise to_provider_error(exc, what) from exc

    # -- the verbs ---------------------------------------------------------------------------

    def _tags(self, request: NodeRequest) -> dict[str, str]:
        options = request.options or self.options
        user = {"Name": f"{request.run}/{request.node}", **(options.get("tags") or {})}
        return merged_tags(user, request.tags, request.run, request.service, request.node,
                           request.token)

    def run_instances_kwargs(self, request: NodeRequest) -> dict[str, Any]:
        """The RunInstances parameters for a request (public so tests and `render` can show it)."""
        options = request.options or self.options
        image, size = options.get("image"), options.get("size")
        if not image:
            raise UsageError(f"ec2: node {request.node} has no image")
        kwargs: dict[str, Any] = {
            "ImageId": str(image),
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(request.token),
        }
        if size:
            kwargs["InstanceType"] = str(size)
        if options.get("key_name"):
            kwargs["KeyName"] = str(options["key_name"])
        groups = options.get("security_groups") or []
        if isinstance(groups, str):
            groups = [groups]
        ids = [str(g) for g in groups if str(g).startswith("sg-")]
        names = [str(g) for g in groups if not str(g).startswith("sg-")]
        if ids:
            kwargs["SecurityGroupIds"] = ids
        if names:
            kwargs["SecurityGroups"] = names
        if options.get("subnet"):
            kwargs["SubnetId"] = str(options["subnet"])
        if options.get("zone"):
            kwargs["Placement"] = {"AvailabilityZone": str(options["zone"])}
        if request.userdata:
            kwargs["UserData"] = request.userdata  # botocore base64-encodes it
        tags = self._tags(request)
        extra = dict(options.get("run_instances") or {})
        specs = []
        for spec in extra.pop("TagSpecifications", None) or []:
            if spec.get("ResourceType") == "instance":
                user = _tags_dict(spec.get("Tags"))
                tags.update({k: v for k, v in user.items() if not k.startswith(PREFIX)})
            else:
                specs.append(spec)
        instance_spec = {
            "ResourceType": "instance",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        kwargs["TagSpecifications"] = [instance_spec, *specs]
        kwargs.update(extra)
        return kwargs

    def _earlier(self, requests: Sequence[NodeRequest]) -> _Earlier:
        """The live instances of the requests' runs and services, in one paged call: a create
        asked again (cei stopped and retried, or a cloud that ignores ClientToken) finds what
        the first attempt made instead of making it twice."""
        return _Earlier(self._instances(
            "ec2: looking for nodes made before",
            Filters=[
                _live_filter(),
                {"Name": f"tag:{RUN}", "Values": sorted({r.run for r in requests})},
                {"Name": f"tag:{SERVICE}", "Values": sorted({r.service for r in requests})},
            ],
        ))

    def _vpc_group_ids(self, kwargs: dict[str, Any],
                       memo: dict[tuple[str, ...], list[str]] | None = None) -> dict[str, Any]:
        """In a VPC (a subnet is given) EC2 takes security groups by id only: look the names
        up among the subnet's VPC's groups, so a plan may name them as in the default VPC.
        `memo` keeps what one create_many looked up already."""
        names = kwargs.get("SecurityGroups")
        subnet = kwargs.get("SubnetId")
        if not names or not subnet:
            return kwargs
        key = (subnet, *names)
        ids = memo.get(key) if memo is not None else None
        if ids is None:
            ids = self._group_ids(subnet, names)
            if memo is not None:
                memo[key] = ids
        resolved = {k: v for k, v in kwargs.items() if k != "SecurityGroups"}
        resolved["SecurityGroupIds"] = [*kwargs.get("SecurityGroupIds", []), *ids]
        return resolved

    def _group_ids(self, subnet: str, names: Sequence[str]) -> list[str]:
        what = f"ec2: looking up security groups {', '.join(names)}"
        subnets = self._call(what, "describe_subnets", SubnetIds=[subnet])["Subnets"]
        found = self._call(what, "describe_security_groups", Filters=[
            {"Name": "vpc-id", "Values": [subnets[0]["VpcId"]]},
            {"Name": "group-name", "Values": list(names)},
        ])["SecurityGroups"]
        ids = {g["GroupName"]: g["GroupId"] for g in found}
        missing = [n for n in names if n not in ids]
        if missing:
            raise ProviderError(
                f"ec2: no security group {', '.join(map(repr, missing))} in the VPC "
                f"{subnets[0]['VpcId']} of subnet {subnet}", transient=False)
        return [ids[n] for n in names]

    def create(self, request: NodeRequest) -> NodeInfo:
        """RunInstances with ClientToken and tags; a retry with the same token finds the first."""
        [result] = self.create_many([request], lambda request, info: None)
        if isinstance(result, CeiError):
            raise result
        return result

    def create_many(
        self,
        requests: Sequence[NodeRequest],
        created: Callable[[NodeRequest, NodeInfo], None],
        parallel: int = 1,
        cancel: threading.Event | None = None,
    ) -> list[NodeInfo | CeiError]:
        """One paged DescribeInstances for nodes made before, then one RunInstances per group
        of nodes whose parameters are the same but for their own tags (up to BATCH_SIZE a
        call, MinCount = MaxCount = their number), each node tagged as itself just after;
        up to `parallel` calls at once, and none begun once `cancel` is set.

        Nodes share a call only where their user-data is byte for byte the same. cei's default
        host key policy (`pinned`) puts each node's own SSH host private key in its user-data,
        so those nodes are made one call each: one key shared by a group would let any of its
        nodes impersonate the others, and a private key cannot move into tags, which anyone
        allowed to describe instances reads. Nodes that carry no key of their own
        (host_key_policy console or accept-new) and are rendered alike share calls.
        """
        self._widen_pool(parallel)
        results: dict[int, NodeInfo | CeiError] = {}
        kwargs: dict[int, dict[str, Any]] = {}
        for index, request in enumerate(requests):
            try:
                kwargs[index] = self.run_instances_kwargs(request)
            except CeiError as exc:
                results[index] = exc
        groups: dict[str, list[int]] = {}
        for index, params in kwargs.items():
            key = json.dumps(_shared(params)[0], sort_keys=True, default=repr)
            groups.setdefault(key, []).append(index)
        chunks = [indexes[start:start + BATCH_SIZE] for indexes in groups.values()
                  for start in range(0, len(indexes), BATCH_SIZE)]
        tokens = [batch_token([client_token(requests[i].token) for i in chunk])
                  if len(chunk) > 1 else None for chunk in chunks]
        try:
            earlier = self._earlier([requests[i] for i in kwargs]) if kwargs else _Earlier(())
        except CeiError as exc:
            results.update((index, exc) for index in kwargs)
            return [results[index] for index in range(len(requests))]

        early = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ec2-early")

        def made(request: NodeRequest, info: NodeInfo) -> None:
            self._answers.expect([info.resource_id])
            created(request, info)
            ids = self._answers.begin_early(EARLY_ROUND)
            if ids is not None:
                early.submit(self._early_round, ids)

        call = _CreateCall(requests, kwargs, earlier, earlier.strays(t for t in tokens if t),
                           made, parallel, cancel)
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(chunks))),
                                    thread_name_prefix="ec2-create") as pool:
                for outcome in pool.map(partial(self._make, call), chunks, tokens):
                    results.update(outcome)
        finally:  # a round still running ends on its own; the waiters wait for it
            early.shutdown(wait=False)
        return [results[index] for index in range(len(requests))]

    def _early_round(self, ids: list[str]) -> None:
        """A round of DescribeInstances begun during a create_many (_Answers.begin_early). It
        runs beside the creates, and a failure only leaves its instances to their waiters'
        own rounds."""
        with suppress(Exception):  # read-only: the waiters ask again
            self._answers.round(ids)

    def _make(self, call: _CreateCall, chunk: list[int], token: str | None
              ) -> dict[int, NodeInfo | CeiError]:
        """The nodes of one group chunk: found (by the chunk's batch or each node's token),
        else made in one call when none of them was made before, else one call each."""
        requests = call.requests
        results: dict[int, NodeInfo | CeiError] = {}
        found: dict[int, Mapping[str, Any]] = {}
        for launch_index, instance in call.earlier.batches.get(token or "", {}).items():
            if launch_index < len(chunk):
                found[chunk[launch_index]] = instance
        for index in chunk:
            mine = call.earlier.by_token.get(client_token(requests[index].token))
            if index not in found and mine is not None:
                found[index] = mine
        infos = {index: self._info(instance) for index, instance in found.items()}
        for index, info in infos.items():
            call.created(requests[index], info)
        results.update(self._tag_all(call, {  # those cei stopped before tagging
            index: info for index, info in infos.items() if TOKEN not in info.tags}))
        results.update({index: self._own(info, call.own(index))
                        for index, info in infos.items() if index not in results})
        rest = [index for index in chunk if index not in found]
        for index in rest:
            if requests[index].service in call.strays:
                results[index] = ProviderError(
                    f"ec2: node {requests[index].node} may exist already: instances of service "
                    f"{requests[index].service} of an interrupted create carry no node tag "
                    f"yet (tag {BATCH}); terminate the run rather than make nodes twice")
        rest = [index for index in rest if index not in results]
        if token is not None and len(rest) == len(chunk):
            results.update(self._run_batch(call, rest, token))
            return results
        for index in rest:
            what = f"ec2: creating node {requests[index].node}"
            try:
                call.go_on(f"creating node {requests[index].node}")
                response = self._call(what, "run_instances",
                                      **self._vpc_group_ids(call.kwargs[index], call.memo))
                instances = response.get("Instances") or []
                if not instances:
                    raise ProviderError(f"{what}: RunInstances returned no instance")
            except CeiError as exc:
                results[index] = exc
                continue
            info = self._info(instances[0])
            call.created(requests[index], info)
            results[index] = info
        return results

    def _run_batch(self, call: _CreateCall, chunk: list[int], token: str
                   ) -> dict[int, NodeInfo | CeiError]:
        """One RunInstances for the chunk's nodes, the n-th node being the instance of launch
        index n; every id is reported before the nodes' own tags are put on."""
        params, _ = _shared(call.kwargs[chunk[0]])
        for spec in params["TagSpecifications"]:
            if spec.get("ResourceType") == "instance":
                spec["Tags"] = [*spec["Tags"], {"Key": BATCH, "Value": token}]
        params.update(MinCount=len(chunk), MaxCount=len(chunk), ClientToken=token)
        what = (f"ec2: creating nodes {call.requests[chunk[0]].node} .. "
                f"{call.requests[chunk[-1]].node}")
        try:
            call.go_on(what.removeprefix("ec2: "))
            response = self._call(what, "run_instances",
                                  **self._vpc_group_ids(params, call.memo))
        except CeiError as exc:
            return dict.fromkeys(chunk, exc)
        instances = sorted(response.get("Instances") or [],
                           key=lambda i: int(i.get("AmiLaunchIndex") or 0))
        infos = {index: self._info(instance)
                 for index, instance in zip(chunk, instances, strict=False)}
        for index, info in infos.items():
            call.created(call.requests[index], info)
        results = self._tag_all(call, infos)
        for index in chunk:
            if index not in infos:
                results[index] = ProviderError(
                    f"{what}: RunInstances made {len(instances)} of {len(chunk)} instances")
        return results

    def _own(self, info: NodeInfo, own: Mapping[str, str]) -> NodeInfo:
        return replace(info, tags={**info.tags, **own})

    def _tag_all(self, call: _CreateCall, infos: Mapping[int, NodeInfo]
                 ) -> dict[int, NodeInfo | CeiError]:
        """Put batch members' own tags on them (their ids are recorded already), each its
        own CreateTags (tags that differ cannot share one), up to `parallel` at once."""

        def tag(index: int) -> NodeInfo | CeiError:
            own, rid = call.own(index), infos[index].resource_id
            try:
                self._call(f"ec2: tagging {rid}", "create_tags", Resources=[rid],
                           Tags=[{"Key": k, "Value": v} for k, v in own.items()])
            except CeiError as exc:
                return exc
            return self._own(infos[index], own)

        if not infos:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(call.parallel, len(infos))),
                                thread_name_prefix="ec2-tag") as pool:
            return dict(zip(infos, pool.map(tag, infos), strict=True))

    def _known_only(self, ids: list[str], call: Callable[[list[str]], None], what: str) -> None:
        """`call(ids)`; when EC2 refuses the whole call because some ids do not exist (any
        more, or not yet), again without the ids its message names."""
        while ids:
            try:
                call(ids)
                return
            except CeiError:
                raise
            except Exception as exc:
                gone = set(_INSTANCE_ID.findall(str(exc))) & set(ids)
                if error_code(exc) not in _NOT_FOUND or not gone:
                    raise to_provider_error(exc, what) from exc
                ids = [rid for rid in ids if rid not in gone]

    def _describe_ids(self, resource_ids: Sequence[str]) -> dict[str, NodeInfo]:
        """DescribeInstances of up to BATCH_SIZE ids a call; ids EC2 does not know are left out."""
        found: dict[str, NodeInfo] = {}

        def describe(chunk: list[str]) -> None:
            found.update((i.resource_id, i) for i in map(self._info,
                                                         self._paginate(InstanceIds=chunk)))

        ids = list(dict.fromkeys(resource_ids))
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start:start + BATCH_SIZE]
            self._known_only(chunk, describe, f"ec2: describing {', '.join(chunk[:3])}"
                             + (f" and {len(chunk) - 3} more" if len(chunk) > 3 else ""))
        return found

    def describe(self, resource_id: str) -> NodeInfo:
        info = self._describe_ids([resource_id]).get(resource_id)
        return info or NodeInfo(resource_id=resource_id, state=TERMINATED)

    def states(self, resource_ids: Sequence[str]) -> dict[str, str]:
        """DescribeInstanceStatus, 100 ids a call: a tenth of DescribeInstances' answer to
        parse. Ids the cloud no longer knows are gone (TERMINATED)."""
        result: dict[str, str] = {}

        def status(chunk: list[str]) -> None:
            pages = self.client.get_paginator("describe_instance_status").paginate(
                InstanceIds=chunk, IncludeAllInstances=True)
            for page in pages:
                for item in page.get("InstanceStatuses", []):
                    raw = str(item.get("InstanceState", {}).get("Name"))
                    result[str(item["InstanceId"])] = _STATES.get(raw, UNKNOWN)

        ids = list(dict.fromkeys(resource_ids))
        for start in range(0, len(ids), _STATUS_IDS):
            self._known_only(ids[start:start + _STATUS_IDS], status, "ec2: instance states")
        return {rid: result.get(rid, TERMINATED) for rid in ids}

    def destroy(self, resource_id: str) -> None:
        error = self.destroy_many([resource_id]).get(resource_id)
        if error is not None:
            raise error

    def destroy_many(self, resource_ids: Sequence[str]) -> dict[str, CeiError]:
        """TerminateInstances, up to BATCH_SIZE ids a call; an id EC2 no longer knows is gone."""
        errors: dict[str, CeiError] = {}
        ids = list(dict.fromkeys(resource_ids))
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start:start + BATCH_SIZE]
            what = (f"ec2: terminating {chunk[0]}" if len(chunk) == 1
                    else f"ec2: terminating {len(chunk)} instances ({chunk[0]} ..)")
            try:
                self._known_only(chunk, lambda known: self.client.terminate_instances(
                    InstanceIds=known), what)
            except CeiError as exc:
                errors.update(dict.fromkeys(chunk, exc))
        self._answers.forget(ids)
        return errors

    def check(self) -> list[Problem]:
        """One read-only describe call per thing RunInstances would use (image, instance type,
        key pair, subnet, security groups, zone), from the plan keys or `run_instances`."""
        probe = NodeRequest(run="cei-check", service="check", node="check/0", token="check",
                            options=self.options)
        try:
            kwargs = self.run_instances_kwargs(probe)
        except UsageError as exc:
            return [Problem(("image",), str(exc))]
        passthrough = self.options.get("run_instances") or {}

        def option(key: str, name: str) -> tuple[str, ...]:
            return ("run_instances", key) if key in passthrough else (name,)

        problems: list[Problem] = []
        wanted = [(key, name, method, param, answer) for key, name, method, param, answer in _CHECKS
                  if kwargs.get(key) and not str(kwargs[key]).startswith("resolve:ssm:")]
        zone = (kwargs.get("Placement") or {}).get("AvailabilityZone")
        if zone:
            wanted.append(("Placement", "zone", "describe_availability_zones", "ZoneNames",
                           "AvailabilityZones"))
        for key, name, method, param, answer in wanted:
            value = zone if key == "Placement" else kwargs[key]
            values = value if isinstance(value, list) else [value]
            try:
                found = getattr(self.client, method)(**{param: values})[answer]
            except CeiError as exc:
                return [*problems, Problem(("credentials",), str(exc))]
            except Exception as exc:
                code = error_code(exc)
                if code in _UNSUPPORTED_CODES:
                    continue
                error = to_provider_error(
                    exc, f"ec2: looking up {name} {', '.join(map(str, values))}")
                if code in _AUTH_CODES or code is None:
                    return [*problems, Problem(("credentials",), str(error))]
                problems.append(Problem(option(key, name), str(error)))
                continue
            if not found:
                problems.append(Problem(option(key, name), f"ec2: no {name} "
                                        f"{', '.join(map(str, values))} in this account"))
        if kwargs.get("SecurityGroups"):
            problems.extend(self._check_group_names(kwargs))
        return problems

    def _check_group_names(self, kwargs: dict[str, Any]) -> list[Problem]:
        names = kwargs["SecurityGroups"]
        try:
            if kwargs.get("SubnetId"):
                self._vpc_group_ids(kwargs)
            else:
                self._call(f"ec2: security groups {', '.join(names)}",
                           "describe_security_groups", GroupNames=list(names))
        except ProviderError as exc:
            return [Problem(("security_groups",), str(exc))]
        return []

    def console_output(self, resource_id: str) -> str | None:
        """The instance's console text (for host_key_policy: console), None while empty.

        botocore decodes GetConsoleOutput's base64 itself (an after-call handler of its own):
        the text arrives decoded, and decoding it again turns it into noise whenever its
        letters and digits happen to count a multiple of four."""
        response = self._call(
            f"ec2: reading the console of {resource_id}",
            "get_console_output",
            InstanceId=resource_id,
            Latest=True,
        )
        output = response.get("Output")
        return str(output) if output else None

    def find(self, run: str) -> list[NodeInfo]:
        instances = self._instances(
            f"ec2: finding the nodes of run {run}",
            Filters=[_live_filter(), {"Name": f"tag:{RUN}", "Values": [run]}],
        )
        return [self._info(i) for i in instances]

    def wait_running(
        self,
        resource_id: str,
        timeout: float,
        cancel: threading.Event | None = None,
        interval: float | None = None,
    ) -> NodeInfo:
        """Until EC2 says the instance runs (or is gone): each answer comes from a round of
        DescribeInstances shared with every other node being waited for (see _Answers), a
        newer one every `interval` seconds; `cancel` is honoured between answers. An id EC2
        does not know yet (it is eventually consistent) is waited for like a pending one."""
        delay = max(interval or self.capabilities.poll_interval, 0.05)
        deadline = time.monotonic() + timeout
        asked = -math.inf
        try:
            while True:
                info, asked = self._answers.latest(resource_id, asked)
                if info.state in _FINAL:
                    return info
                if time.monotonic() >= deadline:
                    raise StepTimeout(
                        f"ec2 instance {resource_id} was still {info.state} after {timeout:g}s "
                        "(waiting for EC2 to report it running)")
                # the next answer comes from a round begun `delay` after this one's, which may
                # be now already if this one was an early round of the create
                pause = max(0.0, asked + delay - time.monotonic())
                if cancel is not None:
                    if cancel.wait(pause):
                        return info
                else:
                    time.sleep(pause)
        finally:
            self._answers.forget([resource_id])
