#!/usr/bin/env bash
# Install the real MCP test peers, pinned, into <repo>/.peers (git-ignored).
#
#   .peers/py1   Python venv with mcp==1.30.0   (1.x wire behaviour)
#   .peers/py2   Python venv with mcp==2.3.0    (2.x wire behaviour, server/discover probe)
#   .peers/node  npm prefix with @modelcontextprotocol/server-everything and sdk
#
# Idempotent: each step is skipped when the pinned version is already there,
# so a warm re-run takes well under a second. Only PyPI and the npm registry
# are contacted.
set -euo pipefail

PY1_MCP="1.30.0"
PY2_MCP="2.3.0"
NODE_PKGS=(
    "@modelcontextprotocol/server-everything@2026.8.31"
    "@modelcontextprotocol/sdk@1.32.2"
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

# Node packages: a marker file records the exact spec list last installed;
# we also check each package.json so a half-deleted tree is reinstalled.
install_node() {
    local prefix="$PEERS/node" marker="$PEERS/node/.installed" spec name ver ok=1
    local want
    want="$(printf '%s\n' "${NODE_PKGS[@]}")"
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        for spec in "${NODE_PKGS[@]}"; do
            name="${spec%@*}"; ver="${spec##*@}"
            local pj="$prefix/node_modules/$name/package.json"
            if [[ ! -f "$pj" ]] || ! grep -q "\"version\": *\"$ver\"" "$pj"; then
                ok=0
            fi
        done
        if [[ $ok == 1 ]]; then
            log "node: ${NODE_PKGS[*]} already installed, skipping"
            return 0
        fi
    fi
    command -v npm >/dev/null || die "npm not found"
    log "node: installing ${NODE_PKGS[*]} into $prefix"
    mkdir -p "$prefix"
    rm -f "$marker"
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
        "${NODE_PKGS[@]}" || die "npm install failed"
    for spec in "${NODE_PKGS[@]}"; do
        name="${spec%@*}"; ver="${spec##*@}"
        grep -q "\"version\": *\"$ver\"" "$prefix/node_modules/$name/package.json" \
            || die "node: $name is not at $ver after install"
    done
    printf '%s\n' "$want" > "$marker"
    log "node: installed"
}

install_py_venv py1 "$PY1_MCP"
install_py_venv py2 "$PY2_MCP"
install_node

log "versions:"
log "  py1 mcp $("$PEERS/py1/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')"
log "  py2 mcp $("$PEERS/py2/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')"
for spec in "${NODE_PKGS[@]}"; do
    name="${spec%@*}"
    log "  $name $(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$PEERS/node/node_modules/$name/package.json" | head -1)"
done
log "done"
