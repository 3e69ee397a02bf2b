//! https upstreams: mcphop (`--upstream https://127.0.0.1:PORT/mcp
//! --upstream-ca ca.pem`) in front of Debian's nginx (from `.peers/deb`)
//! terminating TLS with a certificate made here by rcgen, in front of the
//! Python SDK Streamable HTTP server (`tests/peers/py_http_server.py`).
//! The Python SDK 1.x and 2.x clients work through it (basic, progress); a
//! certificate from an unrelated CA and an expired one are each refused
//! quickly with a 502 whose JSON-RPC error names the host and the problem;
//! 100 raw sessions share at most the pool cap of TLS connections (counted
//! by nginx's access log, `$connection`), and the log tells how many
//! handshakes were full and how many resumed (`$ssl_session_reused`).
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process started
//! here is killed by a guard when the test ends, pass or fail. A missing peer
//! fails the test with a clear message.

mod common;
#[path = "common/tls_rig.rs"]
mod tls_rig;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_progress_then_result, eventually, Mcphop, TempDir};
use serde_json::Value;
use tls_rig::{Ca, Nginx};
use upstream::raw::{call_echo, echo_text, initialize_body, post, session_header, INITIALIZED};
use upstream::{run_client, Server, Transport};

/// The pieces of one test: the CA mcphop trusts, nginx with a certificate,
/// the Python server behind it.
struct Rig {
    dir: TempDir,
    nginx: Nginx,
    _server: Server,
}

/// nginx with a certificate from `signer` (expired or not), and a CA file
/// for mcphop holding `trusted`'s certificate.
fn rig(signer: &Ca, expired: bool, trusted: &Ca) -> Rig {
    let server = Server::python();
    let nginx = Nginx::start(server.port, &signer.server_cert(expired));
    let dir = TempDir::new("ca");
    dir.write("ca.pem", &trusted.pem());
    Rig {
        dir,
        nginx,
        _server: server,
    }
}

impl Rig {
    fn ca_file(&self) -> String {
        self.dir.0.join("ca.pem").display().to_string()
    }

    fn mcphop(&self, extra: &[&str]) -> Mcphop {
        let ca = self.ca_file();
        let mut options = vec!["--upstream-ca", ca.as_str(), "--health-interval", "0"];
        options.extend_from_slice(extra);
        Mcphop::start_http(&options, &self.nginx.url())
    }
}

fn good_rig() -> Rig {
    let ca = Ca::new("mcphop test CA");
    rig(&ca, false, &ca)
}

// ===== the Python clients through TLS ==========================================

fn basic(major: u8) {
    let rig = good_rig();
    let mcphop = rig.mcphop(&[]);
    let result = run_client(&mcphop, major, "basic", &["--echo-tool", "echo"]);
    let context = format!("v{major} over https: {result}");
    assert_eq!(result["server"], "mcphop-py-http", "{context}");
    assert_eq!(result["echo"], format!("hello from v{major}"), "{context}");
    // The requests went through nginx's TLS listener.
    let access = rig.nginx.log("access.log");
    assert!(
        access.contains("POST /mcp") && access.contains("TLSv1.3"),
        "nginx saw no TLS request:\n{access}"
    );
}

#[test]
fn basic_v1_over_https() {
    basic(1);
}

#[test]
fn basic_v2_over_https() {
    basic(2);
}

fn progress(major: u8) {
    let rig = good_rig();
    let mcphop = rig.mcphop(&[]);
    let result = run_client(
        &mcphop,
        major,
        "progress",
        &[
            "--tool",
            "progress",
            "--args",
            r#"{"steps":3,"delay_ms":300}"#,
        ],
    );
    assert_progress_then_result(&result, &format!("v{major} over https: {result}"));
}

#[test]
fn progress_v1_over_https() {
    progress(1);
}

#[test]
fn progress_v2_over_https() {
    progress(2);
}

/// A legacy HTTP+SSE upstream over https: the session's own SSE stream on
/// a dedicated TLS connection, its POSTs over the pool.
#[test]
fn legacy_sse_upstream_over_https() {
    let ca = Ca::new("mcphop test CA");
    let server = Server::python_speaking(Transport::LegacySse);
    let nginx = Nginx::start(server.port, &ca.server_cert(false));
    let dir = TempDir::new("ca");
    let ca_file = dir.write("ca.pem", &ca.pem()).display().to_string();
    let mcphop = Mcphop::start_args(&[
        "--upstream-sse".to_string(),
        format!("https://127.0.0.1:{}/sse", nginx.port),
        "--upstream-ca".to_string(),
        ca_file,
        "--health-interval".to_string(),
        "0".to_string(),
    ]);
    let result = run_client(&mcphop, 1, "basic", &["--echo-tool", "echo"]);
    assert_eq!(result["echo"], "hello from v1", "{result}");
    let access = nginx.log("access.log");
    assert!(
        access.contains("GET /sse") && access.contains("POST /messages/"),
        "nginx saw no legacy SSE traffic:\n{access}"
    );
}

// ===== certificates refused ====================================================

/// An initialize through mcphop fails fast with a 502 whose JSON-RPC error
/// names the host and contains `reason`; mcphop logs it too.
fn assert_refused(rig: &Rig, reason: &str) {
    let mcphop = rig.mcphop(&[]);
    let started = Instant::now();
    let response = post(mcphop.port, "", &initialize_body(1));
    let took = started.elapsed();
    assert_eq!(
        response.status,
        502,
        "{response:?}\nmcphop log:\n{}",
        mcphop.log_text()
    );
    let body: Value = serde_json::from_str(&response.body).expect("a JSON-RPC error body");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("TLS with 127.0.0.1") && message.contains(reason),
        "the error names neither the host nor {reason:?}: {message}"
    );
    assert!(took < Duration::from_secs(5), "refused only after {took:?}");
    assert!(
        eventually(Duration::from_secs(2), || mcphop
            .log_text()
            .contains(reason)),
        "mcphop logged no {reason:?}:\n{}",
        mcphop.log_text()
    );
    eprintln!("refused in {took:?}: {message}");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("mcphop test CA");
    let other = Ca::new("an unrelated CA");
    let rig = rig(&ca, false, &other);
    assert_refused(&rig, "UnknownIssuer");
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = Ca::new("mcphop test CA");
    let rig = rig(&ca, true, &ca);
    assert_refused(&rig, "expired");
}

#[test]
fn an_unreadable_ca_file_stops_the_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_mcphop"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "https://127.0.0.1:1/mcp",
            "--upstream-ca",
            "/nonexistent/ca.pem",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run mcphop");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

// ===== 100 sessions over a capped pool of TLS connections ======================

/// One raw session on its own client connection: initialize, initialized,
/// an echo checked.
fn one_session(port: u16, n: usize, start: &Barrier) -> Result<(), String> {
    start.wait();
    let init = post(port, "", &initialize_body(1));
    if init.status != 200 {
        return Err(format!("initialize: {} {}", init.status, init.body));
    }
    let session = init
        .header("mcp-session-id")
        .ok_or("no Mcp-Session-Id")?
        .to_string();
    let initialized = post(port, &session_header(&session), INITIALIZED);
    if initialized.status != 202 {
        return Err(format!("initialized: {}", initialized.status));
    }
    let message = format!("hello {n}");
    let call = call_echo(port, &session, 2, &message);
    if echo_text(&call, 2).as_deref() != Some(message.as_str()) {
        return Err(format!("echo {n}: {} {}", call.status, call.body));
    }
    Ok(())
}

#[test]
fn a_hundred_sessions_share_the_capped_pool_of_tls_connections() {
    const SESSIONS: usize = 100;
    const CAP: usize = 8;
    let rig = good_rig();
    let mcphop = rig.mcphop(&[
        "--pool-max-per-host",
        "8",
        "--pool-max-idle-per-host",
        "8",
        "--pool-idle-timeout",
        "30s",
        "--pool-queue-timeout",
        "30s",
    ]);
    let port = mcphop.port;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let (tx, results) = mpsc::channel();
    let started = Instant::now();
    for n in 0..SESSIONS {
        let barrier = Arc::clone(&barrier);
        let tx = tx.clone();
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let outcome = std::panic::catch_unwind(|| one_session(port, n, &barrier))
                    .unwrap_or_else(|_| Err("a broken response".into()));
                let _ = tx.send(outcome);
            })
            .expect("spawn a client thread");
    }
    drop(tx);
    let deadline = started + Duration::from_secs(60);
    let mut failures = Vec::new();
    let mut done = 0;
    while done < SESSIONS {
        match results.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(outcome) => {
                done += 1;
                if let Err(why) = outcome {
                    failures.push(why);
                }
            }
            Err(_) => break,
        }
    }
    assert_eq!(done, SESSIONS, "sessions still running after 60 s");
    assert!(
        failures.is_empty(),
        "{} sessions failed, first: {:?}\nmcphop log:\n{}",
        failures.len(),
        &failures[..failures.len().min(3)],
        mcphop.log_text()
    );
    // nginx writes a request's log line when it ends.
    thread::sleep(Duration::from_millis(300));
    let conns = rig.nginx.connections();
    let requests = rig.nginx.log("access.log").lines().count();
    let resumed = conns.values().filter(|reused| **reused).count();
    eprintln!(
        "{SESSIONS} sessions in {:.1?}: {requests} requests over {} TLS connections \
         (cap {CAP}): {} full handshakes, {resumed} resumed",
        started.elapsed(),
        conns.len(),
        conns.len() - resumed
    );
    assert!(
        requests >= SESSIONS * 3,
        "nginx logged only {requests} requests"
    );
    assert!(
        !conns.is_empty() && conns.len() <= CAP,
        "{} TLS connections for a pool cap of {CAP}",
        conns.len()
    );
}

/// With no idle connection kept, every request opens a new TLS connection:
/// after the first full handshake, the shared client configuration's
/// session cache resumes the later ones.
#[test]
fn new_connections_resume_the_tls_session() {
    let rig = good_rig();
    let mcphop = rig.mcphop(&["--pool-max-idle-per-host", "0"]);
    let barrier = Barrier::new(1);
    for n in 0..4 {
        one_session(mcphop.port, n, &barrier)
            .unwrap_or_else(|why| panic!("session {n}: {why}\nmcphop log:\n{}", mcphop.log_text()));
    }
    thread::sleep(Duration::from_millis(300));
    let conns = rig.nginx.connections();
    let resumed = conns.values().filter(|reused| **reused).count();
    eprintln!(
        "4 sessions, no idle connections kept: {} TLS connections, {} full handshakes, {resumed} resumed",
        conns.len(),
        conns.len() - resumed
    );
    assert!(conns.len() >= 4, "{conns:?}");
    assert!(
        resumed * 2 >= conns.len(),
        "most handshakes should resume: {conns:?}"
    );
}

// ===== health probes over TLS ==================================================

/// GET `path` on mcphop's admin port: status and body.
fn admin_get(mcphop: &Mcphop, path: &str) -> (u16, String) {
    let port = mcphop.admin_port();
    let response = common::raw_exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    );
    (response.status, response.body)
}

/// The health probe of an https upstream does its GET over TLS, trusting
/// what mcphop trusts: ready with the right CA, unhealthy (and why) with a
/// certificate from another CA.
#[test]
fn health_probes_speak_tls_and_check_the_certificate() {
    let probes = [
        "--health-interval",
        "200ms",
        "--health-timeout",
        "1s",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let good = good_rig();
    let mcphop = good.mcphop(&probes);
    assert!(
        eventually(Duration::from_secs(10), || admin_get(&mcphop, "/readyz").0
            == 200),
        "not ready over TLS: {:?}\n{}",
        admin_get(&mcphop, "/status"),
        mcphop.log_text()
    );
    drop(mcphop);
    let ca = Ca::new("mcphop test CA");
    let other = Ca::new("an unrelated CA");
    let bad = rig(&ca, false, &other);
    let mcphop = bad.mcphop(&probes);
    assert!(
        eventually(Duration::from_secs(10), || {
            let (_, status) = admin_get(&mcphop, "/status");
            status.contains("\"unhealthy\"") && status.contains("UnknownIssuer")
        }),
        "a wrong certificate did not make the upstream unhealthy: {:?}\n{}",
        admin_get(&mcphop, "/status"),
        mcphop.log_text()
    );
    assert_eq!(admin_get(&mcphop, "/readyz").0, 503);
}
