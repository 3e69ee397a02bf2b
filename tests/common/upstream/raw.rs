//! Raw-HTTP client helpers of the HTTP-upstream tests: request bodies, POSTs
//! to mcphop, answers, a raw session, a ping straight to an upstream, and
//! mcphop's `upstream pool:` summary at shutdown.

use std::time::Duration;

use serde_json::{json, Value};

use super::{PROTOCOL, RAW_PROTOCOL};
use crate::common::{eventually, post_request, raw_exchange, Mcphop, RawResponse};

// ===== raw client helpers ======================================================

pub fn initialize_body(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": RAW_PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}
    }})
    .to_string()
}

pub fn echo_body(id: u64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}}})
    .to_string()
}

pub const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// POSTs `body` to mcphop on a fresh connection with `extra` header lines.
pub fn post(port: u16, extra: &str, body: &str) -> RawResponse {
    raw_exchange(port, &post_request(port, extra, body))
}

pub fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

/// The JSON-RPC answer with `id` in a response (SSE events or a JSON body).
pub fn answer(response: &RawResponse, id: u64) -> Option<Value> {
    let messages = if response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/event-stream"))
    {
        response.sse_messages()
    } else {
        serde_json::from_str::<Value>(&response.body)
            .map(|v| vec![v])
            .unwrap_or_default()
    };
    messages.into_iter().find(|m| m["id"] == json!(id))
}

/// The text of an echo tool's answer.
pub fn echo_text(response: &RawResponse, id: u64) -> Option<String> {
    answer(response, id).and_then(|m| {
        m["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_string)
    })
}

/// Opens a session on mcphop with raw HTTP (initialize, then
/// notifications/initialized); its mcphop session id.
pub fn raw_session(mcphop: &Mcphop) -> String {
    let port = mcphop.port;
    let response = post(port, "", &initialize_body(1));
    assert_eq!(
        response.status,
        200,
        "initialize: {response:?}\n{}",
        mcphop.log_text()
    );
    assert!(answer(&response, 1).is_some_and(|m| m.get("result").is_some()));
    let session = response
        .header("mcp-session-id")
        .expect("Mcp-Session-Id")
        .to_string();
    let initialized = post(port, &session_header(&session), INITIALIZED);
    assert_eq!(initialized.status, 202, "{initialized:?}");
    session
}

/// A tools/call echo on `session`.
pub fn call_echo(port: u16, session: &str, id: u64, message: &str) -> RawResponse {
    post(
        port,
        &format!(
            "{}MCP-Protocol-Version: {RAW_PROTOCOL}\r\n",
            session_header(session)
        ),
        &echo_body(id, message),
    )
}

/// POSTs a `ping` straight to an upstream (no mcphop) on `upstream_session`;
/// the response. For a live session it is answered; for one the upstream
/// ended, it is refused.
pub fn direct_ping(upstream_port: u16, upstream_session: &str) -> RawResponse {
    let body = r#"{"jsonrpc":"2.0","id":77,"method":"ping"}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{upstream_port}\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         Mcp-Session-Id: {upstream_session}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_exchange(upstream_port, request.as_bytes())
}

/// Sends SIGTERM to mcphop, waits for it to exit, and returns its exit code
/// and the `upstream pool: ...` summary line it logged.
pub fn shutdown_summary(mcphop: &mut Mcphop) -> (Option<i32>, String) {
    mcphop.signal(libc::SIGTERM);
    let code = mcphop.wait_exit(Duration::from_secs(20));
    let found = eventually(Duration::from_secs(3), || {
        mcphop.log_text().contains("upstream pool:")
    });
    assert!(
        found,
        "no `upstream pool:` line at shutdown:\n{}",
        mcphop.log_text()
    );
    let log = mcphop.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("upstream pool:"))
        .unwrap_or_default()
        .to_string();
    (code, line)
}

/// A `name=N` figure in the pool summary line.
pub fn figure(summary: &str, name: &str) -> u64 {
    summary
        .split([' ', '[', ']'])
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {summary:?}"))
}
