# Shared by the bench scripts (sourced, not run): the release build and its
# binaries, a temp dir and the processes started, both cleaned up on exit,
# and the helpers every script needs. Loopback only.
#
#   BENCH LOADGEN MCPHOP   the release binaries (absolute paths)
#   TMP                    a temp dir, removed on exit
#   PIDS                   append every process started: killed on exit
#   free_port              a free loopback port
#   wait_port PORT         waits (10 s at most) until PORT accepts
#   cpu_seconds PID...     CPU seconds (user + system) they used so far
#   report_run MODE BEFORE AFTER JSON
#                          one line: MODE, calls/s, CPU per call from the
#                          CPU seconds before and after, p50, errors, from
#                          loadgen's --json output in the file JSON

cargo build --release --bins --examples >&2
BENCH="$PWD/target/release/examples/bench_server"
LOADGEN="$PWD/target/release/examples/loadgen"
MCPHOP="$PWD/target/release/mcphop"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

cpu_seconds() {
    local pid total=0
    for pid in "$@"; do
        total="$(awk -v hz="$(getconf CLK_TCK)" -v t="$total" '{print t + ($14 + $15) / hz}' "/proc/$pid/stat")"
    done
    echo "$total"
}

report_run() {
    python3 - "$@" <<'PY'
import json, sys
mode, before, after, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
result = json.loads(open(path).read().strip().splitlines()[-1])
calls = result.get("calls") or result.get("ok") or 0
rate = result.get("calls_per_s") or result.get("rate") or 0
cpu_us = (after - before) / calls * 1e6 if calls else float("nan")
print(f"{mode:5} {rate:10.0f} calls/s  {cpu_us:6.1f} us CPU/call (warm-up included)  "
      f"p50 {result.get('p50_us', '?')} us  errors {result.get('errors', 0)}")
PY
}
