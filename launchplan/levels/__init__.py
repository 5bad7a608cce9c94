"""The level engine: launch, health and teardown of runs. It emits events and never prints.

Import the submodules (`launch`, `teardown`, `health`, `runtime`, `events`) directly: commands
that only print (`cei --help`) must not load the engine.
"""
