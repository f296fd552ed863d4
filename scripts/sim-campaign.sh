#!/usr/bin/env bash
# A long simulation campaign: many seeds of every scenario, failures
# summarised by seed and by kind.
#
#   ./scripts/sim-campaign.sh [SEEDS] [FIRST]     # default: 10000 seeds from 1000
#
# Environment: CAIRN_SIM_SCENARIOS (default kv3,kv5), CAIRN_SIM_JOBS (default
# the number of cores), CARGO_TARGET_DIR (default ./target; the simulation
# build goes to <target>/sim). Each failure's history and fault timeline are
# in <target>/sim-failures/<scenario>-seed<N>.txt; the full log is written to
# <target>/sim-campaign.log. It ends with the fault coverage table (how often
# each fault fired and each event happened, per scenario); a fault kind that
# never fired in a scenario fails the campaign (CAIRN_SIM_COVERAGE_GATE=0: not).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-10000}"
first="${2:-1000}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
log="$target/sim-campaign.log"
mkdir -p "$target"
# Optimised (as scripts/test-all.sh builds it: the same results, ~8x less CPU; docs/simulation.md).
export RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" CARGO_PROFILE_DEV_OPT_LEVEL=1
export CAIRN_SIM_SEEDS="$first..$((first + seeds))"
export CAIRN_SIM_JOBS="${CAIRN_SIM_JOBS:-$(nproc)}"
export CAIRN_SIM_OUT="$target/sim-failures"
export CAIRN_SIM_COVERAGE_GATE="${CAIRN_SIM_COVERAGE_GATE:-1}"
echo "campaign: seeds $CAIRN_SIM_SEEDS, scenarios ${CAIRN_SIM_SCENARIOS:-kv3,kv5}, $CAIRN_SIM_JOBS jobs; log: $log"
status=0
CARGO_TARGET_DIR="$target/sim" cargo test -p cairn-sim-tests --test sim 2>&1 | tee "$log" | grep -E '^(FAILED|simulation|COVERAGE GAP)' || status=$?
echo
echo "== failures by kind (first failure line of each seed)"
grep -A2 '^FAILED .* seed [0-9]*$' "$log" | grep -E '^  (FAILURE|details)' | grep FAILURE \
  | sed -E 's/[0-9]+/N/g' | cut -c1-110 | sort | uniq -c | sort -rn || echo "none"
echo
echo "== failed seeds (replay each with the command printed in $log)"
grep -E '^FAILED .* seed [0-9]+$' "$log" | sed 's/^FAILED //' || echo "none"
echo
sed -n '/^coverage: /,/^$/p' "$log"
if grep -q '^COVERAGE GAP' "$log"; then
  echo "== fault kinds that never fired"
  grep '^COVERAGE GAP' "$log"
  exit 1
fi
exit 0
