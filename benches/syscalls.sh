#!/usr/bin/env bash
# System calls per tools/call in mcphop's own process, for a stdio upstream
# and for a Streamable HTTP upstream (issue 8's syscall figure).
#
#   bash benches/syscalls.sh                      # builds the current tree (release)
#   bash benches/syscalls.sh --mcphop PATH        # measures that binary, no build
#   bash benches/syscalls.sh --calls 10000 --payload 1024 --only stdio|http
#
# For each upstream kind: starts mcphop on a free 127.0.0.1 port in front of
# target/release/examples/bench_server (stdio child, or `bench_server --http`
# as `--upstream`), warms it up with one short loadgen run, attaches
# `strace -c -p PID` (mcphop's pid only, no -f: the children are not
# counted), runs `loadgen --sessions 1 --calls N --warmup 0`, detaches and
# prints every system call per tools/call, by name and in total.
#
# The traced window also holds the session's set-up and end (initialize,
# notifications/initialized, DELETE, and for stdio the child's spawn and
# reaping): a few dozen calls, under 0.01 per tools/call at N = 10000.
# Everything listens on 127.0.0.1; every step is bounded by `timeout`, and
# every process started is stopped on exit.
#
# Options: --mcphop PATH, --bench-server PATH, --loadgen PATH (defaults:
# target/release/...; without --mcphop the release build is run first),
# --calls N [10000], --payload BYTES [1024], --only stdio|http,
# --out DIR [.tmp/syscalls] (raw strace tables and logs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
MCPHOP=""
BENCH_SERVER="target/release/examples/bench_server"
LOADGEN="target/release/examples/loadgen"
CALLS=10000
PAYLOAD=1024
ONLY="stdio http"
OUT=".tmp/syscalls"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mcphop) MCPHOP="$2"; shift 2 ;;
        --bench-server) BENCH_SERVER="$2"; shift 2 ;;
        --loadgen) LOADGEN="$2"; shift 2 ;;
        --calls) CALLS="$2"; shift 2 ;;
        --payload) PAYLOAD="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "syscalls.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
log() { echo "[syscalls] $*" >&2; }
die() { echo "[syscalls] ERROR: $*" >&2; exit 1; }
command -v strace >/dev/null || die "strace not found"
command -v python3 >/dev/null || die "python3 not found (used for a free port and the table)"

if [[ -z "$MCPHOP" ]]; then
    log "cargo build --release --bins --examples"
    timeout 1200 cargo build --release --bins --examples --quiet || die "release build failed"
    MCPHOP="target/release/mcphop"
fi
for bin in "$MCPHOP" "$BENCH_SERVER" "$LOADGEN"; do
    [[ -x "$bin" ]] || die "$bin is missing or not executable"
done
mkdir -p "$OUT"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port, pid: until 127.0.0.1:port accepts (10 s at most)
    for _ in $(seq 1 200); do
        kill -0 "$2" 2>/dev/null || die "process $2 exited before listening on $1"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1"
}

measure() { # kind
    local kind="$1" upstream=() port pid
    if [[ "$kind" == http ]]; then
        local up_port
        up_port="$(free_port)"
        "$BENCH_SERVER" --http "$up_port" >"$OUT/bench_server-http.log" 2>&1 &
        PIDS+=($!)
        wait_port "$up_port" "$!"
        upstream=(--upstream "http://127.0.0.1:$up_port/mcp")
    else
        upstream=(-- "$BENCH_SERVER")
    fi
    port="$(free_port)"
    "$MCPHOP" --listen "127.0.0.1:$port" --log-level warn "${upstream[@]}" \
        >"$OUT/mcphop-$kind.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid"
    local url="http://127.0.0.1:$port/mcp"

    log "$kind: warm-up (500 calls, not traced)"
    timeout 120 "$LOADGEN" --url "$url" --sessions 1 --calls 500 --warmup 0 \
        --payload "$PAYLOAD" --max-time 60s --json >"$OUT/warmup-$kind.json" 2>&1 \
        || die "warm-up loadgen failed (see $OUT/warmup-$kind.json)"

    local table="$OUT/strace-$kind.txt"
    rm -f "$table" "$OUT/strace-$kind.err"
    timeout 600 strace -c -o "$table" -p "$pid" 2>"$OUT/strace-$kind.err" &
    local strace_pid=$!
    for _ in $(seq 1 100); do
        grep -q "attached" "$OUT/strace-$kind.err" 2>/dev/null && break
        kill -0 "$strace_pid" 2>/dev/null || die "strace failed: $(cat "$OUT/strace-$kind.err")"
        sleep 0.05
    done
    log "$kind: $CALLS calls at 1 session under strace -c -p $pid"
    timeout 600 "$LOADGEN" --url "$url" --sessions 1 --calls "$CALLS" --warmup 0 \
        --payload "$PAYLOAD" --max-time 300s --json >"$OUT/loadgen-$kind.json" 2>&1 \
        || die "loadgen failed (see $OUT/loadgen-$kind.json)"
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    [[ -s "$table" ]] || die "strace wrote no table ($(cat "$OUT/strace-$kind.err"))"

    python3 - "$kind" "$table" "$OUT/loadgen-$kind.json" <<'EOF'
import json, sys
kind, table, run = sys.argv[1:4]
with open(run) as f:
    report = json.loads(f.read().strip().splitlines()[-1])
calls, errors = report["calls"], report.get("errors", 0)
rows = []
for line in open(table):
    parts = line.split()
    # % time, seconds, usecs/call, calls, [errors], syscall
    if len(parts) < 5 or not parts[0][0].isdigit() or parts[-1] == "total":
        continue
    name, count = parts[-1], int(parts[3])
    errs = int(parts[4]) if len(parts) == 6 else 0
    rows.append((count, errs, name))
rows.sort(reverse=True)
total = sum(r[0] for r in rows)
label = {"stdio": "stdio upstream (bench_server child)",
         "http": "Streamable HTTP upstream (bench_server --http)"}[kind]
print(f"{label}: {calls} tools/call at 1 session ({report.get('calls_per_s')} calls/s under strace), "
      f"loadgen errors {errors}")
print(f"  {'syscall':<16}{'per call':>10}{'errors/call':>13}{'total':>9}")
for count, errs, name in rows:
    print(f"  {name:<16}{count / calls:>10.3f}{errs / calls:>13.3f}{count:>9}")
print(f"  {'all':<16}{total / calls:>10.3f}{sum(r[1] for r in rows) / calls:>13.3f}{total:>9}")
EOF
    cleanup
}

log "mcphop: $MCPHOP ($("$MCPHOP" --version 2>/dev/null || echo '?')), calls $CALLS, payload $PAYLOAD B"
for kind in $ONLY; do
    case "$kind" in
        stdio|http) measure "$kind" ;;
        *) die "--only takes stdio or http, not $kind" ;;
    esac
done
