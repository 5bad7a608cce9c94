"""paramiko, loaded without invoke: every module of cei takes paramiko from here.

paramiko.config imports invoke when it loads, for `Match exec` alone, and invoke brings
unittest.mock, asyncio and ssl with it: a third of paramiko's import time, paid on every
launch. cei refuses `Match exec` itself (remote/sshconfig.py), so paramiko is loaded while
`import invoke` fails, as it would were invoke not installed; the block is lifted at once, so
anything else in the process that imports invoke later gets it.
"""

from __future__ import annotations

import sys

_BLOCK = "invoke" not in sys.modules
if _BLOCK:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # None: "import fails"
try:
    import paramiko
finally:
    if _BLOCK and "invoke" in sys.modules and sys.modules["invoke"] is None:
        del sys.modules["invoke"]

__all__ = ["paramiko"]
