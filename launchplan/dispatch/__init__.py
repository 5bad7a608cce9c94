"""Process dispatch: the dispatcher that places processes on engine nodes' agents.

It sits above the level engine: the engine installs, starts and stops a node's agent while it
contextualizes and tears the node down (launchplan.levels.agents); the dispatcher, used by
`cei process` and `cei demo`, places, watches, kills and reschedules processes on those agents.
"""
