//! A fast MCP server for benchmarks: it must never be the bottleneck.
//!
//! By default it speaks stdio (one JSON-RPC message per line); with
//! `--http PORT` it serves Streamable HTTP on 127.0.0.1:PORT instead
//! (`--http 0` picks a free port), printing `listening on 127.0.0.1:PORT`
//! on stdout once it listens.
//!
//! Methods: `initialize` (echoes a known protocol version, else offers
//! 2025-11-25; advertises `tools`), `ping`, `tools/list` (one tool, `echo`)
//! and `tools/call` of `echo`, which answers
//! `{"content":[{"type":"text","text":<arguments.message>}]}`. Notifications
//! and responses are ignored; any other method gets -32601.
//!
//! stdio: reads through a buffer and flushes its answers once per batch, when
//! every line read so far has been handled; exits at EOF on stdin.
//!
//! HTTP: keep-alive HTTP/1.1, a thread per connection, JSON answers (never
//! SSE); `initialize` mints an `Mcp-Session-Id`, which later requests must
//! carry (its value is not checked); notifications and responses get 202,
//! `DELETE` 200, `GET` 405.
//!
//! ```text
//! cargo build --release --examples
//! echo '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}' \
//!     | target/release/examples/bench_server
//! target/release/examples/bench_server --http 0
//! ```

use std::borrow::Cow;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Protocol versions accepted verbatim from `initialize`.
const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Offered for any other requested version.
const LATEST_VERSION: &str = "2025-11-25";

/// Largest request (line or HTTP body) accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A JSON-RPC message, borrowed from the input where it can be (strings
/// without escapes cost no allocation). Unknown fields are skipped.
#[derive(Deserialize)]
struct Message<'a> {
    /// Absent for notifications; `null` is treated like absent.
    #[serde(borrow, default)]
    id: Option<Id<'a>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

/// A request id, as a number or a string (borrowed when it can be).
enum Id<'a> {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for IdVisitor<'a> {
            type Value = Id<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Id<'a>, E> {
                Ok(Id::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Id<'a>, E> {
                Ok(Id::Signed(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Id<'a>, E> {
                Ok(Id::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Id<'a>, E> {
                Ok(Id::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Id<'a>, E> {
                Ok(Id::Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_any(IdVisitor(std::marker::PhantomData))
    }
}

/// The union of the params this server reads: `initialize`'s and `tools/call`'s.
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Arguments<'a>>,
}

#[derive(Deserialize)]
struct Arguments<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// Just enough of a message to answer one the typed parse refused.
#[derive(Deserialize)]
struct Fallback<'a> {
    #[serde(borrow, default)]
    id: Option<Id<'a>>,
    #[serde(default)]
    method: Option<IgnoredAny>,
}

/// What a message needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// An answer was written: to `initialize`, or a JSON-RPC error.
    Answered { initialize: bool, error: bool },
    /// A notification or a response: nothing to answer.
    Nothing,
}

fn write_id(out: &mut Vec<u8>, id: Option<&Id>) {
    match id {
        None => out.extend_from_slice(b"null"),
        Some(Id::Unsigned(n)) => {
            let _ = write!(out, "{n}");
        }
        Some(Id::Signed(n)) => {
            let _ = write!(out, "{n}");
        }
        Some(Id::Float(n)) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Some(Id::Text(text)) => {
            let _ = serde_json::to_writer(&mut *out, text.as_ref());
        }
    }
}

fn write_error(out: &mut Vec<u8>, id: Option<&Id>, code: i64, message: &str) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    write_id(out, id);
    let _ = write!(out, r#","error":{{"code":{code},"message":"#);
    let _ = serde_json::to_writer(&mut *out, message);
    out.extend_from_slice(b"}}");
}

/// Handles one JSON-RPC message, appending its answer (one line of JSON, no
/// newline) to `out`.
fn handle(input: &[u8], out: &mut Vec<u8>) -> Handled {
    if input.first() == Some(&b'[') {
        return handle_batch(input, out);
    }
    let message: Message = match serde_json::from_slice(input) {
        Ok(message) => message,
        Err(_) => return handle_odd(input, out),
    };
    let Some(method) = message.method.as_deref() else {
        // A response to a request this server never sends.
        return Handled::Nothing;
    };
    let Some(id) = message.id.as_ref() else {
        return Handled::Nothing;
    };
    let params = message.params.as_ref();
    let start = |out: &mut Vec<u8>| {
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        write_id(out, Some(id));
        out.extend_from_slice(br#","result":"#);
    };
    match method {
        "initialize" => {
            let requested = params
                .and_then(|p| p.protocol_version.as_deref())
                .unwrap_or("");
            let version = SUPPORTED_VERSIONS
                .iter()
                .find(|&&known| known == requested)
                .copied()
                .unwrap_or(LATEST_VERSION);
            start(out);
            let _ = write!(
                out,
                r#"{{"protocolVersion":"{version}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"bench-server","version":"0.1.0"}}}}}}"#
            );
            return Handled::Answered {
                initialize: true,
                error: false,
            };
        }
        "ping" => {
            start(out);
            out.extend_from_slice(b"{}}");
        }
        "tools/list" => {
            start(out);
            out.extend_from_slice(
                br#"{"tools":[{"name":"echo","description":"Echoes its message","inputSchema":{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}}]}}"#,
            );
        }
        "tools/call" => {
            let name = params.and_then(|p| p.name.as_deref()).unwrap_or("");
            if name != "echo" {
                write_error(out, Some(id), -32602, &format!("Unknown tool: {name}"));
                return Handled::Answered {
                    initialize: false,
                    error: true,
                };
            }
            let text = params
                .and_then(|p| p.arguments.as_ref())
                .and_then(|a| a.message.as_deref());
            start(out);
            match text {
                Some(text) => {
                    out.extend_from_slice(br#"{"content":[{"type":"text","text":"#);
                    let _ = serde_json::to_writer(&mut *out, text);
                    out.extend_from_slice(b"}]}}");
                }
                None => out.extend_from_slice(
                    br#"{"content":[{"type":"text","text":"argument 'message' (string) is required"}],"isError":true}}"#,
                ),
            }
        }
        other => {
            write_error(out, Some(id), -32601, &format!("Method not found: {other}"));
            return Handled::Answered {
                initialize: false,
                error: true,
            };
        }
    }
    Handled::Answered {
        initialize: false,
        error: false,
    }
}

/// A JSON-RPC batch (2025-03-26): the answers as one array, if any.
fn handle_batch(input: &[u8], out: &mut Vec<u8>) -> Handled {
    let items: Vec<serde_json::Value> = match serde_json::from_slice(input) {
        Ok(items) => items,
        Err(_) => return handle_odd(input, out),
    };
    if items.is_empty() {
        write_error(out, None, -32600, "Invalid Request");
        return Handled::Answered {
            initialize: false,
            error: true,
        };
    }
    let start = out.len();
    out.push(b'[');
    let mut answered = Handled::Nothing;
    let mut item_text = Vec::new();
    for item in &items {
        item_text.clear();
        let _ = serde_json::to_writer(&mut item_text, item);
        let before = out.len();
        if before > start + 1 {
            out.push(b',');
        }
        match handle(&item_text, out) {
            Handled::Nothing => out.truncate(before),
            answer @ Handled::Answered { .. } => {
                if answered == Handled::Nothing {
                    answered = answer;
                }
            }
        }
    }
    if answered == Handled::Nothing {
        out.truncate(start);
    } else {
        out.push(b']');
    }
    answered
}

/// A message the typed parse refused: not JSON, not an object, or params of
/// an unexpected shape.
fn handle_odd(input: &[u8], out: &mut Vec<u8>) -> Handled {
    match serde_json::from_slice::<Fallback>(input) {
        Ok(Fallback {
            id: Some(id),
            method: Some(_),
        }) => write_error(out, Some(&id), -32602, "Invalid params"),
        Ok(Fallback { id: None, .. }) | Ok(Fallback { method: None, .. }) => {
            return Handled::Nothing
        }
        Err(_) => match serde_json::from_slice::<IgnoredAny>(input) {
            Ok(_) => write_error(out, None, -32600, "Invalid Request"),
            Err(_) => write_error(out, None, -32700, "Parse error"),
        },
    }
    Handled::Answered {
        initialize: false,
        error: true,
    }
}

// ---------------------------------------------------------------------------
// stdio
// ---------------------------------------------------------------------------

fn serve_stdio() -> io::Result<()> {
    let stdin = io::stdin();
    let mut input = io::BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut output = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut line = Vec::with_capacity(4096);
    let mut answer = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            output.flush()?;
            return Ok(());
        }
        let text = line.trim_ascii();
        if !text.is_empty() && text.len() <= MAX_MESSAGE {
            answer.clear();
            if let Handled::Answered { .. } = handle(text, &mut answer) {
                answer.push(b'\n');
                output.write_all(&answer)?;
            }
        }
        // Every line read so far is handled: send the batch's answers.
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
}

// ---------------------------------------------------------------------------
// Streamable HTTP
// ---------------------------------------------------------------------------

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

fn serve_http(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let port = listener.local_addr()?.port();
    {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on 127.0.0.1:{port}")?;
        stdout.flush()?;
    }
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and the like: back off rather than spin.
                eprintln!("[bench-server] accept: {error}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(128 * 1024)
            .spawn(move || serve_connection(stream));
        if let Err(error) = spawned {
            eprintln!("[bench-server] cannot start a thread: {error}");
        }
    }
}

/// Serves one keep-alive connection until the peer closes it. Pipelined
/// requests are answered in order with one write.
fn serve_connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut input = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut output = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(4096);
    loop {
        let mut used = 0;
        let mut close = false;
        while !close {
            match parse_request(&input[used..filled], &mut output, &mut body) {
                Parsed::Done {
                    used: more,
                    close: c,
                } => {
                    used += more;
                    close = c;
                }
                Parsed::Partial { need } => {
                    if need > input.len() {
                        input.resize(need.next_power_of_two(), 0);
                    }
                    break;
                }
                Parsed::Bad => close = true,
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).is_err() {
                return;
            }
            output.clear();
        }
        if close {
            return;
        }
        input.copy_within(used..filled, 0);
        filled -= used;
        if filled == input.len() {
            input.resize(input.len() * 2, 0);
        }
        match stream.read(&mut input[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(count) => filled += count,
        }
    }
}

enum Parsed {
    /// A request was answered: the bytes it took; whether to close after.
    Done { used: usize, close: bool },
    /// More bytes are needed; at least `need` in all (0 when unknown).
    Partial { need: usize },
    /// Unparseable: answered with 400, close.
    Bad,
}

fn parse_request(data: &[u8], out: &mut Vec<u8>, body_out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if data.len() > 64 * 1024 {
                out.extend_from_slice(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return Parsed::Bad;
            }
            return Parsed::Partial { need: 0 };
        }
        Err(_) => {
            out.extend_from_slice(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Parsed::Bad;
        }
    };
    let mut length = 0usize;
    let mut has_session = false;
    let mut close = request.version == Some(0);
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                Some(value) => length = value,
                None => {
                    out.extend_from_slice(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return Parsed::Bad;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked request bodies are not supported.
            out.extend_from_slice(
                b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Parsed::Bad;
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            has_session = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if header.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if header.value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    if length > MAX_MESSAGE {
        out.extend_from_slice(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return Parsed::Bad;
    }
    if data.len() < head_len + length {
        return Parsed::Partial {
            need: head_len + length,
        };
    }
    let body = &data[head_len..head_len + length];
    let connection = if close { "Connection: close\r\n" } else { "" };
    match request.method.unwrap_or("") {
        "POST" => {
            body_out.clear();
            match handle(body, body_out) {
                Handled::Answered { initialize, error } => {
                    if !initialize && !has_session && !error {
                        body_out.clear();
                        write_error(body_out, None, -32000, "Bad Request: no Mcp-Session-Id");
                        let _ = write!(
                            out,
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n",
                            body_out.len()
                        );
                    } else if initialize {
                        let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: bench-{}-{session}\r\n{connection}Content-Length: {}\r\n\r\n",
                            std::process::id(),
                            body_out.len()
                        );
                    } else {
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n",
                            body_out.len()
                        );
                    }
                    out.extend_from_slice(body_out);
                }
                Handled::Nothing => {
                    let _ = write!(
                        out,
                        "HTTP/1.1 202 Accepted\r\n{connection}Content-Length: 0\r\n\r\n"
                    );
                }
            }
        }
        "DELETE" => {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\n{connection}Content-Length: 0\r\n\r\n"
            );
        }
        _ => {
            let _ = write!(
                out,
                "HTTP/1.1 405 Method Not Allowed\r\nAllow: POST, DELETE\r\n{connection}Content-Length: 0\r\n\r\n"
            );
        }
    }
    Parsed::Done {
        used: head_len + length,
        close,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => serve_stdio(),
        [flag, port] if flag == "--http" => match port.parse::<u16>() {
            Ok(port) => serve_http(port),
            Err(_) => {
                eprintln!("bench_server: --http takes a port number (0 picks one)");
                std::process::exit(2);
            }
        },
        [flag] if flag == "-h" || flag == "--help" => {
            println!("usage: bench_server [--http PORT]");
            return;
        }
        _ => {
            eprintln!("usage: bench_server [--http PORT]");
            std::process::exit(2);
        }
    };
    if let Err(error) = result {
        // A closed stdout (the proxy went away) is a normal end.
        if error.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("[bench-server] {error}");
            std::process::exit(1);
        }
    }
}
