#!/usr/bin/env bash
# Runs the README's first command exactly as written (the line after
# "# 1." in its first sh block), from the repository root, and sends the
# mcphop it starts one `initialize`. Proves that a new user's first command
# works on a clean checkout. Bounded: the build and start get BUILD_LIMIT
# seconds, and the process group is killed at the end, pass or fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_LIMIT="${BUILD_LIMIT:-900}"
COMMAND="$(sed -n '/^# 1\./{n;p;q}' README.md)"
[[ -n "$COMMAND" ]] || { echo "readme: no command after '# 1.' in README.md" >&2; exit 1; }
URL="$(sed -n '/^# 1\./{s/.*\(http:[^ ]*\).*/\1/p;q}' README.md)"
[[ "$URL" == http://127.0.0.1:* ]] || { echo "readme: no loopback URL on the '# 1.' line" >&2; exit 1; }
echo "readme: running: $COMMAND"
echo "readme: then one initialize to $URL"

LOG="$(mktemp)"
setsid bash -c "$COMMAND" > "$LOG" 2>&1 &
GROUP=$!
cleanup() { kill -- -"$GROUP" 2>/dev/null || true; wait "$GROUP" 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT

python3 - "$URL" "$BUILD_LIMIT" "$GROUP" <<'PY'
import json, os, sys, time, urllib.request

url, limit, group = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
body = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "readme-check", "version": "0"}},
}).encode()
deadline = time.monotonic() + limit
while True:
    try:
        os.kill(group, 0)
    except ProcessLookupError:
        sys.exit("readme: the command exited before answering")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            session = response.headers.get("Mcp-Session-Id")
            text = response.read().decode()
            break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"readme: nothing answered at {url} within {limit:.0f} s")
        time.sleep(0.5)
answers = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
result = next((a.get("result") for a in answers if a.get("id") == 1), None)
if not session or not result or "protocolVersion" not in result:
    sys.exit(f"readme: bad initialize answer (session {session!r}): {text!r}")
print(f"readme: initialize answered, protocol {result['protocolVersion']}, server {result.get('serverInfo')}")
PY
