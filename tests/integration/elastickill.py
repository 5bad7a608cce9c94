"""One elastic kill trial: SIGKILL `cei watch` mid scale-up and mid scale-down, then restart it.

Shared by tests/integration/test_elastic_kill.py (the suite's trials) and bench/elastic_kill.py
(a longer campaign). After each kill no node identity may be live twice in the cloud; after
the restarted controller (`cei watch --once`) has finished or rolled back what the killed one
started, the cloud must hold exactly the nodes the store calls ready, as many as desired, and
no request (a scale, or telling the peers of a change) may be left undone; after
`cei terminate` nothing of the run may be left.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from launchplan.providers.local import LocalProvider
from launchplan.state import Store
from tests.integration.cli_helpers import cei
from tests.integration.cloud_emulator import EC2Emulator
from tests.integration.elastic_helpers import start_watch

FIRST_TICK = 60.0
ALIVE = ("pending", "running", "stopping", "stopped")

# live(run) -> the `cei:node` tag of every node of the run the cloud still runs
Live = Callable[[str], list[str]]


@dataclass
class Trial:
    run: str
    delays: tuple[float, float]
    problems: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.leaked


def local_plan(directory: Path) -> Path:
    """Engines on the local cloud with a boot program (so they are watched over SSH)."""
    return _plan(directory, {"boot": {"command": "true"}}, {})


def ec2_plan(directory: Path, emulator: EC2Emulator, image: str) -> Path:
    """Engines on the EC2 emulator, without SSH (health from the cloud's word)."""
    clouds = {"aws": {"driver": "ec2", "region": emulator.region,
                      "endpoint_url": emulator.endpoint, "image": image, "size": "t3.micro"}}
    return _plan(directory, {"cloud": "aws"}, clouds)


def _plan(directory: Path, service: dict[str, object], clouds: dict[str, object]) -> Path:
    path = directory / "elastic-kill.yml"
    path.write_text(yaml.safe_dump({
        "plan": "elastic-kill",
        "clouds": clouds,
        "levels": [{"services": {"engine": {
            **service, "elastic": {"min": 1, "max": 4, "health": {"missing_timeout": 5}}}}}],
    }))
    return path


def local_live(home: Path) -> Live:
    def live(run: str) -> list[str]:
        provider = LocalProvider({}, home / "runs" / run)
        return [str(i.tags.get("cei:node")) for i in provider.find(run)]
    return live


def ec2_live(emulator: EC2Emulator) -> Live:
    def live(run: str) -> list[str]:
        found = emulator.instances(**{"tag:cei:run": [run]})
        return [next((t["Value"] for t in i.get("Tags", []) if t["Key"] == "cei:node"), "?")
                for i in found if i["State"]["Name"] in ALIVE]
    return live


def run_trial(home: Path, plan: Path, run: str, rng: random.Random, live: Live,
              max_delay: float) -> Trial:
    trial = Trial(run, (rng.uniform(0, max_delay), rng.uniform(0, max_delay)))
    cei(home, "launch", str(plan), "--name", run, check=0)
    for target, delay in zip((4, 1), trial.delays, strict=True):
        _kill_while_scaling(home, run, target, delay)
        _check_unique(trial, live(run), f"after the kill during the scale to {target}")
        cei(home, "watch", run, "--once", "--interval", "0.5")
        _check_consistent(trial, home, run, live(run), f"after the restart (scale to {target})")
    down = cei(home, "terminate", run)
    if down.returncode != 0:
        trial.problems.append(f"terminate exited {down.returncode}: {down.stdout}{down.stderr}")
    trial.leaked = live(run)
    return trial


def _kill_while_scaling(home: Path, run: str, target: int, delay: float) -> None:
    watch = start_watch(home, run)
    try:
        deadline = time.monotonic() + FIRST_TICK
        while not any(line["event"] == "elastic.state" for line in watch.lines()):
            if watch.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the watch of {run} never ticked: "
                                     f"{watch.log.read_text(errors='replace')}")
            time.sleep(0.1)
        with Store(home) as store:
            store.add_request(run, "scale", "engine", {"count": target})
        time.sleep(delay)
    finally:
        watch.proc.kill()  # SIGKILL: no handler, nothing finished, nothing released
        watch.proc.wait(30)


def _check_unique(trial: Trial, tags: list[str], when: str) -> None:
    twice = sorted(tag for tag, n in Counter(tags).items() if n > 1)
    if twice:
        trial.problems.append(f"{when}: identities live twice: {twice}")


def _check_consistent(trial: Trial, home: Path, run: str, tags: list[str], when: str) -> None:
    _check_unique(trial, tags, when)
    with Store(home) as store:
        ready = sorted(n.node for n in store.nodes(run) if n.state == "ready")
        record = store.find_elastic(run, "engine")
        pending = [f"{r.kind} {r.target}" for r in store.pending_requests(run)]
    if pending:  # a scale, or telling the peers of a change, left undone
        trial.problems.append(f"{when}: requests still pending: {pending}")
    if sorted(tags) != ready:
        trial.problems.append(f"{when}: the cloud runs {sorted(tags)}, the store has ready "
                              f"{ready}")
    if record is None or len(ready) != record.desired:
        trial.problems.append(f"{when}: {len(ready)} ready, desired "
                              f"{record.desired if record else '?'}")
