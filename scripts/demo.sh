#!/usr/bin/env bash
# `make demo`: validate, launch, check and tear down plans/three-tier.yml on the local cloud.
set -euo pipefail
cei=${1:-cei}
run="three-tier-demo-$$"
cd "$(dirname "$0")/.."

cleanup() { "$cei" terminate "$run" || true; }
trap 'echo "demo interrupted; tearing down"; cleanup; exit 130' INT TERM

echo "==> cei validate plans/three-tier.yml"
"$cei" validate plans/three-tier.yml
echo "==> cei launch plans/three-tier.yml --name $run"
if ! "$cei" launch plans/three-tier.yml --name "$run"; then
  echo "launch failed; tearing down" >&2
  cleanup
  exit 1
fi
echo "==> cei status $run"
"$cei" status "$run"
echo "==> a request through the web tier (web -> app -> db)"
"$cei" status "$run" --cached --json | python3 -c '
import json, sys, urllib.request
nodes = json.load(sys.stdin)["nodes"]
web = next(n for n in nodes if n["service"] == "web")
for _ in range(2):
    print(urllib.request.urlopen(web["outputs"]["url"], timeout=5).read().decode())
'
echo "==> cei terminate $run"
"$cei" terminate "$run"
