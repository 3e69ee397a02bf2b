//! Keep-alive pool benchmark: a real mcphop binary in front of one Streamable
//! HTTP upstream (a small blocking server inside this executable), driven over
//! loopback by 1, 100 and 1000 client sessions, each on its own keep-alive
//! client connection, calling `tools/call` in a closed loop. Every answer is
//! checked (its id, and the echo of a payload unique to the session and call).
//!
//! Every session count runs twice, each time with a fresh mcphop and upstream:
//! with the default pool, and with `--pool-max-idle-per-host 0`, where a
//! released connection closes unless a queued request takes it over at once.
//! For each it prints calls per second, the requests the upstream served and
//! the sockets it accepted (and how many of those never carried a request),
//! their ratio, errors, the CPU each party used (and the rest of the machine,
//! to show interference), and mcphop's own pool summary, logged at shutdown.
//!
//! `cargo bench --bench pool` runs the full measurement (3 s per cell);
//! under `cargo test` (no `--bench` argument) it runs a seconds-long smoke
//! pass at 1 and 10 sessions that proves the harness works and fails on any
//! error. Figures are printed, never asserted.
//!
//! A fresh connection per request goes through tens of thousands of loopback
//! ports in seconds; mcphop closes first, so its side holds TIME_WAIT. Linux
//! reuses those for loopback connects by default (`net.ipv4.tcp_tw_reuse = 2`);
//! with it off, the fresh-connection cells may run out of ports.
//!
//! This file holds the cells (one mcphop and upstream per session count and
//! pool mode), the table and `main`; `upstream` is the upstream server and
//! `client` the client threads.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;
mod upstream;

use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use client::{drive, machine_busy, other_process_cpu, process_cpu, DriverOutcome, DriverPlan};
use common::Mcphop;
use upstream::{Upstream, UpstreamFigures};

/// Sessions in set-up (initialize + initialized) at once, per client thread:
/// mcphop listens with a backlog of 128.
const SETUP_WINDOW: usize = 32;
/// Time every session has to get set up.
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// Time the calls still in flight at the end of a cell have to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// Error descriptions kept per cell.
const KEPT_ERRORS: usize = 5;
/// Extra mcphop options for every cell, whitespace-separated (for trying
/// other pool settings); `--pool-max-idle-per-host 0` still comes last in the
/// fresh cells.
const EXTRA_ARGS_ENV: &str = "MCPHOP_POOL_BENCH_ARGS";

// ---------------------------------------------------------------------------
// Cells and the table.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The default pool.
    Pool,
    /// `--pool-max-idle-per-host 0`: a fresh connection per request.
    Fresh,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pool => "pool",
            Mode::Fresh => "fresh",
        }
    }
}

struct Cell {
    sessions: usize,
    mode: Mode,
    calls: u64,
    elapsed: Duration,
    errors: u64,
    error_notes: Vec<String>,
    upstream: UpstreamFigures,
    pool_line: String,
    exit: Option<i32>,
    /// CPU used during the calls, as a share of one core: mcphop, the
    /// upstream (this process but the client threads), the clients, and the
    /// rest of the machine (other processes, interrupts).
    cpu: (f64, f64, f64, f64),
}

impl Cell {
    fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn run_cell(
    sessions: usize,
    mode: Mode,
    duration: Duration,
    client_threads: usize,
    extra: &[String],
) -> Cell {
    let mut upstream = Upstream::start();
    let url = upstream.url();
    let mut options = vec!["--upstream", url.as_str(), "--log-level", "info"];
    options.extend(extra.iter().map(String::as_str));
    if mode == Mode::Fresh {
        options.extend(["--pool-max-idle-per-host", "0"]);
    }
    let mut proxy = Mcphop::start(&options, &[]);
    let threads = client_threads.clamp(1, sessions);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(OnceLock::new());
    let drivers: Vec<_> = (0..threads)
        .map(|thread_index| {
            let plan = DriverPlan {
                port: proxy.port,
                sessions: sessions * thread_index / threads
                    ..sessions * (thread_index + 1) / threads,
                duration,
                barrier: Arc::clone(&barrier),
                start: Arc::clone(&start),
            };
            thread::Builder::new()
                .name(format!("client-{thread_index}"))
                .spawn(move || drive(plan))
                .expect("spawn a client thread")
        })
        .collect();
    barrier.wait();
    let started = *start.get_or_init(Instant::now);
    let proxy_cpu_before = other_process_cpu(proxy.pid());
    let own_cpu_before = process_cpu();
    let machine_before = machine_busy();
    let outcomes: Vec<DriverOutcome> = drivers
        .into_iter()
        .map(|driver| driver.join().expect("client thread"))
        .collect();
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let proxy_cpu = other_process_cpu(proxy.pid()).saturating_sub(proxy_cpu_before);
    let own_cpu = process_cpu().saturating_sub(own_cpu_before);
    let machine = machine_busy().saturating_sub(machine_before);
    let rest_cpu = machine.saturating_sub(proxy_cpu + own_cpu);
    let client_cpu: Duration = outcomes.iter().map(|outcome| outcome.cpu).sum();
    let upstream_cpu = own_cpu.saturating_sub(client_cpu);

    // Shutdown: mcphop ends every session (a DELETE upstream each) and logs
    // its pool summary.
    proxy.signal(libc::SIGTERM);
    let exit = proxy.wait_exit(Duration::from_secs(30));
    // The log thread may still be reading what mcphop wrote last (a line per
    // ended session comes first).
    common::eventually(Duration::from_secs(5), || {
        proxy.log_text().contains("shutdown complete")
    });
    let log = proxy.log_text();
    let pool_line = log
        .lines()
        .find_map(|line| line.split("upstream pool: ").nth(1))
        .unwrap_or("(no pool summary in mcphop's log)")
        .to_string();
    drop(proxy);
    upstream.stop();
    let figures = upstream.figures();

    let calls = outcomes.iter().map(|outcome| outcome.calls).sum();
    let last = outcomes
        .iter()
        .filter_map(|outcome| outcome.last_answer)
        .max()
        .unwrap_or(started);
    let mut errors: u64 = outcomes.iter().map(|outcome| outcome.errors).sum();
    let mut error_notes: Vec<String> = outcomes
        .into_iter()
        .flat_map(|outcome| outcome.error_notes)
        .take(KEPT_ERRORS)
        .collect();
    if figures.bad > 0 {
        errors += figures.bad;
        error_notes.push(format!(
            "the upstream got {} request(s) it could not serve",
            figures.bad
        ));
    }
    if exit != Some(0) {
        errors += 1;
        error_notes.push(format!("mcphop exited with {exit:?}"));
    }
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .take(KEPT_ERRORS)
        .collect();
    for warning in warnings {
        error_notes.push(format!("mcphop: {warning}"));
    }
    Cell {
        sessions,
        mode,
        calls,
        elapsed: last.saturating_duration_since(started),
        errors,
        error_notes,
        upstream: figures,
        pool_line,
        exit,
        cpu: (
            proxy_cpu.as_secs_f64() / wall,
            upstream_cpu.as_secs_f64() / wall,
            client_cpu.as_secs_f64() / wall,
            rest_cpu.as_secs_f64() / wall,
        ),
    }
}

fn print_header() {
    println!(
        "{:>8}  {:<5}  {:>8}  {:>8}  {:>9}  {:>8}  {:>7}  {:>10}  {:>7}  {:>6}  {:>18}",
        "sessions",
        "mode",
        "calls/s",
        "calls",
        "upstr.req",
        "sockets",
        "unused",
        "req/socket",
        "reuse",
        "errors",
        "cpu% m/u/c/rest"
    );
}

fn print_row(cell: &Cell) {
    let figures = &cell.upstream;
    let per_socket = figures.requests as f64 / figures.connections.max(1) as f64;
    let reuse = if figures.requests == 0 {
        0.0
    } else {
        100.0 * (1.0 - figures.connections as f64 / figures.requests as f64)
    };
    println!(
        "{:>8}  {:<5}  {:>8.0}  {:>8}  {:>9}  {:>8}  {:>7}  {:>10.1}  {:>6.2}%  {:>6}  {:>18}",
        cell.sessions,
        cell.mode.name(),
        cell.calls_per_second(),
        cell.calls,
        figures.requests,
        figures.connections,
        figures.unused,
        per_socket,
        reuse,
        cell.errors,
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}",
            cell.cpu.0 * 100.0,
            cell.cpu.1 * 100.0,
            cell.cpu.2 * 100.0,
            cell.cpu.3 * 100.0
        ),
    );
}

/// Raises the soft limit on open files (children inherit it): 1000 sessions
/// take 1000 client sockets in mcphop and here, plus the upstream's.
fn raise_file_limit(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            eprintln!(
                "warning: open-file limit is {} (hard {}); 1000 sessions may fail",
                limit.rlim_cur, limit.rlim_max
            );
        }
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (counts, duration): (&[usize], Duration) = if full {
        (&[1, 100, 1000], Duration::from_secs(3))
    } else {
        (&[1, 10], Duration::from_millis(300))
    };
    raise_file_limit(16384);
    let client_threads = 2;
    let extra: Vec<String> = std::env::var(EXTRA_ARGS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    println!(
        "mcphop keep-alive pool benchmark ({}): one Streamable HTTP upstream, {:.1} s of tools/call per cell",
        if full { "full" } else { "smoke" },
        duration.as_secs_f64()
    );
    for line in [
        "  pool  = default pool options (--pool-max-idle-per-host 32, --pool-max-per-host 256, --pool-max-requests 1000)",
        "  fresh = --pool-max-idle-per-host 0: a released connection closes, unless a queued request takes it over",
        "  upstr.req, sockets: requests the upstream served and connections it accepted over the whole cell",
        "    (initialize + initialized per session, the calls, one DELETE per session at shutdown)",
        "  unused: accepted connections that were closed without carrying a request",
        "  reuse = 1 - sockets / upstr.req",
        "  cpu% during the calls (100 = one core): m = mcphop, u = upstream, c = clients, rest = the rest of the machine",
    ] {
        println!("{line}");
    }
    if !extra.is_empty() {
        println!(
            "  extra mcphop options in every cell ({EXTRA_ARGS_ENV}): {}",
            extra.join(" ")
        );
    }
    println!();
    let mut cells = Vec::new();
    print_header();
    for &sessions in counts {
        for mode in [Mode::Pool, Mode::Fresh] {
            let cell = run_cell(sessions, mode, duration, client_threads, &extra);
            print_row(&cell);
            cells.push(cell);
        }
    }
    println!();
    println!("mcphop's pool summaries (at shutdown):");
    for cell in &cells {
        println!(
            "  {:>4} {:<5} {}",
            cell.sessions,
            cell.mode.name(),
            cell.pool_line
        );
    }
    let troubled: Vec<&Cell> = cells
        .iter()
        .filter(|cell| !cell.error_notes.is_empty())
        .collect();
    if !troubled.is_empty() {
        println!();
        println!("errors and warnings:");
        for cell in &troubled {
            for note in &cell.error_notes {
                println!("  {:>4} {:<5} {note}", cell.sessions, cell.mode.name());
            }
        }
    }
    let upstream_check: Vec<String> = cells
        .iter()
        .map(|cell| {
            let f = &cell.upstream;
            format!(
                "{} {}: initialize {} initialized {} calls {} delete {}",
                cell.sessions,
                cell.mode.name(),
                f.initializes,
                f.notifications,
                f.calls,
                f.deletes
            )
        })
        .collect();
    println!();
    println!("upstream requests by kind: {}", upstream_check.join("; "));
    if !full {
        for cell in &cells {
            assert_eq!(
                cell.errors,
                0,
                "{} sessions, {}: errors: {:?}",
                cell.sessions,
                cell.mode.name(),
                cell.error_notes
            );
            assert_eq!(cell.exit, Some(0));
            assert!(cell.calls > 0 && cell.upstream.connections > 0);
        }
    }
}
