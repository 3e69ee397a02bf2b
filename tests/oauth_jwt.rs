//! mcphop as an OAuth 2.1 resource server (`--auth-issuer`,
//! `--auth-audience`), against a test authorization server it reaches
//! over loopback (`common/issuer.rs`), which mints tokens with its own
//! keys and serves its metadata and JWK Set:
//!
//! - a valid token works; expired, wrong audience, wrong issuer and forged
//!   tokens each get 401 naming the protected resource metadata, which is
//!   served; the upstream never sees the token; a session answers only to
//!   the subject that opened it;
//! - a key rotation (a new `kid`) is picked up without a restart, and an
//!   unknown `kid` fetches the key set at most once per
//!   `--auth-jwks-refresh`;
//! - an issuer down at start-up, or hung later, blocks nothing: requests
//!   that need its keys get 503 once the fetch fails or times out, while
//!   other sessions go on and keys already fetched keep working;
//! - the key set is fetched over https (nginx terminating TLS in front of
//!   the issuer), trusting `--upstream-ca` and nothing else;
//! - the OAuth clients of the Python SDK (1.x and 2.x) and of the
//!   TypeScript SDK discover the issuer from mcphop's 401 and run the whole
//!   flow (registration, authorization, token) to a working session.
//!
//! Every mcphop and issuer is stopped by its guard, pass or fail.

mod common;
#[path = "common/issuer.rs"]
mod issuer;
#[path = "common/tls_rig.rs"]
mod tls_rig;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    example_server, peers_dir, raw_exchange, repo_root, run_bounded, Mcphop, RawResponse, TempDir,
    INITIALIZE,
};
use issuer::{claims, Issuer, Mode, Signer};
use serde_json::Value;
use tls_rig::{Ca, Nginx};
use upstream::fake::FakeUpstream;
use upstream::free_port;
use upstream::raw::{echo_body, initialize_body, post, session_header, INITIALIZED};

const AUDIENCE: &str = "http://127.0.0.1/mcp";
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// mcphop in front of the example server, taking `issuer`'s tokens.
fn start(issuer: &str, extra: &[&str]) -> Mcphop {
    let mut options = vec!["--auth-issuer", issuer, "--auth-audience", AUDIENCE];
    options.extend_from_slice(extra);
    Mcphop::start(&options, &[example_server().display().to_string()])
}

/// Opens a session with `token`; its id.
fn open_session(mcphop: &Mcphop, token: &str) -> String {
    let init = post(mcphop.port, &bearer(token), INITIALIZE);
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
    let session = init
        .header("mcp-session-id")
        .expect("session id")
        .to_string();
    let extra = format!("{}{}", bearer(token), session_header(&session));
    assert_eq!(post(mcphop.port, &extra, INITIALIZED).status, 202);
    session
}

/// A `tools/list` in `session` with `token`.
fn list(port: u16, token: &str, session: &str) -> RawResponse {
    post(
        port,
        &format!("{}{}", bearer(token), session_header(session)),
        LIST,
    )
}

fn assert_401(response: &RawResponse, why: &str) {
    assert_eq!(response.status, 401, "{why}: {response:?}");
    let challenge = response.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.contains(
            r#"resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource/mcp""#
        ),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(challenge.contains(why), "{why}: {challenge}");
    let body: Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(body["error"]["code"], -32600, "{body}");
}

#[test]
fn valid_tokens_work_and_each_bad_one_gets_401_naming_the_metadata() {
    let key = Arc::new(Signer::es256("key-1"));
    let issuer = Issuer::start(Arc::clone(&key));
    let url = issuer.url();
    let mcphop = start(&url, &["--admin-listen", "127.0.0.1:0"]);
    let port = mcphop.port;

    let alice = key.mint(&claims(&url, AUDIENCE, "alice", 300));
    let session = open_session(&mcphop, &alice);
    let answer = list(port, &alice, &session);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("echo"), "{answer:?}");

    // No token: a challenge without an error, pointing to the metadata.
    let none = post(port, "", INITIALIZE);
    assert_eq!(none.status, 401, "{none:?}");
    let challenge = none.header("www-authenticate").expect("challenge");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    assert!(!challenge.contains("error="), "{challenge}");

    let forger = Signer::es256("key-1");
    for (token, why) in [
        (key.mint(&claims(&url, AUDIENCE, "alice", -3600)), "expired"),
        (
            key.mint(&claims(&url, "http://127.0.0.1/other", "alice", 300)),
            "not for this resource",
        ),
        (
            key.mint(&claims("http://127.0.0.1:1", AUDIENCE, "alice", 300)),
            "another issuer",
        ),
        (
            forger.mint(&claims(&url, AUDIENCE, "alice", 300)),
            "signature is not valid",
        ),
        ("not-a-jwt".to_string(), "not a JWT"),
    ] {
        assert_401(&post(port, &bearer(&token), INITIALIZE), why);
        // In a session too: the token is checked on every request.
        assert_401(&list(port, &token, &session), why);
    }

    // The metadata the challenge names is served, to anyone.
    let get = format!(
        "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let metadata = raw_exchange(port, get.as_bytes());
    assert_eq!(metadata.status, 200, "{metadata:?}");
    let document: Value = serde_json::from_str(&metadata.body).expect("JSON");
    assert_eq!(document["resource"], AUDIENCE);
    assert_eq!(document["authorization_servers"][0], url.as_str());

    // A session is its subject's: bob's valid token with alice's session
    // id is told the session does not exist.
    let bob = key.mint(&claims(&url, AUDIENCE, "bob", 300));
    assert_eq!(list(port, &bob, &session).status, 404);
    assert_eq!(list(port, &alice, &session).status, 200);

    // Each refusal is counted: one without a token, two per bad token.
    let admin = mcphop.admin_port();
    let get = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n");
    let metrics = raw_exchange(admin, get.as_bytes()).body;
    assert!(
        metrics.contains("mcphop_auth_refusals_total{status=\"401\"} 11\n"),
        "{metrics}"
    );
    // Tokens never reach the log.
    let log = mcphop.log_text();
    assert!(
        !log.contains(&alice) && !log.contains(&bob),
        "a token was logged"
    );
    // One fetch of the metadata and one of the keys, at start-up.
    assert_eq!(issuer.hits("/.well-known/oauth-authorization-server"), 1);
    assert_eq!(issuer.hits("/jwks"), 1);
}

#[test]
fn the_upstream_never_sees_the_clients_token() {
    let key = Arc::new(Signer::rs256("rsa-1"));
    let issuer = Issuer::start(Arc::clone(&key));
    let url = issuer.url();
    let fake = FakeUpstream::start(|_, _| None);
    let options = [
        "--auth-issuer",
        &url,
        "--auth-audience",
        AUDIENCE,
        "--health-interval",
        "0",
    ];
    let mcphop = Mcphop::start_http(&options, &fake.url());
    let token = key.mint(&claims(&url, AUDIENCE, "carol", 300));
    let init = post(mcphop.port, &bearer(&token), &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
    let session = init.header("mcp-session-id").expect("session").to_string();
    let extra = format!("{}{}", bearer(&token), session_header(&session));
    assert_eq!(post(mcphop.port, &extra, INITIALIZED).status, 202);
    assert_eq!(post(mcphop.port, &extra, &echo_body(2, "hi")).status, 200);
    let seen = fake.requests();
    assert!(seen.len() >= 3, "{}", fake.describe());
    assert!(
        seen.iter()
            .all(|request| request.header("authorization").is_none()),
        "the token went upstream:\n{}",
        fake.describe()
    );
}

#[test]
fn a_rotated_key_is_picked_up_without_a_restart() {
    let old = Arc::new(Signer::es256("2026-old"));
    let issuer = Issuer::start(Arc::clone(&old));
    let url = issuer.url();
    let mcphop = start(&url, &["--auth-jwks-refresh", "1s"]);
    let port = mcphop.port;
    let session = open_session(&mcphop, &old.mint(&claims(&url, AUDIENCE, "alice", 300)));
    assert_eq!(issuer.hits("/jwks"), 1);

    // The issuer rotates: a new key signs, the old one is still published.
    let new = Arc::new(Signer::eddsa("2026-new"));
    issuer.publish(&[Arc::clone(&new), Arc::clone(&old)]);
    thread::sleep(Duration::from_millis(1100));
    let token = new.mint(&claims(&url, AUDIENCE, "alice", 300));
    let answer = list(port, &token, &session);
    assert_eq!(answer.status, 200, "{answer:?}\n{}", mcphop.log_text());
    assert_eq!(issuer.hits("/jwks"), 2, "one fetch for the new kid");
    // The key set is not fetched for a known kid, nor for a token refused
    // on its claims whatever its kid.
    let stranger = Signer::es256("nobody-publishes-this");
    let expired = stranger.mint(&claims(&url, AUDIENCE, "alice", -3600));
    assert_401(&post(port, &bearer(&expired), INITIALIZE), "expired");
    assert_eq!(list(port, &token, &session).status, 200);
    assert_eq!(issuer.hits("/jwks"), 2);
}

#[test]
fn an_unknown_key_fetches_the_key_set_at_most_once_per_interval() {
    let key = Arc::new(Signer::es256("k1"));
    let issuer = Issuer::start(Arc::clone(&key));
    let url = issuer.url();
    // The default interval, 60 s: longer than this test.
    let mcphop = start(&url, &[]);
    let port = mcphop.port;
    open_session(&mcphop, &key.mint(&claims(&url, AUDIENCE, "alice", 300)));
    assert_eq!(issuer.hits("/jwks"), 1);
    for index in 0..5 {
        let stranger = Signer::es256(&format!("unknown-{index}"));
        let token = stranger.mint(&claims(&url, AUDIENCE, "mallory", 300));
        assert_401(
            &post(port, &bearer(&token), INITIALIZE),
            "a key the issuer does not publish",
        );
    }
    assert_eq!(issuer.hits("/jwks"), 1, "no fetch within the interval");
}

#[test]
fn an_issuer_down_at_start_up_blocks_nothing_and_is_used_once_up() {
    let port_of_issuer = free_port();
    let url = format!("http://127.0.0.1:{port_of_issuer}");
    let key = Arc::new(Signer::es256("k1"));
    let mcphop = start(&url, &[]);
    let port = mcphop.port;
    let token = key.mint(&claims(&url, AUDIENCE, "alice", 300));
    // Nothing listens: the fetch fails at once, and the token cannot be
    // checked: 503, not 401 (the token may well be good).
    let refused = post(port, &bearer(&token), INITIALIZE);
    assert_eq!(refused.status, 503, "{refused:?}\n{}", mcphop.log_text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The issuer comes up; a second after the failure, keys are fetched.
    let issuer = Issuer::start_on(port_of_issuer, Arc::clone(&key));
    thread::sleep(Duration::from_millis(1100));
    let init = post(port, &bearer(&token), INITIALIZE);
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
    assert_eq!(issuer.hits("/jwks"), 1);
}

#[test]
fn an_issuer_hung_at_start_up_delays_only_the_requests_that_need_its_keys() {
    let key = Arc::new(Signer::es256("k1"));
    let issuer = Issuer::start(Arc::clone(&key));
    issuer.set_mode(Mode::Hang);
    let url = issuer.url();
    // A static token too, so a session can go on while no JWT can be checked.
    let dir = TempDir::new("oauth-tokens");
    let tokens = dir.write("tokens", "ops:static-token-0123456789\n");
    let tokens = tokens.display().to_string();
    let mcphop = start(&url, &["--auth-token-file", &tokens]);
    let port = mcphop.port;
    let jwt = key.mint(&claims(&url, AUDIENCE, "alice", 300));
    let started = Instant::now();
    let parked = thread::spawn(move || post(port, &bearer(&jwt), INITIALIZE));
    let session = open_session(&mcphop, "static-token-0123456789");
    assert!(!parked.is_finished(), "the loop waited for the issuer");
    for round in 0..20 {
        let answer = list(port, "static-token-0123456789", &session);
        assert_eq!(answer.status, 200, "round {round}");
    }
    let served = started.elapsed();
    let answer = parked.join().expect("the parked client");
    assert_eq!(answer.status, 503, "{answer:?}\n{}", mcphop.log_text());
    eprintln!(
        "static-token session served in {served:?}; the JWT got 503 after {:?}",
        started.elapsed()
    );
    // The issuer answers again: the next JWT (a second after the failure)
    // fetches the keys and gets in.
    issuer.set_mode(Mode::Serve);
    thread::sleep(Duration::from_millis(1100));
    let jwt = key.mint(&claims(&url, AUDIENCE, "alice", 300));
    let init = post(port, &bearer(&jwt), INITIALIZE);
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
}

#[test]
fn a_hung_issuer_delays_only_the_requests_that_need_its_keys() {
    let key = Arc::new(Signer::es256("k1"));
    let issuer = Issuer::start(Arc::clone(&key));
    let url = issuer.url();
    let mcphop = start(&url, &["--auth-jwks-refresh", "1s"]);
    let port = mcphop.port;
    let alice = key.mint(&claims(&url, AUDIENCE, "alice", 300));
    let session = open_session(&mcphop, &alice);
    issuer.set_mode(Mode::Hang);
    thread::sleep(Duration::from_millis(1100));

    // A token with a new kid waits for a fetch the issuer never answers...
    let rotated = Signer::es256("k2").mint(&claims(&url, AUDIENCE, "alice", 300));
    let started = Instant::now();
    let waiting = thread::spawn(move || post(port, &bearer(&rotated), INITIALIZE));
    // ...while the loop serves everyone else: the remembered token, a new
    // token signed by the held key, and the metadata.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(list(port, &alice, &session).status, 200);
    // Were the loop waiting on the issuer, this call would have come back
    // only once the 5 s fetch timed out, after the parked request's answer.
    assert!(!waiting.is_finished(), "the loop waited for the issuer");
    let bob = key.mint(&claims(&url, AUDIENCE, "bob", 300));
    for round in 0..20 {
        assert_eq!(list(port, &alice, &session).status, 200, "round {round}");
    }
    let bob_session = open_session(&mcphop, &bob);
    assert_eq!(list(port, &bob, &bob_session).status, 200);
    let served_while_waiting = started.elapsed();
    // The fetch times out (5 s): 503.
    let answer = waiting.join().expect("the waiting client");
    assert_eq!(answer.status, 503, "{answer:?}\n{}", mcphop.log_text());
    let waited = started.elapsed();
    eprintln!(
        "served others in {served_while_waiting:?}; the parked request got 503 after {waited:?}"
    );
    assert!(
        mcphop.log_shows("no answer within"),
        "{}",
        mcphop.log_text()
    );
}

#[test]
fn the_key_set_is_fetched_over_https_trusting_the_given_ca_only() {
    let key = Arc::new(Signer::es256("tls-key"));
    let issuer = Issuer::start(Arc::clone(&key));
    let ca = Ca::new("mcphop OAuth test CA");
    let nginx = Nginx::start(issuer.port, &ca.server_cert(false));
    let dir = TempDir::new("oauth-ca");
    let trusted = dir.write("ca.pem", &ca.pem());
    let other = dir.write("other.pem", &Ca::new("another CA").pem());
    let jwks = format!("https://127.0.0.1:{}/jwks", nginx.port);
    // The issuer identifier alone (no metadata is fetched when the key set
    // is given).
    let iss = "https://127.0.0.1:1";
    let token = key.mint(&claims(iss, AUDIENCE, "alice", 300));
    for (ca_file, expected) in [(&trusted, 200), (&other, 503)] {
        let ca_file = ca_file.display().to_string();
        let options = ["--auth-jwks-url", &jwks, "--upstream-ca", &ca_file];
        let mcphop = start(iss, &options);
        let init = post(mcphop.port, &bearer(&token), INITIALIZE);
        assert_eq!(init.status, expected, "{init:?}\n{}", mcphop.log_text());
        if expected == 503 {
            assert!(mcphop.log_shows("UnknownIssuer"), "{}", mcphop.log_text());
        }
    }
    let fetched = nginx.log("access.log");
    assert!(fetched.contains("200 GET /jwks"), "{fetched}");
    assert_eq!(
        issuer.hits("/jwks"),
        1,
        "the untrusted fetch never reached the issuer"
    );
}

#[test]
fn the_python_sdk_1_discovers_the_issuer_from_the_401_and_gets_through() {
    sdk_oauth_flow(1);
}

#[test]
fn the_python_sdk_2_discovers_the_issuer_from_the_401_and_gets_through() {
    sdk_oauth_flow(2);
}

#[test]
fn the_typescript_sdk_discovers_the_issuer_from_the_401_and_gets_through() {
    sdk_oauth_flow(0);
}

/// An SDK's OAuth client against mcphop, from no token to a tool call: the
/// Python SDK `major` (1 or 2), or the TypeScript SDK (0).
fn sdk_oauth_flow(major: u8) {
    let key = Arc::new(Signer::rs256("sdk-key"));
    let issuer = Issuer::start(Arc::clone(&key));
    let url = issuer.url();
    // The audience is mcphop's own URL, which the SDK checks the metadata's
    // resource against: the port is chosen first.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let audience = format!("http://127.0.0.1:{port}/mcp");
    let options = [
        "--listen",
        &listen,
        "--auth-issuer",
        &url,
        "--auth-audience",
        &audience,
    ];
    let mcphop = Mcphop::start(&options, &[example_server().display().to_string()]);
    assert_eq!(mcphop.port, port);
    let mut client = if major == 0 {
        let mut node = std::process::Command::new("node");
        node.arg(repo_root().join("tests/peers/ts_oauth_client.cjs"));
        node
    } else {
        let mut python =
            std::process::Command::new(peers_dir().join(format!("py{major}/bin/python")));
        python.arg(repo_root().join("tests/peers/oauth_client.py"));
        python
    };
    client.args(["--url", &audience]);
    let run = run_bounded(client, Duration::from_secs(60));
    let last = run.stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "the client failed ({:?}):\n{}\n{}\nmcphop:\n{}",
            run.exit,
            run.stdout,
            run.stderr,
            mcphop.log_text()
        )
    });
    assert_eq!(result["token"], true, "{result}");
    assert_eq!(result["echo"], "through oauth", "{result}");
    assert!(result["tools"]
        .as_array()
        .is_some_and(|tools| tools.contains(&"echo".into())));
    let requests: Vec<&str> = result["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // The SDK's whole flow, in order: refused, the metadata mcphop names,
    // the issuer's metadata, registration, the code for a token, then the
    // same request again with the token. For Python 2.x that first request
    // is its `server/discover` probe, which a stateful upstream answers 400
    // with the token as without; it then initializes.
    let discovery = [
        format!("GET http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp 200"),
        format!("GET {url}/.well-known/oauth-authorization-server 200"),
    ];
    let mut expected = vec![format!("POST {audience} 401")];
    expected.extend(discovery.iter().cloned());
    expected.push(format!("POST {url}/register 201"));
    if major == 0 {
        // The TypeScript SDK's `finishAuth` discovers again before it
        // exchanges the code.
        expected.extend(discovery.iter().cloned());
    }
    expected.push(format!("POST {url}/token 200"));
    if major == 2 {
        expected.push(format!("POST {audience} 400"));
    }
    expected.push(format!("POST {audience} 200"));
    assert_eq!(
        &requests[..expected.len()],
        &expected[..],
        "{requests:#?}\n{}",
        mcphop.log_text()
    );
    assert_eq!(issuer.hits("/authorize"), 1);
    eprintln!("the SDK's requests: {requests:#?}");
}
