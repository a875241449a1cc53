#!/usr/bin/env bash
# Installs what mgr's tests and demo need on a fresh Debian 12 (as root) with Node 20: the real
# store servers from Debian's packages (only when a binary is missing) and node_modules (when
# missing or older than package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql)
command -v pg_dump >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "ensure-deps: installing Debian packages: ${need_apt[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  # the full set, so a partly installed machine ends up with matching versions
  $sudo apt-get install -y -q --no-install-recommends postgresql postgresql-client redis-server etcd-server etcd-client docker-registry
fi

if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ensure-deps: npm ci"
  npm ci --no-audit --no-fund
fi
