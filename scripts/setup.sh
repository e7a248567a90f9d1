#!/usr/bin/env bash
# Installs what leakspy's tests need on a fresh Debian machine, and does nothing when all is
# there already (safe to run before every test run).
#  - debootstrap, and a Debian sid chroot with CPython 3.13/3.14/3.15 (static, stripped
#    executables: our "container" case, seen through /proc/PID/root) plus their -dev headers
#    (internal pycore_*.h) for scripts/gen_offsets.py;
#  - gcc and python3 (the offset generator), setpriv (the permission-denied test), tmux (the
#    live-view test), prometheus_client (the Prometheus format test), graphviz (`why --format
#    dot` is rendered by dot) and chromium (the HTML report is opened headless);
#  - real libraries from PyPI (tests/requirements.txt: an ORM, an HTTP client, an event
#    system, numpy/pandas, pydantic, flask, gunicorn) for the tests that leak through them:
#    virtual environments of the oldest, a middle and the newest pyenv interpreter, and
#    site directories inside the sid chroot for its 3.14 and 3.15 (wheels only);
#  - the static binary's Rust target (x86_64-unknown-linux-musl, with rustup), and the tools
#    the install tests build and check the pip wheel with (tests/install-tools.txt: maturin,
#    auditwheel, pipx, uv) in a virtual environment of their own;
#  - uWSGI (the pre-fork server tests) into those virtual environments: it has no wheels and
#    builds from source with gcc against pyenv's headers, in about a minute each here.
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
command -v dot >/dev/null || need_apt+=(graphviz)
command -v chromium >/dev/null || need_apt+=(chromium)
# gdb's gcore writes the core files tests/core_files.rs reads.
command -v gdb >/dev/null || need_apt+=(gdb)
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

# Real libraries. Each environment is built aside and renamed into place, and carries the
# hash of the requirements it was built from, so a changed list rebuilds it and an
# interrupted build never looks complete. Independent installs run side by side.
LIBS_ROOT="${LEAKSPY_LIBS_ROOT:-/var/lib/leakspy/libs}"
REQUIREMENTS="$(cd "$(dirname "$0")/.." && pwd)/tests/requirements.txt"
req_hash=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
mkdir -p "$LIBS_ROOT"

lib_env_ready() { [ "$(cat "$1/.leakspy-requirements" 2>/dev/null)" = "$req_hash" ]; }

build_venv() {  # PYTHON DIR
    local python=$1 dir=$2
    rm -rf "$dir.tmp"
    "$python" -m venv "$dir.tmp" \
        && "$dir.tmp/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" \
        && echo "$req_hash" > "$dir.tmp/.leakspy-requirements" \
        && rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

# The chroot has no compiler and no pip: the host's pip fetches wheels built for its Python.
# A library without such a wheel (numpy before it supports a new Python) is left out, and the
# tests that need it skip that interpreter.
build_chroot_site() {  # VERSION DIR
    local version=$1 dir=$2 abi="cp${1/./}" failed=""
    rm -rf "$dir.tmp"
    while read -r requirement; do
        case "$requirement" in ''|'#'*) continue ;; esac
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$dir.tmp" \
            --python-version "$version" --implementation cp --abi "$abi" --abi abi3 --abi none \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
            --only-binary=:all: --upgrade "$requirement" >/dev/null 2>&1 || failed="$failed $requirement"
    done < "$REQUIREMENTS"
    [ -z "$failed" ] || echo "setup: no wheels of$failed for Python $version in the chroot; tests needing them skip it"
    echo "$req_hash" > "$dir.tmp/.leakspy-requirements" && rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

pids=()
pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
pyenv_versions=$(ls -d "$pyenv_root"/versions/3.* 2>/dev/null | xargs -r -n1 basename | sort -V)
if [ -n "$pyenv_versions" ]; then
    oldest=$(echo "$pyenv_versions" | head -1)
    newest=$(echo "$pyenv_versions" | tail -1)
    middle=$(echo "$pyenv_versions" | grep '^3\.11\.' | tail -1)
    for v in $(printf '%s\n' "$oldest" "$middle" "$newest" | grep . | sort -uV); do
        dir="$LIBS_ROOT/venv-$v"
        if lib_env_ready "$dir"; then continue; fi
        echo "setup: installing tests/requirements.txt into $dir"
        build_venv "$pyenv_root/versions/$v/bin/python" "$dir" &
        pids+=($!)
    done
fi
if chroot_complete; then
    for v in 3.14 3.15; do
        dir="$SID_ROOT/opt/leakspy-libs-$v"
        if lib_env_ready "$dir"; then continue; fi
        echo "setup: installing wheels of tests/requirements.txt into the chroot for Python $v"
        build_chroot_site "$v" "$dir" &
        pids+=($!)
    done
fi
for pid in "${pids[@]}"; do
    # Without PyPI the tests that need these libraries say so and skip; the rest still run.
    wait "$pid" || echo "setup: warning: installing the test libraries failed (is PyPI reachable?)" >&2
done

# uWSGI: built from source into each pyenv virtual environment that has the libraries, after
# them (the venvs are renamed into place first). A failed build only skips its tests.
uwsgi_pids=()
for dir in "$LIBS_ROOT"/venv-*/; do
    dir=${dir%/}
    case "$dir" in *.tmp) continue ;; esac
    [ -x "$dir/bin/python" ] || continue
    [ -x "$dir/bin/uwsgi" ] && continue
    echo "setup: building uWSGI into $dir (about a minute)"
    ( "$dir/bin/python" -m pip install -q --disable-pip-version-check uwsgi >"$dir.uwsgi.log" 2>&1 \
        || echo "setup: warning: uWSGI did not build for $dir (see $dir.uwsgi.log); its tests skip it" >&2 ) &
    uwsgi_pids+=($!)
done
for pid in "${uwsgi_pids[@]}"; do wait "$pid"; done

# The static binary (scripts/build-static.sh). rustup fetches the target's standard library;
# a machine that cannot get it still runs everything else, and build-static.sh says why it
# cannot build.
MUSL_TARGET=x86_64-unknown-linux-musl
if command -v rustup >/dev/null; then
    if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
        echo "setup: installing the Rust target $MUSL_TARGET (static binary)"
        rustup target add "$MUSL_TARGET" >/dev/null 2>&1 \
            || echo "setup: warning: rustup could not install $MUSL_TARGET; the static binary is not built or tested" >&2
    fi
else
    echo "setup: warning: no rustup; the static binary ($MUSL_TARGET) is not built or tested" >&2
fi

# The pip wheel's tools, in their own environment (rebuilt when tests/install-tools.txt changes).
# Built in place, not aside: the scripts pip writes name their interpreter by its full path. The
# hash, written last, is what marks it complete.
TOOLS_DIR="${LEAKSPY_TOOLS_DIR:-/var/lib/leakspy/tools}"
TOOLS_REQUIREMENTS="$(dirname "$REQUIREMENTS")/install-tools.txt"
tools_hash=$(sha256sum "$TOOLS_REQUIREMENTS" | cut -c1-16)
if [ "$(cat "$TOOLS_DIR/.leakspy-requirements" 2>/dev/null)" != "$tools_hash" ]; then
    echo "setup: installing tests/install-tools.txt into $TOOLS_DIR"
    rm -rf "$TOOLS_DIR"
    python3 -m venv "$TOOLS_DIR" \
        && "$TOOLS_DIR/bin/python" -m pip install -q --disable-pip-version-check -r "$TOOLS_REQUIREMENTS" \
        && echo "$tools_hash" > "$TOOLS_DIR/.leakspy-requirements" \
        || echo "setup: warning: installing tests/install-tools.txt failed (is PyPI reachable?); the wheel is not tested" >&2
fi
