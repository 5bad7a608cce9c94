"""`python -m launchplan.providers.localnode`: the node factory of one local-cloud provider.

Importing asyncssh and cryptography costs each Python process a few hundred milliseconds of
CPU; fifty nodes importing them at once on two cores take seconds. The factory imports them once
and forks a node per request: one node directory per line on stdin, answered by one line on
stdout (`ok PID` or `error MESSAGE`). A node detaches (its own session, re-parented) before it
is reported, so it outlives the factory and the cei process; the factory ends at EOF.

A request still in the pipe when its cei process died (a SIGKILLed launch) is dropped: the
factory ends instead. A node made then could appear after `cei terminate` had looked for it,
and nothing would stop it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from launchplan.providers.localnode.node import run_node
from launchplan.providers.localnode.procinfo import PARENT_ENV, starttime, write_json_atomic


def _become_node(node_dir: Path) -> None:
    """In the factory's child: detach, record the node's identity, run it. Never returns."""
    try:
        os.setsid()
        os.chdir(node_dir / "home")  # the identity check looks for this working directory
        console = os.open(node_dir / "console.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(console, 1)
        os.dup2(console, 2)
        os.closerange(3, 256)
        node = os.fork()
        if node:
            write_json_atomic(node_dir / "spawn.json", {"pid": node, "starttime": starttime(node)})
            os._exit(0)
        os._exit(run_node(node_dir))
    except BaseException as exc:
        os.write(2, f"cei local node failed to start: {exc!r}\n".encode())
        os._exit(1)


def serve() -> int:
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    for line in sys.stdin:
        if not line.strip():
            continue
        if os.getppid() != parent:  # the cei process that asked is gone: so is its answer
            return 0
        node_dir = Path(line.strip()).absolute()
        child = os.fork()
        if child == 0:
            _become_node(node_dir)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            sys.stdout.write(f"ok {node_dir}\n")
        else:
            sys.stdout.write(f"error node process for {node_dir} exited {status}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
