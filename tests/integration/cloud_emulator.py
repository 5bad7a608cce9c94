"""The EC2 emulator: moto's server in this process, on 127.0.0.1 and a free port, over HTTP.

A WSGI middleware sits in front of moto and does two things a real test needs:
- fixes moto's EC2 XML namespace ("http://ec2.amazonaws.com/doc/2016-11-15") to end with "/",
  as libcloud 3.9 expects, and drops the namespace moto puts on error documents (EC2's have
  none); the fixes are on the server side so cei itself stays clean;
- counts the EC2 requests it is sent by action (`actions`), so tests can hold cei to a budget of
  calls and benchmarks can report them;
- answers the next N EC2 requests with a throttling error (HTTP 503, RequestLimitExceeded) when
  a test asks for it, so tests prove that retries happen;
- refuses every RunInstances (HTTP 400, InstanceLimitExceeded) while `refuse_creates` is set,
  a cloud out of capacity, so tests prove that cei backs off and leaks nothing;
- when a `NodeFarm` is attached (fixture `ec2_nodes`), makes instances real: a DescribeInstances
  answer that mentions a running instance not booted yet boots a local-cloud node with that
  instance's user-data on its own loopback address and the farm's fixed SSH port, and the
  instance's addresses and DNS names in every answer are rewritten to that loopback address;
  TerminateInstances destroys the node. Nothing outside 127.0.0.0/8 is ever handed out.

The fixtures (`ec2_emulator`, `ec2_image`, `ec2_key_pair`, `ec2_nodes`) are imported by
tests/integration/conftest.py, so every integration module can use them.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import re
import shutil
import tempfile
import threading
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# moto is a declared test dependency, imported at module level: if it is missing, tests fail.
import moto.settings
import pytest
import yaml
from moto.ec2.models import ec2_backends
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from launchplan.ctx.hostkeys import generate_host_key
from launchplan.ctx.userdata import build_userdata, parse_userdata
from launchplan.providers.base import NodeRequest
from launchplan.providers.local import LocalProvider

REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"

_NAMESPACE = re.compile(rb'xmlns="(http://ec2\.amazonaws\.com/doc/[0-9-]+)"')
# EC2's error documents carry no namespace; moto gives them one, which hides the error code
# from libcloud ("Errors/Error" then matches nothing).
_ERROR_ROOT = re.compile(rb'<Response xmlns="[^"]*">')
_THROTTLE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    b"<Message>Request limit exceeded.</Message></Error></Errors>"
    b"<RequestID>cei-emulator-throttle</RequestID></Response>"
)

_REFUSE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Response><Errors><Error><Code>InstanceLimitExceeded</Code>"
    b"<Message>You have requested more instances than your current instance limit allows."
    b"</Message></Error></Errors><RequestID>cei-emulator-refuse</RequestID></Response>"
)

StartResponse = Callable[..., Callable[[bytes], object]]

FARM_RUN = "ec2-emulator"  # the local-cloud "run" that holds every node standing in for one
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_ADDRESS_TAGS = ("ipAddress", "privateIpAddress", "dnsName", "privateDnsName")
_GONE = ("shutting-down", "terminated")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _instances(body: bytes) -> list[dict[str, str]]:
    """instanceId, state and address fields of every instance in a DescribeInstances answer."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    found = []
    for element in root.iter():
        if _local(element.tag) != "instancesSet":
            continue
        for item in element:
            fields: dict[str, str] = {}
            for name in ("instanceId", *_ADDRESS_TAGS):
                child = _child(item, name)
                if child is not None and child.text:
                    fields[name] = child.text
            state = _child(item, "instanceState")
            state_name = _child(state, "name") if state is not None else None
            fields["state"] = (state_name.text or "") if state_name is not None else ""
            if "instanceId" in fields:
                found.append(fields)
    return found


def _user_data(instance_id: str) -> bytes:
    """The instance's user-data as moto stored it (moto runs in this process)."""
    for account in list(ec2_backends.keys()):
        backend = ec2_backends[account][REGION]
        try:
            instance = backend.get_instance(instance_id)
        except Exception:  # InvalidInstanceID in this account
            continue
        data = instance.user_data
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if not data:
            return b""
        encoded = data.as_bytes() if hasattr(data, "as_bytes") else data  # moto's wrapper type
        return base64.b64decode(encoded)
    return b""


def _with_other_host_key(userdata: bytes) -> bytes:
    """The same user-data with another ssh_keys pair: the node will answer with a key cei did
    not pin (a stand-in for a man in the middle)."""
    texts = []
    for part in parse_userdata(userdata):
        if part.content_type == "text/cloud-config":
            config = yaml.safe_load(part.text) or {}
            if "ssh_keys" in config:
                key = generate_host_key()
                config["ssh_keys"] = {"ed25519_private": key.private_openssh,
                                      "ed25519_public": key.public}
            texts.append("#cloud-config\n" + yaml.safe_dump(config, sort_keys=False))
        else:
            texts.append(part.text)
    return build_userdata(texts)


class NodeFarm:
    """Local-cloud nodes standing in for the emulator's instances, one per running instance.

    Every node listens on its own loopback address and the same fixed `port`, so a plan reaches
    any instance with `ssh_port: <port>`.
    """

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port
        self.provider = LocalProvider({"port": port}, base)
        self.wrong_host_key = False  # boot the next nodes with a host key cei did not make
        self._lock = threading.Lock()
        self._booting: dict[str, threading.Lock] = {}
        self._nodes: dict[str, str] = {}  # instance id -> loopback address

    def address(self, instance_id: str) -> str | None:
        with self._lock:
            return self._nodes.get(instance_id)

    def booted(self) -> dict[str, str]:
        with self._lock:
            return dict(self._nodes)

    def boot(self, instance_id: str) -> str:
        """The node for the instance, booted now if it is not yet (once, however many ask)."""
        with self._lock:
            gate = self._booting.setdefault(instance_id, threading.Lock())
        with gate:
            known = self.address(instance_id)
            if known is not None:
                return known
            userdata = _user_data(instance_id)
            if self.wrong_host_key:
                userdata = _with_other_host_key(userdata)
            info = self.provider.create(NodeRequest(
                run=FARM_RUN, service="instance", node=instance_id,
                token=instance_id, options=self.provider.options, userdata=userdata))
            address = str(info.address)
            assert ipaddress.ip_address(address) in _LOOPBACK, address
            with self._lock:
                self._nodes[instance_id] = address
            return address

    def console(self, instance_id: str) -> str | None:
        """The node's console (cloud-init's fingerprint block included), as EC2 would show it."""
        if self.address(instance_id) is None:
            return None
        return self.provider.console_output(f"{FARM_RUN}/{instance_id}")

    def destroy(self, instance_id: str) -> None:
        with self._lock:
            known = self._nodes.pop(instance_id, None) is not None
        if known:
            self.provider.destroy(f"{FARM_RUN}/{instance_id}")

    def destroy_all(self) -> None:
        """Kill every node the farm booted (and any live one its directory still knows of)."""
        for instance_id in self.booted():
            self.destroy(instance_id)
        for info in self.provider.find(FARM_RUN):
            self.provider.destroy(info.resource_id)

    def rewrite(self, body: bytes) -> bytes:
        """Boot running instances not booted yet and put their loopback address in `body`."""
        instances = _instances(body)
        wanted = [i["instanceId"] for i in instances
                  if i["state"] == "running" and self.address(i["instanceId"]) is None]
        if wanted:
            with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:
                list(pool.map(self.boot, wanted))
        for fields in instances:
            address = self.address(fields["instanceId"])
            if address is None:
                continue
            if fields["state"] in _GONE:
                self.destroy(fields["instanceId"])
                continue
            assert ipaddress.ip_address(address) in _LOOPBACK, address
            for name in _ADDRESS_TAGS:
                value = fields.get(name)
                if value:
                    body = body.replace(f">{value}<".encode(), f">{address}<".encode())
        return body


def _params(environ: dict[str, Any]) -> tuple[dict[str, list[str]], bytes]:
    """The EC2 query parameters (query string and form body) and the body as read."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    params = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if body and "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        for key, values in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items():
            params.setdefault(key, []).extend(values)
    return params, body


class EmulatorMiddleware:
    """WSGI middleware around moto: namespace fix and injected throttling for EC2 requests."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._throttle_next = 0
        self.throttled = 0  # throttling answers served so far
        self.ec2_requests = 0  # EC2 requests seen (throttled ones included)
        self.farm: NodeFarm | None = None  # when set, running instances become local nodes
        self.refuse_creates = False  # answer every RunInstances with InstanceLimitExceeded
        self.refused = 0  # RunInstances requests refused so far
        self.actions: Counter[str] = Counter()  # EC2 requests by action (throttled included)

    def throttle(self, count: int) -> None:
        """Answer the next `count` EC2 requests with 503 RequestLimitExceeded."""
        with self._lock:
            self._throttle_next = count

    def reset_counters(self) -> None:
        with self._lock:
            self._throttle_next = 0
            self.throttled = 0
            self.ec2_requests = 0
            self.refuse_creates = False
            self.refused = 0
            self.actions.clear()

    def _count(self, environ: dict[str, Any]) -> None:
        params, _ = _params(environ)
        with self._lock:
            self.actions[(params.get("Action") or ["?"])[0]] += 1

    def _refuse(self, environ: dict[str, Any], start_response: StartResponse
                ) -> Iterable[bytes] | None:
        """A cloud that is out of capacity for us: every create fails, nothing is made."""
        if not self.refuse_creates:
            return None
        params, _ = _params(environ)
        if (params.get("Action") or [""])[0] != "RunInstances":
            return None
        with self._lock:
            self.refused += 1
        start_response("400 Bad Request", [("Content-Type", "text/xml"),
                                           ("Content-Length", str(len(_REFUSE_BODY)))])
        return [_REFUSE_BODY]

    @staticmethod
    def _is_ec2(environ: dict[str, Any]) -> bool:
        return "/ec2/aws4_request" in environ.get("HTTP_AUTHORIZATION", "")

    def _take_throttle(self) -> bool:
        with self._lock:
            self.ec2_requests += 1
            if self._throttle_next > 0:
                self._throttle_next -= 1
                self.throttled += 1
                return True
            return False

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._is_ec2(environ):
            self._count(environ)
        if self._is_ec2(environ) and self._take_throttle():
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(_THROTTLE_BODY)))],
            )
            return [_THROTTLE_BODY]
        if self._is_ec2(environ) and (refused := self._refuse(environ, start_response)):
            return refused
        farm = self.farm if self._is_ec2(environ) else None
        action = ""
        params: dict[str, list[str]] = {}
        if farm is not None:
            params, _ = _params(environ)
            action = (params.get("Action") or [""])[0]
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            captured["status"], captured["headers"] = status, headers
            return written.append

        result = self.app(environ, capture)
        try:
            body = b"".join([*written, *result])
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        body = _ERROR_ROOT.sub(b"<Response>", _NAMESPACE.sub(rb'xmlns="\1/"', body))
        if farm is not None and str(captured["status"]).startswith("200"):
            if action == "DescribeInstances":
                body = farm.rewrite(body)
            elif action == "GetConsoleOutput":
                console = farm.console((params.get("InstanceId") or [""])[0])
                if console is not None:
                    encoded = base64.b64encode(console.encode())
                    body = re.sub(rb"<output>.*?</output>", b"<output>" + encoded + b"</output>",
                                  body, flags=re.S)
            elif action == "TerminateInstances":
                for key, values in params.items():
                    if key.startswith("InstanceId"):
                        for instance_id in values:
                            farm.destroy(instance_id)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Keep test output readable: no access log line per request."""


class EC2Emulator:
    """A running moto server with the middleware; `endpoint` is its http://127.0.0.1:PORT."""

    def __init__(self) -> None:
        self.middleware = EmulatorMiddleware(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self.middleware, threaded=True, request_handler=_QuietHandler
        )
        self.host = "127.0.0.1"
        self.port = int(self._server.server_port)
        self.endpoint = f"http://{self.host}:{self.port}"
        self.region = REGION
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint) and the throttling counters;
        kill the nodes standing in for instances."""
        if self.middleware.farm is not None:
            self.middleware.farm.destroy_all()
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.middleware.reset_counters()

    def throttle(self, count: int) -> None:
        self.middleware.throttle(count)

    @property
    def throttled(self) -> int:
        return self.middleware.throttled

    @property
    def actions(self) -> Counter[str]:
        """The EC2 requests served since the last reset, by action."""
        with self.middleware._lock:
            return Counter(self.middleware.actions)

    def client(self) -> Any:
        """A plain boto3 EC2 client on the emulator, for checking what cei did."""
        import boto3

        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def ec2_options(self, **extra: Any) -> dict[str, Any]:
        """Cloud options for `driver: ec2` pointed at the emulator."""
        return {"region": self.region, "endpoint_url": self.endpoint, **extra}

    def libcloud_options(self, **extra: Any) -> dict[str, Any]:
        """Cloud options for `driver: libcloud` with libcloud's EC2 driver on the emulator."""
        return {
            "provider": "ec2",
            "options": {
                "host": self.host,
                "port": self.port,
                "secure": False,
                "signature_version": "4",
                "region": self.region,
            },
            "credentials": {"key": ACCESS_KEY, "secret": SECRET_KEY},
            **extra,
        }

    def instances(self, **filters: list[str]) -> list[dict[str, Any]]:
        """Every instance (optionally filtered, e.g. {"tag:cei:run": [run]})."""
        kwargs: dict[str, Any] = {}
        if filters:
            kwargs["Filters"] = [{"Name": k, "Values": v} for k, v in filters.items()]
        pages = self.client().get_paginator("describe_instances").paginate(**kwargs)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


@pytest.fixture(scope="session")
def _ec2_server() -> Iterator[EC2Emulator]:
    emulator = EC2Emulator()
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


# What points boto3 at the emulator's fake account, and away from anything of the user's.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent/cei-emulator-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/cei-emulator-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET_AWS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


def use_fake_aws(environ: MutableMapping[str, str]) -> None:
    """For scripts (the benchmarks) that run the emulator outside pytest."""
    for name in UNSET_AWS:
        environ.pop(name, None)
    environ.update(FAKE_AWS)


@pytest.fixture
def ec2_emulator(_ec2_server: EC2Emulator, monkeypatch: pytest.MonkeyPatch) -> EC2Emulator:
    """A clean emulator, fake credentials in the environment, AMI and key-pair checks on."""
    for name in UNSET_AWS:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(moto.settings, "ENABLE_AMI_VALIDATION", True)
    monkeypatch.setattr(moto.settings, "ENABLE_KEYPAIR_VALIDATION", True)
    _ec2_server.reset()
    return _ec2_server


@pytest.fixture
def ec2_image(ec2_emulator: EC2Emulator) -> str:
    """A freshly registered AMI id in the emulator."""
    response = ec2_emulator.client().register_image(
        Name="cei-test-image",
        Architecture="x86_64",
        RootDeviceName="/dev/sda1",
        VirtualizationType="hvm",
    )
    return str(response["ImageId"])


@pytest.fixture
def ec2_key_pair(ec2_emulator: EC2Emulator) -> str:
    """The name of a key pair that exists in the emulator."""
    ec2_emulator.client().create_key_pair(KeyName="cei-test-key")
    return "cei-test-key"


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 right now; each farm node binds it on its own address."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def _node_farm() -> Iterator[NodeFarm]:
    base = Path(tempfile.mkdtemp(prefix="cei-ec2-nodes-"))
    farm = NodeFarm(base, free_loopback_port())
    try:
        yield farm
    finally:
        farm.destroy_all()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ec2_nodes(ec2_emulator: EC2Emulator, _node_farm: NodeFarm) -> Iterator[NodeFarm]:
    """The emulator with real nodes: every running instance answers SSH on a loopback address
    at `ec2_nodes.port`. Every node is killed when the test ends."""
    _node_farm.wrong_host_key = False
    ec2_emulator.middleware.farm = _node_farm
    try:
        yield _node_farm
    finally:
        ec2_emulator.middleware.farm = None
        _node_farm.destroy_all()
