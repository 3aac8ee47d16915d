#!/usr/bin/env bash
# Try the gateway without a Pi: Mosquitto, the gateway, a local HTTPS sink and simulated sensors on
# this machine (see app/tools/demo.ts). Installs what it needs the way the test command does.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/install-deps.sh"
nodebin=$("$root/scripts/node22.sh")
export PATH="$nodebin:$PATH" npm_config_nodedir=$(dirname "$nodebin")
cd "$root/app"
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npm run --silent demo -- "$@"
