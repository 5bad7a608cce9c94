"""`cei logs RUN [NODE] [-f]`: read or follow what a run's programs printed."""

from __future__ import annotations

import time
from pathlib import Path

import click

from launchplan.cli.common import json_option, open_store
from launchplan.cli.output import emit_json, write
from launchplan.errors import UsageError

FOLLOW_POLL = 0.5  # seconds between looks at the logs while following


@click.command()
@click.argument("run_name", metavar="RUN")
@click.argument("node", metavar="[NODE|SERVICE]", required=False)
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing what the programs print, until the run is terminated or "
                   "Ctrl-C.")
@json_option
def logs(run_name: str, node: str | None, follow: bool, as_json: bool) -> int:
    """Print the node logs of RUN: every program's output (secrets masked) and cei's notes
    of what it ran. NODE (`db/0`) or SERVICE (`db`) narrows it; with several nodes each line
    starts with its node.

    \b
      cei logs demo              # every node
      cei logs demo db/0 -f      # follow one node while it boots
    """
    from launchplan.levels.nodelog import node_log_path
    from launchplan.levels.states import RUN_TERMINATED
    from launchplan.suggest import did_you_mean

    store = open_store()
    run = store.get_run(run_name)
    nodes = [n.node for n in store.nodes(run.name)]
    chosen = [n for n in nodes if node in (None, n, n.split("/")[0])]
    if not chosen:
        hint = did_you_mean(node, [*nodes, *{n.split("/")[0] for n in nodes}])
        raise UsageError(f"run {run.name} has no node or service {node!r}{hint} "
                         f"(nodes: {', '.join(nodes) or 'none'})")
    readers = [_Reader(name, node_log_path(store.run_dir(run.name), name), len(chosen) > 1,
                       as_json) for name in chosen]
    while True:
        for reader in readers:
            reader.show()
        if not follow or store.get_run(run.name).status == RUN_TERMINATED:
            return 0
        time.sleep(FOLLOW_POLL)


class _Reader:
    """One node's log, shown from where it was last read, whole lines only."""

    def __init__(self, node: str, path: Path, tagged: bool, as_json: bool) -> None:
        self.node = node
        self.path = path
        self.prefix = f"{node} | " if tagged else ""
        self.as_json = as_json
        self.offset = 0
        self.partial = b""

    def show(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:  # the node has run nothing yet
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if self.as_json:
                emit_json({"node": self.node, "line": line})
            else:
                write(f"{self.prefix}{line}\n")
