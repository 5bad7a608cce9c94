"""The EC2 emulator: moto's server in this process, on 127.0.0.1 and a free port, over HTTP.

A WSGI middleware sits in front of moto and does two things a real test needs:
- fixes moto's EC2 XML namespace ("http://ec2.amazonaws.com/doc/2016-11-15") to end with "/",
  as libcloud 3.9 expects, and drops the namespace moto puts on error documents (EC2's have
  none); the fixes are on the server side so cei itself stays clean;
- answers the next N EC2 requests with a throttling error (HTTP 503, RequestLimitExceeded) when
  a test asks for it, so tests prove that retries happen.

Use from a test module with `pytest_plugins = ["tests.integration.cloud_emulator"]` and the
fixtures `ec2_emulator`, `ec2_image`, `ec2_key_pair`.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# moto is a declared test dependency, imported at module level: if it is missing, tests fail.
import moto.settings
import pytest
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

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

StartResponse = Callable[..., Callable[[bytes], object]]


class EmulatorMiddleware:
    """WSGI middleware around moto: namespace fix and injected throttling for EC2 requests."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._throttle_next = 0
        self.throttled = 0  # throttling answers served so far
        self.ec2_requests = 0  # EC2 requests seen (throttled ones included)

    def throttle(self, count: int) -> None:
        """Answer the next `count` EC2 requests with 503 RequestLimitExceeded."""
        with self._lock:
            self._throttle_next = count

    def reset_counters(self) -> None:
        with self._lock:
            self._throttle_next = 0
            self.throttled = 0
            self.ec2_requests = 0

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
        if self._is_ec2(environ) and self._take_throttle():
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(_THROTTLE_BODY)))],
            )
            return [_THROTTLE_BODY]
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
        """Forget every resource (moto's own reset endpoint) and the throttling counters."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.middleware.reset_counters()

    def throttle(self, count: int) -> None:
        self.middleware.throttle(count)

    @property
    def throttled(self) -> int:
        return self.middleware.throttled

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


@pytest.fixture
def ec2_emulator(_ec2_server: EC2Emulator, monkeypatch: pytest.MonkeyPatch) -> EC2Emulator:
    """A clean emulator, fake credentials in the environment, AMI and key-pair checks on."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/cei-test-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/cei-test-aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
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
