"""Fuzz campaign: `cei validate` of many mutated plans (tests/plan_mutator.py).

Each mutant runs in its own forked process (cei already imported, so a mutant costs what
validate costs), with a wall-clock limit and an address-space limit; the parent records its
exit status, whether its stderr holds a Python traceback, its CPU time and its peak memory.

    python bench/fuzz_validate.py [--mutants 10000] [--seed 1] [--limit-s 30] [--limit-mb 2048]

Prints the counts by exit status, the tracebacks (with their mutants kept in --keep), and the
time and memory maxima; exits 1 if any mutant gave a traceback, a signal or ran past a limit.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launchplan.cli.main import cli  # noqa: E402
from launchplan.cli.output import run_cli  # noqa: E402
from tests.plan_mutator import mutants, stage  # noqa: E402


def run_one(path: Path, err_path: Path, limit_s: float, limit_mb: int) -> tuple[int, float, int]:
    """(exit status or -signal, CPU seconds, peak RSS in MiB) of `cei validate PATH`."""
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            sys.argv = ["cei", "validate", str(path)]
            code = run_cli(cli)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 99
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + limit_s
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    return code, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit-s", type=float, default=30.0)
    parser.add_argument("--limit-mb", type=int, default=2048)
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "cei-fuzz")
    args = parser.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "w") as null:  # import and compile once, before forking
        sys.argv = ["cei", "validate", str(REPO / "plans" / "three-tier.yml")]
        saved, sys.stdout = sys.stdout, null
        try:
            run_cli(cli)
        finally:
            sys.stdout = saved
    codes: collections.Counter[int] = collections.Counter()
    tracebacks = []
    max_cpu = (0.0, "")
    max_mb = (0, "")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        err_path = Path(tmp) / "stderr"
        for i, (source, text) in enumerate(mutants(args.seed, args.mutants)):
            where = Path(tmp) / source.parent.name
            where.mkdir(exist_ok=True)
            path = stage(source, text, where, f"mutant{i}.yml")
            code, cpu, mb = run_one(path, err_path, args.limit_s, args.limit_mb)
            stderr = err_path.read_text(errors="replace")
            codes[code] += 1
            if "Traceback (most recent call last)" in stderr or code not in (0, 1, 2):
                kept = args.keep / f"mutant{i}.yml"
                kept.write_bytes(path.read_bytes())
                tracebacks.append((i, code, kept, stderr.strip().splitlines()[-1:]))
            if cpu > max_cpu[0]:
                max_cpu = (cpu, f"mutant {i} of {source.name}")
            if mb > max_mb[0]:
                max_mb = (mb, f"mutant {i} of {source.name}")
            path.unlink()
            if (i + 1) % 1000 == 0:
                print(f"{i + 1} mutants, {time.monotonic() - started:.0f} s", flush=True)
    print(f"mutants={args.mutants} seed={args.seed} wall={time.monotonic() - started:.0f}s")
    print("exit statuses: " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    print(f"tracebacks or crashes: {len(tracebacks)}")
    for i, code, kept, last in tracebacks[:20]:
        print(f"  mutant {i} exit {code} ({kept}): {last}")
    print(f"max CPU time: {max_cpu[0]:.2f} s ({max_cpu[1]})")
    print(f"max memory (peak RSS): {max_mb[0]} MiB ({max_mb[1]})")
    return 1 if tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
