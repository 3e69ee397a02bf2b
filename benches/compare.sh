#!/usr/bin/env bash
# Compare mcphop with the async MCP proxies on this machine, in one run.
#
#   bash benches/compare.sh            # full run (about 15 minutes)
#   bash benches/compare.sh --quick    # short runs, one round (about 2 minutes)
#   bash benches/compare.sh --no-report ...   # measure only, leave BENCHMARKS.md alone
#
# 1. installs the peers, pinned, into git-ignored folders (idempotent):
#      .peers/bench-node  npm prefix: supergateway 4.0.0, mcp-proxy 6.7.19
#      .peers/bench-py    venv: mcp-proxy 0.13.0 (it pins mcp<2: its own venv)
# 2. builds mcphop and the examples (bench_server, loadgen) in release mode;
# 3. runs benches/compare/run.py: every contender on 127.0.0.1 in front of
#    target/release/examples/bench_server over stdio, measured in turn;
#    results go to benches/compare/results.json;
# 4. runs benches/compare/report.py: BENCHMARKS.md and
#    benches/compare/calls_per_s.svg.
#
# Other options are passed to run.py (see `python3 benches/compare/run.py -h`):
# --rounds N, --duration S, --warmup S, --levels 1,8,32,128,
# --idle-levels 100,1000, --only mcphop,supergateway, --out FILE.
# Contender keys: direct, mcphop, supergateway, mcp-proxy-npm, mcp-proxy-py
# (Streamable HTTP, /mcp) and mcphop-sse, supergateway-sse,
# mcp-proxy-npm-sse, mcp-proxy-py-sse (legacy HTTP+SSE, /sse, driven with
# `loadgen --transport sse`).
# Everything is bounded in time (the whole run by BENCH_TIMEOUT seconds,
# default 1800) and every process started is stopped, by process group.
set -euo pipefail

SUPERGATEWAY="supergateway@4.0.0"
MCP_PROXY_NPM="mcp-proxy@6.7.19"
MCP_PROXY_PY="0.13.0"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
PEERS="$REPO/.peers"
PYTHON="${PYTHON:-python3}"
log() { echo "[compare] $*" >&2; }
die() { echo "[compare] ERROR: $*" >&2; exit 1; }

REPORT=1
ARGS=()
for a in "$@"; do
    case "$a" in
        --no-report) REPORT=0 ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ARGS+=("$a") ;;
    esac
done
RECORD="bash benches/compare.sh${*:+ $*}"

command -v node >/dev/null || die "node not found"
command -v npm >/dev/null || die "npm not found"
command -v cargo >/dev/null || die "cargo not found"

pkg_version() { # package.json -> "version"
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$1" 2>/dev/null | head -1
}

# -- 1. peers ---------------------------------------------------------------
NODE_DIR="$PEERS/bench-node"
want_node="$SUPERGATEWAY $MCP_PROXY_NPM"
if [[ "$(cat "$NODE_DIR/.installed" 2>/dev/null)" == "$want_node" \
      && "$(pkg_version "$NODE_DIR/node_modules/supergateway/package.json")" == "${SUPERGATEWAY##*@}" \
      && "$(pkg_version "$NODE_DIR/node_modules/mcp-proxy/package.json")" == "${MCP_PROXY_NPM##*@}" ]]; then
    log "bench-node: $want_node already installed"
else
    log "bench-node: installing $want_node"
    mkdir -p "$NODE_DIR"
    rm -f "$NODE_DIR/.installed"
    timeout 600 npm install --prefix "$NODE_DIR" --save-exact --no-audit --no-fund --loglevel=error \
        "$SUPERGATEWAY" "$MCP_PROXY_NPM" || die "npm install into $NODE_DIR failed"
    [[ "$(pkg_version "$NODE_DIR/node_modules/supergateway/package.json")" == "${SUPERGATEWAY##*@}" ]] \
        || die "supergateway is not at ${SUPERGATEWAY##*@}"
    [[ "$(pkg_version "$NODE_DIR/node_modules/mcp-proxy/package.json")" == "${MCP_PROXY_NPM##*@}" ]] \
        || die "mcp-proxy (npm) is not at ${MCP_PROXY_NPM##*@}"
    echo "$want_node" > "$NODE_DIR/.installed"
fi

PY_DIR="$PEERS/bench-py"
have_py="$("$PY_DIR/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp-proxy"))' 2>/dev/null || true)"
if [[ "$have_py" == "$MCP_PROXY_PY" && -x "$PY_DIR/bin/mcp-proxy" ]]; then
    log "bench-py: mcp-proxy==$MCP_PROXY_PY already installed"
else
    log "bench-py: installing mcp-proxy==$MCP_PROXY_PY (found: ${have_py:-none})"
    [[ -x "$PY_DIR/bin/python" ]] || "$PYTHON" -m venv "$PY_DIR" || die "python3 -m venv $PY_DIR failed"
    timeout 600 "$PY_DIR/bin/python" -m pip install --disable-pip-version-check --quiet \
        "mcp-proxy==$MCP_PROXY_PY" || die "pip install mcp-proxy==$MCP_PROXY_PY failed"
    have_py="$("$PY_DIR/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp-proxy"))')"
    [[ "$have_py" == "$MCP_PROXY_PY" ]] || die "bench-py: expected mcp-proxy $MCP_PROXY_PY, got $have_py"
fi

# -- 2. build ---------------------------------------------------------------
log "cargo build --release --bins --examples"
timeout 1200 cargo build --release --bins --examples --quiet || die "release build failed"
for bin in target/release/mcphop target/release/examples/bench_server target/release/examples/loadgen; do
    [[ -x "$bin" ]] || die "$bin missing after the build"
done

# -- 3. measure -------------------------------------------------------------
# 1000 idle sessions cost the proxies (and loadgen) several descriptors each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "measuring (logs in .tmp/bench-compare/)"
timeout --kill-after=30 "${BENCH_TIMEOUT:-1800}" \
    "$PYTHON" benches/compare/run.py --command "$RECORD" "${ARGS[@]}"

# -- 4. report --------------------------------------------------------------
if [[ $REPORT == 1 ]]; then
    out="benches/compare/results.json"
    for ((i = 0; i < ${#ARGS[@]}; i++)); do
        [[ "${ARGS[$i]}" == "--out" ]] && out="${ARGS[$((i + 1))]}"
        [[ "${ARGS[$i]}" == --out=* ]] && out="${ARGS[$i]#--out=}"
    done
    "$PYTHON" benches/compare/report.py --results "$out"
    log "wrote BENCHMARKS.md and benches/compare/calls_per_s.svg"
fi
