#!/usr/bin/env bash
# The test command (README): installs what is missing, then builds and runs the whole suite
# against real PostgreSQL, etcd, Redis and docker-registry servers started per test file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
npm test
