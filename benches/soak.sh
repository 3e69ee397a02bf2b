#!/bin/sh
# Soak (issue 11): ROUNDS rounds of SESSIONS concurrent sessions, each
# opening (initialize + initialized), calling the echo tool and closing
# (DELETE), against the example server behind mcphop, all on 127.0.0.1.
# After each round, once the children are gone and mcphop has been idle
# for IDLE seconds (default 2; mcphop gives memory back after 1 s without
# a session): errors, mcphop's RSS (and of it the anonymous part: heap and
# other private memory, as opposed to the binary's and libc's pages), its
# open fds and its live children. The baseline is measured twice: cold,
# before any request, and warm, after one session and the same idle wait
# (the first requests page in code, which stays resident and is not freed
# memory). Bounded: ROUNDS (default 5), SESSIONS (default 500), LIMIT seconds
# overall (default 600). Not part of `cargo test`. Usage:
#   cargo build --bins --examples && benches/soak.sh [ROUNDS] [SESSIONS]
# PROFILE=release uses target/release.
set -eu
ROUNDS=${1:-5}
SESSIONS=${2:-500}
LIMIT=${LIMIT:-600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/${PROFILE:-debug}
LOG=$(mktemp)
ulimit -n 20000 2>/dev/null || true
"$BIN/mcphop" --listen 127.0.0.1:0 --max-sessions 1024 -- "$BIN/examples/example_server" 2>"$LOG" &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -f "$LOG"' EXIT
i=0
while ! grep -q "listening on" "$LOG"; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "mcphop did not start"; cat "$LOG"; exit 1; }
    sleep 0.1
done
PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$LOG" | head -1)
timeout "$LIMIT" python3 - "$PORT" "$PID" "$ROUNDS" "$SESSIONS" "${IDLE:-2}" <<'PY'
import http.client, json, os, sys, threading, time
port, pid, rounds, sessions = (int(a) for a in sys.argv[1:5])
idle = float(sys.argv[5])
H = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

def messages(resp):
    body = resp.read().decode()
    if resp.getheader("Content-Type", "").startswith("text/event-stream"):
        return [json.loads(l[6:]) for l in body.splitlines() if l.startswith("data: ") and len(l) > 6]
    return [json.loads(body)] if body else []

def one(n, errors):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "soak", "version": "0"}}}
        c.request("POST", "/mcp", json.dumps(init), H)
        r = c.getresponse(); m = messages(r)
        sid = r.getheader("Mcp-Session-Id")
        if r.status != 200 or not sid or m[-1].get("id") != 1:
            raise Exception("initialize %d" % r.status)
        h = dict(H, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"})
        c.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), h)
        r = c.getresponse(); r.read()
        if r.status != 202:
            raise Exception("initialized %d" % r.status)
        text = "soak %d" % n
        c.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                  "params": {"name": "echo", "arguments": {"message": text}}}), h)
        r = c.getresponse(); m = messages(r)
        if r.status != 200 or m[-1]["result"]["content"][0]["text"] != text:
            raise Exception("echo %d %r" % (r.status, m))
        c.request("DELETE", "/mcp", headers=h)
        r = c.getresponse(); r.read()
        if r.status != 200:
            raise Exception("delete %d" % r.status)
        c.close()
    except Exception as e:
        errors.append("%d: %s" % (n, e))

def status(field):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def rss():
    return "%d KiB (anon %d KiB)" % (status("VmRSS"), status("RssAnon"))

def children():
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open("/proc/%s/stat" % p).read()
            except OSError:
                continue
            f = stat[stat.rfind(")") + 2:].split()
            if int(f[1]) == pid and f[0] != "Z":
                n += 1
    return n

def fds():
    return len(os.listdir("/proc/%d/fd" % pid))

def settle():
    # Sessions end as their children exit: wait up to 10 s for none left,
    # then the idle wait.
    for _ in range(100):
        if children() == 0:
            break
        time.sleep(0.1)
    time.sleep(idle)

print("idle baseline, cold: rss=%s fds=%d children=%d" % (rss(), fds(), children()))
warm = []
one(0, warm)
settle()
print("idle baseline, warm (1 session, then %gs idle): rss=%s fds=%d children=%d errors=%d"
      % (idle, rss(), fds(), children(), len(warm)))
total = 0
for rnd in range(1, rounds + 1):
    errors = []
    start = time.time()
    threads = [threading.Thread(target=one, args=(i, errors)) for i in range(sessions)]
    for t in threads: t.start()
    for t in threads: t.join()
    took = time.time() - start
    settle()
    total += len(errors)
    print("round %d: %d sessions in %.1fs, errors=%d, rss=%s, fds=%d, children=%d%s"
          % (rnd, sessions, took, len(errors), rss(), fds(), children(),
             (" first: " + errors[0]) if errors else ""))
    sys.stdout.flush()
total += len(warm)
print("total errors=%d" % total)
sys.exit(1 if total else 0)
PY
