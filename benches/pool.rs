//! Keep-alive pool benchmark: a real mcphop binary in front of one Streamable
//! HTTP upstream (a small blocking server inside this executable), driven over
//! loopback by 1, 100 and 1000 client sessions, each on its own keep-alive
//! client connection, calling `tools/call` in a closed loop. Every answer is
//! checked (its id, and the echo of a payload unique to the session and call).
//!
//! Every session count runs twice, each time with a fresh mcphop and upstream:
//! with the default pool, and with `--pool-max-idle-per-host 0`, where a
//! released connection closes unless a queued request takes it over at once.
//! For each it prints calls per second, the requests the upstream served and
//! the sockets it accepted (and how many of those never carried a request),
//! their ratio, errors, the CPU each party used (and the rest of the machine,
//! to show interference), and mcphop's own pool summary, logged at shutdown.
//!
//! `cargo bench --bench pool` runs the full measurement (3 s per cell);
//! under `cargo test` (no `--bench` argument) it runs a seconds-long smoke
//! pass at 1 and 10 sessions that proves the harness works and fails on any
//! error. Figures are printed, never asserted.
//!
//! A fresh connection per request goes through tens of thousands of loopback
//! ports in seconds; mcphop closes first, so its side holds TIME_WAIT. Linux
//! reuses those for loopback connects by default (`net.ipv4.tcp_tw_reuse = 2`);
//! with it off, the fresh-connection cells may run out of ports.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{Mcphop, POST_HEADERS};

/// Sessions in set-up (initialize + initialized) at once, per client thread:
/// mcphop listens with a backlog of 128.
const SETUP_WINDOW: usize = 32;
/// Time every session has to get set up.
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// Time the calls still in flight at the end of a cell have to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// Error descriptions kept per cell.
const KEPT_ERRORS: usize = 5;
/// Extra mcphop options for every cell, whitespace-separated (for trying
/// other pool settings); `--pool-max-idle-per-host 0` still comes last in the
/// fresh cells.
const EXTRA_ARGS_ENV: &str = "MCPHOP_POOL_BENCH_ARGS";

// ---------------------------------------------------------------------------
// The upstream: a blocking Streamable HTTP MCP server, one thread per open
// connection; a thread whose connection closes goes back to accept().
// ---------------------------------------------------------------------------

#[derive(Default)]
struct UpstreamCounters {
    /// Connections accepted: the sockets mcphop used upstream.
    connections: AtomicU64,
    /// Connections closed without carrying a single request.
    unused: AtomicU64,
    /// Requests served, of every kind.
    requests: AtomicU64,
    initializes: AtomicU64,
    notifications: AtomicU64,
    calls: AtomicU64,
    deletes: AtomicU64,
    /// Requests it could not make sense of (no session header, bad HTTP).
    bad: AtomicU64,
    /// Upstream session ids handed out.
    next_session: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct UpstreamFigures {
    connections: u64,
    unused: u64,
    requests: u64,
    initializes: u64,
    notifications: u64,
    calls: u64,
    deletes: u64,
    bad: u64,
}

impl UpstreamCounters {
    fn figures(&self) -> UpstreamFigures {
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
struct Shared {
    listener: TcpListener,
    counters: UpstreamCounters,
    stop: AtomicBool,
    /// Threads in accept().
    accepting: AtomicUsize,
    /// Threads alive.
    live: AtomicUsize,
}

struct Upstream {
    port: u16,
    shared: Arc<Shared>,
    stopped: bool,
}

impl Upstream {
    fn start() -> Upstream {
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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn figures(&self) -> UpstreamFigures {
        self.shared.counters.figures()
    }

    /// Stops accepting, and waits a little for the threads serving
    /// connections to see their peer close.
    fn stop(&mut self) {
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

fn spawn_worker(shared: &Arc<Shared>) {
    shared.accepting.fetch_add(1, Ordering::SeqCst);
    shared.live.fetch_add(1, Ordering::SeqCst);
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("upstream".into())
        .stack_size(256 * 1024)
        .spawn(move || worker(&shared))
        .expect("spawn an upstream thread");
}

fn worker(shared: &Arc<Shared>) {
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
fn serve_connection(stream: TcpStream, counters: &UpstreamCounters) {
    let mut served = 0u64;
    serve_requests(stream, counters, &mut served);
    if served == 0 {
        counters.unused.fetch_add(1, Ordering::SeqCst);
    }
}

fn serve_requests(mut stream: TcpStream, counters: &UpstreamCounters, served: &mut u64) {
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
fn parse_request(
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
fn answer_post(body: &[u8], has_session: bool, counters: &UpstreamCounters, out: &mut Vec<u8>) {
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
fn json_id(body: &[u8]) -> Option<&str> {
    let at = find(body, br#""id":"#)? + br#""id":"#.len();
    let rest = &body[at..];
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&rest[..end])
        .ok()
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------
// The clients: each thread drives its share of the sessions over non-blocking
// sockets on one mio poll, each session on its own keep-alive connection with
// one request in flight at a time.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the initialize answer.
    Initialize,
    /// Waiting for the 202 to notifications/initialized.
    Initialized,
    /// Set up, waiting for the start.
    Ready,
    /// A tools/call is in flight.
    Calling,
    /// Done calling.
    Finished,
    /// Its connection or set-up failed.
    Dead,
}

struct ClientSession {
    /// Global index, part of every payload.
    index: usize,
    socket: mio::net::TcpStream,
    phase: Phase,
    session_id: String,
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    next_id: u64,
}

/// One HTTP response as the client reads it.
struct Answer {
    status: u16,
    session_id: Option<String>,
    json_body: bool,
    body: Vec<u8>,
}

#[derive(Default)]
struct DriverOutcome {
    calls: u64,
    errors: u64,
    error_notes: Vec<String>,
    /// When the last call was answered.
    last_answer: Option<Instant>,
    /// This thread's CPU time from the start to the end of the calls.
    cpu: Duration,
}

impl DriverOutcome {
    fn error(&mut self, note: String) {
        self.errors += 1;
        if self.error_notes.len() < KEPT_ERRORS {
            self.error_notes.push(note);
        }
    }
}

fn payload(session: usize, id: u64) -> String {
    // 64 bytes or so, distinct per session and call, so a crossed answer shows.
    let mut text = format!("s{session}-c{id}-");
    while text.len() < 64 {
        text.push('x');
    }
    text
}

impl ClientSession {
    fn open(index: usize, port: u16) -> io::Result<ClientSession> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(ClientSession {
            index,
            socket: mio::net::TcpStream::from_std(stream),
            phase: Phase::Initialize,
            session_id: String::new(),
            output: Vec::with_capacity(512),
            written: 0,
            input: Vec::with_capacity(4096),
            next_id: 1,
        })
    }

    fn queue_post(&mut self, port: u16, body: &str) {
        self.output.clear();
        self.written = 0;
        let _ = write!(
            self.output,
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{POST_HEADERS}"
        );
        if !self.session_id.is_empty() {
            let _ = write!(self.output, "Mcp-Session-Id: {}\r\n", self.session_id);
        }
        let _ = write!(self.output, "Content-Length: {}\r\n\r\n{body}", body.len());
    }

    fn queue_initialize(&mut self, port: u16) {
        self.queue_post(
            port,
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"pool-bench","version":"0"}}}"#,
        );
    }

    fn queue_call(&mut self, port: u16) {
        let id = self.next_id;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{}"}}}}}}"#,
            payload(self.index, id)
        );
        self.queue_post(port, &body);
    }

    /// Writes what it can; Err when the connection failed.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.socket.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Reads what there is; Err on EOF or failure.
    fn fill(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        loop {
            match self.socket.read(scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(count) => self.input.extend_from_slice(&scratch[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Takes one whole response from the input, if there is one.
    fn take_answer(&mut self) -> Result<Option<Answer>, String> {
        let Some((answer, used)) = parse_answer(&self.input)? else {
            return Ok(None);
        };
        self.input.drain(..used);
        Ok(Some(answer))
    }
}

/// Parses one response (Content-Length, chunked, or bodiless 202/204).
fn parse_answer(data: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("bad response head: {error}")),
    };
    let status = response.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut session_id = None;
    let mut json_body = false;
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if header.name.eq_ignore_ascii_case("mcp-session-id") {
            session_id = Some(value.to_string());
        } else if header.name.eq_ignore_ascii_case("content-type") {
            json_body = value.starts_with("application/json");
        }
    }
    let rest = &data[head_len..];
    let (body, used) = if chunked {
        match decode_chunked(rest)? {
            Some(found) => found,
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        if rest.len() < length {
            return Ok(None);
        }
        (rest[..length].to_vec(), length)
    } else if status == 202 || status == 204 {
        (Vec::new(), 0)
    } else {
        return Err(format!("status {status} with a close-delimited body"));
    };
    Ok(Some((
        Answer {
            status,
            session_id,
            json_body,
            body,
        },
        head_len + used,
    )))
}

/// A whole chunked body and the bytes it took, or None while incomplete.
fn decode_chunked(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_len) = find(&data[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&data[at..at + line_len]);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        at += line_len + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(line_len) = find(&data[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[at..at + size]);
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// The last JSON-RPC message of an answer: a JSON body, or the last
/// non-empty `data:` of an SSE body.
fn last_message(answer: &Answer) -> Result<serde_json::Value, String> {
    let text = std::str::from_utf8(&answer.body).map_err(|_| "body is not UTF-8".to_string())?;
    let data = if answer.json_body {
        text
    } else {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.strip_prefix(' ').unwrap_or(data))
            .rfind(|data| !data.is_empty())
            .ok_or_else(|| format!("no message in the answer: {text:?}"))?
    };
    serde_json::from_str(data).map_err(|error| format!("answer is not JSON ({error}): {data:?}"))
}

/// Checks the answer to a session's initialize; its session id.
fn check_initialize(answer: &Answer) -> Result<String, String> {
    if answer.status != 200 {
        return Err(format!(
            "initialize answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let session = answer
        .session_id
        .clone()
        .ok_or("initialize answer without Mcp-Session-Id")?;
    let message = last_message(answer)?;
    if message["id"] != 0 || message.get("result").is_none() {
        return Err(format!("unexpected initialize answer {message}"));
    }
    Ok(session)
}

/// Checks a tools/call answer: the right id and the echoed payload.
fn check_call(answer: &Answer, session: usize, id: u64) -> Result<(), String> {
    if answer.status != 200 {
        return Err(format!(
            "tools/call answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let message = last_message(answer)?;
    if message["id"] != id || message["result"]["content"][0]["text"] != payload(session, id) {
        return Err(format!(
            "session {session} call {id}: unexpected answer {message}"
        ));
    }
    Ok(())
}

fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe {
        libc::clock_gettime(id, &mut time);
    }
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// CPU time (user + system) of another process, from /proc.
fn other_process_cpu(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat[stat.rfind(')')? + 1..].to_string();
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat; the state (field 3) is the first here.
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// CPU time the whole machine spent busy (every core), from /proc/stat.
fn machine_busy() -> Duration {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().find(|line| line.starts_with("cpu "))?;
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|field| field.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal (guest is in user).
            Some(
                fields.iter().take(8).sum::<u64>()
                    - fields.get(3).copied().unwrap_or(0)
                    - fields.get(4).copied().unwrap_or(0),
            )
        })
        .unwrap_or(0);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// What a client thread needs to know.
struct DriverPlan {
    port: u16,
    /// The global indexes of its sessions.
    sessions: std::ops::Range<usize>,
    duration: Duration,
    /// Every driver and the main thread meet here once set up.
    barrier: Arc<Barrier>,
    start: Arc<OnceLock<Instant>>,
}

/// Sets up a thread's sessions, waits for the others, then calls in a closed
/// loop until the duration is over.
fn drive(plan: DriverPlan) -> DriverOutcome {
    let port = plan.port;
    let mut outcome = DriverOutcome::default();
    let mut poll = mio::Poll::new().expect("poll");
    let mut events = mio::Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut sessions: Vec<ClientSession> = Vec::with_capacity(plan.sessions.len());
    let first = plan.sessions.start;
    let total = plan.sessions.len();

    // Set-up: initialize + initialized, a window of sessions at a time.
    let setup_deadline = Instant::now() + SETUP_LIMIT;
    let mut in_setup = 0usize;
    let mut settled = 0usize;
    let mut opened = 0usize;
    while settled < total && Instant::now() < setup_deadline {
        while in_setup < SETUP_WINDOW && opened < total {
            let index = first + opened;
            opened += 1;
            match ClientSession::open(index, port) {
                Ok(mut session) => {
                    poll.registry()
                        .register(
                            &mut session.socket,
                            mio::Token(sessions.len()),
                            mio::Interest::READABLE | mio::Interest::WRITABLE,
                        )
                        .expect("register a client socket");
                    session.queue_initialize(port);
                    sessions.push(session);
                    in_setup += 1;
                }
                Err(error) => {
                    outcome.error(format!("session {index}: connect failed: {error}"));
                    settled += 1;
                    continue;
                }
            }
            let last = sessions.len() - 1;
            if let Err(error) = sessions[last].flush() {
                outcome.error(format!("session {index}: write failed: {error}"));
                sessions[last].phase = Phase::Dead;
                in_setup -= 1;
                settled += 1;
            }
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let key = event.token().0;
            let session = &mut sessions[key];
            if matches!(session.phase, Phase::Dead | Phase::Ready) {
                continue;
            }
            let mut failure = session.flush().err().map(|e| format!("write failed: {e}"));
            if failure.is_none() {
                failure = session
                    .fill(&mut scratch)
                    .err()
                    .map(|e| match session.input.len() {
                        0 => format!("connection closed: {e}"),
                        _ => format!("connection closed mid-answer: {e}"),
                    });
            }
            // A whole answer in the input counts even if the peer then closed.
            match session.take_answer() {
                Ok(Some(answer)) => {
                    failure = None;
                    match session.phase {
                        Phase::Initialize => match check_initialize(&answer) {
                            Ok(id) => {
                                session.session_id = id;
                                session.phase = Phase::Initialized;
                                session.queue_post(
                                    port,
                                    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                                );
                                if let Err(error) = session.flush() {
                                    failure = Some(format!("write failed: {error}"));
                                }
                            }
                            Err(error) => failure = Some(error),
                        },
                        Phase::Initialized if answer.status == 202 => {
                            session.phase = Phase::Ready;
                            in_setup -= 1;
                            settled += 1;
                        }
                        _ => {
                            failure = Some(format!(
                                "notifications/initialized answered {}",
                                answer.status
                            ))
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
            if let Some(failure) = failure {
                outcome.error(format!("session {} set-up: {failure}", session.index));
                session.phase = Phase::Dead;
                let _ = poll.registry().deregister(&mut session.socket);
                in_setup -= 1;
                settled += 1;
            }
        }
    }
    for session in &mut sessions {
        if !matches!(session.phase, Phase::Ready | Phase::Dead) {
            outcome.error(format!("session {}: set-up timed out", session.index));
            session.phase = Phase::Dead;
        }
    }
    for index in first + opened..first + total {
        outcome.error(format!("session {index}: never opened"));
    }

    // The calls, from a start shared by every thread.
    plan.barrier.wait();
    let start = *plan.start.get_or_init(Instant::now);
    let deadline = start + plan.duration;
    let cpu_before = thread_cpu();
    let mut calling = 0usize;
    for session in &mut sessions {
        if session.phase == Phase::Ready {
            session.phase = Phase::Calling;
            session.queue_call(port);
            calling += 1;
            if let Err(error) = session.flush() {
                outcome.error(format!("session {}: write failed: {error}", session.index));
                session.phase = Phase::Dead;
                calling -= 1;
            }
        }
    }
    let drain_deadline = deadline + DRAIN_LIMIT;
    while calling > 0 && Instant::now() < drain_deadline {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let key = event.token().0;
            let session = &mut sessions[key];
            if session.phase != Phase::Calling {
                continue;
            }
            let mut failure = session.flush().err().map(|e| format!("write failed: {e}"));
            if failure.is_none() {
                failure = session
                    .fill(&mut scratch)
                    .err()
                    .map(|e| match session.input.len() {
                        0 => format!("connection closed: {e}"),
                        _ => format!("connection closed mid-answer: {e}"),
                    });
            }
            match session.take_answer() {
                Ok(Some(answer)) => {
                    failure = None;
                    let now = Instant::now();
                    let id = session.next_id;
                    session.next_id += 1;
                    match check_call(&answer, session.index, id) {
                        Ok(()) => {
                            outcome.calls += 1;
                            outcome.last_answer = Some(now);
                        }
                        Err(error) => outcome.error(error),
                    }
                    if !session.input.is_empty() {
                        failure = Some(format!(
                            "unexpected bytes after an answer: {:?}",
                            String::from_utf8_lossy(&session.input)
                        ));
                    } else if now < deadline {
                        session.queue_call(port);
                        if let Err(error) = session.flush() {
                            failure = Some(format!("write failed: {error}"));
                        }
                    } else {
                        session.phase = Phase::Finished;
                        calling -= 1;
                    }
                }
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
            if let Some(failure) = failure {
                outcome.error(format!("session {}: {failure}", session.index));
                session.phase = Phase::Dead;
                let _ = poll.registry().deregister(&mut session.socket);
                calling -= 1;
            }
        }
    }
    if calling > 0 {
        outcome.error(format!(
            "{calling} call(s) unanswered {DRAIN_LIMIT:?} after the end"
        ));
    }
    outcome.cpu = thread_cpu().saturating_sub(cpu_before);
    outcome
}

// ---------------------------------------------------------------------------
// Cells and the table.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The default pool.
    Pool,
    /// `--pool-max-idle-per-host 0`: a fresh connection per request.
    Fresh,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pool => "pool",
            Mode::Fresh => "fresh",
        }
    }
}

struct Cell {
    sessions: usize,
    mode: Mode,
    calls: u64,
    elapsed: Duration,
    errors: u64,
    error_notes: Vec<String>,
    upstream: UpstreamFigures,
    pool_line: String,
    exit: Option<i32>,
    /// CPU used during the calls, as a share of one core: mcphop, the
    /// upstream (this process but the client threads), the clients, and the
    /// rest of the machine (other processes, interrupts).
    cpu: (f64, f64, f64, f64),
}

impl Cell {
    fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn run_cell(
    sessions: usize,
    mode: Mode,
    duration: Duration,
    client_threads: usize,
    extra: &[String],
) -> Cell {
    let mut upstream = Upstream::start();
    let url = upstream.url();
    let mut options = vec!["--upstream", url.as_str(), "--log-level", "info"];
    options.extend(extra.iter().map(String::as_str));
    if mode == Mode::Fresh {
        options.extend(["--pool-max-idle-per-host", "0"]);
    }
    let mut proxy = Mcphop::start(&options, &[]);
    let threads = client_threads.clamp(1, sessions);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(OnceLock::new());
    let drivers: Vec<_> = (0..threads)
        .map(|thread_index| {
            let plan = DriverPlan {
                port: proxy.port,
                sessions: sessions * thread_index / threads
                    ..sessions * (thread_index + 1) / threads,
                duration,
                barrier: Arc::clone(&barrier),
                start: Arc::clone(&start),
            };
            thread::Builder::new()
                .name(format!("client-{thread_index}"))
                .spawn(move || drive(plan))
                .expect("spawn a client thread")
        })
        .collect();
    barrier.wait();
    let started = *start.get_or_init(Instant::now);
    let proxy_cpu_before = other_process_cpu(proxy.pid());
    let own_cpu_before = process_cpu();
    let machine_before = machine_busy();
    let outcomes: Vec<DriverOutcome> = drivers
        .into_iter()
        .map(|driver| driver.join().expect("client thread"))
        .collect();
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let proxy_cpu = other_process_cpu(proxy.pid()).saturating_sub(proxy_cpu_before);
    let own_cpu = process_cpu().saturating_sub(own_cpu_before);
    let machine = machine_busy().saturating_sub(machine_before);
    let rest_cpu = machine.saturating_sub(proxy_cpu + own_cpu);
    let client_cpu: Duration = outcomes.iter().map(|outcome| outcome.cpu).sum();
    let upstream_cpu = own_cpu.saturating_sub(client_cpu);

    // Shutdown: mcphop ends every session (a DELETE upstream each) and logs
    // its pool summary.
    proxy.signal(libc::SIGTERM);
    let exit = proxy.wait_exit(Duration::from_secs(30));
    // The log thread may still be reading what mcphop wrote last (a line per
    // ended session comes first).
    common::eventually(Duration::from_secs(5), || {
        proxy.log_text().contains("shutdown complete")
    });
    let log = proxy.log_text();
    let pool_line = log
        .lines()
        .find_map(|line| line.split("upstream pool: ").nth(1))
        .unwrap_or("(no pool summary in mcphop's log)")
        .to_string();
    drop(proxy);
    upstream.stop();
    let figures = upstream.figures();

    let calls = outcomes.iter().map(|outcome| outcome.calls).sum();
    let last = outcomes
        .iter()
        .filter_map(|outcome| outcome.last_answer)
        .max()
        .unwrap_or(started);
    let mut errors: u64 = outcomes.iter().map(|outcome| outcome.errors).sum();
    let mut error_notes: Vec<String> = outcomes
        .into_iter()
        .flat_map(|outcome| outcome.error_notes)
        .take(KEPT_ERRORS)
        .collect();
    if figures.bad > 0 {
        errors += figures.bad;
        error_notes.push(format!(
            "the upstream got {} request(s) it could not serve",
            figures.bad
        ));
    }
    if exit != Some(0) {
        errors += 1;
        error_notes.push(format!("mcphop exited with {exit:?}"));
    }
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .take(KEPT_ERRORS)
        .collect();
    for warning in warnings {
        error_notes.push(format!("mcphop: {warning}"));
    }
    Cell {
        sessions,
        mode,
        calls,
        elapsed: last.saturating_duration_since(started),
        errors,
        error_notes,
        upstream: figures,
        pool_line,
        exit,
        cpu: (
            proxy_cpu.as_secs_f64() / wall,
            upstream_cpu.as_secs_f64() / wall,
            client_cpu.as_secs_f64() / wall,
            rest_cpu.as_secs_f64() / wall,
        ),
    }
}

fn print_header() {
    println!(
        "{:>8}  {:<5}  {:>8}  {:>8}  {:>9}  {:>8}  {:>7}  {:>10}  {:>7}  {:>6}  {:>18}",
        "sessions",
        "mode",
        "calls/s",
        "calls",
        "upstr.req",
        "sockets",
        "unused",
        "req/socket",
        "reuse",
        "errors",
        "cpu% m/u/c/rest"
    );
}

fn print_row(cell: &Cell) {
    let figures = &cell.upstream;
    let per_socket = figures.requests as f64 / figures.connections.max(1) as f64;
    let reuse = if figures.requests == 0 {
        0.0
    } else {
        100.0 * (1.0 - figures.connections as f64 / figures.requests as f64)
    };
    println!(
        "{:>8}  {:<5}  {:>8.0}  {:>8}  {:>9}  {:>8}  {:>7}  {:>10.1}  {:>6.2}%  {:>6}  {:>18}",
        cell.sessions,
        cell.mode.name(),
        cell.calls_per_second(),
        cell.calls,
        figures.requests,
        figures.connections,
        figures.unused,
        per_socket,
        reuse,
        cell.errors,
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}",
            cell.cpu.0 * 100.0,
            cell.cpu.1 * 100.0,
            cell.cpu.2 * 100.0,
            cell.cpu.3 * 100.0
        ),
    );
}

/// Raises the soft limit on open files (children inherit it): 1000 sessions
/// take 1000 client sockets in mcphop and here, plus the upstream's.
fn raise_file_limit(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            eprintln!(
                "warning: open-file limit is {} (hard {}); 1000 sessions may fail",
                limit.rlim_cur, limit.rlim_max
            );
        }
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (counts, duration): (&[usize], Duration) = if full {
        (&[1, 100, 1000], Duration::from_secs(3))
    } else {
        (&[1, 10], Duration::from_millis(300))
    };
    raise_file_limit(16384);
    let client_threads = 2;
    let extra: Vec<String> = std::env::var(EXTRA_ARGS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    println!(
        "mcphop keep-alive pool benchmark ({}): one Streamable HTTP upstream, {:.1} s of tools/call per cell",
        if full { "full" } else { "smoke" },
        duration.as_secs_f64()
    );
    for line in [
        "  pool  = default pool options (--pool-max-idle-per-host 32, --pool-max-per-host 256, --pool-max-requests 1000)",
        "  fresh = --pool-max-idle-per-host 0: a released connection closes, unless a queued request takes it over",
        "  upstr.req, sockets: requests the upstream served and connections it accepted over the whole cell",
        "    (initialize + initialized per session, the calls, one DELETE per session at shutdown)",
        "  unused: accepted connections that were closed without carrying a request",
        "  reuse = 1 - sockets / upstr.req",
        "  cpu% during the calls (100 = one core): m = mcphop, u = upstream, c = clients, rest = the rest of the machine",
    ] {
        println!("{line}");
    }
    if !extra.is_empty() {
        println!(
            "  extra mcphop options in every cell ({EXTRA_ARGS_ENV}): {}",
            extra.join(" ")
        );
    }
    println!();
    let mut cells = Vec::new();
    print_header();
    for &sessions in counts {
        for mode in [Mode::Pool, Mode::Fresh] {
            let cell = run_cell(sessions, mode, duration, client_threads, &extra);
            print_row(&cell);
            cells.push(cell);
        }
    }
    println!();
    println!("mcphop's pool summaries (at shutdown):");
    for cell in &cells {
        println!(
            "  {:>4} {:<5} {}",
            cell.sessions,
            cell.mode.name(),
            cell.pool_line
        );
    }
    let troubled: Vec<&Cell> = cells
        .iter()
        .filter(|cell| !cell.error_notes.is_empty())
        .collect();
    if !troubled.is_empty() {
        println!();
        println!("errors and warnings:");
        for cell in &troubled {
            for note in &cell.error_notes {
                println!("  {:>4} {:<5} {note}", cell.sessions, cell.mode.name());
            }
        }
    }
    let upstream_check: Vec<String> = cells
        .iter()
        .map(|cell| {
            let f = &cell.upstream;
            format!(
                "{} {}: initialize {} initialized {} calls {} delete {}",
                cell.sessions,
                cell.mode.name(),
                f.initializes,
                f.notifications,
                f.calls,
                f.deletes
            )
        })
        .collect();
    println!();
    println!("upstream requests by kind: {}", upstream_check.join("; "));
    if !full {
        for cell in &cells {
            assert_eq!(
                cell.errors,
                0,
                "{} sessions, {}: errors: {:?}",
                cell.sessions,
                cell.mode.name(),
                cell.error_notes
            );
            assert_eq!(cell.exit, Some(0));
            assert!(cell.calls > 0 && cell.upstream.connections > 0);
        }
    }
}
