#!/usr/bin/env bash
# Issue 21 item 8: deliberately broken builds must fail the jepsen suite.
# For each patch of sim-tests/experiments/ named on the command line (default:
# local-reads watch-lost-event lock-no-recheck): the committed tree (git
# archive HEAD) with the patch applied, built in release into a target dir of
# its own, then run by cairn-jepsen with the workload and faults that patch
# breaks. A mutant that passes every check is reported as MISSED; the script
# exits non-zero if any was missed or failed to build.
#
# Needs root (as cairn-jepsen does). Environment: CARGO_TARGET_DIR (where the
# cairn-jepsen binary is built, default ./target), CAIRN_MUTANT_TARGET (the
# mutants' build dir, default $CARGO_TARGET_DIR/mutants), SEEDS (the seeds to
# try, in turn, until one shows the bug; default "1 2 3"), TIME (seconds per
# run, default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
mtarget="${CAIRN_MUTANT_TARGET:-$target/mutants}"
seeds="${SEEDS:-1 2 3}"
time="${TIME:-40}"
work="$(mktemp -d /var/tmp/cairn-mutants.XXXXXX)"
trap 'rm -rf "$work"' EXIT
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=(local-reads watch-lost-event lock-no-recheck)

CARGO_TARGET_DIR="$target" cargo build --workspace --bin cairn-jepsen
out="$target/jepsen-mutants"
mkdir -p "$out"
missed=0
for p in "${patches[@]}"; do
  patch="sim-tests/experiments/$p.patch"
  [ -f "$patch" ] || { echo "mutants.sh: no $patch" >&2; exit 2; }
  case "$p" in
    lock-*) args=(--workload locks --nemesis kill,partition,pause --clients 3) ;;
    watch-*) args=(--workload kv --nemesis kill,pause) ;;
    *) args=(--workload kv --nemesis partition,pause) ;;
  esac
  rm -rf "$work/src" && mkdir -p "$work/src"
  git archive HEAD | tar -x -C "$work/src"
  (cd "$work/src" && git apply "$OLDPWD/$patch")
  echo "== $p: building"
  (cd "$work/src" && CARGO_TARGET_DIR="$mtarget" cargo build --release --bin cairn -q)
  cp "$mtarget/release/cairn" "$work/cairn-$p"
  # A fault must land at the right moment to show a bug: each seed in turn
  # until one catches it.
  rc=0
  for seed in $seeds; do
    echo "== $p: cairn-jepsen ${args[*]} --seed $seed --time $time"
    set +e
    "$target/debug/cairn-jepsen" --bin "$work/cairn-$p" --seed "$seed" --time "$time" \
      "${args[@]}" --out "$out/$p" > "$out/$p.log" 2>&1
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || break
    echo "== $p: not shown with seed $seed"
  done
  grep -E "^[a-z]+: (VIOLATION|MALFORMED)|^  " "$out/$p.log" | head -8 || true
  case $rc in
    1) echo "== $p: CAUGHT with seed $seed (report: $out/$p/report.html)" ;;
    0) echo "== $p: MISSED (seeds $seeds)"; missed=$((missed + 1)) ;;
    *) echo "== $p: harness error $rc (log: $out/$p.log)"; tail -5 "$out/$p.log"; missed=$((missed + 1)) ;;
  esac
done
[ "$missed" -eq 0 ]
