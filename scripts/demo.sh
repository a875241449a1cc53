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

step "back up PostgreSQL, etcd and Redis together (mgr upgrade takes one too; this shows the command)"
mgr -f "$TOML" backup create --out "$SANDBOX_DIR/backups"
mgr -f "$TOML" backup list "$SANDBOX_DIR/backups"

step "the upgrade plan: every step and its exact SQL, nothing written"
mgr -f "$TOML" upgrade plan | head -40

step "upgrade 21.03 → 21.09 → 22.03 (pre-upgrade backup, maintenance mode, checkpoints)"
mkdir -p "$SANDBOX_DIR/cron.d"  # stands in for /etc/cron.d
mgr -f "$TOML" upgrade --yes --backup-dir "$SANDBOX_DIR/backups" --cron-file "$SANDBOX_DIR/cron.d/mgr-clear-history"

step "mgr status after the upgrade"
mgr -f "$TOML" status

step "what the upgrade wrote into manager.toml (the lock backend) and cron"
grep -n -B2 'distributed-lock' "$TOML" || true
cat "$SANDBOX_DIR/cron.d/mgr-clear-history"

step "push Backend.AI kernel images into the sandbox registry and rescan it"
mgr sandbox push-images --dir "$SANDBOX_DIR"
mgr -f "$TOML" image rescan sandbox

step "clear-history -r 30d: what would go, then trim it"
mgr -f "$TOML" clear-history -r 30d --dry-run
mgr -f "$TOML" clear-history -r 30d

step "done"
