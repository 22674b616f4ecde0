#!/usr/bin/env bash
# Installs what the client examples in examples/ need to build, for the languages named on the
# command line (default: all of python js ts go rust). Idempotent, and quick when everything is
# there: it only checks, then installs what is missing.
#
#   scripts/install_example_toolchains.sh [python] [js] [ts] [go] [rust]
#
# Installs Debian packages with apt-get (as root, or with passwordless sudo), runs `npm ci` in
# examples/js-client and examples/ts-client, and `pip install` for the Python example into
# $PYTHON (default python3) if it lacks grpcio/grpcio-tools.
#
# Ends with one line per language, "READY <lang>" or "MISSING <lang>: <what is missing>", and
# exits non-zero if any language is MISSING. tests/e2e/test_examples.py reads those lines.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="$ROOT/examples"
PYTHON="${PYTHON:-python3}"
LANGS=("$@")
[ ${#LANGS[@]} -eq 0 ] && LANGS=(python js ts go rust)

# Debian packages per language (bookworm names).
PROTOC_PKGS="protobuf-compiler"
NODE_PKGS="nodejs npm"
GO_PKGS="golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
         protoc-gen-go protoc-gen-go-grpc"
RUST_CRATE_PKGS="librust-bytes-dev librust-h2-dev librust-http-dev librust-prost-dev librust-prost-build-dev
                 librust-tokio-dev"

APT_LOG="${TMPDIR:-/tmp}/install_example_toolchains.apt.log"

log() { echo "[install_example_toolchains] $*" >&2; }

declare -A MISSING=()
miss() { MISSING[$1]="${MISSING[$1]:+${MISSING[$1]}; }$2"; }
wants() { local l; for l in "${LANGS[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }

have_cargo() { command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ]; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# ---- 1. Debian packages ------------------------------------------------------------------
want_pkgs=""
wants ts && want_pkgs+=" $PROTOC_PKGS"
wants go && want_pkgs+=" $PROTOC_PKGS $GO_PKGS"
wants rust && want_pkgs+=" $PROTOC_PKGS $RUST_CRATE_PKGS"
# Node.js and cargo may come from elsewhere (nodesource, rustup): only install Debian's if absent.
if wants js || wants ts; then
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || want_pkgs+=" $NODE_PKGS"
fi
wants rust && ! have_cargo && want_pkgs+=" cargo"

need_pkgs=""
if command -v dpkg-query >/dev/null 2>&1; then
    for p in $(echo "$want_pkgs" | tr ' ' '\n' | sort -u); do
        pkg_installed "$p" || need_pkgs+=" $p"
    done
elif [ -n "${want_pkgs// /}" ]; then
    need_pkgs="$want_pkgs"
fi

apt_failed=""
if [ -n "${need_pkgs// /}" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        apt_failed="no apt-get on this machine: install the Debian packages$need_pkgs (or equivalents) by hand"
    elif [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        apt_failed="not root and no passwordless sudo: run as root: apt-get install$need_pkgs"
    else
        log "apt-get update && apt-get install$need_pkgs (log: $APT_LOG)"
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086
        { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $need_pkgs; } >"$APT_LOG" 2>&1 \
            || apt_failed="apt-get install$need_pkgs failed (see $APT_LOG)"
    fi
fi

missing_pkgs() {  # the packages among "$@" still not installed
    local out="" p
    for p in "$@"; do pkg_installed "$p" || out+=" $p"; done
    echo "$out"
}

# ---- 2. per language -----------------------------------------------------------------
if wants python; then
    if ! "$PYTHON" -c 'import grpc, grpc_tools' 2>/dev/null; then
        log "$PYTHON -m pip install -r examples/python-client/requirements.txt"
        "$PYTHON" -m pip install -q -r "$EXAMPLES/python-client/requirements.txt" >&2 \
            || miss python "grpcio + grpcio-tools for $PYTHON (pip install -r examples/python-client/requirements.txt failed)"
    fi
fi

npm_ci() {  # npm ci in examples/$1 unless node_modules already matches package-lock.json
    local dir="$EXAMPLES/$1"
    if [ -f "$dir/node_modules/.package-lock.json" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    log "npm ci in examples/$1"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
}

for lang in js ts; do
    wants $lang || continue
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        miss $lang "node and npm (Debian: nodejs npm)${apt_failed:+: $apt_failed}"
        continue
    fi
    npm_ci "$lang-client" || miss $lang "npm ci in examples/$lang-client failed (is the npm registry reachable?)"
done
if wants ts && ! command -v protoc >/dev/null 2>&1; then
    miss ts "protoc (Debian: protobuf-compiler)${apt_failed:+: $apt_failed}"
fi

if wants go; then
    m=$(missing_pkgs $PROTOC_PKGS $GO_PKGS)
    [ -n "$m" ] && miss go "Debian packages:$m${apt_failed:+ ($apt_failed)}"
fi

if wants rust; then
    m=$(missing_pkgs $PROTOC_PKGS $RUST_CRATE_PKGS)
    [ -n "$m" ] && miss rust "Debian packages:$m${apt_failed:+ ($apt_failed)}"
    have_cargo || miss rust "cargo (Debian: cargo, or rustup)${apt_failed:+ ($apt_failed)}"
fi

# ---- 3. report -------------------------------------------------------------------------
status=0
for lang in "${LANGS[@]}"; do
    if [ -n "${MISSING[$lang]:-}" ]; then
        echo "MISSING $lang: ${MISSING[$lang]}"
        status=1
    else
        echo "READY $lang"
    fi
done
exit $status
