//! Limits per client (`--max-sessions-per-client`, `--initialize-rate`): a
//! client over either gets 429 with `Retry-After` and a JSON-RPC error for
//! its `initialize`; clients are apart (a token's name, or an IP address);
//! the refusals are counted in `/metrics`.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::time::Duration;

use common::{eventually, example_server, raw_exchange, Mcphop, RawResponse, TempDir};
use upstream::raw::{initialize_body, post, session_header};

fn start(options: &[&str]) -> Mcphop {
    Mcphop::start(options, &[example_server().display().to_string()])
}

fn initialize(mcphop: &Mcphop, extra: &str) -> RawResponse {
    post(mcphop.port, extra, &initialize_body(1))
}

fn assert_too_many(response: &RawResponse) {
    assert_eq!(response.status, 429, "{response:?}");
    let wait: u64 = response
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
    assert!(wait >= 1, "{response:?}");
    assert!(response.body.contains("Too Many Requests"), "{response:?}");
    assert!(response.body.contains("\"id\":1"), "{response:?}");
}

#[test]
fn sessions_over_the_per_client_limit_get_429_until_one_ends() {
    let mcphop = start(&["--max-sessions-per-client", "2"]);
    let first = initialize(&mcphop, "");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(initialize(&mcphop, "").status, 200);
    assert_too_many(&initialize(&mcphop, ""));
    // One ends: room again, once it is gone.
    let session = first.header("mcp-session-id").expect("session").to_string();
    let delete = raw_exchange(
        mcphop.port,
        format!(
            "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\n",
            mcphop.port,
            session_header(&session)
        )
        .as_bytes(),
    );
    assert_eq!(delete.status, 200, "{delete:?}");
    assert!(
        eventually(Duration::from_secs(10), || initialize(&mcphop, "").status
            == 200),
        "{}",
        mcphop.log_text()
    );
}

#[test]
fn sessions_opened_too_fast_get_429_and_the_bucket_refills() {
    let mcphop = start(&["--initialize-rate", "1", "--admin-listen", "127.0.0.1:0"]);
    // A burst of two, then the rate.
    assert_eq!(initialize(&mcphop, "").status, 200);
    assert_eq!(initialize(&mcphop, "").status, 200);
    assert_too_many(&initialize(&mcphop, ""));
    assert!(
        eventually(Duration::from_secs(5), || initialize(&mcphop, "").status
            == 200),
        "the bucket never refilled"
    );
    let admin = mcphop.admin_port();
    let metrics = raw_exchange(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n").as_bytes(),
    );
    assert!(
        metrics.body.lines().any(|line| line
            .starts_with("mcphop_client_limit_refusals_total{limit=\"rate\"} ")
            && !line.ends_with(" 0")),
        "{}",
        metrics.body
    );
}

#[test]
fn clients_with_their_own_tokens_have_their_own_limits() {
    let dir = TempDir::new("limits");
    let tokens = dir.write("tokens", "alice:token-a\nbob:token-b\n");
    let tokens = tokens.display().to_string();
    let mcphop = start(&[
        "--auth-token-file",
        &tokens,
        "--max-sessions-per-client",
        "1",
    ]);
    let alice = "Authorization: Bearer token-a\r\n";
    let bob = "Authorization: Bearer token-b\r\n";
    assert_eq!(initialize(&mcphop, alice).status, 200);
    assert_too_many(&initialize(&mcphop, alice));
    assert_eq!(initialize(&mcphop, bob).status, 200, "bob counts apart");
    assert!(mcphop
        .log_text()
        .contains("client alice: Too Many Requests"));
}
