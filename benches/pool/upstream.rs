//! The benchmark's upstream: a blocking Streamable HTTP MCP server inside
//! this executable, one thread per open connection (a thread whose
//! connection closes goes back to accept()), counting the requests it serves
//! and the connections it accepts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct UpstreamCounters {
    /// Connections accepted: the sockets mcphop used upstream.
    pub connections: AtomicU64,
    /// Connections closed without carrying a single request.
    pub unused: AtomicU64,
    /// Requests served, of every kind.
    pub requests: AtomicU64,
    pub initializes: AtomicU64,
    pub notifications: AtomicU64,
    pub calls: AtomicU64,
    pub deletes: AtomicU64,
    /// Requests it could not make sense of (no session header, bad HTTP).
    pub bad: AtomicU64,
    /// Upstream session ids handed out.
    pub next_session: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamFigures {
    pub connections: u64,
    pub unused: u64,
    pub requests: u64,
    pub initializes: u64,
    pub notifications: u64,
    pub calls: u64,
    pub deletes: u64,
    pub bad: u64,
}

impl UpstreamCounters {
    pub fn figures(&self) -> UpstreamFigures {
        UpstreamFigures {
            connections: self.connections.load(Ordering::SeqCst),
            unused: self.unused.load(Ordering::SeqCst),
            requests: self.requests.load(Ordering::SeqCst),
            initializes: self.initializes.load(Ordering::SeqCst),
            notifications: self.notifications.load(Ordering::SeqCst),
            calls: self.calls.load(Ordering::SeqCst),
            deletes: self.deletes.load(Ordering::SeqCst),
            bad: self.bad.load(Ordering::SeqCst),
        }
    }
}

/// What the upstream's threads share. Every thread not serving a connection
/// blocks in accept() (the kernel hands a connection to one of them); the one
/// that takes the last such place starts another, so there is always one
/// accepting, and a thread serves one connection at a time.
pub struct Shared {
    pub listener: TcpListener,
    pub counters: UpstreamCounters,
    pub stop: AtomicBool,
    /// Threads in accept().
    pub accepting: AtomicUsize,
    /// Threads alive.
    pub live: AtomicUsize,
}

pub struct Upstream {
    pub port: u16,
    pub shared: Arc<Shared>,
    pub stopped: bool,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        // std listens with a backlog of 128; a fresh connection per request
        // from 1000 sessions needs more. Linux takes a second listen() as a
        // new backlog.
        unsafe {
            libc::listen(listener.as_raw_fd(), 4096);
        }
        let port = listener.local_addr().expect("upstream address").port();
        let shared = Arc::new(Shared {
            listener,
            counters: UpstreamCounters::default(),
            stop: AtomicBool::new(false),
            accepting: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        });
        spawn_worker(&shared);
        Upstream {
            port,
            shared,
            stopped: false,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn figures(&self) -> UpstreamFigures {
        self.shared.counters.figures()
    }

    /// Stops accepting, and waits a little for the threads serving
    /// connections to see their peer close.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.stop.store(true, Ordering::SeqCst);
        // Every thread blocked in accept() returns EINVAL.
        unsafe {
            libc::shutdown(self.shared.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let live = self.shared.live.load(Ordering::SeqCst);
        if live > 0 {
            eprintln!("warning: {live} upstream thread(s) still serving a connection");
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn spawn_worker(shared: &Arc<Shared>) {
    shared.accepting.fetch_add(1, Ordering::SeqCst);
    shared.live.fetch_add(1, Ordering::SeqCst);
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("upstream".into())
        .stack_size(256 * 1024)
        .spawn(move || worker(&shared))
        .expect("spawn an upstream thread");
}

pub fn worker(shared: &Arc<Shared>) {
    loop {
        let accepted = shared.listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and the like: back off rather than spin.
                thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        shared.counters.connections.fetch_add(1, Ordering::SeqCst);
        if shared.accepting.fetch_sub(1, Ordering::SeqCst) == 1 {
            spawn_worker(shared);
        }
        serve_connection(stream, &shared.counters);
        shared.accepting.fetch_add(1, Ordering::SeqCst);
    }
    shared.accepting.fetch_sub(1, Ordering::SeqCst);
    shared.live.fetch_sub(1, Ordering::SeqCst);
}

/// Serves one keep-alive connection until the peer closes it.
pub fn serve_connection(stream: TcpStream, counters: &UpstreamCounters) {
    let mut served = 0u64;
    serve_requests(stream, counters, &mut served);
    if served == 0 {
        counters.unused.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn serve_requests(mut stream: TcpStream, counters: &UpstreamCounters, served: &mut u64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut input = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut output = Vec::with_capacity(1024);
    loop {
        loop {
            match parse_request(&input[..filled], counters, &mut output) {
                Ok(Some(used)) => {
                    *served += 1;
                    input.copy_within(used..filled, 0);
                    filled -= used;
                }
                Ok(None) => break,
                Err(()) => {
                    counters.bad.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(&output);
                    return;
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).is_err() {
                return;
            }
            output.clear();
        }
        if filled == input.len() {
            if input.len() >= 4 * 1024 * 1024 {
                counters.bad.fetch_add(1, Ordering::SeqCst);
                return;
            }
            input.resize(input.len() * 2, 0);
        }
        match stream.read(&mut input[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(count) => filled += count,
        }
    }
}

/// Parses one request from the front of `data` and writes its response to
/// `out`; the bytes it used, or None while it is incomplete.
pub fn parse_request(
    data: &[u8],
    counters: &UpstreamCounters,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => {
            out.extend_from_slice(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Err(());
        }
    };
    let mut length = 0usize;
    let mut has_session = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or(())?;
        } else if header.name.eq_ignore_ascii_case("mcp-session-id") {
            has_session = true;
        }
    }
    if data.len() < head_len + length {
        return Ok(None);
    }
    let body = &data[head_len..head_len + length];
    counters.requests.fetch_add(1, Ordering::SeqCst);
    match request.method.unwrap_or("") {
        "POST" => answer_post(body, has_session, counters, out),
        "DELETE" => {
            counters.deletes.fetch_add(1, Ordering::SeqCst);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        _ => out.extend_from_slice(
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST, DELETE\r\nContent-Length: 0\r\n\r\n",
        ),
    }
    Ok(Some(head_len + length))
}

/// A POSTed JSON-RPC message: initialize, tools/call (an echo of
/// `arguments.message`), or a notification. No JSON parsing: the fields
/// needed are found by their text.
pub fn answer_post(body: &[u8], has_session: bool, counters: &UpstreamCounters, out: &mut Vec<u8>) {
    let id = json_id(body);
    if find(body, br#""method":"initialize""#).is_some() {
        counters.initializes.fetch_add(1, Ordering::SeqCst);
        let session = counters.next_session.fetch_add(1, Ordering::SeqCst);
        let json = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"protocolVersion":"2025-06-18","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"pool-bench-upstream","version":"0"}}}}}}"#,
            id.unwrap_or("null")
        );
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: up-{session}\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        return;
    }
    if !has_session {
        counters.bad.fetch_add(1, Ordering::SeqCst);
        out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Some(id) = id else {
        // A notification (or a response): accepted.
        counters.notifications.fetch_add(1, Ordering::SeqCst);
        out.extend_from_slice(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    counters.calls.fetch_add(1, Ordering::SeqCst);
    let text = find(body, br#""message":""#)
        .map(|at| &body[at + br#""message":""#.len()..])
        .and_then(|rest| find(rest, b"\"").map(|end| &rest[..end]))
        .and_then(|text| std::str::from_utf8(text).ok())
        .unwrap_or("");
    let json = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
    );
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
}

/// The text of the first `"id":` value (a number or a string, as written).
pub fn json_id(body: &[u8]) -> Option<&str> {
    let at = find(body, br#""id":"#)? + br#""id":"#.len();
    let rest = &body[at..];
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&rest[..end])
        .ok()
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
