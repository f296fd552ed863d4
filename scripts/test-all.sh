#!/usr/bin/env bash
# Runs every cairn test, in both worlds, on a fresh machine or a warm one.
#
#   ./scripts/test-all.sh
#
# 1. Installs what the tests need and a fresh machine lacks (Debian packages:
#    libclang-dev for RocksDB's bindgen; protobuf-compiler for the etcd-client
#    crate used in interop tests; etcd-server and etcd-client, the real etcd
#    and etcdctl used as oracle and client in interop tests).
# 2. Normal world (tokio + RocksDB): builds the workspace and runs all tests.
# 3. Simulation world (`--cfg madsim`, in <target>/sim): builds the workspace
#    and runs the simulation tests.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: ./target). `.ci/run` points it
#                      at a cache outside the clone when the machine has one.
#   CAIRN_SKIP_INSTALL=1  do not touch system packages.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_packages() {
  local missing=()
  for pkg in libclang-dev protobuf-compiler etcd-server etcd-client; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts an etcd on 2379 as a service; the tests start
  # their own servers, so make sure it is not holding the ports.
  $sudo systemctl stop etcd >/dev/null 2>&1 || true
  $sudo pkill -x etcd >/dev/null 2>&1 || true
}

[ "${CAIRN_SKIP_INSTALL:-0}" = 1 ] || install_packages

target="${CARGO_TARGET_DIR:-$PWD/target}"
start=$(date +%s)

log "normal world: build and test (target: $target)"
CARGO_TARGET_DIR="$target" cargo test --workspace --no-fail-fast

log "simulation world: build and test (target: $target/sim)"
export RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim"
CARGO_TARGET_DIR="$target/sim" cargo build --workspace --tests
CARGO_TARGET_DIR="$target/sim" cargo test -p cairn-runtime -p cairn-sim-tests --tests --no-fail-fast

log "all tests passed in $(( $(date +%s) - start )) s"
