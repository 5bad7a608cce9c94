"""`python -m launchplan.providers.localnode`: the node factory of one local-cloud provider.

Importing asyncssh and cryptography costs each Python process a few hundred milliseconds of
CPU; fifty nodes importing them at once on two cores take seconds. The factory imports them once
and forks a node per request: one node directory per line on stdin, answered by one line on
stdout (`ok DIR` or `error MESSAGE`) once the node's spawn.json names it. A node starts its own
session, so it outlives the factory and the cei process; the factory ends at EOF.

One fork per node, and the answer does not wait for the node: whatever can fail (the node's
directory, its console) is opened by the factory first and reported as an error, and the node
works in its home/ from its first instant, so the provider's identity check holds as soon as
spawn.json is written. The kernel reaps the nodes that end while the factory lives (SIGCHLD
ignored); a node restores SIGCHLD before it runs anything, as its commands need it.

A request still in the pipe when its cei process died (a SIGKILLed launch) is dropped: the
factory ends instead. A node made then could appear after `cei terminate` had looked for it,
and nothing would stop it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from launchplan.providers.localnode.node import run_node
from launchplan.providers.localnode.procinfo import PARENT_ENV, starttime, write_json_atomic


def _become_node(node_dir: Path, console: int) -> None:
    """In the factory's child (working in node_dir/home): detach, run the node. Never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(console, 1)
        os.dup2(console, 2)
        os.closerange(3, 256)
        os._exit(run_node(node_dir))
    except BaseException as exc:
        os.write(2, f"cei local node failed to start: {exc!r}\n".encode())
        os._exit(1)


def _spawn(node_dir: Path) -> str:
    """Fork the node of `node_dir`; the answer line for the provider."""
    here = os.getcwd()
    try:
        os.chdir(node_dir / "home")  # the identity check looks for this working directory
        console = os.open(node_dir / "console.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                          0o600)
    except OSError as exc:
        os.chdir(here)
        return f"error cannot start the node in {node_dir}: {exc}"
    try:
        node = os.fork()
        if node == 0:
            _become_node(node_dir, console)
    except OSError as exc:
        return f"error cannot start the node in {node_dir}: {exc}"
    finally:
        os.close(console)
        os.chdir(here)
    write_json_atomic(node_dir / "spawn.json", {"pid": node, "starttime": starttime(node)})
    return f"ok {node_dir}"


def serve() -> int:
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        if not line.strip():
            continue
        if os.getppid() != parent:  # the cei process that asked is gone: so is its answer
            return 0
        sys.stdout.write(_spawn(Path(line.strip()).absolute()) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    status = serve()
    sys.stdout.flush()
    os._exit(status)  # nothing to tear down: the nodes live on, detached
