#!/usr/bin/env bash
# Installs what leakspy's tests need on a fresh Debian machine, and does nothing when all is
# there already (safe to run before every test run).
#  - debootstrap, and a Debian sid chroot with CPython 3.13/3.14/3.15 (static, stripped
#    executables: our "container" case, seen through /proc/PID/root) plus their -dev headers
#    (internal pycore_*.h) for scripts/gen_offsets.py;
#  - gcc and python3 (the offset generator), setpriv (the permission-denied test), tmux (the
#    live-view test), prometheus_client (the Prometheus format test).
# pyenv's interpreters (3.6-3.13, libpython shared) come with the machine; tests use whatever
# is present.
set -euo pipefail

SID_ROOT="${LEAKSPY_SID_ROOT:-/var/lib/leakspy/sid}"
SID_VERSIONS="3.13 3.14 3.15"

need_apt=()
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v python3 >/dev/null || need_apt+=(python3)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v tmux >/dev/null || need_apt+=(tmux)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The Prometheus test checks our text format with the reference parser.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    echo "setup: installing prometheus_client (PyPI) for the Prometheus format test"
    python3 -m pip install -q --root-user-action=ignore prometheus_client 2>/dev/null \
        || python3 -m pip install -q --break-system-packages prometheus_client
fi

chroot_complete() {
    for v in $SID_VERSIONS; do
        [ -x "$SID_ROOT/usr/bin/python$v" ] || return 1
        [ -f "$SID_ROOT/usr/include/python$v/internal/pycore_runtime.h" ] || return 1
    done
}

if chroot_complete; then
    echo "setup: sid chroot ready at $SID_ROOT"
elif [ -n "${LEAKSPY_SKIP_CHROOT:-}" ]; then
    echo "setup: LEAKSPY_SKIP_CHROOT set: not building the sid chroot; 3.13-3.15 from Debian will not be tested"
else
    packages=""
    for v in $SID_VERSIONS; do packages="$packages,python$v-minimal,libpython$v-dev"; done
    echo "setup: building the Debian sid chroot at $SID_ROOT (about 30 s)"
    rm -rf "$SID_ROOT.tmp"
    mkdir -p "$(dirname "$SID_ROOT")"
    # Built aside and renamed, so an interrupted build never looks complete.
    debootstrap --variant=minbase --include="${packages#,}" sid "$SID_ROOT.tmp" >/tmp/leakspy-debootstrap.log 2>&1 || {
        echo "setup: debootstrap failed; last lines of /tmp/leakspy-debootstrap.log:" >&2
        tail -20 /tmp/leakspy-debootstrap.log >&2
        exit 1
    }
    rm -rf "$SID_ROOT"
    mv "$SID_ROOT.tmp" "$SID_ROOT"
    chroot_complete || { echo "setup: chroot built but python or headers are missing" >&2; exit 1; }
fi
