//! A small OAuth 2.1 authorization server for the tests, on loopback, one
//! thread per connection: RFC 8414 metadata, its JWK Set (whose keys the
//! test changes to rotate them), dynamic client registration, the
//! authorization endpoint (which approves at once, redirecting with a
//! code) and the token endpoint (which checks the code's PKCE verifier and
//! mints a JWT for the `resource` asked for). It can also stop answering
//! (`Mode::Hang`) to play a dead issuer. It counts the requests each path
//! got. It stops when dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

#[path = "../../src/mcp/jwt_testkit.rs"]
pub mod testkit;

pub use testkit::Signer;

/// How the issuer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// Reads requests and never answers them (a hung server).
    Hang,
}

struct State {
    /// The keys published in the JWK Set; the first signs tokens.
    published: Vec<Arc<Signer>>,
    mode: Mode,
    hits: HashMap<String, usize>,
    /// Authorization codes: their PKCE challenge and resource.
    codes: HashMap<String, (String, String)>,
}

pub struct Issuer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Issuer {
    /// Serves on a free port, publishing `signer`.
    pub fn start(signer: Arc<Signer>) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind issuer");
        Issuer::serve(listener, signer)
    }

    /// Serves on `port` (reserved earlier, nothing listening on it).
    pub fn start_on(port: u16, signer: Arc<Signer>) -> Issuer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind issuer port");
        Issuer::serve(listener, signer)
    }

    fn serve(listener: TcpListener, signer: Arc<Signer>) -> Issuer {
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State {
            published: vec![signer],
            mode: Mode::Serve,
            hits: HashMap::new(),
            codes: HashMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (Arc::clone(&state), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let state = Arc::clone(&state2);
                        let stop = Arc::clone(&stop2);
                        thread::spawn(move || handle(stream, port, &state, &stop));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Issuer { port, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Publishes exactly these keys; the first signs tokens from now on.
    pub fn publish(&self, signers: &[Arc<Signer>]) {
        self.state.lock().unwrap().published = signers.to_vec();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Requests `path` got so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Mints a token of this issuer for `audience` and `subject`, valid for
/// `lifetime` seconds from now (negative: expired).
pub fn claims(issuer: &str, audience: &str, subject: &str, lifetime: i64) -> Value {
    let now = unix_now() as i64;
    json!({"iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + lifetime})
}

fn handle(stream: TcpStream, port: u16, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mode = {
        let mut state = state.lock().unwrap();
        *state.hits.entry(path.to_string()).or_default() += 1;
        state.mode
    };
    if mode == Mode::Hang {
        // Holds the connection open, answering nothing, until the test ends.
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    let issuer = format!("http://127.0.0.1:{port}");
    let (status, headers, body) = route(&method, path, query, &body, &issuer, state);
    let mut stream = reader.into_inner();
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn route(
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    issuer: &str,
    state: &Mutex<State>,
) -> (u16, Vec<(&'static str, String)>, String) {
    let json_type = vec![("Content-Type", "application/json".to_string())];
    match (method, path) {
        ("GET", "/.well-known/oauth-authorization-server") => {
            let metadata = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "registration_endpoint": format!("{issuer}/register"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            });
            (200, json_type, metadata.to_string())
        }
        ("GET", "/jwks") => {
            let state = state.lock().unwrap();
            let signers: Vec<&Signer> = state.published.iter().map(|s| s.as_ref()).collect();
            (200, json_type, testkit::jwks(&signers))
        }
        ("POST", "/register") => {
            let mut client: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            client["client_id"] = json!("test-client");
            client["client_id_issued_at"] = json!(unix_now());
            client["token_endpoint_auth_method"] = json!("none");
            (201, json_type, client.to_string())
        }
        ("GET", "/authorize") => {
            let params = form(query);
            let code = format!("code-{}", unix_now());
            let redirect = params.get("redirect_uri").cloned().unwrap_or_default();
            let state_param = params.get("state").cloned().unwrap_or_default();
            let challenge = params.get("code_challenge").cloned().unwrap_or_default();
            let resource = params.get("resource").cloned().unwrap_or_default();
            state
                .lock()
                .unwrap()
                .codes
                .insert(code.clone(), (challenge, resource));
            let location = format!("{redirect}?code={code}&state={state_param}");
            (302, vec![("Location", location)], String::new())
        }
        ("POST", "/token") => {
            let params = form(std::str::from_utf8(body).unwrap_or(""));
            let code = params.get("code").cloned().unwrap_or_default();
            let verifier = params.get("code_verifier").cloned().unwrap_or_default();
            let mut state = state.lock().unwrap();
            let Some((challenge, resource)) = state.codes.remove(&code) else {
                return (
                    400,
                    json_type,
                    json!({"error": "invalid_grant"}).to_string(),
                );
            };
            let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            if testkit::b64url(digest.as_ref()) != challenge {
                return (
                    400,
                    json_type,
                    json!({"error": "invalid_grant"}).to_string(),
                );
            }
            let audience = params.get("resource").cloned().unwrap_or(resource);
            let token = state.published[0].mint(&claims(issuer, &audience, "sdk-user", 3600));
            let answer = json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
            (200, json_type, answer.to_string())
        }
        _ => (404, json_type, json!({"error": "not found"}).to_string()),
    }
}

/// `application/x-www-form-urlencoded` (or a query string) decoded.
fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (decode(name), decode(value)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                index += 2;
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
