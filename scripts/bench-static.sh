#!/usr/bin/env bash
# The static binary's speed against the glibc build's (see scripts/bench_static.py): builds both
# in release, then times them on one target.
#   bash scripts/bench-static.sh [--size 1000000] [--runs 7] [--python PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
bash scripts/build-static.sh >/dev/null
exec python3 scripts/bench_static.py "$@"
