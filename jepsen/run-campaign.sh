#!/usr/bin/env bash
# Issue 21 item 7: many seeds per nemesis on both targets. For each target
# (cairn, etcd), each nemesis kind and each seed, one cairn-jepsen run of the
# kv workload (and of the locks workload for kill and partition, and of the
# lease workload for kill, pause, partition, clock and member); prints one
# markdown row per run and a summary per target and nemesis.
#
# Needs root. Environment: CARGO_TARGET_DIR (default ./target; the release
# cairn and cairn-jepsen are built there), SEEDS (default 3: seeds
# FIRST_SEED..FIRST_SEED+SEEDS-1), FIRST_SEED (default 1), TIME (seconds per
# run, default 30), NEMESES (default "kill pause partition net clock lose
# member"), TARGETS (default "cairn etcd"), WORKLOADS (default "kv locks
# lease": which of them to run where they apply), CAIRN_JEPSEN (a
# cairn-jepsen binary to use instead of building one), OUT (default
# $CARGO_TARGET_DIR/jepsen-campaign).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
seeds="${SEEDS:-3}"
first="${FIRST_SEED:-1}"
time="${TIME:-30}"
nemeses="${NEMESES:-kill pause partition net clock lose member}"
targets="${TARGETS:-cairn etcd}"
want="${WORKLOADS:-kv locks lease}"
out="${OUT:-$target/jepsen-campaign}"
jepsen="${CAIRN_JEPSEN:-}"
if [ -z "$jepsen" ]; then
  CARGO_TARGET_DIR="$target" cargo build --release --workspace --bin cairn
  CARGO_TARGET_DIR="$target" cargo build --workspace --bin cairn-jepsen
  jepsen="$target/debug/cairn-jepsen"
fi
mkdir -p "$out"
echo "| target | nemesis | workload | seed | result | ops | faults | checks |"
echo "|---|---|---|---|---|---|---|---|"
for t in $targets; do
  bin=(--bin "$target/release/cairn")
  [ "$t" = etcd ] && bin=(--bin /usr/bin/etcd)
  for n in $nemeses; do
    workloads="kv"
    case "$n" in
      kill|partition) workloads="kv locks lease" ;;
      pause|clock|member) workloads="kv lease" ;;
    esac
    for w in $workloads; do
      case " $want " in *" $w "*) ;; *) continue ;; esac
      for s in $(seq "$first" $((first + seeds - 1))); do
        dir="$out/$t-$n-$w-$s"
        set +e
        "$jepsen" --target "$t" "${bin[@]}" --workload "$w" --nemesis "$n" --seed "$s" \
          --time "$time" --out "$dir" > "$dir.log" 2>&1
        rc=$?
        set -e
        case $rc in 0) r=pass ;; 1) r=**VIOLATION** ;; *) r="harness error $rc" ;; esac
        line=$(grep -E "^[0-9T:.Z-]+ [0-9]+ ops" "$dir.log" | tail -1 || true)
        ops=$(sed -E 's/.* ([0-9]+) ops.*/\1/' <<<"$line")
        [ "$w" = locks ] && ops=$(sed -E 's/.* ([0-9]+) lock holds.*/\1 holds/' <<<"$line")
        [ "$w" = lease ] && ops=$(sed -E 's/.* ([0-9]+) lease calls.*/\1 lease calls/' <<<"$line")
        faults=$(sed -E 's/.* ([0-9]+) faults.*/\1/' <<<"$line")
        checks=$(grep -E "^[a-z]+: (ok|VIOLATION|MALFORMED|inconclusive)" "$dir.log" | sed -E 's/: /=/' | tr '\n' ' ')
        echo "| $t | $n | $w | $s | $r | $ops | $faults | $checks|"
      done
    done
  done
done
