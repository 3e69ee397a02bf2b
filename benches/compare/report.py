#!/usr/bin/env python3
"""Turn benches/compare/results.json into BENCHMARKS.md and calls_per_s.svg.

    python3 benches/compare/report.py [--results FILE] [--md FILE] [--svg FILE]

Stdlib only; run by benches/compare.sh after the measurements, and safe to
re-run by hand (it only reads the results). benches/compare/notes.md, when
present, is copied into the Notes section verbatim.
"""

import argparse
import json
import math
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
ASYNC_PEERS = ("supergateway", "mcp-proxy-npm", "mcp-proxy-py")
SHORT = {"direct": "direct (floor)", "mcphop": "mcphop", "supergateway": "supergateway",
         "mcp-proxy-npm": "mcp-proxy (npm)", "mcp-proxy-py": "mcp-proxy (PyPI)",
         "mcphop-sse": "mcphop /sse", "supergateway-sse": "supergateway sse",
         "mcp-proxy-npm-sse": "mcp-proxy (npm) sse", "mcp-proxy-py-sse": "mcp-proxy (PyPI) sse"}
COLORS = {"direct": "#7f7f7f", "mcphop": "#d62728", "supergateway": "#1f77b4",
          "mcp-proxy-npm": "#2ca02c", "mcp-proxy-py": "#9467bd"}


def is_sse(R, key):
    """A contender measured over the legacy HTTP+SSE transport."""
    return R["contenders"][key].get("transport") == "sse"


def limited(R, key, n):
    """Why calls at n sessions were not measured for this contender, or None."""
    c = R["contenders"][key]
    if c.get("max_sessions") is not None and n > c["max_sessions"]:
        return c.get("limit") or "not measured"
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def calls_stat(R, key, n, field):
    runs = [r for r in R["calls"].get(key, {}).get(str(n), []) if "error" not in r]
    return med([r.get(field) for r in runs])


def calls_range(R, key, n, field):
    vals = [r.get(field) for r in R["calls"].get(key, {}).get(str(n), []) if "error" not in r]
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def calls_errors(R, key, n):
    runs = R["calls"].get(key, {}).get(str(n), [])
    return sum(1 for r in runs if "error" in r) + sum(r.get("errors", 0) or 0 for r in runs if "error" not in r)


def ratio_s(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


def fmt(v, unit="", digits=0, none="—"):
    if v is None:
        return none
    if isinstance(v, float) and math.isnan(v):
        return none
    if digits == 0:
        s = f"{v:,.0f}"
    else:
        s = f"{v:,.{digits}f}"
    return s + unit


def us(v):
    if v is None:
        return "—"
    if v >= 10_000:
        return f"{v / 1000:,.1f} ms"
    return f"{v:,.0f} µs"


def kib(v):
    if v is None:
        return "—"
    if v >= 10 * 1024:
        return f"{v / 1024:,.1f} MiB"
    return f"{v:,.0f} KiB"


def idle_sess(R, key, n, field):
    r = R["idle_sessions"].get(key, {}).get(str(n))
    if not r or "error" in r:
        return None
    return r.get(field)


def setup_us(R, key, which="p50"):
    """Session setup (initialize + initialized) from the 100-idle-session run
    (loadgen sets sessions up 4 at a time): loadgen's setup_p50_us / p99."""
    r = R["idle_sessions"].get(key, {}).get("100")
    if not r or "loadgen" not in r:
        return None
    return r["loadgen"].get(f"setup_{which}_us")


def setup1_us(R, key):
    """Setup of the single session of the 1-session call runs, median over rounds."""
    return calls_stat(R, key, 1, "setup_p50_us")


def setup_excl_child_us(R, key):
    s = setup_us(R, key)
    c = R["contenders"][key]
    if s is None or c["per_session_child"] is None:
        return None
    if c["per_session_child"]:
        return s - R["child_start"]["p50_us"]
    return s  # shared child: no child starts during a session's setup


# --------------------------------------------------------------------------
# SVG


def svg_chart(R, keys, path, title="tools/call throughput against concurrency (higher is better)"):
    levels = R["config"]["levels"]
    W, H = 760, 460
    L, Rm, T, B = 80, 170, 50, 60
    pw, ph = W - L - Rm, H - T - B
    series = {}
    for k in keys:
        pts = [(n, calls_stat(R, k, n, "calls_per_s")) for n in levels]
        pts = [(n, v) for n, v in pts if v]
        if pts:
            series[k] = pts
    vals = [v for pts in series.values() for _, v in pts]
    if not vals:
        return
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    if hi / lo < 100:
        lo = hi / 100

    def x(i):
        return L + (pw * i / (len(levels) - 1) if len(levels) > 1 else pw / 2)

    def y(v):
        return T + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L + pw / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">'
         f'{title}</text>']
    # grid: decades and 2x, 5x
    d = lo
    while d <= hi * 1.0001:
        for m in (1, 2, 5):
            v = d * m
            if v > hi * 1.0001:
                break
            yy = y(v)
            o.append(f'<line x1="{L}" y1="{yy:.1f}" x2="{L + pw}" y2="{yy:.1f}" '
                     f'stroke="{"#ccc" if m == 1 else "#eee"}" stroke-width="1"/>')
            if m == 1 or hi / lo <= 1000:
                o.append(f'<text x="{L - 8}" y="{yy + 4:.1f}" text-anchor="end" fill="#333">{v:,.0f}</text>')
        d *= 10
    for i, n in enumerate(levels):
        xx = x(i)
        o.append(f'<line x1="{xx:.1f}" y1="{T}" x2="{xx:.1f}" y2="{T + ph}" stroke="#eee"/>')
        o.append(f'<text x="{xx:.1f}" y="{T + ph + 18}" text-anchor="middle" fill="#333">{n}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 18}" text-anchor="middle">concurrent sessions '
             f'(each: one call in flight)</text>')
    o.append(f'<text transform="translate(20,{T + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'calls/s (log scale)</text>')
    ly = T + 10
    for k, pts in series.items():
        col = COLORS.get(k.removesuffix("-sse"), "#000")
        dash = ' stroke-dasharray="6,4"' if k == "direct" else ""
        width = 3 if k in ("mcphop", "mcphop-sse") else 2
        path_d = " ".join(f'{"M" if j == 0 else "L"}{x(levels.index(n)):.1f},{y(v):.1f}'
                          for j, (n, v) in enumerate(pts))
        o.append(f'<path d="{path_d}" fill="none" stroke="{col}" stroke-width="{width}"{dash}/>')
        for n, v in pts:
            o.append(f'<circle cx="{x(levels.index(n)):.1f}" cy="{y(v):.1f}" r="3.5" fill="{col}">'
                     f'<title>{R["contenders"][k]["label"]}, {n} sessions: {v:,.0f} calls/s</title></circle>')
        label = SHORT.get(k, R["contenders"][k]["label"])
        o.append(f'<line x1="{L + pw + 14}" y1="{ly}" x2="{L + pw + 38}" y2="{ly}" stroke="{col}" '
                 f'stroke-width="{width}"{dash}/>')
        short = label if len(label) <= 26 else label[:25] + "…"
        o.append(f'<text x="{L + pw + 44}" y="{ly + 4}" fill="#222">{short}</text>')
        ly += 22
    m = R["machine"]
    o.append(f'<text x="{L + pw + 14}" y="{ly + 14}" fill="#666" font-size="10">{m["nproc"]} CPUs, '
             f'{R["date"][:10]}</text>')
    o.append('</svg>')
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


# --------------------------------------------------------------------------
# Markdown


def targets(R):
    """(name, wanted, measured, met) for each target of the issue."""
    out = []
    peers = [(k, calls_stat(R, k, 8, "calls_per_s")) for k in ASYNC_PEERS if k in R["calls"]]
    peers = [(k, v) for k, v in peers if v]
    hop8 = calls_stat(R, "mcphop", 8, "calls_per_s")
    if peers and hop8:
        bk, bv = max(peers, key=lambda kv: kv[1])
        ratio = hop8 / bv
        out.append(("calls/s at 8 sessions ≥ 10× the best async peer", "≥ 10×",
                    f"{ratio:.1f}× ({hop8:,.0f} vs {bv:,.0f} for {R['contenders'][bk]['label']})", ratio >= 10))
    hop1 = calls_stat(R, "mcphop", 1, "p50_us")
    dir1 = calls_stat(R, "direct", 1, "p50_us")
    if hop1 and dir1:
        out.append(("p50 at 1 session within 2× the direct floor", "≤ 2×",
                    f"{hop1 / dir1:.2f}× ({us(hop1)} vs {us(dir1)})", hop1 <= 2 * dir1))
    per = [(n, idle_sess(R, "mcphop", n, "rss_per_session_kib")) for n in R["config"]["idle_levels"]]
    per = [(n, v) for n, v in per if v is not None]
    if per:
        worst = max(v for _, v in per)
        out.append(("RSS per idle session ≤ 16 KiB (proxy only, children excluded)", "≤ 16 KiB",
                    ", ".join(f"{v:.1f} KiB at {n}" for n, v in per), worst <= 16))
    idle = R["idle"].get("mcphop", {}).get("rss_kib")
    if idle is not None:
        out.append(("idle RSS ≤ 4 MB", "≤ 4 MiB", f"{idle:,} KiB ({idle / 1024:.2f} MiB)", idle <= 4096))
    cpu = calls_stat(R, "mcphop", 8, "cpu_us_per_call")
    if cpu is not None:
        out.append(("proxy CPU per call ≤ 40 µs (at 8 sessions)", "≤ 40 µs", f"{cpu:.1f} µs", cpu <= 40))
    wk = R["idle"].get("mcphop", {}).get("wakeups_per_s")
    if wk is not None:
        win = R["idle"]["mcphop"].get("wakeup_window_s")
        out.append(("zero wake-ups/s while idle, except due timers", "0/s",
                    f"{wk:.1f}/s over {win:.0f} s with no session", wk == 0))
    return out


def write_sse(R, keys, a, svg_rel):
    """The legacy HTTP+SSE section: calls/s at each level, p50, RSS per idle session."""
    lv, il = R["config"]["levels"], R["config"]["idle_levels"]
    lab = {k: R["contenders"][k]["label"] for k in R["contenders"]}
    a("### Legacy HTTP+SSE transport (2024-11-05)")
    a("")
    a("The same stdio command behind each proxy's legacy SSE endpoint (`GET /sse`, then POSTs to the "
      "endpoint its first event names), measured in the same run, with the same levels and rounds:")
    a("")
    hdr = [f"calls/s @{n}" for n in lv] + ["p50 @1", "p50 @8", "p99 @8", "CPU/call @8", "idle RSS"] + \
          [f"RSS/session @{n}" for n in il] + [f"incl. child @{il[-1]}", "fds @100", "setup p50 @100"]
    a("| | " + " | ".join(hdr) + " |")
    a("|---|" + "---:|" * len(hdr))
    foot = []
    for k in keys:
        def cell(n, field, f):
            if limited(R, k, n):
                if R["contenders"][k]["limit"] not in foot:
                    foot.append(R["contenders"][k]["limit"])
                return "n/a" + "¹²³"[foot.index(R["contenders"][k]["limit"])]
            return f(calls_stat(R, k, n, field))
        row = [cell(n, "calls_per_s", fmt) for n in lv]
        row += [cell(1, "p50_us", us), cell(8, "p50_us", us), cell(8, "p99_us", us),
                cell(8, "cpu_us_per_call", lambda v: fmt(v, " µs", 1))]
        row.append(kib(R["idle"].get(k, {}).get("rss_kib")))
        row += [fmt(idle_sess(R, k, n, "rss_per_session_kib"), " KiB", 1) for n in il]
        row.append(fmt(idle_sess(R, k, il[-1], "rss_per_session_with_child_kib"), " KiB", 0))
        row.append(fmt(idle_sess(R, k, 100, "fds")))
        row.append(us(setup_us(R, k)))
        a(f"| {lab[k]} | " + " | ".join(row) + " |")
    for k in R["contenders"]:
        c = R["contenders"][k]
        if is_sse(R, k) and c.get("unavailable"):
            a(f"| {lab[k]} | " + " | ".join(["n/a"] * len(hdr)) + f" |")
            foot.append(f"{lab[k]}: {c['unavailable']}")
    a("")
    for i, text in enumerate(foot):
        a(f"{'¹²³⁴⁵'[i]} {text}.")
        a("")
    if svg_rel:
        a(f"![]({svg_rel})")
        a("")


def write_md(R, all_keys, path, svg_rel, svg_sse_rel):
    keys = [k for k in all_keys if not is_sse(R, k)]
    sse_keys = [k for k in all_keys if is_sse(R, k)]
    lv = R["config"]["levels"]
    il = R["config"]["idle_levels"]
    m, v, cfg = R["machine"], R["versions"], R["config"]
    lab = {k: R["contenders"][k]["label"] for k in R["contenders"]}
    L = []
    a = L.append
    a("# Benchmarks: mcphop against the async MCP proxies")
    a("")
    a("<!-- Generated by benches/compare/report.py from benches/compare/results.json; "
      "edit benches/compare/notes.md or the scripts, not this file. -->")
    a("")
    a(f"Measured on one machine in one run (`{R['command']}`, {R['runtime_s'] / 60:.1f} min), "
      f"every proxy in front of the same stdio command, `target/release/examples/bench_server`, "
      f"on 127.0.0.1, driven by `target/release/examples/loadgen`. "
      f"The contenders take turns at every step.")
    if cfg.get("quick"):
        a("")
        a("**This is a `--quick` run: short durations, one round; indicative only.**")
    a("")
    a("## Machine and versions")
    a("")
    a(f"- date: {R['date']}")
    a(f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB memory, Linux {m['kernel']}")
    a(f"- mcphop {v.get('mcphop_rev')} ({v.get('mcphop_version')}), {v.get('rustc')}; release binary "
      f"{R['mcphop_binary_bytes']:,} bytes ({R['mcphop_binary_bytes'] / 1024:,.0f} KiB, stripped, LTO)")
    a(f"- Node {v.get('node')}: supergateway {v.get('supergateway')} (TypeScript SDK "
      f"{v.get('supergateway_sdk')}), mcp-proxy (npm) {v.get('mcp_proxy_npm')}")
    a(f"- {v.get('python_proxy')}: mcp-proxy (PyPI) {v.get('mcp_proxy_py')} with mcp {v.get('mcp_py')} "
      f"(own venv, `.peers/bench-py`)")
    a("")
    a("## Commands")
    a("")
    a("Each contender listens on a free loopback port (PORT below). "
      "`BENCH` is `target/release/examples/bench_server`.")
    a("")
    a("| contender | command | stdio children |")
    a("|---|---|---|")
    for k in R["contenders"]:
        c = R["contenders"][k]
        cmd = R["commands"][k].replace("target/release/examples/bench_server", "BENCH")
        cmd = cmd.replace("\"", "'")
        extra = f" **n/a: {c['unavailable']}**" if c.get("unavailable") else ""
        a(f"| {lab[k]} | `{cmd}` | {c['note']}{extra} |")
    a("")
    a(f"Load: `loadgen --url http://127.0.0.1:PORT/mcp --sessions N --duration {cfg['duration_s']:g}s "
      f"--warmup {cfg['warmup_s']:g}s --payload {cfg['payload']} --json` for N in {', '.join(map(str, lv))} "
      f"({cfg['rounds']} round(s), each round runs every level and, inside a level, every contender in turn, "
      f"the order rotated per round; figures are medians over rounds). Idle sessions: "
      f"`loadgen --url … --sessions N --mode idle --hold …` for N in {', '.join(map(str, il))}, a fresh "
      f"proxy each time, measured at `ready N`.")
    if sse_keys or any(is_sse(R, k) for k in R["contenders"]):
        a("")
        a("The legacy HTTP+SSE contenders (2024-11-05 transport, section below) are driven the same way with "
          "`loadgen --transport sse --url http://127.0.0.1:PORT/sse`: per session a `GET` stream on a "
          "connection of its own, its `endpoint` event, then `initialize`, `notifications/initialized` and the "
          "calls POSTed to that endpoint on a second keep-alive connection (answered 202), their answers read "
          "from the stream by id.")
    a("")
    a("## Results")
    a("")
    a("### Throughput and latency")
    a("")
    a("| | " + " | ".join(f"calls/s @{n}" for n in lv) + " | p50 @1 | p50 @8 | p99 @8 | CPU/call @8 |")
    a("|---|" + "---:|" * (len(lv) + 4))
    for k in keys:
        row = [fmt(calls_stat(R, k, n, "calls_per_s")) for n in lv]
        row += [us(calls_stat(R, k, 1, "p50_us")), us(calls_stat(R, k, 8, "p50_us")),
                us(calls_stat(R, k, 8, "p99_us"))]
        cpu = calls_stat(R, k, 8, "cpu_us_per_call")
        row.append(fmt(cpu, " µs", 1))
        a(f"| {lab[k]} | " + " | ".join(row) + " |")
    for k in R["contenders"]:
        if R["contenders"][k].get("unavailable") and not is_sse(R, k):
            a(f"| {lab[k]} | " + " | ".join(["n/a"] * (len(lv) + 4)) + " |")
    a("")
    a("### Memory, descriptors, sessions, start-up")
    a("")
    hdr = ["idle RSS"] + [f"RSS/session @{n}" for n in il] + \
          [f"incl. child @{il[-1]}", "fds @100", "children @100", "setup p50 @1", "setup p50 / p99 @100",
           "setup p50 @100 excl. child",
           "start-up", "wake-ups/s idle"]
    a("| | " + " | ".join(hdr) + " |")
    a("|---|" + "---:|" * len(hdr))
    for k in keys:
        i = R["idle"].get(k, {})
        row = [kib(i.get("rss_kib"))]
        row += [fmt(idle_sess(R, k, n, "rss_per_session_kib"), " KiB", 1) for n in il]
        row.append(fmt(idle_sess(R, k, il[-1], "rss_per_session_with_child_kib"), " KiB", 0))
        row.append(fmt(idle_sess(R, k, 100, "fds")))
        row.append(fmt(idle_sess(R, k, 100, "children")))
        row.append(us(setup1_us(R, k)))
        row.append(f"{us(setup_us(R, k))} / {us(setup_us(R, k, 'p99'))}")
        sx = setup_excl_child_us(R, k)
        row.append("—" if sx is None else us(sx))
        row.append(fmt((R.get("startup") or {}).get(k, {}).get("p50_ms", i.get("startup_ms")), " ms", 1))
        row.append(fmt(i.get("wakeups_per_s"), "", 1))
        a(f"| {lab[k]} | " + " | ".join(row) + " |")
    a("")
    a(f"![]({svg_rel})")
    a("")
    if sse_keys or any(is_sse(R, k) for k in R["contenders"]):
        write_sse(R, sse_keys, a, svg_sse_rel)
    a("### Targets (mcphop)")
    a("")
    a("| target | wanted | measured | |")
    a("|---|---|---|---|")
    for name, want, got, ok in targets(R):
        a(f"| {name} | {want} | {got} | {'**met**' if ok else '**missed**'} |")
    a("")
    pinned = R.get("pinned") or {}
    if pinned:
        a("### One session, pinned CPUs (direct floor and mcphop)")
        a("")
        a("The scheduler decides whether loadgen, the proxy and its child share a CPU; a wake-up on "
          "another CPU costs more than the work of a call, and a proxy adds two such hand-offs per call. "
          "The same 1-session run with fixed placements (`taskset`), medians over rounds:")
        a("")
        a("| placement | floor p50 | mcphop p50 | ratio | floor calls/s | mcphop calls/s |")
        a("|---|---:|---:|---:|---:|---:|")
        a(f"| scheduler's choice (table above) | {us(calls_stat(R, 'direct', 1, 'p50_us'))} | "
          f"{us(calls_stat(R, 'mcphop', 1, 'p50_us'))} | "
          f"{ratio_s(calls_stat(R, 'mcphop', 1, 'p50_us'), calls_stat(R, 'direct', 1, 'p50_us'))} | "
          f"{fmt(calls_stat(R, 'direct', 1, 'calls_per_s'))} | {fmt(calls_stat(R, 'mcphop', 1, 'calls_per_s'))} |")
        for place, by in pinned.items():
            d = med([r.get("p50_us") for r in by.get("direct", []) if "error" not in r])
            h = med([r.get("p50_us") for r in by.get("mcphop", []) if "error" not in r])
            dc = med([r.get("calls_per_s") for r in by.get("direct", []) if "error" not in r])
            hc = med([r.get("calls_per_s") for r in by.get("mcphop", []) if "error" not in r])
            desc = R.get("pinned_placements", {}).get(place, place)
            a(f"| {desc} | {us(d)} | {us(h)} | {ratio_s(h, d)} | {fmt(dc)} | {fmt(hc)} |")
        a("")
    a("### Per level (median [min–max] over rounds)")
    a("")
    a("| sessions | contender | calls/s | p50 | p99 | max | CPU/call | errors |")
    a("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in lv:
        for k in keys + sse_keys:
            if limited(R, k, n):
                continue
            c = calls_stat(R, k, n, "calls_per_s")
            lo, hi = calls_range(R, k, n, "calls_per_s")
            rng = f" [{lo:,.0f}–{hi:,.0f}]" if lo is not None and cfg["rounds"] > 1 else ""
            a(f"| {n} | {lab[k]} | {fmt(c)}{rng} | {us(calls_stat(R, k, n, 'p50_us'))} | "
              f"{us(calls_stat(R, k, n, 'p99_us'))} | {us(calls_stat(R, k, n, 'max_us'))} | "
              f"{fmt(calls_stat(R, k, n, 'cpu_us_per_call'), ' µs', 1)} | {calls_errors(R, k, n)} |")
    a("")
    a("### Idle sessions in detail")
    a("")
    a("| sessions | contender | time to open | proxy RSS before → with sessions | per session | "
      "children (their RSS) | fds | threads | wake-ups/s |")
    a("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in il:
        for k in keys + sse_keys:
            r = R["idle_sessions"].get(k, {}).get(str(n))
            if not r:
                continue
            if "error" in r:
                a(f"| {n} | {lab[k]} | error: {r['error']} | | | | | | |")
                continue
            a(f"| {n} | {lab[k]} | {r['open_s']:.2f} s | {kib(r['base_rss_kib'])} → {kib(r['rss_kib'])} | "
              f"{r['rss_per_session_kib']:.1f} KiB | {r['children']} ({kib(r['children_rss_kib'])}) | "
              f"{r['fds']} | {r['threads']} | {r['wakeups_per_s']:.1f} |")
    a("")
    a("## How each figure is taken")
    a("")
    cs = R["child_start"]
    a(f"- **calls/s, p50, p99**: loadgen's own figures: N sessions, each with one `tools/call echo` "
      f"({cfg['payload']}-byte message) in flight at a time, for {cfg['duration_s']:g} s after a "
      f"{cfg['warmup_s']:g} s warm-up. loadgen, the proxy and the stdio children share the "
      f"{m['nproc']} CPUs.")
    a("- **proxy process**: the process tree started for the contender, minus every subtree whose "
      "command line names the stdio command (a `sh -c` wrapper counts as the child). For the Node and "
      "Python proxies this is the `node` / `python` process itself (started directly, no `npx` wrapper).")
    a("- **idle RSS**: VmRSS of the proxy process(es), summed, "
      f"{cfg['settle_s'] + 1:g} s after it began listening, before any session.")
    a("- **RSS per idle session**: (proxy RSS with N idle sessions open − the same fresh instance's RSS "
      "just before) / N, children excluded; *incl. child* adds the stdio children's RSS (summed VmRSS, "
      "so shared pages count once per process).")
    a("- **fds**: entries of /proc/PID/fd of the proxy process(es) with 100 idle sessions open.")
    a("- **CPU/call**: utime+stime of the proxy process(es) from /proc/PID/stat, sampled every 50 ms "
      "during each call run; the CPU used over the middle 80 % of the measured window divided by the "
      "calls made in it (calls/s × window), so session setup and warm-up are left out (the run phase "
      "starts when loadgen's worker threads appear in /proc/PID/status, after its setup). The raw whole-run "
      "figure (setup and warm-up included, divided by measured calls) is in results.json as "
      "`cpu_us_per_call_whole_run`.")
    a(f"- **setup**: loadgen's `setup_p50_us` / `setup_p99_us` (initialize + notifications/initialized "
      f"round trips on a fresh connection): *@1* from the 1-session call runs (one session, median over rounds), "
      f"*@100* from the 100-idle-session run (loadgen sets sessions up 4 at a time). *excl. child* subtracts the stdio child's own start, measured apart: "
      f"`bench_server` exec → answer to `initialize` over its pipes, p50 of {cs['n']} spawns = "
      f"{us(cs['p50_us'])}, for the proxies that spawn a child per session; the shared-child proxies "
      f"start no child during setup, so their figure stands as is.")
    a("- **start-up**: exec of the contender's process → first accepted TCP connect on its port "
      "(polled every 1 ms), median of a few starts (7 for the floor and mcphop, 3 for the others). "
      "The shared-child proxies start their child before listening. The instances measured idle are "
      "started apart and never probed: they are seen listening in /proc/net/tcp, so no connection "
      "reaches them before the idle measurements.")
    a(f"- **wake-ups/s idle**: voluntary + nonvoluntary context switches summed over every thread of the "
      f"proxy process(es) (/proc/PID/task/*/status) over {cfg['idle_window_s']:g} s with no session, "
      f"divided by the window; the same over {cfg['idle_sessions_window_s']:g} s with N idle sessions in the "
      "last column of the detail table.")
    a("- **legacy SSE figures**: a call's latency runs from its POST to its answer on the stream; the next "
      "call waits for the POST's 202 as well. A session holds two connections (stream and POSTs), so its fds "
      "count both ends' sockets. Idle sessions are held by their open streams; they end when loadgen closes them.")
    a("- **binary size**: `target/release/mcphop` as built by `cargo build --release`.")
    fl = [(k, n, r.get("foreign_cpus_during")) for k in keys + sse_keys for n in lv
          for r in R["calls"].get(k, {}).get(str(n), []) if r.get("foreign_cpus_during") is not None]
    if fl:
        busy = [(k, n, f) for k, n, f in fl if f >= 0.15]
        worst = max(f for _, _, f in fl)
        a(f"- **other load**: before every run the script waits until processes outside its own tree use "
          f"less than 0.15 CPUs, and records what they used during the run: at most {worst:.2f} CPUs"
          + (". Runs disturbed by more than 0.15 CPUs: " + ", ".join(f"{lab[k]} @{n} ({f:.2f})" for k, n, f in busy)
             if busy else ", so no run was disturbed.")
          + "")
    notes = os.path.join(HERE, "notes.md")
    if os.path.exists(notes):
        a("")
        a("## Notes")
        a("")
        with open(notes) as f:
            a(f.read().strip())
    a("")
    a("## Re-running")
    a("")
    a("```sh")
    a("bash benches/compare.sh          # full run: installs the peers into .peers/, builds, "
      "measures, rewrites this file")
    a("bash benches/compare.sh --quick  # about two minutes, indicative only")
    a("python3 benches/compare/report.py  # rewrite this file and the chart from results.json")
    a("```")
    a("")
    a("Raw figures: `benches/compare/results.json` (committed, so the report can be regenerated); "
      "logs of the last run: `.tmp/bench-compare/`.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--md", default=os.path.join(REPO, "BENCHMARKS.md"))
    ap.add_argument("--svg", default=os.path.join(HERE, "calls_per_s.svg"))
    ap.add_argument("--svg-sse", default=os.path.join(HERE, "calls_per_s_sse.svg"))
    a = ap.parse_args()
    with open(a.results) as f:
        R = json.load(f)
    keys = [k for k in R["contenders"] if not R["contenders"][k].get("unavailable")]
    svg_chart(R, [k for k in keys if not is_sse(R, k)], a.svg)
    svg_rel = os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.md)))
    sse = [k for k in keys if is_sse(R, k)]
    svg_sse_rel = None
    if sse:
        svg_chart(R, sse, a.svg_sse, "legacy HTTP+SSE: tools/call throughput (higher is better)")
        svg_sse_rel = os.path.relpath(a.svg_sse, os.path.dirname(os.path.abspath(a.md)))
    write_md(R, keys, a.md, svg_rel, svg_sse_rel)
    for name, want, got, ok in targets(R):
        print(f"{'MET   ' if ok else 'MISSED'} {name}: {got}")


if __name__ == "__main__":
    main()
