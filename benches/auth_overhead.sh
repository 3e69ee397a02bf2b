#!/usr/bin/env bash
# The hot-path cost of inbound authentication: calls per second and
# mcphop's CPU per call with no authentication, a static bearer token
# (--auth-token-file) and an OAuth JWT (--auth-issuer, an ES256 token
# validated once and then remembered until it expires), each in front of
# the same stdio children (bench_server), driven by loadgen with the token
# in an Authorization header on every request.
#
#   bash benches/auth_overhead.sh          # 3 rounds, 8 sessions, 3 s each
#   ROUNDS=5 SESSIONS=32 SECONDS_PER_RUN=5 bash benches/auth_overhead.sh
#
# Runs rotate none / token / jwt each round so drift hits all alike. The
# JWT issuer is benches/auth_issuer.py on the test peers' Python
# (.peers/py1, from `bash tests/peers/install.sh`). Loopback only; every
# process started is stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-3}"
SESSIONS="${SESSIONS:-8}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-3}"
PYTHON="${PYTHON:-.peers/py1/bin/python}"

source benches/common.sh

STATIC_TOKEN="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "bench:$STATIC_TOKEN" > "$TMP/tokens"

run() { # MODE -> prints "MODE calls/s cpu_us_per_call p50"
    local mode="$1" port pid issuer="" before after auth=() header=()
    port="$(free_port)"
    case "$mode" in
        none) ;;
        token)
            auth=(--auth-token-file "$TMP/tokens")
            header=(--header "Authorization: Bearer $STATIC_TOKEN")
            ;;
        jwt)
            rm -f "$TMP/issuer.out"
            "$PYTHON" benches/auth_issuer.py --audience "http://127.0.0.1:$port/mcp" > "$TMP/issuer.out" &
            issuer=$!
            PIDS+=("$issuer")
            for _ in $(seq 100); do [[ -s "$TMP/issuer.out" ]] && break; sleep 0.05; done
            read -r issuer_port jwt < "$TMP/issuer.out"
            auth=(--auth-issuer "http://127.0.0.1:$issuer_port" --auth-audience "http://127.0.0.1:$port/mcp")
            header=(--header "Authorization: Bearer $jwt")
            ;;
    esac
    "$MCPHOP" --listen "127.0.0.1:$port" --log-level warn "${auth[@]}" -- "$BENCH" \
        > "$TMP/mcphop-$mode.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    before="$(cpu_seconds "$pid")"
    "$LOADGEN" --url "http://127.0.0.1:$port/mcp" --sessions "$SESSIONS" "${header[@]}" \
        --duration "${SECONDS_PER_RUN}s" --warmup 1s --payload 64 --json > "$TMP/run.json"
    after="$(cpu_seconds "$pid")"
    kill "$pid" $issuer 2>/dev/null || true
    wait "$pid" $issuer 2>/dev/null || true
    report_run "$mode" "$before" "$after" "$TMP/run.json"
}

echo "authentication: none vs static token vs JWT; $SESSIONS sessions, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    case $(( round % 3 )) in
        1) run none; run token; run jwt ;;
        2) run token; run jwt; run none ;;
        0) run jwt; run none; run token ;;
    esac
done
