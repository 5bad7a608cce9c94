"""A line of network namespaces for tests that need hosts reachable only through others.

Namespace i is linked to namespace i+1 by a veth pair on its own /30 of 192.0.2.0/24
(TEST-NET-1, never routed anywhere). A fresh namespace forwards nothing and has no default
route, so each one reaches only its neighbours: the last is reachable from the first only
through SSH on the ones between. The client (cei) runs in the first namespace, so no test
address can route off this machine. Needs root and iproute2; everything is deleted again.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import sys

from tests.conftest import require


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Line:
    """Namespaces `names[0]` -- `names[1]` -- ... with addresses on every link."""

    def __init__(self, *names: str) -> None:
        require(os.geteuid() == 0 and shutil.which("ip"),
                "network namespaces need root and iproute2 (ip netns)")
        tag = f"cei{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.netns = {name: f"{tag}-{name}" for name in names}
        self.names = names
        self._made: list[str] = []
        try:
            for name in names:
                _ip("netns", "add", self.netns[name])
                self._made.append(self.netns[name])
                _ip("-n", self.netns[name], "link", "set", "lo", "up")
            for i, (left, right) in enumerate(itertools.pairwise(names)):
                _ip("link", "add", "right", "netns", self.netns[left], "type", "veth",
                    "peer", "name", "left", "netns", self.netns[right])
                for ns, dev, host in ((left, "right", 1), (right, "left", 2)):
                    _ip("-n", self.netns[ns], "addr", "add", f"192.0.2.{4 * i + host}/30",
                        "dev", dev)
                    _ip("-n", self.netns[ns], "link", "set", dev, "up")
        except (subprocess.CalledProcessError, OSError) as exc:
            self.close()
            require(False, f"cannot make network namespaces here: {exc}")

    def address(self, name: str) -> str:
        """The address of `name` on its link toward the first namespace."""
        i = self.names.index(name)
        assert i > 0, "the first namespace is reached from nowhere"
        return f"192.0.2.{4 * (i - 1) + 2}"

    def can_connect(self, source: str, host: str, port: int) -> bool:
        """Whether a TCP connection from namespace `source` to host:port succeeds."""
        probe = ("import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])),"
                 " timeout=3).close()")
        done = subprocess.run(["ip", "netns", "exec", self.netns[source], sys.executable, "-c",
                               probe, host, str(port)], capture_output=True, timeout=30)
        return done.returncode == 0

    def close(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()
