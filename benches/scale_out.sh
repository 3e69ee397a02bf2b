#!/usr/bin/env bash
# Calls per second at 32 sessions: loadgen straight to one mcphop instance,
# and through nginx (Debian's package, from .peers/deb) in front of 1 and 2
# instances (--instance-id a, b), each in front of the stdio bench_server.
# Also the CPU each part used per call: the mcphop instances' own (their
# bench_server children apart) and nginx's worker's.
#
#   bash benches/scale_out.sh                       # 3 rounds, 32 sessions, 5 s each
#   ROUNDS=1 SESSIONS=32 SECONDS_PER_RUN=5 NGINX_WORKERS=2 bash benches/scale_out.sh
#
# The nginx config is the shape of examples/deploy/nginx-mcphop.conf (tag
# map, one upstream group per instance with the others as backups), for N
# instances, with NGINX_WORKERS workers (default 1). Loopback only; every process started is
# stopped on exit. Needs tests/peers/install.sh to have run (for nginx).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-3}"
SESSIONS="${SESSIONS:-32}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
NGINX_WORKERS="${NGINX_WORKERS:-1}"
NGINX=.peers/deb/usr/sbin/nginx
NGINX_LIBS=.peers/deb/usr/lib/x86_64-linux-gnu
[[ -x "$NGINX" ]] || { echo "no $NGINX: run bash tests/peers/install.sh" >&2; exit 1; }

source benches/common.sh

# nginx_conf PORT INSTANCE_PORT... : an nginx.conf for these instances.
nginx_conf() {
    local port="$1"; shift
    local tags=(a b c d) i j
    echo "worker_processes $NGINX_WORKERS; events { worker_connections 4096; }"
    echo "http { access_log off; client_body_temp_path $TMP/body; proxy_temp_path $TMP/proxy;"
    echo "fastcgi_temp_path $TMP/fcgi; uwsgi_temp_path $TMP/uwsgi; scgi_temp_path $TMP/scgi;"
    echo "map \"\$http_mcp_session_id\$arg_sessionid\" \$mcphop_upstream { default mcphop_any;"
    i=0; for p in "$@"; do echo "  \"~^${tags[$i]}\\.\" mcphop_${tags[$i]};"; i=$((i + 1)); done
    echo "}"
    echo "upstream mcphop_any {"; for p in "$@"; do echo "  server 127.0.0.1:$p;"; done; echo "  keepalive 64; }"
    i=0
    for p in "$@"; do
        echo "upstream mcphop_${tags[$i]} { server 127.0.0.1:$p;"
        for q in "$@"; do [[ "$q" == "$p" ]] || echo "  server 127.0.0.1:$q backup;"; done
        echo "  keepalive 64; }"
        i=$((i + 1))
    done
    echo "server { listen 127.0.0.1:$port; location / { proxy_pass http://\$mcphop_upstream;"
    echo "  proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$http_host;"
    echo "  proxy_buffering off; proxy_cache off; proxy_read_timeout 1h; proxy_send_timeout 1h; } } }"
}

# run NAME INSTANCES VIA : prints one result line. VIA is direct or nginx.
run() {
    local name="$1" count="$2" via="$3" front i tag port mpids=() ports=() npids=() url
    front="$(free_port)"
    for i in $(seq "$count"); do
        tag="$(echo a b c d | cut -d' ' -f"$i")"
        port="$(free_port)"
        "$MCPHOP" --listen "127.0.0.1:$port" --instance-id "$tag" --log-level warn \
            --allowed-host "127.0.0.1:$front" -- "$BENCH" > "$TMP/mcphop-$tag.log" 2>&1 &
        mpids+=($!); PIDS+=($!); ports+=("$port")
        wait_port "$port"
    done
    if [[ "$via" == nginx ]]; then
        nginx_conf "$front" "${ports[@]}" > "$TMP/nginx.conf"
        LD_LIBRARY_PATH="$NGINX_LIBS" "$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" \
            -g "daemon off; pid $TMP/nginx.pid;" &
        PIDS+=($!)
        wait_port "$front"
        npids=($(pgrep -P "$!"))   # the workers
        url="http://127.0.0.1:$front/mcp"
    else
        url="http://127.0.0.1:${ports[0]}/mcp"
    fi
    local m_before n_before m_after n_after
    m_before="$(cpu_seconds "${mpids[@]}")"
    n_before="$( ((${#npids[@]})) && cpu_seconds "${npids[@]}" || echo 0)"
    "$LOADGEN" --url "$url" --sessions "$SESSIONS" --duration "${SECONDS_PER_RUN}s" \
        --warmup 1s --payload 64 --json > "$TMP/run.json" 2> "$TMP/loadgen.log"
    m_after="$(cpu_seconds "${mpids[@]}")"
    n_after="$( ((${#npids[@]})) && cpu_seconds "${npids[@]}" || echo 0)"
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    python3 - "$name" "$m_before" "$m_after" "$n_before" "$n_after" "$TMP/run.json" <<'EOF'
import json, sys
name = sys.argv[1]
m0, m1, n0, n1 = (float(x) for x in sys.argv[2:6])
r = json.loads(open(sys.argv[6]).read().strip().splitlines()[-1])
calls = r.get("calls") or 0
per = lambda s: s / calls * 1e6 if calls else float("nan")
print(f"{name:22} {r['calls_per_s']:7d} calls/s  p50 {r['p50_us']:5d} us  p99 {r['p99_us']:6d} us"
      f"  errors {r['errors']}  CPU/call: mcphop {per(m1 - m0):5.1f} us, nginx {per(n1 - n0):5.1f} us")
EOF
}

echo "$SESSIONS sessions, ${SECONDS_PER_RUN}s per run (1 s warm-up), $ROUNDS rounds, $(nproc) cores, $NGINX_WORKERS nginx worker(s)"
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run "direct, 1 instance" 1 direct
    run "nginx, 1 instance" 1 nginx
    run "nginx, 2 instances" 2 nginx
done
