//! A fake Streamable HTTP upstream: a small threaded HTTP/1.1 server that
//! records every request and answers like an MCP server, with per-test
//! overrides.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};

use super::relay::{parse_request, SeenRequest};

// ===== a fake Streamable HTTP upstream =========================================

/// A canned answer.
pub struct FakeReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl FakeReply {
    pub fn json(status: u16, body: Value) -> FakeReply {
        FakeReply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn empty(status: u16) -> FakeReply {
        FakeReply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// The whole HTTP/1.1 response, framed by Content-Length.
    pub fn to_http(&self) -> String {
        let mut out = format!("HTTP/1.1 {} Fake\r\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        ));
        out
    }
}

/// The protocol version the fake upstream answers `initialize` with, whatever
/// the client asked: the session's negotiated version.
pub const FAKE_PROTOCOL: &str = "2025-03-26";
/// The session id the fake upstream hands out.
pub const FAKE_SESSION: &str = "up-1";

/// What a plain, well-behaved upstream answers: initialize names session
/// `up-1`; requests get JSON results (tools/call echoes `message`);
/// notifications and responses get 202; GET gets 405 (no stream offered);
/// DELETE gets 200.
pub fn fake_default_reply(request: &SeenRequest) -> FakeReply {
    match request.method.as_str() {
        "GET" => FakeReply::empty(405),
        "DELETE" => FakeReply::empty(200),
        "POST" => {
            let message = request.json();
            let id = message.get("id").cloned();
            let method = message.get("method").and_then(Value::as_str);
            match (id, method) {
                (Some(id), Some("initialize")) => {
                    let mut reply = FakeReply::json(
                        200,
                        json!({"jsonrpc": "2.0", "id": id, "result": {
                            "protocolVersion": FAKE_PROTOCOL,
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "fake-upstream", "version": "0"}
                        }}),
                    );
                    reply
                        .headers
                        .push(("Mcp-Session-Id".into(), FAKE_SESSION.into()));
                    reply
                }
                (Some(id), Some("tools/call")) => {
                    let text = message["params"]["arguments"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    FakeReply::json(
                        200,
                        json!({"jsonrpc": "2.0", "id": id, "result": {
                            "content": [{"type": "text", "text": text}], "isError": false
                        }}),
                    )
                }
                (Some(id), Some(_)) => {
                    FakeReply::json(200, json!({"jsonrpc": "2.0", "id": id, "result": {}}))
                }
                _ => FakeReply::empty(202),
            }
        }
        _ => FakeReply::empty(405),
    }
}

/// Overrides the default answer: given the request and its index among all
/// requests received (0-based), Some answer or None for the default.
pub type Behavior = dyn Fn(&SeenRequest, usize) -> Option<FakeReply> + Send + Sync;

pub struct FakeState {
    pub requests: Mutex<Vec<SeenRequest>>,
    pub accepted: AtomicUsize,
    pub stop: AtomicBool,
    pub sockets: Mutex<Vec<TcpStream>>,
    pub behavior: Box<Behavior>,
}

/// A small threaded HTTP/1.1 server on 127.0.0.1 that records every request
/// and answers like a Streamable HTTP MCP server with JSON answers.
pub struct FakeUpstream {
    pub port: u16,
    pub state: Arc<FakeState>,
}

impl FakeUpstream {
    pub fn start(
        behavior: impl Fn(&SeenRequest, usize) -> Option<FakeReply> + Send + Sync + 'static,
    ) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(FakeState {
            requests: Mutex::default(),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sockets: Mutex::default(),
            behavior: Box::new(behavior),
        });
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = shared.accepted.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    shared.sockets.lock().unwrap().push(clone);
                }
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve_fake_conn(stream, conn, &shared));
            }
        });
        FakeUpstream { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| format!("{} {} {:?} {}", r.method, r.target, r.headers, r.body))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one keep-alive connection of the fake upstream.
pub fn serve_fake_conn(mut stream: TcpStream, conn: usize, state: &FakeState) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some((request, used)) = parse_request(conn, &buf) {
            buf.drain(..used);
            let index = {
                let mut requests = state.requests.lock().unwrap();
                requests.push(request.clone());
                requests.len() - 1
            };
            let reply =
                (state.behavior)(&request, index).unwrap_or_else(|| fake_default_reply(&request));
            if stream.write_all(reply.to_http().as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => buf.extend_from_slice(&chunk[..read]),
        }
    }
}
