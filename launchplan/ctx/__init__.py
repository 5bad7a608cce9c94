"""Contextualization: cloud-init user-data, SSH host keys and the node environment.

Import the submodules directly (`launchplan.ctx.userdata`, `.hostkeys`, `.environment`): the
local cloud's node process uses `userdata` alone and must not pay for the plan machinery.
"""
