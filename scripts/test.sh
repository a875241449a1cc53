#!/usr/bin/env bash
# The test command (README): installs what is missing, then builds and runs the whole suite
# against real PostgreSQL, etcd, Redis and docker-registry servers started per test file.
# It ends with one plain line, "N passed, N failed", for whatever reads the log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
npm run build
results="$(mktemp -t mgr-vitest-XXXXXX.json)"
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json="$results"
rc=$?
set -e
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$results" || true
rm -f "$results"
exit "$rc"
