#!/usr/bin/env bash
# The leakspy benchmark: builds the release binary (the one users run; a debug build would
# measure the compiler's settings, not leakspy), then runs scripts/bench.py with all arguments.
# Needs root (leakspy reads other processes' memory). Writes bench-results.md in the repo root.
#   bash scripts/bench.sh [--sizes 100k,1m,5m] [--interpreters 3.6,3.11,3.15|all] [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
exec python3 scripts/bench.py "$@"
