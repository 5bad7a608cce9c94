"""Process supervision: launch from definitions, restart policies, slots, persisted state.

Every child runs in its own session (pid == process group), so a kill reaches its whole tree and
children outlive the agent. State is written atomically to HOME/state.json after each change;
a restarted agent re-adopts children that are still alive (same pid AND same start time in
/proc, so a recycled pid is never mistaken for ours) and applies the restart policy to those
that died meanwhile, whose exit status is unknowable and therefore counts as abnormal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from launchplan.errors import AgentError

log = logging.getLogger("cei-agent")

PENDING, RUNNING, EXITED, FAILED = "pending", "running", "exited", "failed"
TERMINATED = "terminated"
ACTIVE = (PENDING, RUNNING)
RESTART_MODES = ("never", "always", "abnormal")
DEFAULT_MIN_RESTART_INTERVAL = 2.0
STDERR_TAIL = 2048
KILL_GRACE = 5.0
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
DEFINITION_KEYS = {
    "name", "description", "exec", "argv", "module", "args", "python", "pythonpath", "env",
    "cwd", "restart", "min_restart_interval", "max_restarts",
}
# Runs a "pkg.mod:callable" in the child: sys.argv = [module, *args]; callable(args); its int
# return value (None -> 0) is the exit status.
MODULE_RUNNER = (
    "import importlib, sys\n"
    "spec = sys.argv[1]\n"
    "mod, _, attr = spec.partition(':')\n"
    "sys.argv = [mod] + sys.argv[2:]\n"
    "target = importlib.import_module(mod)\n"
    "for part in (attr or 'main').split('.'):\n"
    "    target = getattr(target, part)\n"
    "rc = target(sys.argv[1:])\n"
    "sys.exit(rc if isinstance(rc, int) else 0)\n"
)


def _number(defn: dict[str, Any], key: str, default: float | None, minimum: float) -> Any:
    value = defn.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise AgentError(f"{key} must be a number >= {minimum}, not {value!r}")
    return value


def _strings(defn: dict[str, Any], key: str) -> list[str]:
    value = defn.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise AgentError(f"{key} must be a list of strings")
    return [str(v) for v in value]


def normalize_definition(defn: Any) -> dict[str, Any]:
    """Check a process definition and fill in defaults; AgentError names the problem."""
    if not isinstance(defn, dict):
        raise AgentError("a process definition is a JSON object")
    unknown = sorted(set(defn) - DEFINITION_KEYS)
    if unknown:
        raise AgentError(f"unknown keys in process definition: {', '.join(unknown)}")
    name = defn.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AgentError(f"name must match {NAME_RE.pattern}, not {name!r}")
    if ("exec" in defn) == ("module" in defn):
        raise AgentError("a process definition needs exactly one of exec or module")
    out: dict[str, Any] = {"name": name}
    if "description" in defn:
        out["description"] = str(defn["description"])
    if "exec" in defn:
        if not isinstance(defn["exec"], str) or not defn["exec"]:
            raise AgentError("exec must be a non-empty string (the program)")
        out["exec"] = defn["exec"]
        out["argv"] = _strings(defn, "argv")
    else:
        module = defn["module"]
        if not isinstance(module, str) or not re.match(r"\A[\w.]+(:[\w.]+)?\Z", module):
            raise AgentError(f"module must look like pkg.mod:callable, not {module!r}")
        out["module"] = module
        out["args"] = _strings(defn, "args")
        out["python"] = str(defn.get("python") or sys.executable or "python3")
        out["pythonpath"] = _strings(defn, "pythonpath")
    env = defn.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in env.values()
    ):
        raise AgentError("env must map names to strings")
    out["env"] = {str(k): str(v) for k, v in env.items()}
    if defn.get("cwd") is not None:
        out["cwd"] = str(defn["cwd"])
    restart = defn.get("restart", "abnormal")
    if restart not in RESTART_MODES:
        raise AgentError(f"restart must be one of {', '.join(RESTART_MODES)}, not {restart!r}")
    out["restart"] = restart
    out["min_restart_interval"] = float(
        _number(defn, "min_restart_interval", DEFAULT_MIN_RESTART_INTERVAL, 0)
    )
    max_restarts = _number(defn, "max_restarts", None, 0)
    if max_restarts is not None and int(max_restarts) != max_restarts:
        raise AgentError("max_restarts must be a whole number")
    out["max_restarts"] = None if max_restarts is None else int(max_restarts)
    return out


def command_line(defn: dict[str, Any]) -> list[str]:
    """The argv a definition runs."""
    if "exec" in defn:
        return [defn["exec"], *defn["argv"]]
    return [defn["python"], "-c", MODULE_RUNNER, defn["module"], *defn["args"]]


def proc_starttime(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie pid; None otherwise."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    if not rest or rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


@dataclass
class Proc:
    """One supervised process and its history, as persisted and reported."""

    name: str
    definition: dict[str, Any]
    state: str = PENDING
    pid: int | None = None
    starttime: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    restarts: int = 0
    launched_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    next_start: float | None = None
    stop_requested: bool = False
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proc:
        """Rebuild from state.json, ignoring keys a newer agent may have added."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Supervisor:
    """Runs and watches processes for one agent home. All methods are thread-safe."""

    def __init__(self, home: str, slots: int) -> None:
        self.home = os.path.abspath(home)
        self.slots = slots
        self.procs_dir = os.path.join(self.home, "procs")
        self.state_path = os.path.join(self.home, "state.json")
        os.makedirs(self.procs_dir, mode=0o700, exist_ok=True)
        self._lock = threading.RLock()
        self._procs: dict[str, Proc] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._load()

    # -- persistence -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.state_path) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s: %s", self.state_path, exc)
            return
        for item in data.get("processes", []):
            proc = Proc.from_dict(item)
            self._procs[proc.name] = proc
            if proc.state != RUNNING:
                continue
            alive = proc.pid is not None and proc_starttime(proc.pid) == proc.starttime
            if alive and proc.starttime is not None:
                log.info("re-adopted %s (pid %s)", proc.name, proc.pid)
            else:
                log.info("%s (pid %s) died while the agent was down", proc.name, proc.pid)
                self._ended(proc, None, "exited while the agent was down (exit status unknown)")
        self._save()

    def _save(self) -> None:
        doc = {
            "version": 1,
            "slots": self.slots,
            "saved_at": time.time(),
            "processes": [asdict(p) for p in self._procs.values()],
        }
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    # -- queries -----------------------------------------------------------------------------

    def used_slots(self) -> int:
        """Slots held by pending or running processes."""
        with self._lock:
            return sum(1 for p in self._procs.values() if p.state in ACTIVE)

    def slot_report(self) -> dict[str, int]:
        """Total, used and free slots."""
        used = self.used_slots()
        return {"total": self.slots, "used": used, "free": max(0, self.slots - used)}

    def stderr_tail(self, name: str) -> str:
        """The last ~2 KiB of a process's stderr log, starting at a line boundary."""
        path = os.path.join(self.procs_dir, f"{name}.err")
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - STDERR_TAIL))
                data = fh.read()
        except OSError:
            return ""
        if size > STDERR_TAIL and b"\n" in data[:-1]:
            data = data[data.index(b"\n") + 1 :]
        return data.decode("utf-8", "replace")

    def describe(self, name: str) -> dict[str, Any]:
        """One process as a JSON-ready document."""
        with self._lock:
            proc = self._get(name)
            doc = asdict(proc)
            doc["adopted"] = proc.state == RUNNING and name not in self._children
        del doc["starttime"], doc["stop_requested"]
        doc["restart"] = proc.definition["restart"]
        doc["stderr_tail"] = self.stderr_tail(name)
        doc["stderr_path"] = os.path.join(self.procs_dir, f"{name}.err")
        return doc

    def list(self) -> list[dict[str, Any]]:
        """Every process, in launch order."""
        with self._lock:
            names = list(self._procs)
        return [self.describe(n) for n in names]

    def _get(self, name: str) -> Proc:
        proc = self._procs.get(name)
        if proc is None:
            raise AgentError(f"no process named {name!r}")
        return proc

    # -- launching ---------------------------------------------------------------------------

    def launch(self, definition: Any) -> dict[str, Any]:
        """Start a process from its definition in a free slot."""
        defn = normalize_definition(definition)
        name = defn["name"]
        with self._lock:
            old = self._procs.get(name)
            if old is not None and old.state in ACTIVE:
                raise AgentError(f"process {name!r} already exists ({old.state})")
            used = self.used_slots()
            if used >= self.slots:
                raise AgentError(f"no free slot ({used} of {self.slots} in use)")
            proc = Proc(name=name, definition=defn)
            self._procs.pop(name, None)
            self._procs[name] = proc
            self._spawn(proc)
            self._save()
            if proc.state == FAILED:
                raise AgentError(f"cannot start {name}: {proc.error}")
        return self.describe(name)

    def _spawn(self, proc: Proc) -> None:
        defn = proc.definition
        env = dict(os.environ)
        env.update(defn["env"])
        if defn.get("pythonpath"):
            parts = [*defn["pythonpath"], env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
        err_path = os.path.join(self.procs_dir, f"{proc.name}.err")
        out_path = os.path.join(self.procs_dir, f"{proc.name}.out")
        proc.next_start = None
        proc.error = None
        try:
            with open(out_path, "ab") as out, open(err_path, "ab") as err:
                child = subprocess.Popen(
                    command_line(defn),
                    cwd=defn.get("cwd") or self.home,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            proc.state, proc.pid, proc.starttime = FAILED, None, None
            proc.exit_code, proc.signal = None, None
            proc.error = f"{type(exc).__name__}: {exc}"
            proc.ended_at = time.time()
            log.warning("cannot start %s: %s", proc.name, proc.error)
            return
        self._children[proc.name] = child
        proc.state, proc.pid = RUNNING, child.pid
        proc.starttime = proc_starttime(child.pid)
        proc.started_at, proc.ended_at = time.time(), None
        proc.exit_code = proc.signal = None
        proc.stop_requested = False
        log.info("started %s (pid %s, start #%d)", proc.name, child.pid, proc.restarts + 1)

    def _ended(self, proc: Proc, returncode: int | None, error: str | None = None) -> None:
        """Record an exit and decide, by the restart policy, whether to start again."""
        self._children.pop(proc.name, None)
        proc.ended_at = time.time()
        proc.exit_code = returncode if returncode is not None and returncode >= 0 else None
        proc.signal = -returncode if returncode is not None and returncode < 0 else None
        proc.error = error
        if proc.stop_requested:
            proc.state = TERMINATED
            log.info("%s terminated (status %s)", proc.name, returncode)
            return
        normal = returncode == 0
        proc.state = EXITED if normal else FAILED
        defn = proc.definition
        wanted = defn["restart"] == "always" or (defn["restart"] == "abnormal" and not normal)
        allowed = defn["max_restarts"] is None or proc.restarts < defn["max_restarts"]
        log.info("%s %s (status %s)%s", proc.name, proc.state, returncode,
                 ", will restart" if wanted and allowed else "")
        if wanted and allowed:
            proc.state = PENDING
            last = proc.started_at or proc.ended_at
            proc.next_start = max(proc.ended_at, last + defn["min_restart_interval"])

    def tick(self) -> None:
        """Reap exits, notice adopted children that died, and start due restarts."""
        with self._lock:
            changed = False
            now = time.time()
            for proc in list(self._procs.values()):
                if proc.state == RUNNING:
                    child = self._children.get(proc.name)
                    if child is not None:
                        code = child.poll()
                        if code is not None:
                            self._ended(proc, code)
                            changed = True
                    elif proc.pid is None or proc_starttime(proc.pid) != proc.starttime:
                        self._ended(proc, None, "exited while adopted (exit status unknown)")
                        changed = True
                if proc.state == PENDING and (proc.next_start or 0) <= now:
                    if proc.started_at is not None:
                        proc.restarts += 1
                    self._spawn(proc)
                    changed = True
            if changed:
                self._save()

    # -- stopping ----------------------------------------------------------------------------

    def _signal(self, proc: Proc, sig: int) -> None:
        if proc.pid is None or proc_starttime(proc.pid) != proc.starttime:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def kill(self, name: str, grace: float = KILL_GRACE) -> dict[str, Any]:
        """Stop a process for good: SIGTERM to its group, SIGKILL after `grace` seconds."""
        with self._lock:
            proc = self._get(name)
            if proc.state == PENDING:
                proc.state, proc.next_start, proc.stop_requested = TERMINATED, None, True
                self._save()
            elif proc.state == RUNNING:
                proc.stop_requested = True
                self._save()
                self._signal(proc, signal.SIGTERM)
        for sig_after, wait in ((signal.SIGKILL, grace), (None, 5.0)):
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.tick()
                with self._lock:
                    if proc.state != RUNNING:
                        return self.describe(name)
                time.sleep(0.02)
            if sig_after is not None:
                with self._lock:
                    self._signal(proc, sig_after)
        raise AgentError(f"{name} (pid {proc.pid}) did not stop after SIGKILL")
