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
# 5. python3 benches/compare/run.py --quick --only direct,mcphop: what
#       `bash benches/compare.sh --quick --no-report --only direct,mcphop`
#       runs after its build, without its first step, which installs the
#       async peers into .peers/ (not needed for these two contenders, and
#       .peers/ may be shared with other checkouts). calls/s and CPU per
#       call; results to .tmp/before_after/LABEL/compare.json (never to
#       benches/compare/results.json), a summary at the end.
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
    log "python3 benches/compare/run.py --quick --only direct,mcphop"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    timeout --kill-after=30 1800 python3 benches/compare/run.py --quick --only direct,mcphop \
        --out "$DIR/compare.json" --command "bash benches/before_after.sh $LABEL" 2>&1 \
        | tee "$DIR/compare.txt"
    python3 - "$DIR/compare.json" <<'PY' | tee "$DIR/compare-summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print("compare (--quick, 1 round): calls/s and proxy CPU per call by level")
for key, levels in r["calls"].items():
    for level, runs in levels.items():
        for run in runs:
            cpu = run.get("cpu_us_per_call")
            print(f"  {key:<7} n={level:<4} {run.get('calls_per_s'):>7} calls/s  "
                  f"p50 {run.get('p50_us')} us  CPU/call {cpu if cpu is None else round(cpu, 1)} us  "
                  f"foreign CPUs during {run.get('foreign_cpus_during', 0):.2f}")
PY
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/info.txt"
