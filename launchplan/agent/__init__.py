"""The execution-engine agent: a process supervisor shipped to nodes as a zipapp.

Standard library only, and relative imports only, so the same package runs as
`python3 -m launchplan.agent` here and as `python3 cei-agent.pyz` on any node with python3.
"""

VERSION = "1"
