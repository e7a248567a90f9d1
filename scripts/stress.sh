#!/usr/bin/env bash
# The busy-process guarantee at full strength: tests/busy.rs with 500 snapshots, 100 paused
# snapshots and 50 `why` runs per interpreter (the suite makes a fifth of them), a CPU-bound
# process on the other core, three times in a row. About 15 minutes a run on 2 cores.
#   bash scripts/stress.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --tests
for i in $(seq 1 "$runs"); do
    echo "stress: run $i of $runs"
    LEAKSPY_STRESS=full cargo test --release --test busy -- --nocapture
done
