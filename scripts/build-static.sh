#!/usr/bin/env bash
# Builds the static leakspy binary: x86_64-unknown-linux-musl, statically linked, no libc or
# loader needed at run time, so it runs in any Linux image (distroless, Alpine, scratch) or from
# an empty root. Prints the binary's path on stdout; the build's own output goes to stderr.
#   bash scripts/build-static.sh        # -> target/x86_64-unknown-linux-musl/release/leakspy
# Needs the Rust target (rustup target add x86_64-unknown-linux-musl) and musl-gcc (Debian's
# musl-tools) for mimalloc's C sources; scripts/setup.sh installs both. Exits 3, saying which
# is missing, when it cannot build.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl

sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$TARGET/lib" ]; then
    echo "build-static: the Rust target $TARGET is not installed for $(rustc --version)" \
        "(rustup target add $TARGET; scripts/setup.sh tries it): cannot build the static binary" >&2
    exit 3
fi
if ! command -v musl-gcc >/dev/null; then
    echo "build-static: musl-gcc is missing (apt-get install musl-tools; scripts/setup.sh does it):" \
        "mimalloc, the static binary's allocator, is C and needs it" >&2
    exit 3
fi

# mimalloc's build compiles with the target's C compiler; the static binary is linked by
# rustc's self-contained musl, which needs no linker of the target's own.
export CC_x86_64_unknown_linux_musl=musl-gcc
# Without its symbol tables (only the final link: the dependencies built are reused): a binary
# to copy into images is better small.
cargo rustc --release --target "$TARGET" --bin leakspy -- -C strip=symbols >&2
binary="target/$TARGET/release/leakspy"
[ -n "${CARGO_TARGET_DIR:-}" ] && binary="$CARGO_TARGET_DIR/$TARGET/release/leakspy"
echo "$binary"
