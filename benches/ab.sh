#!/usr/bin/env bash
# benches/ab.sh — two cairn binaries in turns on the same workloads: did a change help?
#
# Usage: benches/ab.sh OLD NEW [--nodes 1|3] [--rounds N] [--workloads "put rangel ka txn"]
#                      [--bench PATH]
#
# Each round starts a fresh cluster of OLD, then of NEW (one member, or three
# on loopback with compare.sh's Raft timing), writes 2 000 warm-up puts, runs
# each workload with cairn-bench (64 clients over 8 connections, every
# endpoint) and prints, per run, the throughput, the p99 latency and the
# servers' CPU time per request (user + system of every member, from
# /proc/PID/stat around the run). Workloads: put (30 000 puts of 256 B over
# 100 000 keys), txn (the same as txn-put), rangel (60 000 linearizable
# ranges of one key), ka (60 000 lease keep-alives).
# The load generator shares the machine: compare the two columns with each
# other, not with another machine's figures.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
OLD=$1 NEW=$2; shift 2
NODES=1 ROUNDS=3 WORKLOADS="put rangel ka"
BENCH="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release/cairn-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --bench) BENCH="$2"; shift ;;
    *) echo "ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$NODES" in 1|3) ;; *) echo "ab.sh: --nodes is 1 or 3" >&2; exit 2 ;; esac
for b in "$OLD" "$NEW" "$BENCH"; do [ -x "$b" ] || { echo "ab.sh: $b is not an executable" >&2; exit 2; }; done
tck=$(getconf CLK_TCK)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_cluster() { # binary dir
  local bin=$1 dir=$2 ic="" i
  for i in $(seq 1 "$NODES"); do ic="${ic:+$ic,}m$i=http://127.0.0.1:2480$i"; done
  pids=()
  EP=""
  for i in $(seq 1 "$NODES"); do
    setsid "$bin" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:2479$i" --advertise-client-urls "http://127.0.0.1:2479$i" \
      --listen-peer-urls "http://127.0.0.1:2480$i" --initial-advertise-peer-urls "http://127.0.0.1:2480$i" \
      --initial-cluster "$ic" --initial-cluster-state new --heartbeat-interval 100 --election-timeout 1000 \
      --log-level warn >"$dir/m$i.log" 2>&1 </dev/null &
    pids+=($!)
    EP="${EP:+$EP,}127.0.0.1:2479$i"
  done
  for _ in $(seq 150); do
    "$BENCH" --endpoints "$EP" put --total 1 2>&1 | grep -qE "ok +1$" && return 0
    sleep 0.2
  done
  echo "ab.sh: $bin did not come up; see $dir" >&2; exit 1
}

cpu_ticks() { local s=0 p; for p in "${pids[@]}"; do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $s; }

echo "round binary workload req/s p99_ms cpu_us_per_req errors"
for r in $(seq 1 "$ROUNDS"); do
  for v in old new; do
    bin=$OLD; [ $v = new ] && bin=$NEW
    dir=$(mktemp -d /tmp/cairn-ab.XXXX)
    start_cluster "$bin" "$dir"
    "$BENCH" --endpoints "$EP" put --clients 16 --conns 4 --total 2000 --key-size 8 --val-size 256 --key-space-size 100000 >/dev/null 2>&1
    for wl in $WORKLOADS; do
      case $wl in
        put) args=(put --total 30000 --key-size 8 --val-size 256 --key-space-size 100000); n=30000 ;;
        txn) args=(txn-put --total 30000 --key-size 8 --val-size 256 --key-space-size 100000); n=30000 ;;
        rangel) args=(range --total 60000 --key bench-range --populate 1 --val-size 256 --consistency l); n=60000 ;;
        ka) args=(lease-keepalive --total 60000); n=60000 ;;
        *) echo "ab.sh: unknown workload $wl" >&2; exit 2 ;;
      esac
      a=$(cpu_ticks)
      out=$("$BENCH" --endpoints "$EP" --clients 64 --conns 8 "${args[@]}" 2>&1 | tr '\n' ' ')
      b=$(cpu_ticks)
      rps=$(echo "$out" | grep -oE 'req/s +[0-9.]+' | awk '{print $2}')
      p99=$(echo "$out" | grep -oE 'p99 +[0-9.]+' | awk '{print $2}')
      err=$(echo "$out" | grep -oE 'errors +[0-9]+' | awk '{print $2}')
      echo "$r $v $wl ${rps:-?} ${p99:-?} $(awk -v a="$a" -v b="$b" -v n=$n -v t="$tck" 'BEGIN{printf "%.1f",(b-a)/t*1e6/n}') ${err:-?}"
    done
    cleanup
    for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
    rm -rf "$dir"
  done
done
