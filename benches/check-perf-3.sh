#!/usr/bin/env bash
# benches/check-perf-3.sh — `etcdctl check perf` against a fresh 3-member
# cairn cluster on loopback (release build of this tree), with the flags
# benches/compare.sh gives cairn. Prints etcdctl's verdict lines.
#
# Usage: benches/check-perf-3.sh [s|m|l|xl]   (default xl)
set -euo pipefail
LOAD=${1:-xl}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$ROOT" && cargo build --release --bin cairn >&2)
BIN="$ROOT/target/release/cairn"
DIR=$(mktemp -d /tmp/cairn-check-perf.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
ic="m1=http://127.0.0.1:21001,m2=http://127.0.0.1:21002,m3=http://127.0.0.1:21003"
for i in 1 2 3; do
  "$BIN" --name "m$i" --data-dir "$DIR/m$i" \
    --listen-client-urls "http://127.0.0.1:2200$i" --advertise-client-urls "http://127.0.0.1:2200$i" \
    --listen-peer-urls "http://127.0.0.1:2100$i" --initial-advertise-peer-urls "http://127.0.0.1:2100$i" \
    --initial-cluster "$ic" --initial-cluster-state new --initial-cluster-token check-perf-3 \
    --heartbeat-interval 100 --election-timeout 1000 --snapshot-count 10000 >"$DIR/m$i.log" 2>&1 &
  PIDS+=($!)
done
EPS=127.0.0.1:22001,127.0.0.1:22002,127.0.0.1:22003
for _ in $(seq 1 100); do
  curl -sf -m 2 http://127.0.0.1:22001/health | grep -q '"health":"true"' && break
  sleep 0.2
done
ETCDCTL_API=3 etcdctl --endpoints "$EPS" check perf --load="$LOAD" 2>&1 | tr '\r' '\n' | grep -E '^(PASS|FAIL|Slowest|Stddev|Throughput)'
