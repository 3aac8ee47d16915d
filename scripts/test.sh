#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine it installs what is missing, builds the bundle and
# runs every test (app/test and tests/), then prints "N passed, N failed". .ci/run runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/install-deps.sh"
nodebin=$("$root/scripts/node22.sh")
export PATH="$nodebin:$PATH"
# better-sqlite3 (and node-gyp) build against the headers of the Node 22 that runs the tests.
export npm_config_nodedir=$(dirname "$nodebin")
cd "$root/app"
echo "node $(node --version), npm $(npm --version)"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npx tsc --noEmit -p .
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
NODE_PATH="$root/app/node_modules" npx tap --reporter=tap "$@" 2>&1 | tee "$out" | grep -E '^(not )?ok |^# (Subtest|SKIP)|^    not ok' 
set -e
node "$root/scripts/tap-summary.mjs" "$out"
