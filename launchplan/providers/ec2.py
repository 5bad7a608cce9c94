"""EC2 and every EC2-compatible API (Nimbus, Eucalyptus, OpenStack's EC2 API, moto) via boto3.

Credentials come from the cloud profile's `credentials` (which a plan may fill only through
`env('...')`) or else from boto3's standard chain: environment, shared profiles, instance roles.
Retries of throttling and 5xx are botocore's own (standard mode); what still fails afterwards is
reported as a transient ProviderError, anything else as a fatal one carrying EC2's message.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from launchplan.errors import CeiError, ProviderError, StepTimeout, UsageError
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
from launchplan.providers.tags import PREFIX, RUN, TOKEN, client_token, merged_tags

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

# botocore's retry configuration: "standard" backs off exponentially on throttling and 5xx.
RETRY_MODE = "standard"
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound"})
_STATUS_IDS = 100  # instance ids per DescribeInstanceStatus call
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


class EC2Provider(Provider):
    """Nodes are EC2 instances, tagged with cei:run/cei:service/cei:node at creation."""

    driver: ClassVar[str] = "ec2"
    # EC2 refuses user-data over 16 KiB (counted before base64).
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(userdata_limit=16384)

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        super().__init__(options, run_dir)
        address = options.get("address") or "public"
        if address not in ("public", "private"):
            raise UsageError(f"ec2: address must be 'public' or 'private', not {address!r}")
        self.address_kind: str = address
        self._client: Any = None
        self._lock = threading.Lock()

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
        try:
            return self._paginate(**kwargs)
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

    def _by_token(self, request: NodeRequest) -> NodeInfo | None:
        """A live instance already made with this token (for endpoints that ignore ClientToken)."""
        instances = self._instances(
            f"ec2: looking for node {request.node}",
            Filters=[
                {"Name": f"tag:{TOKEN}", "Values": [client_token(request.token)]},
                {"Name": f"tag:{RUN}", "Values": [request.run]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ],
        )
        return self._info(instances[0]) if instances else None

    def _vpc_group_ids(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """In a VPC (a subnet is given) EC2 takes security groups by id only: look the names
        up among the subnet's VPC's groups, so a plan may name them as in the default VPC."""
        names = kwargs.get("SecurityGroups")
        subnet = kwargs.get("SubnetId")
        if not names or not subnet:
            return kwargs
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
        resolved = {k: v for k, v in kwargs.items() if k != "SecurityGroups"}
        resolved["SecurityGroupIds"] = [*kwargs.get("SecurityGroupIds", []),
                                        *(ids[n] for n in names)]
        return resolved

    def create(self, request: NodeRequest) -> NodeInfo:
        """RunInstances with ClientToken and tags; a retry with the same token finds the first."""
        kwargs = self._vpc_group_ids(self.run_instances_kwargs(request))
        existing = self._by_token(request)
        if existing is not None:
            return existing
        response = self._call(f"ec2: creating node {request.node}", "run_instances", **kwargs)
        instances = response.get("Instances") or []
        if not instances:
            raise ProviderError(f"ec2: RunInstances for {request.node} returned no instance")
        return self._info(instances[0])

    def describe(self, resource_id: str) -> NodeInfo:
        try:
            instances = self._paginate(InstanceIds=[resource_id])
        except CeiError:
            raise
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return NodeInfo(resource_id=resource_id, state=TERMINATED)
            raise to_provider_error(exc, f"ec2: describing {resource_id}") from exc
        if not instances:
            return NodeInfo(resource_id=resource_id, state=TERMINATED)
        return self._info(instances[0])

    def states(self, resource_ids: Sequence[str]) -> dict[str, str]:
        """DescribeInstanceStatus, 100 ids a call: a tenth of DescribeInstances' answer to
        parse. An id the cloud no longer knows fails the whole call; the ids its message
        names are gone (TERMINATED) and the call is made again without them."""
        result: dict[str, str] = {}
        ids = list(dict.fromkeys(resource_ids))
        for start in range(0, len(ids), _STATUS_IDS):
            chunk = ids[start:start + _STATUS_IDS]
            while chunk:
                try:
                    pages = self.client.get_paginator("describe_instance_status").paginate(
                        InstanceIds=chunk, IncludeAllInstances=True)
                    for page in pages:
                        for status in page.get("InstanceStatuses", []):
                            raw = str(status.get("InstanceState", {}).get("Name"))
                            result[str(status["InstanceId"])] = _STATES.get(raw, UNKNOWN)
                    break
                except CeiError:
                    raise
                except Exception as exc:
                    gone = set(_INSTANCE_ID.findall(str(exc))) & set(chunk)
                    if error_code(exc) not in _NOT_FOUND or not gone:
                        raise to_provider_error(exc, "ec2: instance states") from exc
                    result.update((rid, TERMINATED) for rid in gone)
                    chunk = [rid for rid in chunk if rid not in gone]
        return {rid: result.get(rid, TERMINATED) for rid in ids}

    def destroy(self, resource_id: str) -> None:
        try:
            self.client.terminate_instances(InstanceIds=[resource_id])
        except CeiError:
            raise
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return
            raise to_provider_error(exc, f"ec2: terminating {resource_id}") from exc

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
        """The instance's console text (for host_key_policy: console), None while empty."""
        response = self._call(
            f"ec2: reading the console of {resource_id}",
            "get_console_output",
            InstanceId=resource_id,
            Latest=True,
        )
        output = response.get("Output")
        if not output:
            return None
        try:
            return base64.b64decode(output).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return str(output)

    def find(self, run: str) -> list[NodeInfo]:
        instances = self._instances(
            f"ec2: finding the nodes of run {run}",
            Filters=[
                {"Name": f"tag:{RUN}", "Values": [run]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ],
        )
        return [self._info(i) for i in instances]

    def wait_running(
        self,
        resource_id: str,
        timeout: float,
        cancel: threading.Event | None = None,
        interval: float | None = None,
    ) -> NodeInfo:
        """boto3's `instance_running` waiter, one attempt at a time so `cancel` is honoured."""
        from botocore.exceptions import WaiterError

        delay = max(interval or self.capabilities.poll_interval, 0.05)
        attempts = max(1, math.ceil(timeout / delay) + 1)
        deadline = time.monotonic() + timeout
        waiter = self.client.get_waiter("instance_running")
        for _ in range(attempts):
            try:
                waiter.wait(InstanceIds=[resource_id], WaiterConfig={"Delay": 1, "MaxAttempts": 1})
                return self.describe(resource_id)
            except WaiterError as exc:
                if "terminal failure" in str(exc):
                    return self.describe(resource_id)
                last = exc.last_response or {}
                if "Error" in last and last["Error"].get("Code") not in _NOT_FOUND:
                    raise response_error(last, f"ec2: waiting for {resource_id}") from exc
            except CeiError:
                raise
            except Exception as exc:  # connection errors that outlasted botocore's retries
                raise to_provider_error(exc, f"ec2: waiting for {resource_id}") from exc
            if time.monotonic() >= deadline:
                break
            if cancel is not None:
                if cancel.wait(delay):
                    return self.describe(resource_id)
            else:
                time.sleep(delay)
        info = self.describe(resource_id)
        if info.state in (RUNNING, ERROR, TERMINATED):
            return info
        raise StepTimeout(
            f"ec2 instance {resource_id} was still {info.state} after {timeout:g}s "
            "(waiting for EC2 to report it running)"
        )
