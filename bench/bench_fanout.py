#!/usr/bin/env python3
"""Fan-out to existing hosts: cei's static driver against a bare paramiko thread pool, on the
same loopback OpenSSH hosts, and the overhead of levels. Prints figures, asserts nothing.

  python bench/bench_fanout.py [--nodes 10,50,100] [--repeat 3] [--levels 3] [--services 10]

The benchmark starts its own sshds (one per 16 loopback addresses 127.0.0.2, 127.0.0.3, ...,
all on one port, sharing one host key) and stops them by PID at the end. Their sessions get
HOME set to an empty directory (sshd's SetEnv; the working directory stays the user's own),
so the shell of each login reads no rc files of this machine's user: where root's .bashrc runs
`pyenv init`, 64 logins at once queue on pyenv's rehash lock, and that, not SSH, would be what
the figures show (--user-rc keeps the user's own files, to see what a real account costs).
In the same run:

fan-out   the job "upload a 2 KB boot program and run it" on N hosts: the baseline is a bare
          paramiko pool of 64 threads (connect, SFTP put, chmod, exec, wait) in a process of
          its own; cei is `cei launch` of a one-service plan (`driver: static`, `host:` the N
          addresses, the same program as `boot: {run: ...}`). Wall time of each process, the
          ratio, CPU time (user + system, the whole process) per host, and the CPU time the
          sshds and their sessions took per host (the nodes' side). Medians.
levels    L levels of S services each, boot `sleep 1`: the launch's wall time against its
          critical path (L seconds): the overhead per level. On existing hosts the services
          of a level go to the S hosts, one each, and every level uses the same S hosts:
          once as ssh does by default (a login per node), once with an ssh config that sets
          ControlMaster and ControlPersist (a later level reuses the connection); on the
          local cloud every service has a node of its own. The baseline is the paramiko pool
          connecting and running `sleep 1` on the S hosts, L times in turn.
start-up  `cei --help`, and the time from starting `cei launch --json` to its first event.

--code DIR (repeatable) times the fan-out and the levels of another checkout too (e.g. an
unpacked `git archive` of main), in the same run, alternating with this one; --levels 0
skips the levels.

Every cei run uses a private $CEI_HOME and is terminated after measuring.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from procstat import cpu_seconds  # noqa: E402
from startup import as_installed  # noqa: E402

ADDRESSES_PER_SSHD = 16  # OpenSSH listens on at most 16 sockets
POOL = 64  # cei's default --parallel
REMOTE = f".cei-bench-fanout-{os.getpid()}"  # the baseline's files; run names carry the pid too
PROGRAM = ("#!/bin/sh\n" + "# padding to make a 2 KB boot program\n" * 52
           + 'if [ -n "$CEI_OUTPUT" ]; then echo \'{"booted": true}\' >"$CEI_OUTPUT"; fi\n')


class Hosts:
    """N loopback "hosts": sshds listening on 127.0.0.2... at one port; stopped by PID."""

    def __init__(self, base: Path, count: int, user_rc: bool = False) -> None:
        from tests.integration.conftest import free_port, keygen  # not in the baseline's process

        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.base = base
        self.user_rc = user_rc
        self.user = getpass.getuser()
        self.client_key = base / "client_ed25519"
        public = keygen(self.client_key)
        (base / "session-home").mkdir()
        host_key_path = base / "host_ed25519"
        self.host_key = keygen(host_key_path)
        (base / "authorized_keys").write_text(public + "\n")
        self.port = free_port()
        self.addresses = [f"127.0.0.{2 + i}" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for first in range(0, count, ADDRESSES_PER_SSHD):
                self._start(self.addresses[first:first + ADDRESSES_PER_SSHD], host_key_path)
        except BaseException:
            self.close()
            raise

    def _start(self, addresses: list[str], host_key: Path) -> None:
        name = f"sshd{len(self.procs)}"
        config = self.base / f"{name}.config"
        config.write_text("\n".join([
            *(f"ListenAddress {address}:{self.port}" for address in addresses),
            f"HostKey {host_key}", f"PidFile {self.base / name}.pid",
            f"AuthorizedKeysFile {self.base / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "MaxStartups 400", "Subsystem sftp internal-sftp",
            *([] if self.user_rc else [f"SetEnv HOME={self.base / 'session-home'}"]), ""]))
        log = self.base / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if log.read_text(errors="replace").count("Server listening on") >= len(addresses):
                return
            time.sleep(0.05)
        raise SystemExit(f"sshd did not start:\n{log.read_text(errors='replace')}")

    def cpu(self) -> float:
        """CPU seconds the sshds and their ended sessions took: the nodes' side of the work
        (on loopback it shares this machine's cores with the client). A session's time is
        counted once sshd has reaped it, a moment after the client is gone."""
        time.sleep(0.3)
        return sum(cpu_seconds(proc.pid, reaped_children=True) for proc in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def paramiko_pool(hosts_file: str) -> None:
    """The baseline, in its own process: connect, put the program, run it, on every host.
    With "command" and "rounds" in the spec (the levels baseline): `rounds` times in turn,
    connect and run the command on every host."""
    from concurrent.futures import ThreadPoolExecutor

    import paramiko

    spec = json.loads(Path(hosts_file).read_text())
    key = paramiko.Ed25519Key.from_private_key_file(spec["key"])
    program = PROGRAM.encode()

    def one(index_address: tuple[int, str]) -> int:
        index, address = index_address
        client = paramiko.SSHClient()
        client.get_host_keys().add(f"[{address}]:{spec['port']}", "ssh-ed25519",
                                   paramiko.Ed25519Key(data=base64.b64decode(
                                       spec["host_key"].split()[1])))
        client.connect(address, spec["port"], spec["user"], pkey=key, allow_agent=False,
                       look_for_keys=False)
        try:
            if spec.get("command"):
                _, out, _ = client.exec_command(spec["command"])
                out.read()
                return out.channel.recv_exit_status()
            remote = f"{spec['remote']}/{index}"
            _, out, _ = client.exec_command(f"mkdir -p {remote}")
            out.channel.recv_exit_status()
            with client.open_sftp() as sftp:
                sftp.putfo(io.BytesIO(program), f"{remote}/boot.sh")
                sftp.chmod(f"{remote}/boot.sh", 0o700)
            _, out, _ = client.exec_command(f"{remote}/boot.sh")
            out.read()
            return out.channel.recv_exit_status()
        finally:
            client.close()

    statuses = []
    for _ in range(spec.get("rounds", 1)):
        with ThreadPoolExecutor(POOL) as pool:
            statuses += pool.map(one, enumerate(spec["addresses"]))
    if any(statuses):
        raise SystemExit(f"the program failed on {sum(1 for s in statuses if s)} host(s)")


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a process to its end: (wall seconds, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:5])} failed ({proc.returncode}): "
                           + (proc.stderr.strip().splitlines() or [""])[0])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


class Cei:
    """`cei` commands against a private $CEI_HOME."""

    def __init__(self, home: Path, code: Path = REPO) -> None:
        self.code = code
        self.env = {**os.environ, "CEI_HOME": str(home), "PYTHONPATH": str(code)}
        # -P: `python -m` would put the working directory first on sys.path, ahead of
        # PYTHONPATH, and every checkout would run this one's code
        self.argv = [sys.executable, "-P", "-m", "launchplan"]

    def launch(self, plan: Path, name: str,
               nodes: Hosts | None = None) -> tuple[float, float, float]:
        """Wall and CPU seconds of the launch, and the CPU seconds `nodes` took for it (not
        for the terminate that follows)."""
        try:
            before = nodes.cpu() if nodes else 0.0
            wall, cpu = timed([*self.argv, "launch", str(plan), "--name", name], self.env)
            return wall, cpu, (nodes.cpu() - before) if nodes else 0.0
        finally:
            subprocess.run([*self.argv, "terminate", name], env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def first_event(self, plan: Path, name: str) -> float:
        start = time.perf_counter()
        proc = subprocess.Popen([*self.argv, "launch", str(plan), "--name", name, "--json"],
                                env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        elapsed = time.perf_counter() - start
        proc.stdout.read()
        proc.wait(timeout=600)
        subprocess.run([*self.argv, "terminate", name], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return elapsed


def static_cloud(hosts: Hosts) -> str:
    return ("clouds:\n  hosts: {driver: static}\n"
            "defaults:\n  cloud: hosts\n"
            f"  ssh_user: {hosts.user}\n  ssh_key: {hosts.client_key}\n"
            f"  ssh_port: {hosts.port}\n  host_key: \"{hosts.host_key}\"\n")


def fanout_plan(directory: Path, hosts: Hosts, count: int) -> Path:
    program = directory / "boot.sh"
    program.write_text(PROGRAM)
    plan = directory / f"fanout{count}.yml"
    plan.write_text(f"plan: fanout{count}\n" + static_cloud(hosts) + "levels:\n"
                    "  - services:\n      worker:\n"
                    f"        host: {json.dumps(hosts.addresses[:count])}\n"
                    f"        boot: {{run: {program}}}\n")
    return plan


def levels_plan(directory: Path, hosts: Hosts, levels: int, services: int,
                shared: bool = False) -> Path:
    """The levels on the existing hosts; `shared`: with an ssh config whose ControlMaster and
    ControlPersist let a later level's node reuse the connection of an earlier one."""
    plan = directory / f"levels{'-shared' if shared else ''}.yml"
    config = directory / "ssh_config"
    if shared:
        config.write_text("Host *\n  ControlMaster auto\n  ControlPersist 60\n")
    lines = ["plan: levels", static_cloud(hosts).rstrip("\n"), "levels:"]
    for level in range(levels):
        lines.append("  - services:")
        for index in range(services):
            lines += [f"      s{level}_{index}:",
                      f"        host: {hosts.addresses[index % len(hosts.addresses)]}",
                      "        boot: {command: 'sleep 1'}",
                      *([f"        ssh_config: {config}"] if shared else [])]
    plan.write_text("\n".join(lines) + "\n")
    return plan


def local_levels_plan(directory: Path, levels: int, services: int) -> Path:
    """The same levels on the embedded local cloud: a node of its own for every service."""
    plan = directory / "local-levels.yml"
    lines = ["plan: local-levels", "levels:"]
    for level in range(levels):
        lines.append("  - services:")
        for index in range(services):
            lines += [f"      s{level}_{index}:", "        boot: {command: 'sleep 1'}"]
    plan.write_text("\n".join(lines) + "\n")
    return plan


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def pool_spec(work: Path, hosts: Hosts, count: int, **job: object) -> Path:
    """The baseline's hosts file: the first `count` hosts, and the job (see paramiko_pool)."""
    spec = work / f"hosts{count}.json"
    spec.write_text(json.dumps({"addresses": hosts.addresses[:count], "port": hosts.port,
                                "user": hosts.user, "key": str(hosts.client_key),
                                "host_key": hosts.host_key, "remote": REMOTE, **job}))
    return spec


def bench_fanout(work: Path, hosts: Hosts, counts: list[int], times: int,
                 codes: list[Path]) -> None:
    print(f"fan-out (median of {times}){'':9} {'wall':>8} {'ratio':>6} {'CPU/host':>9} "
          f"{'ratio':>6} {'node CPU/host':>14} {'ratio':>6}", flush=True)
    ceis = [Cei(work / f"home{i}", code) for i, code in enumerate([REPO, *codes])]
    for count in counts:
        spec = pool_spec(work, hosts, count)
        plan = fanout_plan(work, hosts, count)
        bare: list[tuple[float, float, float]] = []
        ours: list[list[tuple[float, float, float]]] = [[] for _ in ceis]
        try:
            for i in range(times):  # side by side, so that all see the same machine, and
                before = hosts.cpu()
                wall, cpu = timed([sys.executable, __file__, "--paramiko-pool", str(spec)])
                bare.append((wall, cpu, hosts.cpu() - before))
                for j in range(len(ceis)):  # each checkout in turn first after the pool
                    k = (i + j) % len(ceis)
                    ours[k].append(ceis[k].launch(plan, f"fan{count}-{i}-{os.getpid()}", hosts))
        except RuntimeError as exc:
            print(f"{count:4d} hosts: {exc}", flush=True)
            continue
        base = [median([s[n] for s in bare]) for n in range(3)]
        print(f"{count:4d} hosts, paramiko pool{'':10} {base[0]:7.2f}s {'':6} "
              f"{base[1] / count * 1000:6.1f} ms {'':6} {base[2] / count * 1000:11.1f} ms",
              flush=True)
        for cei, samples in zip(ceis, ours, strict=True):
            wall, cpu, node = (median([s[n] for s in samples]) for n in range(3))
            who = "cei" if cei.code == REPO else f"cei {cei.code}"
            print(f"{count:4d} hosts, {who:24} {wall:7.2f}s {wall / base[0]:5.2f}x "
                  f"{cpu / count * 1000:6.1f} ms {cpu / base[1]:5.2f}x "
                  f"{node / count * 1000:11.1f} ms {node / base[2]:5.2f}x", flush=True)


def bench_levels(work: Path, hosts: Hosts, levels: int, services: int, times: int,
                 codes: list[Path]) -> None:
    plans = (("existing hosts", levels_plan(work, hosts, levels, services)),
             ("existing hosts, ControlPersist", levels_plan(work, hosts, levels, services, True)),
             ("local cloud", local_levels_plan(work, levels, services)))
    spec = pool_spec(work, hosts, services, command="sleep 1", rounds=levels)
    ceis = [Cei(work / f"levels-home{i}", code) for i, code in enumerate([REPO, *codes])]
    bare: list[float] = []
    ours: dict[tuple[int, str], list[float]] = {}
    try:
        for i in range(times):  # side by side, so that all see the same machine
            bare.append(timed([sys.executable, __file__, "--paramiko-pool", str(spec)])[0])
            for j in range(len(ceis)):
                k = (i + j) % len(ceis)
                for n, (where, plan) in enumerate(plans):
                    wall = ceis[k].launch(plan, f"levels-{n}-{i}-{os.getpid()}")[0]
                    ours.setdefault((k, where), []).append(wall)
    except RuntimeError as exc:
        print(f"levels: {exc}", flush=True)
        return
    pool = (median(bare) - levels) / levels
    print(f"{levels} levels x {services} services, boot `sleep 1`, critical path {levels} s "
          f"(median of {times}): overhead per level", flush=True)
    print(f"  paramiko pool{'':42} {median(bare):6.2f} s {pool:6.3f} s", flush=True)
    for (k, where), walls in ours.items():
        who = "cei" if ceis[k].code == REPO else f"cei {ceis[k].code}"
        over = (median(walls) - levels) / levels
        print(f"  {who + ', ' + where:54} {median(walls):6.2f} s {over:6.3f} s "
              f"{over / pool:5.2f}x the pool's", flush=True)
    cei, static = ceis[0], plans[0][1]
    first = median([cei.first_event(static, f"first-{i}-{os.getpid()}") for i in range(times)])
    helps = [timed([*cei.argv, "--help"], cei.env)[0] for _ in range(max(5, times))]
    print(f"cei --help {median(helps):.3f} s; first event of cei launch --json after "
          f"{first:.3f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="10,50,100")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--user-rc", action="store_true",
                        help="let each login's shell read this user's rc files (~/.bashrc)")
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout whose fan-out to time (repeatable)")
    parser.add_argument("--paramiko-pool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paramiko_pool:
        paramiko_pool(args.paramiko_pool)
        return
    counts = [int(n) for n in args.nodes.split(",")]
    as_installed(REPO, *args.code)
    with tempfile.TemporaryDirectory(prefix="cei-bench-fanout-") as tmp:
        work = Path(tmp)
        hosts = Hosts(work, max(max(counts), args.services), args.user_rc)
        try:
            bench_fanout(work, hosts, counts, args.repeat, [c.resolve() for c in args.code])
            if args.levels:
                bench_levels(work, hosts, args.levels, args.services, args.repeat,
                             [c.resolve() for c in args.code])
        finally:
            hosts.close()
            subprocess.run(["rm", "-rf", str(Path.home() / REMOTE)], check=False)


if __name__ == "__main__":
    main()
