//! Round-trip benchmark: a real mcphop binary in front of a minimal stdio MCP
//! server (this same executable, in server mode), driven over loopback with
//! keep-alive HTTP/1.1 clients. Prints session set-up time, call latency
//! percentiles at one session, calls per second at 1 and 8 sessions, and
//! mcphop's resident memory idle and per idle session (children excluded).
//!
//! `cargo bench --bench roundtrip` runs the full measurement; under
//! `cargo test` (no `--bench` argument) it runs a seconds-long smoke pass that
//! proves the harness still works. Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{read_buffered_response, Mcphop, POST_HEADERS};

/// Set in the environment of the upstream copy of this executable.
const SERVER_MODE_ENV: &str = "MCPHOP_BENCH_UPSTREAM";

/// A minimal stdio MCP server: answers initialize, and tools/call with an
/// echo of the request's `arguments.message`. Fast enough not to be the
/// bottleneck.
fn serve_stdio() {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(id) = message.get("id") else {
            continue;
        };
        let result = match message.get("method").and_then(|m| m.as_str()) {
            Some("initialize") => serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench-upstream", "version": "0"}
            }),
            _ => {
                let text = message["params"]["arguments"]["message"].clone();
                serde_json::json!({"content": [{"type": "text", "text": text}]})
            }
        };
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result});
        if writeln!(stdout, "{answer}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            return;
        }
    }
}

/// One client session on its own keep-alive connection.
struct Client {
    reader: BufReader<TcpStream>,
    port: u16,
    session: String,
    next_id: u64,
}

impl Client {
    fn open(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).ok();
        let mut client = Client {
            reader: BufReader::new(stream),
            port,
            session: String::new(),
            next_id: 1,
        };
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#;
        let response = client.exchange(init);
        client.session = response
            .header("mcp-session-id")
            .expect("session id")
            .to_string();
        client
    }

    fn exchange(&mut self, body: &str) -> common::RawResponse {
        let session = if self.session.is_empty() {
            String::new()
        } else {
            format!("Mcp-Session-Id: {}\r\n", self.session)
        };
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{POST_HEADERS}{session}Content-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("write");
        read_buffered_response(&mut self.reader)
    }

    /// One tools/call; checks the echoed answer.
    fn call(&mut self, payload: &str) {
        let id = self.next_id;
        self.next_id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{payload}"}}}}}}"#
        );
        let response = self.exchange(&body);
        let messages = response.sse_messages();
        let last = messages.last().expect("an answer");
        assert_eq!(last["id"], id);
        assert_eq!(last["result"]["content"][0]["text"], payload);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    if std::env::var_os(SERVER_MODE_ENV).is_some() {
        serve_stdio();
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let (calls, duration, idle_sessions) = if full {
        (5000, Duration::from_secs(3), 100)
    } else {
        (50, Duration::from_millis(300), 10)
    };
    let me = std::env::current_exe()
        .expect("own path")
        .display()
        .to_string();
    let upstream = vec!["env".to_string(), format!("{SERVER_MODE_ENV}=1"), me];
    let proxy = Mcphop::start(&[], &upstream);
    let port = proxy.port;
    thread::sleep(Duration::from_millis(100));
    let idle_rss = rss_kib(proxy.pid());

    println!(
        "mcphop round-trip benchmark ({})",
        if full { "full" } else { "smoke" }
    );
    println!("  idle RSS of mcphop: {idle_rss} KiB");

    // Session set-up, including the child's start.
    let mut setups = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let _client = Client::open(port);
        setups.push(started.elapsed());
    }
    setups.sort();
    println!(
        "  session set-up (initialize, child spawn included): p50 {:.0} us",
        micros(percentile(&setups, 0.5))
    );

    // Latency at one session.
    let payload = "x".repeat(64);
    let mut client = Client::open(port);
    for _ in 0..20 {
        client.call(&payload);
    }
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client.call(&payload);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "  tools/call latency, 1 session, {calls} calls: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        micros(percentile(&latencies, 0.5)),
        micros(percentile(&latencies, 0.9)),
        micros(percentile(&latencies, 0.99)),
        micros(*latencies.last().unwrap_or(&Duration::ZERO)),
    );

    // Throughput at 1 and 8 sessions, closed loop.
    for sessions in [1usize, 8] {
        let deadline = Instant::now() + duration;
        let workers: Vec<_> = (0..sessions)
            .map(|_| {
                let payload = payload.clone();
                thread::spawn(move || {
                    let mut client = Client::open(port);
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        client.call(&payload);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let started = Instant::now();
        let total: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!("  calls/s at {sessions} session(s): {rate:.0}");
    }

    // Memory per idle session (mcphop only; the children are separate processes).
    let before = rss_kib(proxy.pid());
    let idle: Vec<Client> = (0..idle_sessions).map(|_| Client::open(port)).collect();
    thread::sleep(Duration::from_millis(200));
    let after = rss_kib(proxy.pid());
    println!(
        "  RSS with {idle_sessions} more idle sessions: {after} KiB ({:.1} KiB per session)",
        (after.saturating_sub(before)) as f64 / idle_sessions as f64
    );
    drop(idle);
}
