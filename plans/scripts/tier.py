#!/usr/bin/env python3
"""Boot program of plans/three-tier.yml: starts one tier's HTTP daemon and reports its outputs.

  tier.py db                       serves the rows of $CEI_CONFIG, guarded by a fresh token
  tier.py app --message TEXT       reads the db (url and token from $CEI_CONFIG)
  tier.py web --expect-backends N  balances over the app nodes listed in $CEI_CONFIG

The daemon runs detached from the SSH session (its pid in daemon.pid, its log in daemon.log);
the plan's terminate program stops it.
"""

import argparse
import itertools
import json
import os
import secrets
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def own_address() -> str:
    with open(os.environ["CEI_CONTEXT"]) as f:
        context = json.load(f)
    for node in context["nodes"]:
        if node["node"] == os.environ["CEI_NODE"]:
            return node["address"]
    raise SystemExit("this node is missing from $CEI_CONTEXT")


def fetch(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"X-Token": token} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def make_handler(answer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                status, body = 200, {"ok": True}
            else:
                status, body = answer(self)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stderr.write(fmt % args + "\n")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["db", "app", "web"])
    parser.add_argument("--message", default="")
    parser.add_argument("--expect-backends", type=int, default=0)
    args = parser.parse_args()
    with open(os.environ["CEI_CONFIG"]) as f:
        config = json.load(f)
    outputs: dict = {}

    if args.role == "db":
        token = secrets.token_hex(16)
        outputs["token"] = token

        def answer(req):
            if req.headers.get("X-Token") != token:
                return 403, {"error": "bad token"}
            return 200, {"rows": config["rows"]}
    elif args.role == "app":
        rows = fetch(config["db_url"], config["db_token"])["rows"]  # fail the boot if db is down

        def answer(req):
            fresh = fetch(config["db_url"], config["db_token"])["rows"]
            return 200, {"node": os.environ["CEI_NODE"], "message": args.message, "rows": fresh}
        outputs["rows"] = len(rows)
    else:
        backends = config["backends"]
        if len(backends) != args.expect_backends:
            raise SystemExit(f"expected {args.expect_backends} backends, got {len(backends)}")
        turn = itertools.cycle(backends)

        def answer(req):
            return 200, {"via": os.environ["CEI_NODE"], "backend": fetch(next(turn))}
        outputs["backends"] = len(backends)

    address = own_address()
    # On the local cloud every node has its own loopback address; on a VM listen everywhere.
    bind = address if address.startswith("127.") else "0.0.0.0"
    server = ThreadingHTTPServer((bind, 0), make_handler(answer))
    outputs["url"] = f"http://{address}:{server.server_address[1]}"
    pid = os.fork()
    if pid == 0:  # the daemon: its own session, no tie to the SSH channel
        os.setsid()
        log = os.open("daemon.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        server.serve_forever()
        os._exit(0)
    server.socket.close()
    with open("daemon.pid", "w") as f:
        f.write(f"{pid}\n")
    with open(os.environ["CEI_OUTPUT"], "w") as f:
        json.dump(outputs, f)


if __name__ == "__main__":
    main()
