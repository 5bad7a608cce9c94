"""`python -m launchplan.providers.localnode NODE_DIR`: detach from the creator, run the node.

The first process forks, records the child's identity in NODE_DIR/spawn.json and exits, so the
creator can reap it at once (no zombies) and the node, re-parented, outlives the creator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from launchplan.providers.localnode.procinfo import starttime, write_json_atomic


def _detach(node_dir: Path) -> None:
    child = os.fork()
    if child:
        write_json_atomic(node_dir / "spawn.json", {"pid": child, "starttime": starttime(child)})
        os._exit(0)
    os.setsid()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m launchplan.providers.localnode NODE_DIR", file=sys.stderr)
        return 2
    node_dir = Path(argv[0]).absolute()
    _detach(node_dir)
    from launchplan.providers.localnode.node import run_node

    return run_node(node_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
