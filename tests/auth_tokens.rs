//! Inbound authentication with static bearer tokens (`--auth-token-file`):
//! 401 with `WWW-Authenticate: Bearer` for a missing or wrong token on every
//! path of the listener; the Python SDK 1.x and 2.x clients with a token
//! header; a session reachable only by the token that created it (404 for
//! another, on both front doors); SIGHUP re-reading the file (a broken or
//! missing file keeps the old set); the client's token never reaching an
//! HTTP upstream unless `--forward-header Authorization`; and a non-loopback
//! `--listen` refused without authentication.
//!
//! Everything listens on 0.0.0.0 or 127.0.0.1 and is reached through
//! 127.0.0.1 only. Every mcphop is stopped by its guard, pass or fail.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    client_result, eventually, example_server, post_message, post_request, python_client,
    raw_exchange, LegacyStream, Mcphop, RawResponse, TempDir, INITIALIZE,
};
use serde_json::Value;
use upstream::fake::FakeUpstream;
use upstream::raw::{echo_body, initialize_body, post, session_header, INITIALIZED};

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-fedcba9876543210";
const CAROL: &str = "carol-5555aaaa5555aaaa";
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

/// A token file in a fresh temporary directory, removed on drop.
struct TokenFile {
    dir: TempDir,
    path: PathBuf,
}

impl TokenFile {
    fn new(tag: &str, text: &str) -> TokenFile {
        let dir = TempDir::new(&format!("auth-{tag}"));
        let path = dir.0.join("tokens");
        let file = TokenFile { dir, path };
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        // Written beside and renamed, so a reload never reads half a file.
        let fresh = self.dir.write("tokens.new", text);
        std::fs::rename(&fresh, &self.path).expect("rename tokens");
    }

    fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn start(file: &TokenFile, extra: &[&str]) -> Mcphop {
    let mut options = vec!["--auth-token-file".to_string(), file.arg()];
    options.extend(extra.iter().map(|option| option.to_string()));
    options.push("--".into());
    options.push(example_server().display().to_string());
    Mcphop::start_args(&options)
}

/// Opens a session with `token`; its id.
fn open_session(port: u16, token: &str) -> String {
    let init = post(port, &bearer(token), INITIALIZE);
    assert_eq!(init.status, 200, "{init:?}");
    let session = init
        .header("mcp-session-id")
        .expect("session id")
        .to_string();
    let extra = format!("{}{}", bearer(token), session_header(&session));
    assert_eq!(post(port, &extra, INITIALIZED).status, 202);
    session
}

fn assert_401(response: &RawResponse, invalid: bool, context: &str) {
    assert_eq!(response.status, 401, "{context}: {response:?}");
    let challenge = response
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{context}: no WWW-Authenticate: {response:?}"));
    assert!(challenge.starts_with("Bearer"), "{context}: {challenge}");
    assert_eq!(
        challenge.contains("invalid_token"),
        invalid,
        "{context}: {challenge}"
    );
    let body: Value = serde_json::from_str(&response.body).expect("401 body is JSON");
    assert_eq!(body["jsonrpc"], "2.0", "{context}: {body}");
    assert_eq!(body["error"]["code"], -32600, "{context}: {body}");
}

fn assert_no_token_in(log: &str) {
    for token in [ALICE, BOB, CAROL] {
        assert!(!log.contains(token), "a token was logged:\n{log}");
    }
}

#[test]
fn missing_or_wrong_tokens_get_401_with_a_bearer_challenge() {
    let file = TokenFile::new("401", &format!("# test\nalice:{ALICE}\n\n{BOB}\n"));
    let mcphop = start(&file, &[]);
    let port = mcphop.port;
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    let get = |path: &str, extra: &str| {
        let request = format!("GET {path} HTTP/1.1\r\n{host}Accept: text/event-stream\r\n{extra}Connection: close\r\n\r\n");
        raw_exchange(port, request.as_bytes())
    };
    assert_401(&post(port, "", INITIALIZE), false, "no token");
    for wrong in [
        bearer("nope"),
        bearer(&ALICE[..ALICE.len() - 1]),
        bearer(&format!("{ALICE}0")),
        format!("Authorization: Basic {ALICE}\r\n"),
        format!("Authorization: {ALICE}\r\n"),
    ] {
        assert_401(&post(port, &wrong, INITIALIZE), true, &wrong);
    }
    // Every path of the listener: the legacy stream and message paths, a
    // server's own routes, and paths that are none of them.
    assert_401(&get("/sse", ""), false, "GET /sse");
    assert_401(&get("/sse", &bearer("nope")), true, "GET /sse, wrong token");
    let message = format!(
        "POST /message?sessionId=x HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{LIST}",
        LIST.len()
    );
    assert_401(
        &raw_exchange(port, message.as_bytes()),
        false,
        "POST /message",
    );
    assert_401(&get("/servers/default/mcp", ""), false, "server route");
    assert_401(&get("/elsewhere", ""), false, "unknown path");
    // The right tokens, named or not, work.
    for token in [ALICE, BOB] {
        let session = open_session(port, token);
        let extra = format!("{}{}", bearer(token), session_header(&session));
        let list = post(port, &extra, LIST);
        assert_eq!(list.status, 200, "{list:?}");
        assert!(list.body.contains("echo"), "{list:?}");
        // The token is checked on every request, not only on initialize.
        let without = post(port, &session_header(&session), LIST);
        assert_401(&without, false, "a session's request without its token");
    }
    assert_no_token_in(&mcphop.log_text());
}

fn sdk_run(
    mcphop: &Mcphop,
    major: u8,
    target: &[&str],
    token: Option<&str>,
) -> std::process::Output {
    let header = token.map(|token| format!("Authorization: Bearer {token}"));
    let mut args = target.to_vec();
    args.extend([
        "--timeout",
        "15",
        "--scenario",
        "basic",
        "--echo-tool",
        "echo",
    ]);
    if let Some(header) = &header {
        args.extend(["--header", header.as_str()]);
    }
    let output = python_client(major, &args);
    if token.is_some() && !output.status.success() {
        panic!(
            "client v{major} {target:?} failed:\n{}\nmcphop log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            mcphop.log_text()
        );
    }
    output
}

#[test]
fn python_sdk_clients_with_a_token_get_through() {
    let file = TokenFile::new("sdk", &format!("alice:{ALICE}\n"));
    let mcphop = start(&file, &[]);
    let url = mcphop.url();
    let sse = format!("http://127.0.0.1:{}/sse", mcphop.port);
    for (major, target) in [
        (1, ["--url", url.as_str()]),
        (2, ["--url", url.as_str()]),
        (1, ["--sse-url", sse.as_str()]),
    ] {
        let result = client_result(&sdk_run(&mcphop, major, &target, Some(ALICE)));
        assert_eq!(result["echo"], format!("hello from v{major}"), "{result}");
    }
    // Without the header, the same client is turned away.
    let refused = sdk_run(&mcphop, 1, &["--url", url.as_str()], None);
    assert!(!refused.status.success(), "v1 without a token succeeded");
    assert!(mcphop.log_text().contains("alice"), "{}", mcphop.log_text());
    assert_no_token_in(&mcphop.log_text());
}

#[test]
fn another_tokens_session_is_not_found() {
    let file = TokenFile::new("owner", &format!("alice:{ALICE}\nbob:{BOB}\n"));
    let mcphop = start(&file, &[]);
    let port = mcphop.port;
    let session = open_session(port, ALICE);
    let as_bob = format!("{}{}", bearer(BOB), session_header(&session));
    let unknown = post(
        port,
        &format!("{}{}", bearer(BOB), session_header(&"0".repeat(32))),
        LIST,
    );
    assert_eq!(unknown.status, 404);
    let stolen = post(port, &as_bob, LIST);
    assert_eq!(stolen.status, 404, "{stolen:?}");
    assert_eq!(stolen.body, unknown.body, "unlike an unknown session's 404");
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    for method in ["GET", "DELETE"] {
        let request = format!(
            "{method} /mcp HTTP/1.1\r\n{host}Accept: text/event-stream\r\n{as_bob}Connection: close\r\n\r\n"
        );
        let response = raw_exchange(port, request.as_bytes());
        assert_eq!(response.status, 404, "{method}: {response:?}");
    }
    // Alice's session lived through it all.
    let as_alice = format!("{}{}", bearer(ALICE), session_header(&session));
    assert_eq!(post(port, &as_alice, LIST).status, 200);

    // The legacy front door: Bob cannot post to Alice's stream.
    let stream = LegacyStream::open(port, &bearer(ALICE));
    let legacy_post =
        |token: &str| post_message(port, &stream.endpoint, &bearer(token), INITIALIZE);
    assert_eq!(
        legacy_post(BOB).status,
        404,
        "Bob on Alice's legacy session"
    );
    assert_eq!(
        legacy_post(ALICE).status,
        202,
        "Alice on her legacy session"
    );
    assert_no_token_in(&mcphop.log_text());
}

#[test]
fn sighup_rereads_the_token_file_and_keeps_the_old_set_when_it_is_broken() {
    let file = TokenFile::new("reload", &format!("alice:{ALICE}\n"));
    let mcphop = start(&file, &[]);
    let port = mcphop.port;
    let status = |token: &str| post(port, &bearer(token), INITIALIZE).status;
    assert_eq!(status(ALICE), 200);
    assert_eq!(status(CAROL), 401);

    let reloads = |text: &str| mcphop.log_text().matches(text).count();
    file.write(&format!("carol:{CAROL}\n"));
    mcphop.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || reloads("SIGHUP: reloaded") == 1),
        "{}",
        mcphop.log_text()
    );
    assert_eq!(status(CAROL), 200, "an added token");
    assert_eq!(status(ALICE), 401, "a removed token");

    // A broken file, then a missing one: the old set stays, the error is logged.
    file.write(&format!("dave:not a token\nalice:{ALICE}\n"));
    mcphop.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || reloads("failed, keeping") == 1),
        "{}",
        mcphop.log_text()
    );
    std::fs::remove_file(&file.path).expect("remove tokens");
    mcphop.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || reloads("failed, keeping") == 2),
        "{}",
        mcphop.log_text()
    );
    assert!(
        mcphop.log_text().contains("line 1"),
        "{}",
        mcphop.log_text()
    );
    assert_eq!(status(CAROL), 200, "the old set after broken files");
    assert_eq!(status(ALICE), 401);
    assert_no_token_in(&mcphop.log_text());
}

/// Runs a whole session through mcphop in front of a fake HTTP upstream
/// with a valid token; whether the upstream saw an `Authorization`.
fn upstream_saw_authorization(options: &[&str]) -> bool {
    let file = TokenFile::new(
        &format!("fwd{}", options.len()),
        &format!("alice:{ALICE}\n"),
    );
    let fake = FakeUpstream::start(|_, _| None);
    let mut args = vec![
        "--auth-token-file",
        file.path.to_str().unwrap(),
        "--health-interval",
        "0",
    ];
    args.extend_from_slice(options);
    let mcphop = Mcphop::start_http(&args, &fake.url());
    let port = mcphop.port;
    let init = post(port, &bearer(ALICE), &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
    let session = init.header("mcp-session-id").expect("session").to_string();
    let extra = format!("{}{}", bearer(ALICE), session_header(&session));
    assert_eq!(post(port, &extra, INITIALIZED).status, 202);
    let call = post(port, &extra, &echo_body(2, "hi"));
    assert_eq!(call.status, 200, "{call:?}");
    let seen = fake.requests();
    assert!(seen.len() >= 3, "{}", fake.describe());
    seen.iter()
        .any(|request| request.header("authorization").is_some())
}

#[test]
fn the_clients_token_reaches_the_upstream_only_when_forwarded() {
    assert!(!upstream_saw_authorization(&[]), "the token went upstream");
    assert!(upstream_saw_authorization(&[
        "--forward-header",
        "Authorization"
    ]));
}

/// Starts mcphop with `args` (no `--listen` added) and waits for its
/// `listening on http://0.0.0.0:PORT` line: the port and the log so far, or
/// the exit code and stderr when it stops first.
fn start_wild(
    args: &[String],
) -> Result<(std::process::Child, u16, mpsc::Receiver<String>), (i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcphop"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcphop");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if let Some(rest) = line.split("listening on http://0.0.0.0:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let (tx, rx2) = mpsc::channel();
                    let _ = tx.send(log);
                    // The rest of the log keeps coming on `rx`; the start
                    // of it is handed back first.
                    thread::spawn(move || {
                        for line in rx {
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    });
                    return Ok((child, port.parse().expect("port"), rx2));
                }
            }
            Err(_) => {
                let code = match wait_or_kill(&mut child, Duration::from_secs(5)) {
                    Some(code) => code,
                    None => panic!("mcphop neither listened nor exited:\n{log}"),
                };
                return Err((code, log));
            }
        }
    }
}

/// The child's exit code within `limit`; else it is killed and `None`.
fn wait_or_kill(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    if !eventually(limit, || matches!(child.try_wait(), Ok(Some(_)))) {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    child.wait().ok().and_then(|status| status.code())
}

/// Starts mcphop with `args`, expecting it to refuse: its exit code and log.
fn refused(args: &[String]) -> (i32, String) {
    match start_wild(args) {
        Err(refusal) => refusal,
        Ok((mut child, _, _)) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcphop started with {args:?}");
        }
    }
}

fn terminate(child: &std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

#[test]
fn a_non_loopback_listener_needs_authentication_or_the_flag() {
    let server = example_server().display().to_string();
    let wild = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--listen".to_string(), "0.0.0.0:0".into()];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args.extend(["--".to_string(), server.clone()]);
        args
    };
    // Refused, with a message saying what to do.
    let (code, log) = refused(&wild(&[]));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("not a loopback address"), "{log}");
    assert!(
        log.contains("--auth-token-file") && log.contains("--allow-unauthenticated"),
        "{log}"
    );
    // A token file that cannot be read stops it too.
    let (code, log) = refused(&wild(&["--auth-token-file", "/nonexistent/mcphop-tokens"]));
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("/nonexistent/mcphop-tokens"), "{log}");

    // --allow-unauthenticated: it starts, warns, and serves (reached on 127.0.0.1).
    let (mut child, port, rx) = start_wild(&wild(&["--allow-unauthenticated"])).expect("start");
    let log: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    let init = raw_exchange(port, &post_request(port, "", INITIALIZE));
    terminate(&child);
    let exit = wait_or_kill(&mut child, Duration::from_secs(20));
    assert!(
        log.contains("WARN") && log.contains("no authentication"),
        "{log}"
    );
    assert_eq!(init.status, 200, "{init:?}");
    assert_eq!(exit, Some(0));

    // A token file: it starts, and wants the token.
    let file = TokenFile::new("wild", &format!("alice:{ALICE}\n"));
    let (mut child, port, _rx) =
        start_wild(&wild(&["--auth-token-file", &file.arg()])).expect("start");
    let refused = raw_exchange(port, &post_request(port, "", INITIALIZE));
    let allowed = raw_exchange(port, &post_request(port, &bearer(ALICE), INITIALIZE));
    terminate(&child);
    let exit = wait_or_kill(&mut child, Duration::from_secs(20));
    assert_401(&refused, false, "0.0.0.0 with tokens");
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(exit, Some(0));
}
