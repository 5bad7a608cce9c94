"""Node and run states under the engine's short names.

They are defined once, with the store that validates them (launchplan.state.records).
"""

from launchplan.state.records import NODE_BOOTING as BOOTING
from launchplan.state.records import NODE_CONTEXTUALIZING as CONTEXTUALIZING
from launchplan.state.records import NODE_CREATING as CREATING
from launchplan.state.records import NODE_FAILED as FAILED
from launchplan.state.records import NODE_PENDING as PENDING
from launchplan.state.records import NODE_READY as READY
from launchplan.state.records import NODE_RETIRING as RETIRING
from launchplan.state.records import NODE_TERMINATED as TERMINATED
from launchplan.state.records import NODE_TERMINATING as TERMINATING
from launchplan.state.records import (
    RUN_FAILED,
    RUN_INTERRUPTED,
    RUN_LAUNCHING,
    RUN_READY,
    RUN_TEARDOWN_INCOMPLETE,
    RUN_TERMINATED,
    RUN_TERMINATING,
)

__all__ = [
    "BOOTING",
    "CONTEXTUALIZING",
    "CREATING",
    "FAILED",
    "PENDING",
    "READY",
    "RETIRING",
    "RUN_FAILED",
    "RUN_INTERRUPTED",
    "RUN_LAUNCHING",
    "RUN_READY",
    "RUN_TEARDOWN_INCOMPLETE",
    "RUN_TERMINATED",
    "RUN_TERMINATING",
    "TERMINATED",
    "TERMINATING",
]
