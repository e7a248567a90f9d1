#!/usr/bin/env bash
# The leakspy benchmark: builds the release binary (the one users run; a debug build would
# measure the compiler's settings, not leakspy), then runs scripts/bench.py with all arguments.
# Needs root (leakspy reads other processes' memory). Writes bench-results.md in the repo root.
#   bash scripts/bench.sh [--sizes 100k,1m,5m] [--interpreters 3.6,3.11,3.15|all] [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
# /usr/bin/time measures leakspy's peak memory (see leakspy_snapshot in bench.py).
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release
exec python3 scripts/bench.py "$@"
