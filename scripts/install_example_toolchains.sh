#!/usr/bin/env bash
# Installs what the client examples in examples/ need to build, for the languages named on the
# command line (default: all of python js ts go rust). Idempotent, and quick when everything is
# there: it only checks, then installs what is missing.
#
#   scripts/install_example_toolchains.sh [python] [js] [ts] [go] [rust]
#
# Uses the machine's Go and Rust (rustup's cargo) and the registries: protoc from Debian's
# protobuf-compiler (apt-get, as root or with passwordless sudo; ts, go and rust generate code with
# it), `npm ci` in examples/js-client and examples/ts-client, `pip install` for the Python example
# into $PYTHON (default python3) if it lacks grpcio/grpcio-tools, protoc-gen-go and
# protoc-gen-go-grpc by `go install` from the Go module proxy (into $(go env GOPATH)/bin) plus
# `go mod download` for examples/go-client, and `cargo fetch --locked` for examples/rust-client
# from crates.io.
#
# Ends with one line per language, "READY <lang>" or "MISSING <lang>: <what is missing>", and
# exits non-zero if any language is MISSING. tests/e2e/test_examples.py reads those lines.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="$ROOT/examples"
PYTHON="${PYTHON:-python3}"
LANGS=("$@")
[ ${#LANGS[@]} -eq 0 ] && LANGS=(python js ts go rust)

# Debian packages (bookworm names).
PROTOC_PKGS="protobuf-compiler"
NODE_PKGS="nodejs npm"
# The code generators for Go; protoc-gen-go's version is the protobuf-go that go.mod requires.
PROTOC_GEN_GO_GRPC_VERSION="v1.6.2"

APT_LOG="${TMPDIR:-/tmp}/install_example_toolchains.apt.log"

log() { echo "[install_example_toolchains] $*" >&2; }

declare -A MISSING=()
miss() { MISSING[$1]="${MISSING[$1]:+${MISSING[$1]}; }$2"; }
wants() { local l; for l in "${LANGS[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }

cargo_bin() { command -v cargo 2>/dev/null || { [ -x "$HOME/.cargo/bin/cargo" ] && echo "$HOME/.cargo/bin/cargo"; }; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# ---- 1. Debian packages ------------------------------------------------------------------
want_pkgs=""
wants ts && want_pkgs+=" $PROTOC_PKGS"
wants go && want_pkgs+=" $PROTOC_PKGS"
wants rust && want_pkgs+=" $PROTOC_PKGS"
# Node.js may come from elsewhere (nodesource): only install Debian's if absent.
if wants js || wants ts; then
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || want_pkgs+=" $NODE_PKGS"
fi

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
    go_needed="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$EXAMPLES/go-client/go.mod")"
    go_found="$(go env GOVERSION 2>/dev/null)"; go_found="${go_found#go}"
    if ! command -v go >/dev/null 2>&1; then
        miss go "go ($go_needed or newer, as examples/go-client/go.mod says) not on PATH"
    elif [ "$(printf '%s\n' "$go_needed" "$go_found" | sort -V | head -1)" != "$go_needed" ]; then
        miss go "go $go_needed or newer (examples/go-client/go.mod); $(command -v go) is ${go_found:-too old}"
    elif ! command -v protoc >/dev/null 2>&1; then
        miss go "protoc (Debian: protobuf-compiler)${apt_failed:+: $apt_failed}"
    else
        gobin="$(go env GOBIN)"; gobin="${gobin:-$(go env GOPATH | cut -d: -f1)/bin}"
        # The versions the generated code should come from; a plugin already there at that version stays.
        pb_version="$(cd "$EXAMPLES/go-client" && go list -m -f '{{.Version}}' google.golang.org/protobuf 2>/dev/null)"
        pb_version="${pb_version:-latest}"
        plugin_ok() { [ -x "$gobin/$1" ] && "$gobin/$1" --version 2>/dev/null | grep -q -- "${2#v}\$"; }
        for plugin in "protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go $pb_version" \
                      "protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION"; do
            read -r name pkg version <<<"$plugin"
            plugin_ok "$name" "$version" && continue
            log "go install $pkg@$version"
            go install "$pkg@$version" >&2 || miss go "go install $pkg@$version failed (is the Go module proxy reachable?)"
        done
        log "go mod download in examples/go-client"
        (cd "$EXAMPLES/go-client" && go mod download) >&2 \
            || miss go "go mod download in examples/go-client failed (is the Go module proxy reachable?)"
    fi
fi

if wants rust; then
    cargo="$(cargo_bin)"
    if [ -z "$cargo" ]; then
        miss rust "cargo (rustup's; Rust 1.88 or newer) not on PATH nor in ~/.cargo/bin"
    elif ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
        miss rust "protoc (Debian: protobuf-compiler), or PROTOC=/path/to/protoc${apt_failed:+: $apt_failed}"
    else
        log "cargo fetch --locked in examples/rust-client"
        (cd "$EXAMPLES/rust-client" && "$cargo" fetch --locked -q) >&2 \
            || miss rust "cargo fetch --locked in examples/rust-client failed (is crates.io reachable?)"
    fi
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
