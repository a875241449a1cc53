#!/usr/bin/env bash
# The end-to-end demo on real servers: a sandbox with a seeded Backend.AI 21.03 installation,
# then mgr's view of it. Every step is echoed before it runs; the sandbox is stopped on exit.
#   MGR_SANDBOX_DIR   state dir of the sandbox (default .sandbox)
#   DEMO_KERNELS      kernel rows to seed (default 20000)
#   DEMO_IMAGES       image tags to seed in etcd (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."

SANDBOX_DIR="${MGR_SANDBOX_DIR:-.sandbox}"
KERNELS="${DEMO_KERNELS:-20000}"
IMAGES="${DEMO_IMAGES:-2000}"
TOML="$SANDBOX_DIR/manager.toml"
mgr() { node bin/mgr.js "$@"; }

n=0
step() {
  n=$((n + 1))
  printf '\n\033[1m== %d. %s\033[0m\n' "$n" "$*"
}

step "install what is missing (Debian packages, node_modules) and build"
bash scripts/ensure-deps.sh
npm run build --silent

step "stop a previous sandbox in $SANDBOX_DIR, if any, and start a fresh one"
if [ -f "$SANDBOX_DIR/sandbox.json" ]; then mgr sandbox stop --dir "$SANDBOX_DIR" || true; fi
rm -rf "$SANDBOX_DIR"
mgr sandbox start --dir "$SANDBOX_DIR" --with-registry
trap 'echo; echo "== stopping the sandbox"; node bin/mgr.js sandbox stop --dir "$SANDBOX_DIR" || true' EXIT

step "seed a Backend.AI 21.03 installation: $KERNELS kernels, $IMAGES image tags"
mgr sandbox seed --dir "$SANDBOX_DIR" --kernels "$KERNELS" --images "$IMAGES"

step "mgr status: release, stores, live nodes, pending upgrades"
mgr -f "$TOML" status

# ---------------------------------------------------------------------------------------------
# LEAD: add the remaining demo steps here, each as: step "…"; mgr -f "$TOML" …
#   - backup (before the upgrade)
#   - upgrade 21.03 → 21.09 → 22.03, then mgr status again
#   - push images to the sandbox registry + image rescan
#   - clear-history
# ---------------------------------------------------------------------------------------------

step "done"
