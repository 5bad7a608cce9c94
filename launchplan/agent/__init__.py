"""The execution-engine agent: a process supervisor shipped to nodes as a zipapp.

Standard library only, and relative imports only (but for launchplan.errors, which the
zipapp carries beside it), so the same package runs as `python3 -m launchplan.agent` here and
as `python3 cei-agent.pyz` on any node with python3.
"""

VERSION = "1"
