//! Health checks and the admin endpoints (`--admin-listen`) against a real
//! upstream, the Python SDK Streamable HTTP server, behind a recording relay
//! (which also shows that a probe never creates an upstream session):
//! `/readyz` flips to 503 when the upstream dies and back when it returns,
//! requests fail fast meanwhile, `/status` says why, `/metrics` parses with
//! `prometheus_client`'s own parser and counts a known workload exactly, and
//! a stdio command that keeps crashing at start-up is refused with 503, and
//! `/readyz` turns 503 at once on SIGTERM while requests in flight drain.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, peers_dir, raw_exchange, repo_root, Mcphop};
use serde_json::Value;
use upstream::raw::{call_echo, echo_text, initialize_body, post, raw_session};
use upstream::relay::Relay;
use upstream::Server;

/// Probe every 200 ms, each within 200 ms: unhealthy after 3 failures.
const INTERVAL_MS: u64 = 200;
const HEALTH: [&str; 4] = ["--health-interval", "200ms", "--health-timeout", "200ms"];

/// The admin port mcphop logged at start.
fn admin_port(mcphop: &Mcphop) -> u16 {
    mcphop.admin_port()
}

/// GET `path` on the admin port: status and body.
fn admin_get(port: u16, path: &str) -> (u16, String) {
    let response = raw_exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    );
    (response.status, response.body)
}

fn start(server_port: u16) -> (Relay, Mcphop, u16) {
    let relay = Relay::start(server_port);
    let mut args = vec![
        "--upstream".to_string(),
        relay.url(),
        "--admin-listen".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    args.extend(HEALTH.iter().map(|arg| arg.to_string()));
    let mcphop = Mcphop::start_args(&args);
    let admin = admin_port(&mcphop);
    (relay, mcphop, admin)
}

#[test]
fn readiness_follows_the_upstream_and_requests_fail_fast_while_it_is_down() {
    let mut server = Server::python();
    let port = server.port;
    let (relay, mcphop, admin) = start(port);
    assert_eq!(admin_get(admin, "/livez").0, 200);
    assert!(
        eventually(Duration::from_secs(5), || admin_get(admin, "/readyz").0
            == 200),
        "never ready: {:?}\n{}",
        admin_get(admin, "/status"),
        mcphop.log_text()
    );
    let session = raw_session(&mcphop);
    assert_eq!(
        echo_text(&call_echo(mcphop.port, &session, 2, "up"), 2).as_deref(),
        Some("up")
    );

    server.kill();
    let killed = Instant::now();
    let flipped = eventually(Duration::from_secs(5), || {
        admin_get(admin, "/readyz").0 == 503
    });
    let took = killed.elapsed();
    assert!(flipped, "/readyz still 200 after the upstream died");
    let bound = Duration::from_millis(INTERVAL_MS * 3);
    eprintln!("/readyz went 503 {took:?} after the kill (interval x threshold = {bound:?})");
    // One interval for the probe cycle in flight, and the probe's timeout.
    assert!(
        took <= bound + Duration::from_millis(2 * INTERVAL_MS),
        "{took:?}"
    );
    let (status, body) = admin_get(admin, "/status");
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(report["ready"], false, "{report}");
    assert_eq!(report["upstreams"][0]["state"], "unhealthy", "{report}");
    assert!(report["upstreams"][0]["last_error"].is_string(), "{report}");

    // Requests and new sessions fail fast, with a JSON-RPC error.
    let asked = Instant::now();
    let refused = call_echo(mcphop.port, &session, 3, "down?");
    let fast = asked.elapsed();
    eprintln!("a request while unhealthy was answered in {fast:?}");
    assert_eq!(refused.status, 503, "{refused:?}");
    let error: Value = serde_json::from_str(&refused.body).expect("JSON-RPC error");
    assert_eq!(error["id"], 3, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("unhealthy"));
    assert!(fast < Duration::from_millis(50), "{fast:?}");
    let fresh = post(mcphop.port, "", &initialize_body(1));
    assert_eq!(fresh.status, 503, "{fresh:?}");

    // It comes back on the same port: ready again, and calls work.
    let _server = Server::python_on(port).expect("restart the upstream");
    assert!(
        eventually(Duration::from_secs(10), || admin_get(admin, "/readyz").0
            == 200),
        "not ready after the upstream came back: {:?}",
        admin_get(admin, "/status")
    );
    let session = raw_session(&mcphop);
    assert_eq!(
        echo_text(&call_echo(mcphop.port, &session, 2, "back"), 2).as_deref(),
        Some("back")
    );

    // Probes never made an upstream session: one initialize per client
    // session, and probes are plain GETs without a session id.
    let requests = relay.requests();
    let initializes = requests
        .iter()
        .filter(|r| r.mcp_method().as_deref() == Some("initialize"))
        .count();
    assert_eq!(initializes, 2, "{}", relay.describe());
    let probes = requests
        .iter()
        .filter(|r| r.header("user-agent") == Some("mcphop-health"))
        .collect::<Vec<_>>();
    assert!(probes.len() >= 3, "{}", relay.describe());
    assert!(probes
        .iter()
        .all(|r| r.method == "GET" && r.header("mcp-session-id").is_none()));
}

/// The samples `prometheus_client`'s parser reads from `/metrics`.
fn parsed_metrics(admin: u16) -> Vec<(String, Value, f64)> {
    let python = peers_dir().join("prom/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/peers/install.sh",
        python.display()
    );
    let output = Command::new(python)
        .arg(repo_root().join("tests/peers/parse_metrics.py"))
        .arg(format!("http://127.0.0.1:{admin}/metrics"))
        .output()
        .expect("run parse_metrics.py");
    assert!(
        output.status.success(),
        "prometheus_client rejected /metrics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    parsed["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap_or_default().to_string(),
                s[1].clone(),
                s[2].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, value)| *value)
}

#[test]
fn metrics_parse_and_count_a_known_workload() {
    let server = Server::python();
    let (_relay, mcphop, admin) = start(server.port);
    for n in 0..10 {
        let session = raw_session(&mcphop);
        for call in 0..5 {
            let message = format!("s{n}c{call}");
            let response = call_echo(mcphop.port, &session, 10 + call, &message);
            assert_eq!(
                echo_text(&response, 10 + call).as_deref(),
                Some(message.as_str())
            );
        }
    }
    let samples = parsed_metrics(admin);
    let calls = sample(
        &samples,
        "mcphop_requests_total",
        &[("method", "tools/call"), ("outcome", "ok")],
    );
    assert_eq!(calls, Some(50.0), "{samples:?}");
    let histogram_count = sample(
        &samples,
        "mcphop_request_duration_seconds_count",
        &[("method", "tools/call"), ("outcome", "ok")],
    );
    assert_eq!(histogram_count, Some(50.0));
    assert_eq!(
        sample(
            &samples,
            "mcphop_requests_total",
            &[("method", "initialize"), ("outcome", "ok")]
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(&samples, "mcphop_sessions_created_total", &[]),
        Some(10.0)
    );
    assert_eq!(sample(&samples, "mcphop_sessions_active", &[]), Some(10.0));
    assert_eq!(sample(&samples, "mcphop_upstream_healthy", &[]), Some(1.0));
    assert!(sample(&samples, "mcphop_client_received_bytes_total", &[]).unwrap_or(0.0) > 0.0);
    assert!(sample(&samples, "mcphop_process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(sample(&samples, "mcphop_pool_connects_total", &[]).unwrap_or(0.0) >= 1.0);
}

#[test]
fn a_command_that_keeps_crashing_is_refused_with_503() {
    let mcphop = Mcphop::start_args(&[
        "--admin-listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--".to_string(),
        "false".to_string(),
    ]);
    let admin = admin_port(&mcphop);
    assert_eq!(
        admin_get(admin, "/readyz").0,
        200,
        "a command is healthy until it crashes"
    );
    let mut statuses = Vec::new();
    for id in 1..=8 {
        let response = post(mcphop.port, "", &initialize_body(id));
        statuses.push(response.status);
        if response.status == 503 {
            assert!(response.body.contains("keeps exiting"), "{response:?}");
            break;
        }
        // Let the crash be reaped before the next try.
        thread_sleep_until_reaped(&mcphop, id as usize);
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "{statuses:?}\n{}",
        mcphop.log_text()
    );
    assert_eq!(
        statuses.len(),
        6,
        "five crashes, then refusals: {statuses:?}"
    );
    let (status, body) = admin_get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    let samples = parsed_metrics(admin);
    assert_eq!(
        sample(&samples, "mcphop_children_spawned_total", &[]),
        Some(5.0)
    );
    assert_eq!(
        sample(&samples, "mcphop_children_exited_total", &[]),
        Some(5.0)
    );
}

fn thread_sleep_until_reaped(mcphop: &Mcphop, count: usize) {
    let reaped = eventually(Duration::from_secs(5), || {
        mcphop.log_text().matches("exited with status").count() >= count
            || mcphop.log_text().matches("not started").count() >= count
    });
    assert!(reaped, "{}", mcphop.log_text());
}

/// SIGTERM: `/readyz` answers 503 at once while the requests in flight
/// finish (the admin listener keeps answering while mcphop drains), so a
/// balancer's health check stops sending it new sessions; `/livez` stays
/// 200 until the process exits.
#[test]
fn readyz_turns_503_at_once_on_sigterm_while_requests_drain() {
    let example = common::example_server().display().to_string();
    let mut mcphop = Mcphop::start(
        &["--admin-listen", "127.0.0.1:0", "--shutdown-grace", "3s"],
        &[example],
    );
    let admin = admin_port(&mcphop);
    assert_eq!(admin_get(admin, "/readyz").0, 200);
    let session = common::open_session(mcphop.port);
    // A call that stays in flight (the example's `wait` tool answers only
    // a cancel): the drain lasts the whole grace.
    let body =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"wait","arguments":{}}}"#;
    let mut stream = common::SseStream::open(
        mcphop.port,
        &common::post_request(mcphop.port, &format!("Mcp-Session-Id: {session}\r\n"), body),
    );
    assert_eq!(stream.status, 200);
    let signalled = Instant::now();
    mcphop.signal(libc::SIGTERM);
    let (status, why) = admin_get(admin, "/readyz");
    let took = signalled.elapsed();
    assert_eq!((status, why.as_str()), (503, "shutting down\n"), "{took:?}");
    assert!(took < Duration::from_millis(500), "503 took {took:?}");
    assert_eq!(admin_get(admin, "/livez").0, 200);
    assert!(
        mcphop.wait_exit(Duration::from_millis(500)).is_none(),
        "mcphop exited with a request in flight, before its grace"
    );
    assert_eq!(admin_get(admin, "/readyz").0, 503, "still draining");
    // The grace ends: the call gets its error, and mcphop exits cleanly.
    let rest = stream.rest();
    assert!(
        rest.iter()
            .any(|item| item.json().is_some_and(|m| m["id"] == 9)),
        "{rest:?}"
    );
    assert_eq!(mcphop.wait_exit(Duration::from_secs(10)), Some(0));
}
