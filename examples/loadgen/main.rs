//! A load generator for any Streamable HTTP MCP endpoint (handshake era):
//! mcphop, another proxy, or a server such as `bench_server --http`; or,
//! with `--transport sse`, for a legacy HTTP+SSE one (2024-11-05).
//!
//! ```text
//! loadgen --url http://127.0.0.1:PORT/mcp --sessions N [--duration 5s | --calls N]
//!         [--transport streamable|sse]
//!         [--payload BYTES] [--warmup 1s] [--mode call|idle] [--hold 30s] [--json]
//!         [--threads N] [--setup-concurrency N] [--timeout 10s] [--no-delete]
//! ```
//!
//! **call mode** (the default): N sessions, each on its own keep-alive TCP
//! connection, are set up one window at a time (`initialize` with protocol
//! version 2025-06-18, then `notifications/initialized`); then each calls the
//! `echo` tool in a closed loop (one call in flight per session) with a
//! `message` of `--payload` bytes, unique per session and call
//! (`s<session>-c<call>-xxxx…`). After `--warmup` (not counted) it measures
//! for `--duration`, or until `--calls` calls were made. Every answer is
//! checked: its JSON-RPC id, and the echoed text. A mismatch, an HTTP error,
//! a transport error or a request unanswered after `--timeout` counts as an
//! error, and the session reconnects and initializes again (counted too).
//! Answers may be JSON or SSE (`data:` lines, the response last), with a
//! Content-Length, chunked, or delimited by the connection's close; a
//! call's latency ends at its response, even when its SSE stream ends later.
//! At the end every session is ended with `DELETE` (unless `--no-delete`).
//!
//! **legacy SSE** (`--transport sse --url http://HOST:PORT/sse`): a session
//! is a `GET` of the URL, its SSE stream on a connection of its own; the
//! first `endpoint` event names where to POST (resolved against the URL, or
//! an absolute `http://` URI). `initialize`, `notifications/initialized`
//! and the calls are POSTed there on a second keep-alive connection (any
//! 2xx, usually 202), and their answers are read from the stream
//! (`message` events), matched by id; a call's latency ends at its answer
//! on the stream, and the next request waits for both. A stream that ends
//! is an error (the session starts over). Sessions end by closing the
//! stream (no DELETE).
//!
//! **idle mode**: opens N sessions, prints `ready N` (flushed), holds their
//! connections open until `--hold` passes or stdin reaches EOF, ends them
//! with `DELETE` and reports the set-up times.
//!
//! The report: calls/s, call latency p50/p90/p99/max, session set-up time
//! (initialize + initialized round trips) p50/p99, errors, calls. A table
//! by default; with `--json` one JSON object on the last line of stdout, with
//! the keys `sessions, duration_s, calls, calls_per_s, p50_us, p90_us,
//! p99_us, max_us, setup_p50_us, setup_p99_us, errors` (and a few more).
//! The first few error descriptions go to stderr.
//!
//! No async runtime: the sessions are shared among `--threads` threads
//! (default: as many as the machine has cores, at most one per session),
//! each driving its sessions' non-blocking sockets on one mio poll, with
//! buffers reused from call to call.
//!
//! This file holds the options' help, the run's figures ([`Report`]) and
//! `main`; the modules: `config` (the command line), `answer` (checking an
//! answer), `session` (one session on its connection, HTTP parsing),
//! `driver` (a thread's sessions on one poll) and `legacy` (the legacy SSE
//! stream).

mod answer;
mod config;
mod driver;
mod legacy;
mod session;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::Events;

use config::{parse_args, Config, Mode, Transport};
use driver::{Driver, Phase, Plan, Tally};
use session::{Session, Step};

const USAGE: &str = "\
usage: loadgen --url http://HOST:PORT/PATH --sessions N [OPTIONS]

OPTIONS:
    --url URL                  the Streamable HTTP MCP endpoint (http only), or
                               with --transport sse the legacy SSE URL (…/sse)
    --transport streamable|sse Streamable HTTP, or legacy HTTP+SSE (2024-11-05):
                               GET stream, POSTs to its endpoint [default: streamable]
    --sessions N               concurrent sessions, one connection each [default: 1]
    --duration DUR             measure this long [default: 5s]
    --calls N                  measure N calls instead of a duration
    --payload BYTES            size of each echo message [default: 64]
    --warmup DUR               call this long before measuring [default: 1s]
    --mode call|idle           closed-loop calls, or open sessions and hold them [default: call]
    --hold DUR                 idle mode: hold the sessions this long, or
                               until stdin reaches EOF [default: 30s]
    --json                     one JSON object on the last line of stdout
    --threads N                client threads [default: cores, at most sessions]
    --setup-concurrency N      sessions being set up at once [default: 4]
    --timeout DUR              a request unanswered this long is an error [default: 10s]
    --setup-timeout DUR        time the initial set-up of every session may take [default: 60s]
    --max-time DUR             with --calls: stop after this long anyway [default: 300s]
    --no-delete                do not end the sessions with DELETE
    --header 'NAME: VALUE'     send this header with every request (repeatable)
    -h, --help                 print this help

DUR is a number with a unit: 500ms, 2s, 1m (a bare number means seconds).";

/// Error descriptions kept (and printed to stderr).
const KEPT_NOTES: usize = 8;
/// Longest response accepted (head and body).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Time the final DELETEs may take.
const DELETE_LIMIT: Duration = Duration::from_secs(3);
/// How often requests are checked against their deadline.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    let at = rank.clamp(1, sorted.len()) - 1;
    (sorted[at] + 500) / 1000
}

fn process_cpu() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe {
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time);
    }
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

struct Report {
    config: Config,
    tally: Tally,
    duration: Duration,
    ready: usize,
    cpu_share: f64,
}

impl Report {
    fn json(&mut self) -> serde_json::Value {
        self.tally.latencies.sort_unstable();
        self.tally.setups.sort_unstable();
        let t = &self.tally;
        let seconds = self.duration.as_secs_f64();
        let rate = if seconds > 0.0 {
            t.calls as f64 / seconds
        } else {
            0.0
        };
        serde_json::json!({
            "sessions": self.config.sessions,
            "duration_s": (seconds * 1000.0).round() / 1000.0,
            "calls": t.calls,
            "calls_per_s": rate.round() as u64,
            "p50_us": percentile_us(&t.latencies, 0.50),
            "p90_us": percentile_us(&t.latencies, 0.90),
            "p99_us": percentile_us(&t.latencies, 0.99),
            "max_us": t.latencies.last().map_or(0, |&ns| (ns + 500) / 1000),
            "setup_p50_us": percentile_us(&t.setups, 0.50),
            "setup_p99_us": percentile_us(&t.setups, 0.99),
            "errors": t.errors,
            "mode": match self.config.mode { Mode::Call => "call", Mode::Idle => "idle" },
            "transport": match self.config.transport {
                Transport::Streamable => "streamable",
                Transport::Sse => "sse",
            },
            "ready": self.ready,
            "payload": self.config.payload,
            "threads": self.config.threads,
            "reinits": t.reinits,
            "reconnects": t.reconnects,
            "dropped": t.dropped,
            "client_cpu_pct": (self.cpu_share * 1000.0).round() / 10.0,
        })
    }

    fn print_table(&mut self) {
        let json = self.json();
        let c = &self.config;
        let what = match c.mode {
            Mode::Call => match c.calls {
                Some(calls) => format!("call mode, {calls} calls after {:.1?} warm-up", c.warmup),
                None => format!(
                    "call mode, {:.1?} after {:.1?} warm-up",
                    c.duration, c.warmup
                ),
            },
            Mode::Idle => format!("idle mode, held up to {:.1?}", c.hold),
        };
        println!(
            "loadgen {}: {what}, {} sessions, {}-byte payload, {} thread(s)",
            c.url, c.sessions, c.payload, c.threads
        );
        let columns = [
            ("sessions", "sessions"),
            ("duration_s", "secs"),
            ("calls", "calls"),
            ("calls_per_s", "calls/s"),
            ("p50_us", "p50 us"),
            ("p90_us", "p90 us"),
            ("p99_us", "p99 us"),
            ("max_us", "max us"),
            ("setup_p50_us", "setup p50"),
            ("setup_p99_us", "setup p99"),
            ("errors", "errors"),
        ];
        let mut head = String::new();
        let mut row = String::new();
        for (key, title) in columns {
            let width = title.len().max(8);
            head.push_str(&format!("{title:>width$}  "));
            row.push_str(&format!("{:>width$}  ", json[key].to_string()));
        }
        println!("{}", head.trim_end());
        println!("{}", row.trim_end());
        println!(
            "ready {} of {}; re-initialized {}, reconnects {}, idle connections closed by the server {}; loadgen CPU {:.0}% of one core",
            self.ready,
            c.sessions,
            self.tally.reinits,
            self.tally.reconnects,
            self.tally.dropped,
            self.cpu_share * 100.0
        );
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/// Raises the soft open-file limit to the hard limit.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn run(config: Config) -> io::Result<Report> {
    let started = Instant::now();
    let cpu_before = process_cpu();
    let far = started + Duration::from_secs(365 * 24 * 3600);
    let setup_plan = Arc::new(Plan {
        config: config.clone(),
        measure_start: far,
        measure_end: far,
        hard_end: far,
        tickets: AtomicU64::new(0),
    });
    let now = Instant::now();
    let legacy = config.transport == Transport::Sse;
    let sessions: Vec<Session> = (0..config.sessions)
        .map(|i| Session::new(i, now, legacy))
        .collect();
    let mut events = Events::with_capacity(1024);
    let mut setup = Driver::new(sessions, setup_plan, Phase::Setup)?;
    setup.setup(
        &mut events,
        config.setup_concurrency,
        Instant::now() + config.setup_timeout,
    );
    let ready = setup
        .sessions
        .iter()
        .filter(|s| s.step == Step::Ready)
        .count();

    if config.mode == Mode::Idle {
        {
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "ready {ready}")?;
            stdout.flush()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::Builder::new().name("stdin".into()).spawn(move || {
            let mut sink = [0u8; 1024];
            let mut stdin = io::stdin();
            loop {
                match stdin.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            flag.store(true, Ordering::Relaxed);
        })?;
        let hold_start = Instant::now();
        setup.hold(&mut events, hold_start + config.hold, &stop);
        let held = hold_start.elapsed();
        if config.delete {
            setup.delete_all(&mut events, DELETE_LIMIT);
        }
        let cpu = process_cpu().saturating_sub(cpu_before);
        return Ok(Report {
            config,
            tally: setup.tally,
            duration: held,
            ready,
            cpu_share: cpu.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-9),
        });
    }

    // Call mode: the set-up tally carries over; the sessions go to the threads.
    let mut tally = std::mem::take(&mut setup.tally);
    let sessions = setup.into_sessions();
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let measure_end = match config.calls {
        Some(_) => far,
        None => measure_start + config.duration,
    };
    let hard_end = match config.calls {
        Some(_) => start + config.max_time,
        None => measure_end + config.timeout + Duration::from_secs(1),
    };
    let plan = Arc::new(Plan {
        config: config.clone(),
        measure_start,
        measure_end,
        hard_end,
        tickets: AtomicU64::new(0),
    });
    let cpu_run = process_cpu();
    let threads = config.threads;
    let mut groups: Vec<Vec<Session>> = (0..threads).map(|_| Vec::new()).collect();
    let total = sessions.len();
    for (at, session) in sessions.into_iter().enumerate() {
        groups[at * threads / total].push(session);
    }
    let workers: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(n, group)| {
            let plan = Arc::clone(&plan);
            let delete = config.delete;
            thread::Builder::new().name(format!("loadgen-{n}")).spawn(
                move || -> io::Result<Tally> {
                    let mut events = Events::with_capacity(1024);
                    let mut driver = Driver::new(group, plan, Phase::Run)?;
                    driver.run(&mut events);
                    if delete {
                        driver.delete_all(&mut events, DELETE_LIMIT);
                    }
                    Ok(driver.tally)
                },
            )
        })
        .collect::<io::Result<_>>()?;
    for worker in workers {
        match worker.join() {
            Ok(Ok(part)) => tally.merge(part),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(io::Error::other("a client thread panicked")),
        }
    }
    let run_wall = start.elapsed().as_secs_f64().max(1e-9);
    let cpu = process_cpu().saturating_sub(cpu_run);
    let duration = match config.calls {
        Some(_) => tally.last_count.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(measure_start)
        }),
        None => config.duration,
    };
    Ok(Report {
        config,
        tally,
        duration,
        ready,
        cpu_share: cpu.as_secs_f64() / run_wall,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(config) => config,
        Err(why) if why.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(why) => {
            eprintln!("loadgen: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    raise_file_limit();
    let _ = session::EXTRA_HEADERS.set(config.headers.clone());
    let json = config.json;
    let mut report = match run(config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(1);
        }
    };
    for note in &report.tally.notes {
        eprintln!("loadgen: error: {note}");
    }
    if report.tally.errors as usize > report.tally.notes.len() {
        eprintln!("loadgen: ... {} errors in all", report.tally.errors);
    }
    if json {
        println!("{}", report.json());
    } else {
        report.print_table();
    }
}
