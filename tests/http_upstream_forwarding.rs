//! mcphop in front of a fake Streamable HTTP upstream (`--upstream URL`):
//! which client headers are forwarded upstream (`--forward-header`,
//! `--upstream-header`), and an upstream 404 for its session ending the
//! client's session with 404.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. The fake upstream
//! runs in this process; mcphop is killed by a guard when the test ends, pass
//! or fail. No test peer is needed.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::time::Duration;

use common::{eventually, raw_exchange, Mcphop, SseStream};
use upstream::fake::{FakeReply, FakeUpstream, FAKE_PROTOCOL, FAKE_SESSION};
use upstream::raw::{
    answer, echo_body, echo_text, initialize_body, post, session_header, INITIALIZED,
};
use upstream::relay::SeenRequest;

// ===== forwarding rules ========================================================

const CLIENT_AUTH: &str = "Bearer client-secret";
const CLIENT_COOKIE: &str = "sid=client-cookie";

/// The client's own headers, on every request of the forwarding tests.
fn client_credentials() -> String {
    format!("Authorization: {CLIENT_AUTH}\r\nCookie: {CLIENT_COOKIE}\r\n")
}

/// Runs a whole session through mcphop in front of the fake upstream with
/// `options`: initialize, initialized, tools/call, a GET stream, DELETE, all
/// with the client's Authorization and Cookie. Returns what the fake saw.
fn forwarding_run(options: &[&str]) -> Vec<SeenRequest> {
    let fake = FakeUpstream::start(|_, _| None);
    // Every request the fake sees is checked as the session's: no health
    // probe among them.
    let mut options = options.to_vec();
    options.extend(["--health-interval", "0"]);
    let mcphop = Mcphop::start_http(&options, &fake.url());
    let port = mcphop.port;
    let credentials = client_credentials();

    let init = post(port, &credentials, &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
    let session = init
        .header("mcp-session-id")
        .expect("Mcp-Session-Id")
        .to_string();
    // The client sees mcphop's session id, never the upstream's.
    assert_eq!(session.len(), 32, "{session}");
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()), "{session}");
    assert_ne!(session, FAKE_SESSION);
    let result = answer(&init, 1).expect("initialize answer");
    assert_eq!(
        result["result"]["protocolVersion"], FAKE_PROTOCOL,
        "{result}"
    );

    let with_session = format!("{credentials}{}", session_header(&session));
    let initialized = post(
        port,
        &format!("{with_session}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n"),
        INITIALIZED,
    );
    assert_eq!(initialized.status, 202, "{initialized:?}");
    // No MCP-Protocol-Version from the client: mcphop still sends the
    // negotiated one upstream.
    let call = post(port, &with_session, &echo_body(2, "forwarded?"));
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(
        echo_text(&call, 2).as_deref(),
        Some("forwarded?"),
        "{call:?}"
    );

    // A GET stream: mcphop asks the upstream for one too (refused: 405).
    let get_request = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\
         {with_session}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n\r\n"
    );
    let get = SseStream::open(port, get_request.as_bytes());
    assert_eq!(get.status, 200, "client GET stream");
    assert!(
        eventually(Duration::from_secs(5), || fake
            .requests()
            .iter()
            .any(|r| r.method == "GET")),
        "mcphop asked the upstream for no GET stream:\n{}",
        fake.describe()
    );

    let delete = raw_exchange(
        port,
        format!(
            "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{with_session}\
             MCP-Protocol-Version: {FAKE_PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(delete.status, 200, "{delete:?}");
    drop(get);
    assert!(
        eventually(Duration::from_secs(5), || fake
            .requests()
            .iter()
            .any(|r| r.method == "DELETE")),
        "mcphop sent no DELETE upstream:\n{}",
        fake.describe()
    );

    // Nothing mcphop sent the client names the upstream's session.
    for response in [&init, &initialized, &call, &delete] {
        for (name, value) in &response.headers {
            assert!(
                !value.contains(FAKE_SESSION),
                "the client saw the upstream session id in {name}: {value}"
            );
        }
        assert!(
            !response.body.contains(FAKE_SESSION),
            "the client saw the upstream session id: {}",
            response.body
        );
    }

    let requests = fake.requests();
    for request in &requests {
        let what = format!("{} {:?}", request.method, request.mcp_method());
        assert_eq!(
            request.header("host"),
            Some(format!("127.0.0.1:{}", fake.port).as_str()),
            "{what}: Host must name the upstream"
        );
        assert_eq!(
            request.header("x-static"),
            Some("v"),
            "{what}: --upstream-header missing"
        );
        assert_eq!(request.header("cookie"), None, "{what}: Cookie forwarded");
        assert_eq!(request.target, "/mcp", "{what}");
        if request.mcp_method().as_deref() == Some("initialize") {
            assert_eq!(request.header("mcp-session-id"), None, "{what}");
            assert_eq!(request.header("mcp-protocol-version"), None, "{what}");
        } else {
            assert_eq!(
                request.header("mcp-session-id"),
                Some(FAKE_SESSION),
                "{what}: the upstream must see its own session id"
            );
            assert_eq!(
                request.header("mcp-protocol-version"),
                Some(FAKE_PROTOCOL),
                "{what}: the negotiated version"
            );
        }
    }
    let methods: Vec<Option<String>> = requests.iter().map(SeenRequest::mcp_method).collect();
    for method in ["initialize", "notifications/initialized", "tools/call"] {
        assert!(
            methods.iter().any(|m| m.as_deref() == Some(method)),
            "{method} missing upstream: {methods:?}"
        );
    }
    requests
}

#[test]
fn client_credentials_are_not_forwarded_by_default() {
    let requests = forwarding_run(&["--upstream-header", "X-Static: v"]);
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            None,
            "{} {:?}: the client's Authorization reached the upstream",
            request.method,
            request.mcp_method()
        );
    }
}

#[test]
fn forward_header_passes_authorization_on_posts() {
    let requests = forwarding_run(&[
        "--upstream-header",
        "X-Static: v",
        "--forward-header",
        "Authorization",
    ]);
    let posts: Vec<&SeenRequest> = requests.iter().filter(|r| r.method == "POST").collect();
    assert!(posts.len() >= 3, "{posts:?}");
    for request in posts {
        assert_eq!(
            request.header("authorization"),
            Some(CLIENT_AUTH),
            "POST {:?}: --forward-header Authorization not applied",
            request.mcp_method()
        );
    }
}

/// The upstream GET stream and DELETE that a client's GET and DELETE cause
/// should carry its forwarded Authorization too: an upstream that needs the
/// token refuses them otherwise (no server-to-client stream, and a session
/// never deleted). mcphop sends neither with it today (the exchanges are
/// started without the client's headers): see the report. Run with
/// `cargo test --test http_upstream_forwarding -- --ignored`.
#[test]
fn forward_header_passes_authorization_on_get_and_delete() {
    let requests = forwarding_run(&[
        "--upstream-header",
        "X-Static: v",
        "--forward-header",
        "Authorization",
    ]);
    let missing: Vec<String> = requests
        .iter()
        .filter(|r| r.header("authorization") != Some(CLIENT_AUTH))
        .map(|r| format!("{} {:?}", r.method, r.mcp_method()))
        .collect();
    assert!(
        missing.is_empty(),
        "--forward-header Authorization not applied to: {missing:?}"
    );
}

// ===== an upstream 404 ends the session =======================================

/// The fake upstream answers 404 to request number `index` (0-based;
/// 0 is initialize): the client gets 404 for it, and 404 for the session's
/// next request, which mcphop answers itself.
fn upstream_404_ends_session(index: usize) {
    let fake = FakeUpstream::start(move |_, n| (n == index).then(|| FakeReply::empty(404)));
    // Requests are counted by index: no health probe among them.
    let mcphop = Mcphop::start_http(&["--health-interval", "0"], &fake.url());
    let port = mcphop.port;
    let init = post(port, "", &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}");
    let session = init.header("mcp-session-id").unwrap().to_string();
    let headers = format!(
        "{}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n",
        session_header(&session)
    );
    let second = if index == 1 {
        post(port, &headers, INITIALIZED)
    } else {
        let initialized = post(port, &headers, INITIALIZED);
        assert_eq!(initialized.status, 202, "{initialized:?}");
        post(port, &headers, &echo_body(2, "refused"))
    };
    assert_eq!(
        second.status,
        404,
        "the upstream's 404 must reach the client: {second:?}\n{}",
        mcphop.log_text()
    );
    let seen = fake.requests().len();
    let later = post(port, &headers, &echo_body(3, "later"));
    assert_eq!(later.status, 404, "a later request: {later:?}");
    assert!(
        !fake
            .requests()
            .iter()
            .skip(seen)
            .any(|r| r.body.contains("later")),
        "the later request went upstream: mcphop should know the session ended"
    );
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("no longer knows the session")),
        "{}",
        mcphop.log_text()
    );
}

#[test]
fn upstream_404_on_a_notification_ends_the_session() {
    upstream_404_ends_session(1);
}

#[test]
fn upstream_404_on_a_request_ends_the_session() {
    upstream_404_ends_session(2);
}
