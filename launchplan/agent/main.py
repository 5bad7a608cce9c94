"""Command line of the agent: `serve` runs the daemon; the other commands are its clients.

Every client command prints ONE JSON document on stdout and exits 0 when it says "ok": true,
1 otherwise, so cei can run them over SSH and parse the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .monitor import Monitor, run_monitor
from .server import AgentUnavailable, request, serve

DEFAULT_HOME = os.environ.get("CEI_AGENT_HOME") or os.path.join(
    os.path.expanduser("~"), ".cei", "agent"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cei-agent", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=DEFAULT_HOME, help="agent directory (state, socket)")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for answer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", parents=[common], help="run the supervisor")
    p.add_argument("--slots", type=int, default=8, help="how many processes may run at once")
    p.add_argument("--daemon", action="store_true", help="detach; print one JSON line when up")
    p = sub.add_parser("launch", parents=[common], help="start a process from DEF.json")
    p.add_argument("definition", help="process definition file (JSON), or - for stdin")
    p.add_argument("--name", help="override the definition's name")
    sub.add_parser("list", parents=[common], help="processes and slots")
    p = sub.add_parser("kill", parents=[common], help="terminate a process (no restart)")
    p.add_argument("name")
    sub.add_parser("status", parents=[common], help="processes, slots and sensors")
    sub.add_parser("sensors", parents=[common], help="CPU, memory, network, load")
    sub.add_parser("ping", parents=[common], help="is the agent up")
    sub.add_parser("stop", parents=[common], help="stop the agent (processes keep running)")
    p = sub.add_parser("monitor", parents=[common],
                       help="heartbeats for cei's controller: one JSON line per period")
    p.add_argument("--period", type=float, default=5.0, help="seconds between heartbeats")
    p.add_argument("--agent", action="store_true", help="report the agent serving --home")
    p.add_argument("--ready", metavar="FILE", help="shell file of the node's ready program")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--metrics", metavar="FILE", help="shell file of the metrics program")
    p.add_argument("--metrics-timeout", type=float, default=30.0)
    p.add_argument("--metrics-every", type=float, default=0.0,
                   help="run the metrics program at most this often (seconds)")
    p.add_argument("--count", type=int, help="stop after this many heartbeats")
    return parser


def _emit(doc: dict[str, Any]) -> int:
    print(json.dumps(doc, indent=1, sort_keys=True))
    return 0 if doc.get("ok") else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python3 cei-agent.pyz` and `python3 -m launchplan.agent`."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        if args.slots < 1:
            return _emit({"ok": False, "error": "--slots must be at least 1"})
        return serve(args.home, args.slots, daemon=args.daemon)
    if args.command == "monitor":
        if args.period <= 0:
            return _emit({"ok": False, "error": "--period must be above 0"})
        monitor = Monitor(args.home if args.agent else None, args.ready, args.ready_timeout,
                          args.metrics, args.metrics_timeout, args.metrics_every)
        return run_monitor(monitor, args.period, args.count)
    extra: dict[str, Any] = {}
    if args.command == "launch":
        try:
            if args.definition == "-":
                definition = json.load(sys.stdin)
            else:
                with open(args.definition) as fh:
                    definition = json.load(fh)
        except (OSError, ValueError) as exc:
            return _emit({"ok": False, "error": f"cannot read {args.definition}: {exc}"})
        if args.name and isinstance(definition, dict):
            definition["name"] = args.name
        extra["definition"] = definition
    elif args.command == "kill":
        extra["name"] = args.name
    try:
        return _emit(request(args.home, args.command, timeout=args.timeout, **extra))
    except AgentUnavailable as exc:  # "down": nothing serves this home (cei may restart it)
        return _emit({"ok": False, "down": True, "error": str(exc)})
    except (OSError, ValueError) as exc:
        return _emit({"ok": False, "down": True, "error": f"talking to the agent failed: {exc}"})
