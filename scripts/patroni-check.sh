#!/usr/bin/env bash
# A real consumer end to end: Patroni (PyPI, in a virtualenv of its own)
# managing a two-node PostgreSQL 15 cluster (Debian's postgresql-15) with a
# DCS that is cairn or etcd 3.4, in Patroni's `etcd3` mode (etcd's JSON
# gateway) and its `etcd` mode (the v2 API, `--enable-v2`):
#
#   ./scripts/patroni-check.sh [cairn|etcd] [etcd3|etcd]   # default: every pair
#
# For each pair: start the DCS (one member), start two Patroni nodes; wait
# until `patronictl list` shows a Leader and a streaming Replica; write a
# row on the leader and read it on the replica; kill -9 the leader's
# Patroni and its PostgreSQL; wait until the replica is promoted (within
# Patroni's TTL plus a loop); restart the old leader and wait until it
# rejoins as a streaming replica of the new leader. Prints each step with
# its time; exits non-zero at the first step that does not happen in time.
#
# Needs root (PostgreSQL runs as the `postgres` user), Debian's postgresql-15
# and etcd-server, and network access to PyPI the first time. The cairn
# binary is $CARGO_TARGET_DIR/release/cairn (built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
# Outside /root: PostgreSQL and Patroni run as the postgres user.
venv="${CAIRN_PATRONI_VENV:-/var/cache/cairn/patroni}"
pgbin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/patroni-check.XXXXXX)
chown postgres "$work"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%(%H:%M:%S)T  %s\n' -1 "$*"; }
fail() {
  say "FAILED: $*"
  for f in "$work"/*.log "$work"/dcs-*/log; do
    [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 15 "$f"; }
  done
  exit 1
}

[ -x "$pgbin/postgres" ] || fail "PostgreSQL 15 missing: apt-get install postgresql-15"
if [ ! -x "$venv/bin/patroni" ]; then
  say "installing Patroni in $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "patroni[etcd,etcd3]==4.0.4" psycopg2-binary
fi
if [ ! -x "$target/release/cairn" ]; then
  CARGO_TARGET_DIR="$target" cargo build --release --bin cairn
fi

start_dcs() { # server mode
  local server=$1 dir="$work/dcs-$1-$2"
  mkdir -p "$dir"
  local bin=/usr/bin/etcd
  [ "$server" = cairn ] && bin="$target/release/cairn"
  "$bin" --name dcs --data-dir "$dir/data" --enable-v2 \
    --listen-client-urls http://127.0.0.1:23379 --advertise-client-urls http://127.0.0.1:23379 \
    --listen-peer-urls http://127.0.0.1:23380 --initial-advertise-peer-urls http://127.0.0.1:23380 \
    --initial-cluster dcs=http://127.0.0.1:23380 >"$dir/log" 2>&1 &
  dcs_pid=$!
  pids+=("$dcs_pid")
  for _ in $(seq 50); do
    curl -sf http://127.0.0.1:23379/health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$server did not start"
}

node_config() { # name pgport apiport mode
  local name=$1 pg=$2 api=$3 mode=$4
  cat >"$work/$name.yml" <<EOF
scope: check
name: $name
restapi:
  listen: 127.0.0.1:$api
  connect_address: 127.0.0.1:$api
$mode:
  hosts: 127.0.0.1:23379
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 10485760
    postgresql:
      use_pg_rewind: true
  initdb: [encoding: UTF8]
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $work/$name
  bin_dir: $pgbin
  pgpass: $work/$name.pgpass
  authentication:
    replication: {username: replicator, password: rep}
    superuser: {username: postgres, password: pg}
    rewind: {username: postgres, password: pg}
  parameters:
    unix_socket_directories: $work
    wal_log_hints: "on"
EOF
  chown postgres "$work/$name.yml"
}

declare -A node_pid
start_node() { # name
  runuser -u postgres -- "$venv/bin/patroni" "$work/$1.yml" >>"$work/$1.log" 2>&1 &
  node_pid[$1]=$!
  pids+=("${node_pid[$1]}")
}

# Prints "name role state" lines of `patronictl list`.
members() {
  runuser -u postgres -- "$venv/bin/patronictl" -c "$work/pg1.yml" list -f json 2>/dev/null \
    | python3 -c 'import json,sys; [print(m["Member"], m["Role"], m["State"]) for m in json.load(sys.stdin)]' 2>/dev/null || true
}

wait_for() { # seconds description command...
  local secs=$1 what=$2; shift 2
  local t0=$SECONDS
  while ! "$@"; do
    [ $((SECONDS - t0)) -ge "$secs" ] && { members; fail "$what (waited $secs s)"; }
    sleep 1
  done
  say "$what after $((SECONDS - t0)) s"
}

leader_is() { members | grep -q "^$1 Leader running"; }
replica_streams() { members | grep -Eq "^$1 (Replica|Sync Standby) (streaming|running)"; }
any_leader() { members | grep -q " Leader running"; }

psql_on() { # port sql
  runuser -u postgres -- "$pgbin/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -tAc "$2" 2>/dev/null
}
row_on() { [ "$(psql_on "$1" "select v from t where k = 1")" = "$2" ]; }

run_pair() { # server mode
  local server=$1 mode=$2
  say "=== Patroni ($mode mode) on $server"
  rm -rf "$work"/pg1 "$work"/pg2 "$work"/*.log
  start_dcs "$server" "$mode"
  node_config pg1 25432 28008 "$mode"
  node_config pg2 25433 28009 "$mode"
  start_node pg1
  wait_for 60 "pg1 leads" leader_is pg1
  start_node pg2
  wait_for 90 "pg2 streams from pg1" replica_streams pg2
  members | sed 's/^/    /'
  psql_on 25432 "create table t (k int primary key, v text); insert into t values (1, 'before')" >/dev/null
  wait_for 30 "the row written on pg1 is on pg2" row_on 25433 before
  say "kill -9 pg1's Patroni and PostgreSQL"
  pkill -9 -f "bin/patroni $work/pg1.yml" || true
  pkill -9 -f "$pgbin/postgres -D $work/pg1" || true
  wait_for 40 "pg2 is promoted" leader_is pg2
  psql_on 25433 "update t set v = 'after' where k = 1" >/dev/null
  start_node pg1
  wait_for 120 "pg1 rejoins as a replica of pg2" replica_streams pg1
  wait_for 30 "pg1 has pg2's write" row_on 25432 after
  members | sed 's/^/    /'
  pkill -9 -f "bin/patroni $work/" || true
  pkill -9 -f "$pgbin/postgres -D $work/" || true
  kill -9 "$dcs_pid" 2>/dev/null || true
  sleep 1
  say "=== passed: Patroni ($mode mode) on $server"
}

servers=(${1:-cairn etcd})
modes=(${2:-etcd3 etcd})
for s in "${servers[@]}"; do
  for m in "${modes[@]}"; do
    run_pair "$s" "$m"
  done
done
say "all passed"
