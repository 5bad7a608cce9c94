#!/usr/bin/env python3
"""Reports what the node saw: argv, config, the CEI_* environment and the stage directory."""
import json
import os
import stat
import sys

with open(os.environ["CEI_CONFIG"]) as f:
    config = json.load(f)
with open(os.environ["CEI_CONTEXT"]) as f:
    context = json.load(f)
outputs = {
    "arg": sys.argv[1] if len(sys.argv) > 1 else None,
    "argv": sys.argv[1:],
    "config": config,
    "env": {k: v for k, v in os.environ.items() if k.startswith("CEI_")},
    "cwd": os.getcwd(),
    "stage_mode": oct(stat.S_IMODE(os.stat(".").st_mode)),
    "context_nodes": sorted(n["node"] for n in context["nodes"]),
}
with open(os.environ["CEI_OUTPUT"], "w") as f:
    json.dump(outputs, f)
