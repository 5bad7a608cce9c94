"""A real PostgreSQL server for tests: `initdb` and `pg_ctl` in a temporary directory, listening
on a free loopback port with password (SCRAM) authentication, stopped by its PID.

As root (CI), the server runs as the `postgres` user that Debian's package creates, since
PostgreSQL refuses to run as root. Each test gets a database of its own, owned by the role
cei connects as; its password is given to cei only through PGPASSWORD.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

START_SECONDS = 60
STOP_SECONDS = 30
APP_USER = "cei"
ADMIN_USER = "cei_admin"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/VERSION/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in `base`; `start()`, `stop()` (by PID) and `start()` again."""

    def __init__(self, bindir: Path, base: Path | None = None, for_tests: bool = True) -> None:
        self.bindir = bindir
        # tests: no fsync, and every statement logged (the grep tests read the log);
        # benchmarks: PostgreSQL's own durable defaults, as SQLite's synchronous=FULL is.
        self.for_tests = for_tests
        self.base = base or Path(tempfile.mkdtemp(prefix="cei-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "server.log"
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.password = "pw-" + secrets.token_hex(12)  # the app role's: the grep tests seek it
        self.admin_password = secrets.token_hex(16)
        self.pid: int | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self._counter = 0

    def _run(self, *argv: str, timeout: float = START_SECONDS) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=self.base, **self._run_as)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}\n{self.log()}")

    def init(self) -> None:
        pwfile = self.base / "admin.pw"
        pwfile.write_text(self.admin_password + "\n")
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        pwfile.chmod(0o600)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", ADMIN_USER,
                  "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()

    def start(self) -> None:
        """Start the server (again) on its port; every statement it runs goes to its log."""
        settings = [f"-p {self.port}", f"-c listen_addresses={self.host}",
                    f"-c unix_socket_directories={self.base}", "-c max_connections=200"]
        if self.for_tests:
            settings += ["-c fsync=off", "-c synchronous_commit=off",
                         "-c full_page_writes=off", "-c log_statement=all",
                         "-c log_connections=on"]
        options = " ".join(settings)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                  "-w", "-t", str(START_SECONDS), "-o", options, "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """Stop the postmaster by its PID (SIGINT: PostgreSQL's fast shutdown), and wait."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, mode)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(host=self.host, port=self.port, user=ADMIN_USER, dbname=dbname,
                               password=self.admin_password, autocommit=True)

    def setup_roles(self) -> None:
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{self.password}'")

    def create_database(self) -> str:
        """A new empty database owned by the app role; returns its state URL (no password)."""
        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {APP_USER}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?")[0]
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, dbname: str) -> str:
        return f"postgresql://{APP_USER}@{self.host}:{self.port}/{dbname}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def start_server(for_tests: bool = True) -> PostgresServer:
    """A fresh, started cluster with the app role; RuntimeError if PostgreSQL is missing."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed")
    server = PostgresServer(bindir, for_tests=for_tests)
    try:
        server.init()
        server.start()
        server.setup_roles()
    except BaseException:
        server.destroy()
        raise
    return server
