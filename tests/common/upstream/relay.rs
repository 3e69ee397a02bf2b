//! The HTTP requests a server or the relay saw ([`SeenRequest`]), and a
//! recording, counting TCP relay between mcphop and a real upstream.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;

// ===== recorded HTTP requests =================================================

/// One HTTP request as a server (or the relay) saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Which connection carried it (index in accept order).
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The JSON-RPC method of a POSTed message, if any.
    pub fn mcp_method(&self) -> Option<String> {
        self.json()
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// Parses the requests in the bytes one client sent on one connection
/// (mcphop always frames bodies with Content-Length); a partial last
/// request is left out.
pub fn parse_requests(conn: usize, bytes: &[u8]) -> Vec<SeenRequest> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while let Some((request, used)) = parse_request(conn, rest) {
        found.push(request);
        rest = &rest[used..];
    }
    found
}

/// One whole request at the start of `buf`: the request and the bytes it
/// took, or `None` while it is incomplete.
pub fn parse_request(conn: usize, buf: &[u8]) -> Option<(SeenRequest, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < end + length {
        return None;
    }
    let body = String::from_utf8_lossy(&buf[end..end + length]).into_owned();
    let request = SeenRequest {
        conn,
        method,
        target,
        headers,
        body,
    };
    Some((request, end + length))
}

// ===== a recording, counting TCP relay ========================================

/// What passed through one relayed connection.
#[derive(Default)]
pub struct RelayConn {
    /// mcphop to the upstream.
    pub sent: Vec<u8>,
    /// The upstream to mcphop.
    pub received: Vec<u8>,
    pub closed: bool,
}

#[derive(Default)]
pub struct RelayState {
    pub accepted: AtomicUsize,
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    pub stop: AtomicBool,
    pub conns: Mutex<Vec<Arc<Mutex<RelayConn>>>>,
    /// Every socket, shut down when the relay is dropped.
    pub sockets: Mutex<Vec<TcpStream>>,
}

/// A TCP relay on 127.0.0.1 in front of an upstream port: it records every
/// byte both ways per connection, and counts accepted and open connections.
pub struct Relay {
    pub port: u16,
    pub state: Arc<RelayState>,
}

impl Relay {
    pub fn start(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RelayState::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for down in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = down else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
                shared.max_open.fetch_max(open, Ordering::SeqCst);
                let record = Arc::new(Mutex::new(RelayConn::default()));
                shared.conns.lock().unwrap().push(Arc::clone(&record));
                let up = match TcpStream::connect(("127.0.0.1", upstream_port)) {
                    Ok(up) => up,
                    Err(_) => {
                        // Upstream down: the connection is refused, as it
                        // would be without the relay (as near as TCP allows).
                        let _ = down.shutdown(Shutdown::Both);
                        record.lock().unwrap().closed = true;
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                };
                {
                    let mut sockets = shared.sockets.lock().unwrap();
                    for socket in [&down, &up] {
                        if let Ok(clone) = socket.try_clone() {
                            sockets.push(clone);
                        }
                    }
                }
                let halves_done = Arc::new(AtomicUsize::new(0));
                for to_upstream in [true, false] {
                    let pair = if to_upstream {
                        (down.try_clone(), up.try_clone())
                    } else {
                        (up.try_clone(), down.try_clone())
                    };
                    let (Ok(mut from), Ok(mut to)) = pair else {
                        continue;
                    };
                    let record = Arc::clone(&record);
                    let halves_done = Arc::clone(&halves_done);
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        let clean = loop {
                            match from.read(&mut buffer) {
                                Ok(0) => break true,
                                Ok(count) => {
                                    {
                                        let mut record = record.lock().unwrap();
                                        let log = if to_upstream {
                                            &mut record.sent
                                        } else {
                                            &mut record.received
                                        };
                                        log.extend_from_slice(&buffer[..count]);
                                    }
                                    if to.write_all(&buffer[..count]).is_err() {
                                        break false;
                                    }
                                }
                                Err(_) => break false,
                            }
                        };
                        if clean {
                            let _ = to.shutdown(Shutdown::Write);
                        } else {
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        }
                        if halves_done.fetch_add(1, Ordering::SeqCst) == 1 {
                            record.lock().unwrap().closed = true;
                            shared.open.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                }
            }
        });
        Relay { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    pub fn max_open(&self) -> usize {
        self.state.max_open.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> Vec<Arc<Mutex<RelayConn>>> {
        self.state.conns.lock().unwrap().clone()
    }

    /// Every complete request mcphop sent, connection by connection.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.conns()
            .iter()
            .enumerate()
            .flat_map(|(index, conn)| parse_requests(index, &conn.lock().unwrap().sent))
            .collect()
    }

    /// Asserts that each of `methods` reached the upstream at least once.
    pub fn assert_reached(&self, methods: &[&str]) {
        let seen: Vec<String> = self
            .requests()
            .iter()
            .filter_map(SeenRequest::mcp_method)
            .collect();
        for method in methods {
            assert!(
                seen.iter().any(|m| m == method),
                "{method} never reached the upstream: {seen:?}"
            );
        }
    }

    pub fn conn_closed(&self, index: usize) -> bool {
        self.conns()
            .get(index)
            .is_some_and(|conn| conn.lock().unwrap().closed)
    }

    /// Everything the upstream sent back, all connections together.
    pub fn received_text(&self) -> String {
        self.conns()
            .iter()
            .map(|conn| String::from_utf8_lossy(&conn.lock().unwrap().received).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The distinct upstream session ids mcphop's requests carried.
    pub fn upstream_session_ids(&self) -> BTreeSet<String> {
        self.requests()
            .iter()
            .filter_map(|request| request.header("mcp-session-id").map(str::to_string))
            .collect()
    }

    /// A readable summary of the requests seen, for failure messages.
    pub fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "conn {} {} {} session={:?} method={:?}",
                    r.conn,
                    r.method,
                    r.target,
                    r.header("mcp-session-id"),
                    r.mcp_method()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
