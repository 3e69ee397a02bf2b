#!/usr/bin/env bash
# Calls per second and mcphop's CPU per call with health probes on and off,
# in front of the same Streamable HTTP upstream (bench_server --http), to
# show that the health workers stay off the hot path.
#
#   bash benches/health_overhead.sh            # 3 rounds, 8 sessions, 3 s each
#   ROUNDS=5 SESSIONS=32 SECONDS_PER_RUN=5 bash benches/health_overhead.sh
#
# "on" probes every 100 ms (100 times the default rate, to make any cost
# visible); "off" is --health-interval 0. Runs alternate on/off each round so
# drift hits both alike. Loopback only; every process started is stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-3}"
SESSIONS="${SESSIONS:-8}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-3}"

source benches/common.sh

UP_PORT="$(free_port)"
"$BENCH" --http "$UP_PORT" > "$TMP/upstream.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$TMP/upstream.log" && break; sleep 0.05; done

run() { # MODE INTERVAL -> prints "MODE calls/s cpu_us_per_call"
    local mode="$1" interval="$2" port pid before after
    port="$(free_port)"
    "$MCPHOP" --listen "127.0.0.1:$port" --log-level warn \
        --upstream "http://127.0.0.1:$UP_PORT/mcp" --health-interval "$interval" \
        > "$TMP/mcphop-$mode.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    before="$(cpu_seconds "$pid")"
    "$LOADGEN" --url "http://127.0.0.1:$port/mcp" --sessions "$SESSIONS" \
        --duration "${SECONDS_PER_RUN}s" --warmup 1s --payload 64 --json > "$TMP/run.json"
    after="$(cpu_seconds "$pid")"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    report_run "$mode" "$before" "$after" "$TMP/run.json"
}

echo "health probes on (every 100 ms) vs off; $SESSIONS sessions, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then run on 100ms; run off 0; else run off 0; run on 100ms; fi
done
