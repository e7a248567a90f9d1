#!/usr/bin/env bash
# The whole test suite, from a fresh machine: setup, formatting, lints, unit and integration
# tests against every interpreter present. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets --release -- -D warnings
# Release build: the integration tests walk real heaps, and a debug build would make the
# suite slow without testing anything more.
cargo test --release -- --nocapture --test-threads=2
