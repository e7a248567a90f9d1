#!/usr/bin/env bash
# Builds the static leakspy binary: x86_64-unknown-linux-musl, statically linked, no libc or
# loader needed at run time, so it runs in any Linux image (distroless, Alpine, scratch) or from
# an empty root. Prints the binary's path on stdout; the build's own output goes to stderr.
#   bash scripts/build-static.sh        # -> target/x86_64-unknown-linux-musl/release/leakspy
# Needs the Rust target (rustup target add x86_64-unknown-linux-musl; scripts/setup.sh installs
# it), whose standard library carries musl and its linker objects: no C toolchain for musl is
# needed. Exits 3, saying so, when the target is missing.
# The allocator is musl's own: mimalloc was tried (scripts/bench-static.sh) and made the heap
# graph's pass slower, not faster (its large blocks grow by copying, musl's by mremap).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl

sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$TARGET/lib" ]; then
    echo "build-static: the Rust target $TARGET is not installed for $(rustc --version)" \
        "(rustup target add $TARGET; scripts/setup.sh tries it): cannot build the static binary" >&2
    exit 3
fi
# Without its symbol tables (only the final link: the dependencies built are reused): a binary
# to copy into images is better small.
cargo rustc --release --target "$TARGET" --bin leakspy -- -C strip=symbols >&2
binary="target/$TARGET/release/leakspy"
[ -n "${CARGO_TARGET_DIR:-}" ] && binary="$CARGO_TARGET_DIR/$TARGET/release/leakspy"
echo "$binary"
