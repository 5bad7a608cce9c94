"""What a node's programs left running on a host that outlives the run, stopped at teardown.

A launch killed with SIGKILL while a boot program ran cannot stop it: OpenSSH sends nothing to
a session without a pty whose client went away, so the program runs on. Cloud machines are
destroyed and local nodes are stopped with everything they started; an existing host is
neither, so terminate stops such a program itself.

Every program cei runs on a node has the node's CEI_STAGE in its environment, and whatever it
starts inherits it, so the node's processes are those whose /proc/PID/environ holds exactly
`CEI_STAGE=<the stage>`: nothing else on the host does, and a recycled PID cannot. They get
TERM, a short grace, then KILL. A host without /proc, or whose grep cannot read NUL-separated
records (`-z`: GNU, busybox and toybox grep can), has nothing stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launchplan.remote import Session

STOP_TIMEOUT = 60.0

# $1: the stage, absolute or relative to the login directory; prints how many were signalled.
# Every loop is bounded; zombies have an empty environment and are never waited for.
_STOPPER = (
    's=$1; case $s in /*) ;; *) s=$PWD/$s ;; esac; m="CEI_STAGE=$s"; '
    'found() { p=; for f in $(grep -lzxF -e "$m" /proc/[0-9]*/environ 2>/dev/null); do '
    'f=${f#/proc/}; p="$p ${f%/environ}"; done; }; '
    'found; n=$(set -- $p; echo $#); '
    'if [ -n "$p" ]; then kill -TERM $p 2>/dev/null; i=0; '
    'while [ "$i" -lt 30 ]; do sleep 0.1; found; [ -z "$p" ] && break; i=$((i+1)); done; '
    '[ -n "$p" ] && kill -KILL $p 2>/dev/null; fi; echo "$n"'
)


def stop_leftovers(session: Session, stage: str) -> int:
    """Stop the processes on the node that carry `stage` as their CEI_STAGE; how many there
    were (0 too when the node cannot tell)."""
    result = session.run_argv(["sh", "-c", _STOPPER, "cei-stop", stage], timeout=STOP_TIMEOUT)
    count = result.stdout_tail.strip()
    return int(count) if result.status == 0 and count.isdigit() else 0
