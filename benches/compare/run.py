#!/usr/bin/env python3
"""Measure mcphop against the async MCP proxies on this machine, in one run.

Called by benches/compare.sh (which installs the peers and builds first);
stdlib only. Every proxy runs on 127.0.0.1 in front of the same stdio
command (target/release/examples/bench_server); the floor is that server's
own Streamable HTTP mode. Load comes from target/release/examples/loadgen.

Phases (each proxy in turn inside every step, so drift hits all alike):
  1. child start: bench_server exec -> initialize answered, over stdio.
  2. start-up: exec -> first accepted connection, a few times each.
  3. idle: start each proxy (no probe connection: it waits for the LISTEN
     socket in /proc/net/tcp), settle, idle RSS and fds, then context
     switches of every proxy over one shared idle window.
  4. idle sessions: for N in (100, 1000), for each proxy: a fresh instance,
     its idle RSS, then `loadgen --mode idle --sessions N`; at `ready N`:
     RSS, fds, stdio children, context switches over a short window.
  5. calls: ROUNDS rounds; in each, for every concurrency level, every proxy
     in turn (order rotated per round): `loadgen --sessions N --duration D`,
     sampling the proxy's CPU time during the run.
  6. pinned: 1 session, floor and mcphop, with fixed CPU placements.
The legacy HTTP+SSE contenders (keys ending in -sse) take part in every
step but the pinned one, driven by `loadgen --transport sse --url …/sse`.
Before every measurement it waits (up to 2 min) until processes outside its
own tree use less than 0.15 CPUs, and records what they used during a run.
Writes results JSON; report.py turns it into BENCHMARKS.md and the SVG.
"""

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """True when a TCP socket listens on 127.0.0.1:port (or any address),
    read from /proc/net/tcp{,6}: no probe connection, so the contender sees
    no traffic (and arms no timer) before the idle measurements."""
    want = f":{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and parts[1].endswith(want):
                        return True
        except OSError:
            pass
    return False


def wait_accepting(port, proc, timeout):
    """Seconds from proc's exec until 127.0.0.1:port accepts a connection
    (polled every millisecond), or None. For the start-up figure only: the
    probe connection is traffic the contender sees."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            return None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - proc.t0
        except OSError:
            time.sleep(0.001)
    return None


def wait_listening(port, proc, timeout):
    """Seconds from proc's exec until it listens on port, or None (coarse:
    reading /proc/net/tcp takes long when many sockets are in TIME_WAIT)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            return None
        if listening(port):
            return time.monotonic() - proc.t0
        time.sleep(0.0005)
    return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------
# The contenders


class Contender:
    def __init__(self, key, label, argv_fn, note, per_session_child, env=None,
                 transport="streamable", max_sessions=None, limit=None):
        self.key, self.label, self.argv_fn, self.note = key, label, argv_fn, note
        self.per_session_child = per_session_child  # None: no child at all
        self.env = env
        self.transport = transport  # "streamable" (/mcp) or "sse" (legacy, /sse)
        # Call runs above this many sessions are not made (limit says why).
        self.max_sessions, self.limit = max_sessions, limit
        self.unavailable = None  # reason, when it cannot run here

    def start(self, cfg, logdir, cpus=None, probe=False):
        port = free_port()
        argv = self.argv_fn(port)
        if cpus is not None:
            argv = ["taskset", "-c", cpus] + argv
        env = dict(os.environ)
        env.update(self.env or {})
        proc = procs.Proc(argv, log_path=os.path.join(logdir, f"{self.key}.log"), env=env, cwd=REPO)
        startup = (wait_accepting if probe else wait_listening)(port, proc, cfg.start_timeout)
        if startup is None:
            proc.stop()
            raise RuntimeError(f"{self.key} did not listen on 127.0.0.1:{port} within {cfg.start_timeout}s "
                               f"(see {logdir}/{self.key}.log)")
        return Running(self, proc, port, startup, cfg.bench_server)


class Running:
    def __init__(self, c, proc, port, startup, marker):
        self.c, self.proc, self.port, self.startup, self.marker = c, proc, port, startup, marker
        self.url = f"http://127.0.0.1:{port}/{'sse' if c.transport == 'sse' else 'mcp'}"
        self.transport_args = ["--transport", "sse"] if c.transport == "sse" else []

    def split(self):
        if self.c.per_session_child is None:  # the floor: the server is the process
            return procs.split_tree(self.proc.pid, "\0never\0")[0], []
        return procs.split_tree(self.proc.pid, self.marker)

    def own(self):
        return self.split()[0]

    def stop(self):
        self.proc.stop()


def contenders(cfg):
    bs = cfg.bench_server
    node = cfg.node
    nm = os.path.join(REPO, ".peers", "bench-node", "node_modules")
    sg = os.path.join(nm, "supergateway", "dist", "index.js")
    mpn = os.path.join(nm, "mcp-proxy", "dist", "bin", "mcp-proxy.mjs")
    mpp = os.path.join(REPO, ".peers", "bench-py", "bin", "mcp-proxy")
    loopback = os.path.join(REPO, "tests", "peers", "loopback.cjs")
    cs = [
        Contender("direct", "bench_server --http (floor)",
                  lambda p: [bs, "--http", str(p)],
                  "the upstream itself serving Streamable HTTP (thread per connection, JSON answers)",
                  None),
        Contender("mcphop", "mcphop",
                  lambda p: [cfg.mcphop, "--listen", f"127.0.0.1:{p}", "--log-level", "warn", "--", bs],
                  "one stdio child per session", True),
        Contender("supergateway", "supergateway 4.0.0 --stateful",
                  lambda p: [node, "--require", loopback, sg, "--stdio", shlex.quote(bs),
                             "--outputTransport", "streamableHttp", "--stateful",
                             "--port", str(p), "--logLevel", "none"],
                  "one stdio child per session (spawned through `sh -c`); no --host option, "
                  "so a preload (tests/peers/loopback.cjs) makes it bind 127.0.0.1", True),
        Contender("mcp-proxy-npm", "mcp-proxy (npm) 6.7.19",
                  lambda p: [node, mpn, "--host", "127.0.0.1", "--port", str(p), "--server", "stream",
                             "--", bs],
                  "one stdio child shared by all sessions, started with the proxy", False),
        Contender("mcp-proxy-py", "mcp-proxy (PyPI) 0.13.0",
                  lambda p: [mpp, "--host", "127.0.0.1", "--port", str(p), "--log-level", "WARNING",
                             "--", bs],
                  "one stdio child shared by all sessions, started with the proxy; JSON answers "
                  "(json_response=True)", False),
        # The legacy HTTP+SSE transport (2024-11-05), same stdio command.
        Contender("mcphop-sse", "mcphop /sse",
                  lambda p: [cfg.mcphop, "--listen", f"127.0.0.1:{p}", "--log-level", "warn", "--", bs],
                  "the same command as mcphop; its legacy front door `GET /sse`, `POST /message`; "
                  "one stdio child per session", True, transport="sse"),
        Contender("supergateway-sse", "supergateway 4.0.0 --outputTransport sse",
                  lambda p: [node, "--require", loopback, sg, "--stdio", shlex.quote(bs),
                             "--outputTransport", "sse", "--port", str(p), "--logLevel", "none"],
                  "`GET /sse`, `POST /message`; one stdio child shared by all sessions, started with "
                  "the proxy; every line the child writes is sent to every open stream, ids unchanged",
                  False, transport="sse", max_sessions=1,
                  limit="one child for all sessions, and every answer goes to every session's stream "
                        "with the client's own id: from 2 sessions on, sessions get each other's "
                        "answers (loadgen counts echo mismatches), so only 1-session calls are measured"),
        Contender("mcp-proxy-npm-sse", "mcp-proxy (npm) 6.7.19 --server sse",
                  lambda p: [node, mpn, "--host", "127.0.0.1", "--port", str(p), "--server", "sse",
                             "--", bs],
                  "`GET /sse`, `POST /messages`; one stdio child shared by all sessions, started with "
                  "the proxy", False, transport="sse"),
        Contender("mcp-proxy-py-sse", "mcp-proxy (PyPI) 0.13.0 /sse",
                  lambda p: [mpp, "--host", "127.0.0.1", "--port", str(p), "--log-level", "WARNING",
                             "--", bs],
                  "the same command as mcp-proxy (PyPI), which serves `GET /sse`, `POST /messages/` "
                  "beside /mcp; one stdio child shared by all sessions, started with the proxy",
                  False, transport="sse"),
    ]
    for c in cs:
        need = {"supergateway": sg, "mcp-proxy-npm": mpn, "mcp-proxy-py": mpp}.get(c.key.removesuffix("-sse"))
        if need and not os.path.exists(need):
            c.unavailable = f"not installed ({need} missing)"
    if cfg.only:
        cs = [c for c in cs if c.key in cfg.only]
    return cs


# --------------------------------------------------------------------------
# Measurements


def child_start(cfg, n):
    """exec -> answer to `initialize` of the stdio bench_server, n times."""
    init = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                   "clientInfo": {"name": "compare", "version": "0"}}}) + "\n").encode()
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        p = subprocess.Popen([cfg.bench_server], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            p.stdin.write(init)
            p.stdin.flush()
            line = p.stdout.readline()
            times.append(time.monotonic() - t0)
            assert b'"result"' in line, line
        finally:
            p.stdin.close()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return {"n": n, "p50_us": median(times) * 1e6, "min_us": min(times) * 1e6}


def parse_json_tail(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def wait_quiet(cfg):
    """Wait (up to cfg.quiet_wait s) until processes outside our tree use
    less than cfg.quiet_cpus CPUs; return the last load seen."""
    deadline = time.monotonic() + cfg.quiet_wait
    warned = False
    while True:
        t0, b = time.monotonic(), procs.foreign_cpu()
        time.sleep(0.25)
        load = procs.foreign_load(b, procs.foreign_cpu(), time.monotonic() - t0)
        if load < cfg.quiet_cpus or time.monotonic() > deadline:
            if load >= cfg.quiet_cpus:
                log(f"  machine still busy ({load:.2f} CPUs used by other processes); measuring anyway")
            return load
        if not warned:
            log(f"  waiting for other processes to quiet down ({load:.2f} CPUs in use)")
            warned = True
        time.sleep(1.0)


def loadgen_calls(cfg, run, sessions, logdir, cpus=None):
    """One call run; returns loadgen's JSON plus the proxy's CPU per call."""
    quiet_before = wait_quiet(cfg)
    own = run.own()
    argv = (["taskset", "-c", cpus] if cpus is not None else []) + [cfg.loadgen, *run.transport_args, "--url", run.url, "--sessions", str(sessions),
            "--duration", f"{cfg.duration}s", "--warmup", f"{cfg.warmup}s",
            "--payload", str(cfg.payload), "--json"]
    samples = []  # (time, proxy CPU seconds, loadgen's thread count)
    stop = threading.Event()
    lg_pid = []

    def sampler():
        while not stop.is_set():
            threads = procs.status_kib(lg_pid[0], "Threads") if lg_pid else 0
            samples.append((time.monotonic(), procs.cpu_seconds(own), threads))
            stop.wait(0.05)

    out_path = os.path.join(logdir, "loadgen.out")
    foreign0 = procs.foreign_cpu()
    with open(out_path, "wb") as out:
        t_launch = time.monotonic()
        cpu0 = procs.cpu_seconds(own)
        lg = procs.Proc(argv, log_path=os.path.join(logdir, "loadgen.log"), stdout=out, cwd=REPO)
        lg_pid.append(lg.pid)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        limit = cfg.warmup + cfg.duration + cfg.setup_timeout + 30
        try:
            rc = lg.p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            rc = None
        t_end = time.monotonic()
        stop.set()
        th.join()
        cpu1 = procs.cpu_seconds(own)
        lg.stop()
    with open(out_path, "rb") as f:
        res = parse_json_tail(f.read().decode(errors="replace"))
    if rc is None:
        return {"error": f"loadgen timed out after {limit:.0f}s"}
    if res is None:
        return {"error": f"loadgen exited {rc} without a JSON result (see {logdir}/loadgen.log)"}
    res["exit"] = rc
    res["wall_s"] = t_end - t_launch
    res["foreign_cpus_before"] = quiet_before
    res["foreign_cpus_during"] = procs.foreign_load(foreign0, procs.foreign_cpu(), t_end - t_launch)
    # CPU per call in the steady state. loadgen sets its sessions up on its
    # main thread, then starts its worker threads for the calls: the first
    # sample that sees more than one thread marks the start of the run
    # (within the 50 ms sampling period). The measured window starts
    # --warmup later; we take its middle 80 % and divide the CPU time the
    # proxy used there by the calls made in it (calls_per_s x its length).
    run_start = next((t for t, _, n in samples if n > 1), None)
    if run_start is not None and res.get("calls_per_s"):
        t_meas = run_start + cfg.warmup
        w0, w1 = t_meas + 0.1 * cfg.duration, min(t_meas + 0.9 * cfg.duration, t_end)
        pts = [(t, c) for t, c, _ in samples if w0 <= t <= w1]
        if len(pts) >= 2:
            (ta, ca), (tb, cb) = pts[0], pts[-1]
            calls = res["calls_per_s"] * (tb - ta)
            if calls > 0 and tb - ta > 0:
                res["cpu_us_per_call"] = (cb - ca) * 1e6 / calls
                res["cpu_util"] = (cb - ca) / (tb - ta)
                res["cpu_window_s"] = tb - ta
        res["setup_phase_s"] = run_start - t_launch
    if res.get("calls"):
        res["cpu_us_per_call_whole_run"] = (cpu1 - cpu0) * 1e6 / res["calls"]
    _, kids = run.split()
    res["children_after"] = len([p for p in kids if procs.cmdline(p).startswith(cfg.bench_server)])
    return res


def idle_sessions(cfg, run, n, logdir):
    """Open n idle sessions; measure the proxy at `ready n`."""
    own0 = run.own()
    base_rss = procs.rss_kib(own0)
    base_fds = procs.fd_count(own0)
    argv = [cfg.loadgen, *run.transport_args, "--url", run.url, "--sessions", str(n), "--mode", "idle",
            "--hold", f"{int(cfg.setup_timeout + 120)}s", "--json"]
    lg = procs.Proc(argv, log_path=os.path.join(logdir, "loadgen-idle.log"),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    got, lines = {}, []

    def reader():
        for raw in lg.p.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.startswith("ready"):
                got["ready"] = time.monotonic()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    t0 = time.monotonic()
    res = {"sessions": n, "base_rss_kib": base_rss, "base_fds": base_fds}
    try:
        while "ready" not in got and lg.alive() and time.monotonic() - t0 < cfg.setup_timeout:
            time.sleep(0.02)
        if "ready" not in got:
            res["error"] = ("loadgen exited before `ready`" if not lg.alive()
                            else f"no `ready {n}` within {cfg.setup_timeout}s")
            res["output_tail"] = lines[-3:]
            return res
        res["open_s"] = got["ready"] - t0
        time.sleep(cfg.settle)
        own, kids = run.split()
        res["rss_kib"] = procs.rss_kib(own)
        res["fds"] = procs.fd_count(own)
        res["threads"] = procs.thread_count(own)
        res["children"] = len([p for p in kids if procs.cmdline(p).startswith(cfg.bench_server)])
        res["children_rss_kib"] = procs.rss_kib(kids)
        res["rss_per_session_kib"] = (res["rss_kib"] - base_rss) / n
        res["rss_per_session_with_child_kib"] = (res["rss_kib"] + res["children_rss_kib"] - base_rss) / n
        cs0 = procs.ctx_switches(own)
        time.sleep(cfg.idle_sessions_window)
        res["wakeups_per_s"] = (procs.ctx_switches(own) - cs0) / cfg.idle_sessions_window
        res["wakeup_window_s"] = cfg.idle_sessions_window
    finally:
        try:
            lg.p.stdin.close()
        except OSError:
            pass
        try:
            lg.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        th.join(timeout=5)
        lg.stop()
        tail = parse_json_tail("\n".join(lines))
        if tail:
            res["loadgen"] = tail
    return res


# --------------------------------------------------------------------------


def versions(cfg):
    def sh(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    def pkg(path):
        try:
            with open(path) as f:
                return json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            return None

    nm = os.path.join(REPO, ".peers", "bench-node", "node_modules")
    py = os.path.join(REPO, ".peers", "bench-py", "bin", "python")
    pyver = "import importlib.metadata as m; print(m.version('mcp-proxy'), m.version('mcp'))"
    mp = (sh(py, "-c", pyver) or " ").split()
    rev = sh("git", "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "examples")
    return {
        "mcphop_rev": (rev or "?") + ("-dirty" if dirty else ""),
        "mcphop_version": sh(cfg.mcphop, "--version"),
        "rustc": sh("rustc", "--version"),
        "node": sh(cfg.node, "--version"),
        "python_proxy": sh(py, "--version"),
        "supergateway": pkg(os.path.join(nm, "supergateway", "package.json")),
        "supergateway_sdk": pkg(os.path.join(nm, "supergateway", "node_modules", "@modelcontextprotocol",
                                             "sdk", "package.json"))
        or pkg(os.path.join(nm, "@modelcontextprotocol", "sdk", "package.json")),
        "mcp_proxy_npm": pkg(os.path.join(nm, "mcp-proxy", "package.json")),
        "mcp_proxy_py": mp[0] if mp else None,
        "mcp_py": mp[1] if len(mp) > 1 else None,
    }


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        memtotal = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "mem_gib": round(memtotal / 1024 / 1024, 1), "os": platform.platform()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, one round, 100 idle sessions only")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float, help="seconds measured per call run")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--payload", type=int, default=64, help="bytes of the echo message")
    ap.add_argument("--levels", default="1,8,32,128")
    ap.add_argument("--idle-levels")
    ap.add_argument("--only", help="comma-separated contender keys")
    ap.add_argument("--no-pinned", dest="pinned", action="store_false",
                    help="skip the 1-session runs with pinned CPUs (direct and mcphop)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--logdir", default=os.path.join(REPO, ".tmp", "bench-compare"))
    ap.add_argument("--bench-server", default=os.path.join(REPO, "target", "release", "examples", "bench_server"))
    ap.add_argument("--loadgen", default=os.path.join(REPO, "target", "release", "examples", "loadgen"))
    ap.add_argument("--mcphop", default=os.path.join(REPO, "target", "release", "mcphop"))
    ap.add_argument("--node", default="node")
    ap.add_argument("--command", default="bash benches/compare.sh", help="recorded in the results")
    cfg = ap.parse_args()
    cfg.rounds = cfg.rounds or (1 if cfg.quick else 3)
    cfg.duration = cfg.duration or (1.0 if cfg.quick else 3.0)
    cfg.warmup = cfg.warmup if cfg.warmup is not None else (0.3 if cfg.quick else 1.0)
    cfg.levels = [int(x) for x in cfg.levels.split(",")]
    cfg.idle_levels = [int(x) for x in (cfg.idle_levels or ("100" if cfg.quick else "100,1000")).split(",")]
    cfg.only = set(cfg.only.split(",")) if cfg.only else None
    cfg.settle = 0.5 if cfg.quick else 1.5
    cfg.idle_window = 2.0 if cfg.quick else 10.0
    cfg.idle_sessions_window = 1.0 if cfg.quick else 3.0
    cfg.quiet_cpus = 0.15
    cfg.quiet_wait = 120.0
    cfg.start_timeout = 60.0
    cfg.setup_timeout = 180.0
    for p in (cfg.bench_server, cfg.loadgen, cfg.mcphop):
        if not os.access(p, os.X_OK):
            sys.exit(f"missing executable: {p}")
    os.makedirs(cfg.logdir, exist_ok=True)

    procs.become_subreaper()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    t_start = time.monotonic()
    cs = contenders(cfg)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": cfg.command,
        "config": {"quick": cfg.quick, "rounds": cfg.rounds, "duration_s": cfg.duration,
                   "warmup_s": cfg.warmup, "payload": cfg.payload, "levels": cfg.levels,
                   "idle_levels": cfg.idle_levels, "idle_window_s": cfg.idle_window,
                   "idle_sessions_window_s": cfg.idle_sessions_window, "settle_s": cfg.settle},
        "machine": machine(),
        "versions": versions(cfg),
        "mcphop_binary_bytes": os.path.getsize(cfg.mcphop),
        "contenders": {c.key: {"label": c.label, "note": c.note, "per_session_child": c.per_session_child,
                               "transport": c.transport, "max_sessions": c.max_sessions, "limit": c.limit,
                               "argv": [a.replace(REPO + "/", "") for a in c.argv_fn(0)],
                               "unavailable": c.unavailable} for c in cs},
        "commands": {},
        "child_start": None,
        "startup": {},
        "idle": {},
        "idle_sessions": {},
        "calls": {},
        "pinned": {},
    }
    # Show the commands with a placeholder port.
    for c in cs:
        argv = [a.replace(REPO + "/", "") for a in c.argv_fn(0)]
        argv = ["PORT" if a == "0" else a.replace("127.0.0.1:0", "127.0.0.1:PORT") for a in argv]
        results["commands"][c.key] = " ".join(shlex.quote(a) if a != "PORT" else a for a in argv)
    cs = [c for c in cs if not c.unavailable]

    def save():
        results["runtime_s"] = time.monotonic() - t_start
        tmp = cfg.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1, sort_keys=False)
        os.replace(tmp, cfg.out)

    try:
        # 1. the stdio child's own start
        log("child start: bench_server exec -> initialize answered")
        results["child_start"] = child_start(cfg, 10 if cfg.quick else 30)
        log(f"  p50 {results['child_start']['p50_us']:.0f} us")

        # 2. start-up: exec -> first accepted connection, a few times each
        log("start-up: exec -> first accepted connection")
        wait_quiet(cfg)
        for c in list(cs):
            times = []
            reps = (3 if cfg.quick else 7) if c.key in ("direct", "mcphop", "mcphop-sse") else (1 if cfg.quick else 3)
            for _ in range(reps):
                try:
                    r = c.start(cfg, cfg.logdir, probe=True)
                except RuntimeError as e:
                    c.unavailable = str(e)
                    results["contenders"][c.key]["unavailable"] = str(e)
                    log(f"  {c.key}: {e}")
                    break
                times.append(r.startup)
                r.stop()
            if times:
                results["startup"][c.key] = {"n": len(times), "p50_ms": median(times) * 1000,
                                             "min_ms": min(times) * 1000, "max_ms": max(times) * 1000}
                log(f"  {c.key}: {median(times) * 1000:.1f} ms (median of {len(times)}, "
                    f"{min(times) * 1000:.1f}-{max(times) * 1000:.1f})")
        cs = [c for c in cs if not c.unavailable]

        # 3. idle proxies: idle RSS, fds, wake-ups (no probe connection: a
        # connection would arm timers and wake the proxy)
        log("idle: start each contender, settle, RSS/fds, then a shared idle window")
        wait_quiet(cfg)
        running = {}
        for c in cs:
            try:
                r = c.start(cfg, cfg.logdir)
            except RuntimeError as e:
                c.unavailable = str(e)
                results["contenders"][c.key]["unavailable"] = str(e)
                log(f"  {c.key}: {e}")
                continue
            running[c.key] = r
        cs = [c for c in cs if not c.unavailable]
        time.sleep(cfg.settle + 1.0)
        for k, r in running.items():
            own, kids = r.split()
            results["idle"][k] = {"rss_kib": procs.rss_kib(own),
                                  "fds": procs.fd_count(own), "threads": procs.thread_count(own),
                                  "processes": len(own), "children": len(kids),
                                  "children_rss_kib": procs.rss_kib(kids)}
        cs0 = {k: procs.ctx_switches(r.own()) for k, r in running.items()}
        time.sleep(cfg.idle_window)
        for k, r in running.items():
            results["idle"][k]["wakeups_per_s"] = (procs.ctx_switches(r.own()) - cs0[k]) / cfg.idle_window
            results["idle"][k]["wakeup_window_s"] = cfg.idle_window
            i = results["idle"][k]
            log(f"  {k}: idle RSS {i['rss_kib']} KiB, fds {i['fds']}, threads {i['threads']}, "
                f"wake-ups {i['wakeups_per_s']:.1f}/s")
        for r in running.values():
            r.stop()
        save()

        # 4. idle sessions, a fresh instance each time
        for n in cfg.idle_levels:
            log(f"idle sessions: {n}")
            for c in cs:
                wait_quiet(cfg)
                r = c.start(cfg, cfg.logdir)
                try:
                    time.sleep(cfg.settle)
                    res = idle_sessions(cfg, r, n, cfg.logdir)
                finally:
                    r.stop()
                results["idle_sessions"].setdefault(c.key, {})[str(n)] = res
                if "error" in res:
                    log(f"  {c.key}: ERROR {res['error']}")
                else:
                    log(f"  {c.key}: opened in {res['open_s']:.2f}s; RSS {res['base_rss_kib']} -> {res['rss_kib']} KiB "
                        f"({res['rss_per_session_kib']:.1f} KiB/session), fds {res['fds']}, "
                        f"children {res['children']}, wake-ups {res['wakeups_per_s']:.1f}/s")
                save()

        # 5. calls, alternating
        log(f"calls: {cfg.rounds} round(s) x levels {cfg.levels} x {len(cs)} contenders, "
            f"{cfg.duration}s each after {cfg.warmup}s warm-up")
        running = {}
        for c in cs:
            running[c.key] = c.start(cfg, cfg.logdir)
        time.sleep(cfg.settle)
        for rnd in range(cfg.rounds):
            for n in cfg.levels:
                order = cs[rnd % len(cs):] + cs[:rnd % len(cs)]
                for c in order:
                    if c.max_sessions is not None and n > c.max_sessions:
                        continue
                    r = running[c.key]
                    if not r.proc.alive():
                        log(f"  {c.key} died; restarting")
                        r.stop()
                        r = running[c.key] = c.start(cfg, cfg.logdir)
                    res = loadgen_calls(cfg, r, n, cfg.logdir)
                    res["round"] = rnd
                    results["calls"].setdefault(c.key, {}).setdefault(str(n), []).append(res)
                    if "error" in res:
                        log(f"  r{rnd} n={n:<4} {c.key:14} ERROR {res['error']}")
                    else:
                        cpu = res.get("cpu_us_per_call")
                        log(f"  r{rnd} n={n:<4} {c.key:14} {res['calls_per_s']:10.0f} calls/s  "
                            f"p50 {res['p50_us']:8.0f} us  p99 {res['p99_us']:8.0f} us  "
                            f"cpu/call {cpu if cpu is None else round(cpu, 1)} us  errors {res.get('errors')}")
                    save()
        for r in running.values():
            r.stop()
        running = {}

        # 6. one session with pinned CPUs: how much of the latency is the
        # scheduler's placement (a cross-CPU wake-up costs more than the work)
        pin = [c for c in cs if c.key in ("direct", "mcphop")]
        if cfg.pinned and (os.cpu_count() or 1) >= 2 and len(pin) == 2 and shutil.which("taskset"):
            placements = [("0", "0", "server/proxy, its children and loadgen all on CPU 0"),
                          ("0", "1", "server/proxy and its children on CPU 0, loadgen on CPU 1")]
            results["pinned_placements"] = {f"{a}/{b}": d for a, b, d in placements}
            log("pinned: 1 session, direct and mcphop, fixed CPU placements")
            for sc, lc, _ in placements:
                for c in pin:
                    running[c.key] = c.start(cfg, cfg.logdir, cpus=sc)
                time.sleep(cfg.settle)
                for rnd in range(cfg.rounds):
                    for c in pin[rnd % 2:] + pin[:rnd % 2]:
                        res = loadgen_calls(cfg, running[c.key], 1, cfg.logdir, cpus=lc)
                        res["round"] = rnd
                        results["pinned"].setdefault(f"{sc}/{lc}", {}).setdefault(c.key, []).append(res)
                        if "error" not in res:
                            log(f"  r{rnd} cpus {sc}/{lc} {c.key:8} {res['calls_per_s']:8.0f} calls/s  "
                                f"p50 {res['p50_us']:6.0f} us  p99 {res['p99_us']:6.0f} us")
                        save()
                for r in running.values():
                    r.stop()
                running = {}
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping everything")
        results["interrupted"] = str(e)
        save()
        procs.stop_all()
        sys.exit(130)
    finally:
        procs.stop_all()
    save()
    log(f"done in {results['runtime_s']:.0f}s; results in {os.path.relpath(cfg.out, REPO)}")


if __name__ == "__main__":
    main()
