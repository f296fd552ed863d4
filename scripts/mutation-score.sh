#!/usr/bin/env bash
# Mutation score of the simulation suite: does it catch the deliberately
# broken builds kept as patches in sim-tests/experiments/?
#
#   ./scripts/mutation-score.sh                 # every patch
#   ./scripts/mutation-score.sh watch-lost-event.patch lock-no-recheck.patch
#
# For each patch, in turn: apply it in a git worktree of HEAD of its own
# (never in this checkout, which others may be editing), build the
# simulation test in a target directory of its own (the main sim build is
# not invalidated), take the patch back out (the worktree is clean again
# before the run; an interrupted script leaves it clean too), and run the CI
# seed set (every scenario, regression seeds included, no determinism
# re-runs) until the first failure. The scenarios a patch names on its
# `Scenarios:` line (text before the diff, which git apply skips) run first.
# A patch is caught when a run fails and that run's HTML report (the
# runner's `<scenario>-seed<N>.html`) names a failed check. The last line is `caught / applied`.
# Exit status: 0 only when every patch applies, builds and is caught.
#
# Environment:
#   CARGO_TARGET_DIR    the build cache; mutants go to <it>/sim-mutants
#                       (default: ./target/sim-mutants)
#   CAIRN_MUTANTS_DIR   overrides that directory (worktree `tree/`, target
#                       `target/`, one log per patch in `logs/`)
#   CAIRN_SIM_JOBS      child processes at a time (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rev=$(git rev-parse HEAD)
dir="${CAIRN_MUTANTS_DIR:-${CARGO_TARGET_DIR:-$root/target}/sim-mutants}"
tree="$dir/tree"
mkdir -p "$dir/logs" "$dir/bin"

if [ $# -gt 0 ]; then
  patches=()
  for p in "$@"; do patches+=("sim-tests/experiments/$(basename "$p")"); done
else
  mapfile -t patches < <(ls sim-tests/experiments/*.patch)
fi
all_scenarios=$(sed -n 's/^pub const ALL_SCENARIOS: &str = "\(.*\)";/\1/p' sim-tests/src/sim/runner.rs)
[ -n "$all_scenarios" ] || { echo "ALL_SCENARIOS not found in sim-tests/src/sim/runner.rs" >&2; exit 2; }

# The worktree: created once, then moved to HEAD with anything left in it
# discarded (it is this script's own).
if ! git -C "$tree" rev-parse --git-dir >/dev/null 2>&1; then
  rm -rf "$tree"
  git worktree prune
  git worktree add --detach -q "$tree" "$rev"
fi
git -C "$tree" checkout -q --force --detach "$rev"
git -C "$tree" clean -q -fd -- src sim-tests runtime proto

applied_patch=""
restore() {
  if [ -n "$applied_patch" ]; then
    git -C "$tree" apply -R "$applied_patch" || git -C "$tree" checkout -q --force --detach "$rev"
    applied_patch=""
  fi
}
trap restore EXIT
trap 'restore; exit 130' INT TERM

echo "mutation score: ${#patches[@]} patches against $(git log -1 --format='%h %s' "$rev" | cut -c1-70)"
echo "(worktree $tree, target $dir/target, logs $dir/logs)"
caught=0 applied=0 problems=0
started=$(date +%s)
for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  log="$dir/logs/$name.log"
  if ! git -C "$tree" apply --check "$root/$patch" 2>"$log"; then
    printf '  %-8s %-42s %s\n' "STALE" "$name" "no longer applies to HEAD (regenerate it): $(head -1 "$log")"
    problems=$((problems + 1))
    continue
  fi
  applied=$((applied + 1))
  t0=$(date +%s)
  git -C "$tree" apply "$root/$patch"
  applied_patch="$root/$patch"
  exe=$( (cd "$tree" && RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_TARGET_DIR="$dir/target" \
      cargo test --no-run -p cairn-sim-tests --test sim 2>&1) | tee "$log" |
      sed -n 's/.*Executable tests\/sim.rs (\(.*\))/\1/p' | tail -1)
  restore
  if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    printf '  %-8s %-42s %s\n' "NO BUILD" "$name" "the patched build failed (see $log)"
    problems=$((problems + 1))
    continue
  fi
  # A copy to run (the next build rewrites the original); one at a time.
  cp "$exe" "$dir/bin/sim"
  first=$(sed -n 's/^Scenarios: *//p' "$patch" | head -1 | tr -d ' ')
  order=$(printf '%s\n' ${first//,/ } ${all_scenarios//,/ } | awk 'NF && !seen[$0]++' | paste -sd, -)
  rm -rf "$dir/failures/$name"
  set +e
  CAIRN_SIM_SCENARIOS="$order" CAIRN_SIM_FAIL_FAST=1 CAIRN_SIM_DET_EVERY=0 CAIRN_SIM_COVERAGE_GATE=0 \
    CAIRN_SIM_OUT="$dir/failures/$name" CAIRN_SIM_JOBS="${CAIRN_SIM_JOBS:-2}" \
    "$dir/bin/sim" >>"$log" 2>&1
  status=$?
  set -e
  secs=$(( $(date +%s) - t0 ))
  runs=$(grep -cE '^(ok|FAILED) ' "$log" || true)
  if [ "$status" -ne 0 ] && grep -q '^FAILED ' "$log"; then
    caught=$((caught + 1))
    what=$(grep -m1 '^FAILED ' "$log" | sed 's/^FAILED *//; s/  */ /g; s/ [0-9.]* simulated s.*//')
    # The first failure (for a panic, with the line naming where).
    why=$(awk '/^FAILED /{f=1; next} f && /^  FAILURE /{sub(/^  FAILURE /, ""); w=$0
      if (w ~ /panicked or crashed/ && (getline l) > 0) w = w ": " l
      print w; exit}' "$log" | cut -c1-140)
    # The failed run's HTML report must exist and name a failed check.
    report=$(grep '^  report: ' "$log" | sed 's/^  report: //' |
      grep -m1 -F "/$(echo "$what" | awk '{print $1 "-seed" $3}').html" || true)
    if [ -z "$report" ] || ! grep -q 'class="bad"' "$report"; then
      printf '  %-8s %-42s %s\n' "NO REPORT" "$name" "caught, but no HTML report naming a failed check (${report:-none}; see $log)"
      problems=$((problems + 1))
      continue
    fi
    printf '  %-8s %-42s %s after %s runs, %s s: %s\n' "caught" "$name" "$what" "$runs" "$secs" "$why"
    printf '  %-8s %-42s report: %s\n' "" "" "$report"
  else
    printf '  %-8s %-42s %s\n' "MISSED" "$name" "$runs runs passed ($secs s; see $log)"
    problems=$((problems + 1))
  fi
done
rm -f "$dir/bin/sim"
echo "mutation score: $caught caught / $applied applied ($(( $(date +%s) - started )) s)"
[ "$problems" -eq 0 ] && [ "$caught" -eq "$applied" ]
