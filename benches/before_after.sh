#!/usr/bin/env bash
# Runs issue 8's before/after measurements on the current tree, one cargo
# command at a time, and keeps every output under .tmp/before_after/LABEL/:
#
#   bash benches/before_after.sh before
#   bash benches/before_after.sh after
#
# 1. cargo build --release --bins --examples (mcphop, bench_server, loadgen)
# 2. cargo bench --bench per_call      allocations, bytes, payload copies per call
# 3. bash benches/syscalls.sh          syscalls per call (strace -c -p), stdio and HTTP
# 4. cargo bench --bench roundtrip     latency and calls/s at 1 and 8 sessions
# 5. bash benches/compare.sh --quick --no-report --only direct,mcphop
#       calls/s and CPU per call; results to .tmp/before_after/LABEL/compare.json
#       (never to benches/compare/results.json)
# Set SKIP="compare roundtrip" (any of per_call syscalls roundtrip compare)
# to leave steps out. Figures are printed; nothing is asserted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LABEL="${1:?usage: bash benches/before_after.sh LABEL}"
DIR=".tmp/before_after/$LABEL"
mkdir -p "$DIR"
SKIP="${SKIP:-}"
skip() { [[ " $SKIP " == *" $1 "* ]]; }
log() { echo "[before_after] $*" >&2; }

{
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with uncommitted changes)')"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) CPUs, $(uname -sr)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$DIR/info.txt"

log "cargo build --release --bins --examples"
timeout 1200 cargo build --release --bins --examples --quiet
if ! skip per_call; then
    log "cargo bench --bench per_call"
    timeout 1200 cargo bench --bench per_call 2>&1 | tee "$DIR/per_call.txt"
fi
if ! skip syscalls; then
    log "bash benches/syscalls.sh --mcphop target/release/mcphop"
    timeout 1200 bash benches/syscalls.sh --mcphop target/release/mcphop --out "$DIR/syscalls" 2>&1 \
        | tee "$DIR/syscalls.txt"
fi
if ! skip roundtrip; then
    log "cargo bench --bench roundtrip"
    timeout 1200 cargo bench --bench roundtrip 2>&1 | tee "$DIR/roundtrip.txt"
fi
if ! skip compare; then
    log "bash benches/compare.sh --quick --no-report --only direct,mcphop"
    timeout 1800 bash benches/compare.sh --quick --no-report --only direct,mcphop \
        --out "$DIR/compare.json" 2>&1 | tee "$DIR/compare.txt"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/info.txt"
