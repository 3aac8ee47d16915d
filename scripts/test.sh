#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine it installs what is missing, builds the bundle and
# runs every test (app/test and tests/), printing each test file's result as it finishes, then
# "N passed, N failed[, N skipped]". .ci/run runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/install-deps.sh"
# Node 22 first on PATH; better-sqlite3 (and node-gyp) build against its headers.
eval "$("$root/scripts/node22.sh" --env)"
cd "$root/app"
echo "node $(node --version), npm $(npm --version)"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npx tsc --noEmit -p .
# Import cycles (madge, type-only imports included) and style (eslint with neostandard,
# app/eslint.config.mjs): a finding fails the run before any test starts. `npm run format` fixes what can be fixed.
npm run --silent cycles
npm run --silent lint
# tap writes each test file's result to .tap/test-results when the file ends (always: it is what
# `tap replay` reads); tap-summary prints a line for it then, with the time since the start (tap's
# own stream keeps the files' order, so one slow file would hold back the rest), the failing
# assertions of a failed file, and the closing line "N passed, N failed[, N skipped]", whether or
# not the output is a terminal.
set +e
NODE_PATH="$root/app/node_modules" npx tap --reporter=tap "$@" 2>&1 |
  node "$root/scripts/tap-summary.mjs" --results "$root/app/.tap/test-results"
status=${PIPESTATUS[1]}
set -e
exit "$status"
