#!/bin/sh
# Boot program of plans/hello.yml: writes a greeting and reports it as an output.
set -eu
printf '%s %s\n' "$1" "$2" > greeting.txt
python3 - "$1" "$2" <<'PY'
import json, os, sys
with open(os.environ["CEI_OUTPUT"], "w") as out:
    json.dump({"greeting": f"{sys.argv[1]} {sys.argv[2]}", "node": os.environ["CEI_NODE"]}, out)
PY
