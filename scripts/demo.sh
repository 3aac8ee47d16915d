#!/usr/bin/env bash
# Try the gateway without a Pi: Mosquitto, the gateway, a local HTTPS cloud and simulated sensors on
# this machine (app/tools/demo.ts; `scripts/demo.sh --help`). Installs only what it uses: Mosquitto
# and its clients, Node 22, the npm packages of app/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for a in "$@"; do
  case "$a" in
    -h|--help) # before installing anything
      # shellcheck disable=SC2016 # a sed program: the backquotes and $ are its own, not the shell's
      exec sed -n '/^const HELP = `/,/`$/{s/^const HELP = `//;s/`$//;p}' "$root/app/tools/demo.ts" ;;
  esac
done
bash "$root/scripts/install-deps.sh" --demo
eval "$("$root/scripts/node22.sh" --env)"
cd "$root/app"
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
# The bundle, unless it is newer than every source (another run may be using it right now).
if [ ! -f dist/gateway.cjs ] || [ -n "$(find src esbuild.config.mjs package-lock.json -newer dist/gateway.cjs -print -quit)" ]; then
  npm run --silent build >&2
fi
# exec: the tool runner is this process, so a signal sent to it reaches the demo (which cleans up).
exec node tools/run.mjs demo "$@"
