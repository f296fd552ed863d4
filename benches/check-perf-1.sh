#!/usr/bin/env bash
# benches/check-perf-1.sh — `etcdctl check perf` against one fresh member of
# cairn (release build of this tree) or etcd 3.4, reporting beside etcdctl's
# verdict what the run cost: CPU seconds of the server and of etcdctl (from
# /proc/<pid>/stat), the server's WAL fsync count and mean, its peak RSS, and
# its RSS each second (to show when the peak happens).
#
# Usage: benches/check-perf-1.sh [cairn|etcd] [s|m|l|xl]     (default: cairn l)
#   DATA_BASE=/dev/shm benches/check-perf-1.sh cairn l  — data dir on tmpfs
#   (fsync nearly free: separates the disk from the rest)
#   CTL=target/release/cairnctl benches/check-perf-1.sh etcd xl  — another
#   etcdctl-compatible CLI runs the check (default: etcdctl 3.4)
#   CAIRN=path/to/cairn  — that binary instead of building this tree's
set -euo pipefail
WHO=${1:-cairn}
LOAD=${2:-l}
case "$WHO" in cairn|etcd) ;; *) echo "check-perf-1.sh: server is cairn or etcd" >&2; exit 2 ;; esac
case "$LOAD" in s|m|l|xl) ;; *) echo "check-perf-1.sh: load is s, m, l or xl" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CTL=${CTL:-etcdctl}
if [ "$WHO" = cairn ] && [ -n "${CAIRN:-}" ]; then
  BIN=$CAIRN
elif [ "$WHO" = cairn ]; then
  (cd "$ROOT" && cargo build --release --bin cairn >&2)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
else
  command -v etcd >/dev/null || { apt-get install -y -q etcd-server >&2; }
  BIN=etcd
fi
[ "$CTL" != etcdctl ] || command -v etcdctl >/dev/null || { apt-get install -y -q etcd-client >&2; }
DIR=$(mktemp -d "${DATA_BASE:-/tmp}/check-perf-1.XXXX")
SP= EP=
cleanup() {
  for p in $EP $SP; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
CLIENT=127.0.0.1:23791
if curl -s -m 2 -o /dev/null "http://$CLIENT/health"; then
  echo "check-perf-1.sh: something already serves $CLIENT; stop it first" >&2
  exit 1
fi
"$BIN" --name m1 --data-dir "$DIR/data" \
  --listen-client-urls "http://$CLIENT" --advertise-client-urls "http://$CLIENT" \
  --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
  --initial-cluster m1=http://127.0.0.1:23801 \
  --heartbeat-interval 100 --election-timeout 1000 >"$DIR/server.log" 2>&1 &
SP=$!
for _ in $(seq 1 100); do
  curl -sf -m 2 "http://$CLIENT/health" | grep -q '"health":"true"' && break
  sleep 0.2
done
kill -0 "$SP" 2>/dev/null || { echo "check-perf-1.sh: $WHO did not start:" >&2; cat "$DIR/server.log" >&2; exit 1; }
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
ticks=$(getconf CLK_TCK)
s0=$(cpu "$SP"); t0=$(date +%s.%N)
ETCDCTL_API=3 "$CTL" --endpoints "$CLIENT" check perf --load="$LOAD" >"$DIR/etcdctl.out" 2>&1 &
EP=$!
e=0; rss=()
while kill -0 "$EP" 2>/dev/null; do
  e=$(cpu "$EP" || echo "$e")
  rss+=("$(awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$SP/status")")
  sleep 1
done
wait "$EP" || true
s1=$(cpu "$SP"); t1=$(date +%s.%N)
tr '\r' '\n' <"$DIR/etcdctl.out" | grep -E '^(PASS|FAIL|Slowest|Stddev|Throughput|Error)' || true
awk -v s="$((s1 - s0))" -v e="$e" -v t="$ticks" -v w="$(echo "$t1 - $t0" | bc)" \
  'BEGIN { printf "wall %.1f s; CPU: %s %.1f s, the CLI %.1f s (2 cores = %.0f CPU-s)\n", w, "server", s / t, e / t, 2 * w }'
curl -s -m 10 "http://$CLIENT/metrics" | awk '
  /^etcd_disk_wal_fsync_duration_seconds_sum/ { sum = $2 }
  /^etcd_disk_wal_fsync_duration_seconds_count/ { n = $2 }
  END { if (n > 0) printf "WAL fsyncs: %d, mean %.3f ms\n", n, 1000 * sum / n }'
echo "server peak RSS: $(awk '/VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$SP/status")"
echo "server RSS each second, MiB: ${rss[*]}"
