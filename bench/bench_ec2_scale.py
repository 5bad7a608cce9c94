#!/usr/bin/env python3
"""N EC2 nodes with no programs on the moto server: cei against bare boto3. Figures only.

  python bench/bench_ec2_scale.py [--nodes 1000] [--parallel 64]

The emulator (tests/integration/cloud_emulator.py: moto behind cei's test middleware) runs in
a process of its own on 127.0.0.1, so that its CPU time is measured apart from the clients'.
In the same run, on a freshly reset emulator each:

baseline  bare boto3 with `--parallel` threads: one RunInstances per node, then one
          TerminateInstances per node (no waiting, no bookkeeping)
cei       `cei launch` of a one-level plan of N nodes (no programs, so no SSH), then
          `cei terminate`, each in a fresh private $CEI_HOME. With the default
          `--host-key-policy pinned` every node's user-data carries its own host key, so
          each node is one RunInstances (as in the baseline); with `console` (or
          `accept-new`) their user-data are the same and cei makes them in batches.

Printed: wall time of each phase, cei's against the baseline's (the ratio), the CPU seconds
per phase of the emulator and of the client (the baseline's threads, or the `cei` process), and
the EC2 requests each side made by action, with the emulator's CPU seconds spent on each action
(the CPU time of the request threads inside the WSGI application, so HTTP parsing is not in it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from procstat import cpu_seconds  # noqa: E402

from tests.integration.cloud_emulator import REGION, EC2Emulator, use_fake_aws  # noqa: E402

Figures = tuple[float, float, float]  # wall seconds, emulator CPU seconds, client CPU seconds


class ActionCPU:
    """WSGI wrapper: the CPU seconds of the request threads in the application, by EC2 action
    (each request has a thread of its own, so its thread_time is that request's)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.seconds: dict[str, float] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        start = time.thread_time()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(form)
        action = next((pair[7:].decode() for pair in form.split(b"&")
                       if pair.startswith(b"Action=")), "?")  # EC2's query API
        body = b"".join(self.app(environ, start_response))
        self.seconds[action] = self.seconds.get(action, 0.0) + time.thread_time() - start
        return [body]


def serve() -> None:
    """The emulator's process: one JSON line per command read from stdin, until EOF.

    `reset`: forget everything, register a fresh image -> {"image": ...};
    `stats`: the EC2 requests served since the last reset, and the CPU seconds spent on
    them, by action -> {"actions": {...}, "cpu": {...}}."""
    emulator = EC2Emulator()
    timer = ActionCPU(emulator._server.app)
    emulator._server.app = timer
    emulator.start()
    print(json.dumps({"endpoint": emulator.endpoint}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "reset":
                emulator.reset()
                image = emulator.client().register_image(
                    Name="cei-bench", Architecture="x86_64", RootDeviceName="/dev/sda1",
                    VirtualizationType="hvm")["ImageId"]
                emulator.middleware.reset_counters()  # registering is not the benchmark's
                timer.seconds.clear()
                print(json.dumps({"image": image}), flush=True)
            elif line.strip() == "stats":
                print(json.dumps({"actions": dict(emulator.actions),
                                  "cpu": dict(timer.seconds)}), flush=True)
    finally:
        emulator.stop()


class Server:
    """The emulator's process, driven over its stdin; stopped by its pid."""

    def __init__(self) -> None:
        env = dict(os.environ)
        use_fake_aws(env)
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.endpoint = str(self._answer()["endpoint"])

    def _answer(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise SystemExit(f"the emulator exited ({self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def cpu(self) -> float:
        """CPU seconds (user + system) the emulator's process has used so far."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (the `cei` commands; the emulator is
    waited for only at the end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(server: Server, action: Callable[[], None], client: Callable[[], float]) -> Figures:
    """Wall seconds of `action`, the emulator's CPU seconds meanwhile, and the client's
    (`client()` is a CPU clock: this process's, or that of the children waited for)."""
    cpu, mine, start = server.cpu(), client(), time.perf_counter()
    action()
    return time.perf_counter() - start, server.cpu() - cpu, client() - mine


def baseline(server: Server, image: str, nodes: int, parallel: int
             ) -> tuple[Figures, Figures]:
    import boto3

    client = boto3.client("ec2", endpoint_url=server.endpoint, region_name=REGION)
    ids: list[str] = []

    def create(index: int) -> None:
        response = client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1,
                                        MaxCount=1, TagSpecifications=[{
                                            "ResourceType": "instance", "Tags": [
                                                {"Key": "bench", "Value": str(index)}]}])
        ids.append(response["Instances"][0]["InstanceId"])

    def launch() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(create, range(nodes)))

    def terminate() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda i: client.terminate_instances(InstanceIds=[i]), ids))

    return timed(server, launch, time.process_time), timed(server, terminate, time.process_time)


def cei_run(server: Server, image: str, nodes: int, parallel: int, policy: str, home: Path
            ) -> tuple[Figures, Figures]:
    plan = home.parent / "scale.yml"
    plan.write_text(yaml.safe_dump({
        "plan": "scale",
        "clouds": {"aws": {"driver": "ec2", "region": REGION, "endpoint_url": server.endpoint,
                           "image": image, "size": "t3.micro"}},
        "defaults": {"cloud": "aws", "timeout": 3600, "host_key_policy": policy},
        "levels": [{"services": {"worker": {"count": nodes}}}],
    }, sort_keys=False))
    env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(REPO)}
    use_fake_aws(env)

    def cei(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "launchplan", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"cei {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")

    launch = timed(server, lambda: cei("launch", str(plan), "--name", "scale",
                                       "--parallel", str(parallel)), children_cpu)
    down = timed(server, lambda: cei("terminate", "scale"), children_cpu)
    return launch, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=64,
                        help="cei's --parallel, and the baseline's threads")
    parser.add_argument("--host-key-policy", default="pinned",
                        choices=("pinned", "console", "accept-new"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    use_fake_aws(os.environ)
    server = Server()
    try:
        image = str(server.ask("reset")["image"])
        base = baseline(server, image, args.nodes, args.parallel)
        base_calls = server.ask("stats")
        image = str(server.ask("reset")["image"])
        with tempfile.TemporaryDirectory(prefix="cei-bench-ec2-") as tmp:
            ours = cei_run(server, image, args.nodes, args.parallel, args.host_key_policy,
                           Path(tmp) / "home")
        our_calls = server.ask("stats")
    finally:
        server.stop()

    print(f"{args.nodes} EC2 nodes on the moto server, no programs, {args.parallel} at once, "
          f"host_key_policy {args.host_key_policy}")
    print("wall seconds (CPU seconds of the emulator, of the client)")
    print(f"{'':20}{'boto3 baseline':>28}{'cei':>28}{'cei / baseline':>16}")
    rows = (("launch", base[0], ours[0]), ("terminate", base[1], ours[1]),
            ("launch + terminate", tuple(map(sum, zip(*base, strict=True))),
             tuple(map(sum, zip(*ours, strict=True)))))
    for name, (bwall, bmoto, bcpu), (cwall, cmoto, ccpu) in rows:
        print(f"{name:20}{bwall:8.2f} s (moto {bmoto:5.1f}, {bcpu:5.1f})"
              f"{cwall:8.2f} s (moto {cmoto:5.1f}, {ccpu:5.1f}){cwall / bwall:15.2f}x")
    for side, stats in (("baseline", base_calls), ("cei", our_calls)):
        listed = ", ".join(f"{k} {v} ({stats['cpu'].get(k, 0.0):.1f} s)"
                           for k, v in sorted(stats["actions"].items()))
        print(f"EC2 requests (moto CPU), {side}: {listed}")


if __name__ == "__main__":
    main()
