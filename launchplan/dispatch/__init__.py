"""Process dispatch: agents on engine nodes, and the dispatcher that places processes on them.

`agents` is what the level engine calls while it contextualizes a node that declares `agent`
(install and start the agent) and while it tears one down (stop it); `dispatcher` is what
`cei process` and `cei demo` use to place, watch, kill and reschedule processes.
"""
