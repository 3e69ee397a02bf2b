//! A fake Streamable HTTP upstream controlled byte by byte, for the retry and
//! back-pressure tests (included with `#[path]`): every request is recorded
//! with the connection that carried it and its place on that connection, and
//! a per-test script decides, request by request, to answer (by default as
//! `fake_default_reply`), to close the connection without answering, or to
//! stream a large SSE body while counting the bytes the socket took. The test
//! can also reset (RST) any connection from outside. Listens on 127.0.0.1
//! only; every socket is shut down when the fake is dropped.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::upstream::fake::{fake_default_reply, FakeReply};
use crate::upstream::relay::{parse_request, SeenRequest};

/// What the fake does with one request it has read whole.
pub enum Action {
    /// The default answer of `fake_default_reply`, with keep-alive.
    Default,
    /// This answer, with keep-alive.
    Reply(FakeReply),
    /// Close the connection (FIN) without writing a byte of an answer.
    CloseSilently,
    /// A 200 `text/event-stream` answer of `events` events of `size` bytes
    /// of padding each, written as fast as the socket takes them (blocking
    /// writes), the count of bytes written kept in `streamed`; the
    /// connection stays open for more requests once it is sent whole.
    Stream { events: usize, size: usize },
    /// A 200 `text/event-stream` head and `events` small notifications,
    /// then an RST (SO_LINGER 0) mid-body.
    ResetMidBody { events: usize },
    /// A 200 `text/event-stream` head and `events` small notifications,
    /// then silence, the connection open, until the fake is dropped, the
    /// connection reset, or mcphop closes it.
    StallMidBody { events: usize },
    /// These bytes as the answer, then a FIN.
    Raw(&'static [u8]),
    /// After `delay`, the default answer with keep-alive (no
    /// `Connection: close`), then a FIN at once.
    ReplyThenClose { delay: Duration },
}

/// One request as seen: the request, the connection's accept index and its
/// 0-based place among the requests of that connection.
#[derive(Clone)]
pub struct Seen {
    pub request: SeenRequest,
    pub on_conn: usize,
}

pub type Script = dyn Fn(&SeenRequest, usize) -> Action + Send + Sync;

pub struct State {
    pub seen: Mutex<Vec<Seen>>,
    pub accepted: AtomicUsize,
    pub stop: AtomicBool,
    /// Per accepted connection: set to reset it (RST) at the next poll.
    pub reset: Mutex<Vec<Arc<AtomicBool>>>,
    /// Per accepted connection: set once its socket is closed.
    pub closed: Mutex<Vec<Arc<AtomicBool>>>,
    /// Bytes of `Action::Stream` bodies the sockets took, all streams.
    pub streamed: AtomicUsize,
    /// Set while a `Stream` writer is blocked mid-body (cleared when done).
    pub streaming: AtomicBool,
    script: Box<Script>,
}

pub struct Scripted {
    pub port: u16,
    pub state: Arc<State>,
}

impl Scripted {
    /// Starts the fake; `script` gets each request and its place on its
    /// connection.
    pub fn start(script: impl Fn(&SeenRequest, usize) -> Action + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted upstream");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            seen: Mutex::default(),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            reset: Mutex::default(),
            closed: Mutex::default(),
            streamed: AtomicUsize::new(0),
            streaming: AtomicBool::new(false),
            script: Box::new(script),
        });
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let reset = Arc::new(AtomicBool::new(false));
                let closed = Arc::new(AtomicBool::new(false));
                shared.reset.lock().unwrap().push(Arc::clone(&reset));
                shared.closed.lock().unwrap().push(Arc::clone(&closed));
                let conn = shared.accepted.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    serve(stream, conn, &shared, &reset);
                    closed.store(true, Ordering::SeqCst);
                });
            }
        });
        Scripted { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Every request seen, one line each, for failure messages.
    pub fn describe(&self) -> String {
        self.seen()
            .iter()
            .map(|s| {
                format!(
                    "conn {} #{}: {} {}",
                    s.request.conn, s.on_conn, s.request.method, s.request.body
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Resets connection `conn` (SO_LINGER 0, then close: an RST, no FIN)
    /// and waits until it is closed.
    pub fn reset(&self, conn: usize) {
        let flag = Arc::clone(&self.state.reset.lock().unwrap()[conn]);
        flag.store(true, Ordering::SeqCst);
        let closed = Arc::clone(&self.state.closed.lock().unwrap()[conn]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !closed.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "connection {conn} not reset");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for flag in self.state.reset.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Sets SO_LINGER to 0 so that closing the socket sends an RST.
fn linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve(mut stream: TcpStream, conn: usize, state: &State, reset: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(5)));
    let mut buf = Vec::new();
    let mut on_conn = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if reset.load(Ordering::SeqCst) {
            linger_zero(&stream);
            return;
        }
        while let Some((request, used)) = parse_request(conn, &buf) {
            buf.drain(..used);
            state.seen.lock().unwrap().push(Seen {
                request: request.clone(),
                on_conn,
            });
            on_conn += 1;
            let reply = match (state.script)(&request, on_conn - 1) {
                Action::Default => fake_default_reply(&request),
                Action::Reply(reply) => reply,
                Action::CloseSilently => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                Action::Raw(bytes) => {
                    let _ = stream.write_all(bytes);
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                Action::Stream { events, size } => {
                    // A body sent whole leaves the connection open, as a
                    // keep-alive server's would; closing it just after
                    // would race mcphop's reuse of it.
                    if stream_body(&mut stream, state, reset, events, size) {
                        let _ = stream.set_write_timeout(None);
                        continue;
                    }
                    return;
                }
                Action::ReplyThenClose { delay } => {
                    thread::sleep(delay);
                    let _ = stream.write_all(fake_default_reply(&request).to_http().as_bytes());
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                Action::ResetMidBody { events } => {
                    let _ = start_body(&mut stream, events);
                    linger_zero(&stream);
                    return;
                }
                Action::StallMidBody { events } => {
                    let _ = start_body(&mut stream, events);
                    // Silent until reset, or until mcphop closes its end.
                    while !reset.load(Ordering::SeqCst) {
                        match stream.read(&mut chunk) {
                            Ok(0) => return,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) => {}
                            _ => return,
                        }
                    }
                    linger_zero(&stream);
                    return;
                }
            };
            if stream.write_all(reply.to_http().as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Writes an SSE response head and `events` small notifications (each
/// its own chunk), and no last chunk.
fn start_body(stream: &mut TcpStream, events: usize) -> std::io::Result<()> {
    let mut out = String::from(
        "HTTP/1.1 200 Fake\r\nContent-Type: text/event-stream\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
    );
    for n in 0..events {
        let event = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\
             \"params\":{{\"level\":\"info\",\"data\":\"partial {n}\"}}}}\n\n"
        );
        out.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

/// Writes a chunked SSE body of `events` progress notifications of `size`
/// padding bytes, counting what the socket took, until done, an error or
/// a reset. Each write waits at most 100 ms so that a reset is seen.
/// Writes the `Stream` answer; true when it was sent whole.
fn stream_body(
    stream: &mut TcpStream,
    state: &State,
    reset: &AtomicBool,
    events: usize,
    size: usize,
) -> bool {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let head = "HTTP/1.1 200 Fake\r\nContent-Type: text/event-stream\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    state.streaming.store(true, Ordering::SeqCst);
    let padding = "x".repeat(size);
    for n in 0..events {
        let event = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\
             \"params\":{{\"level\":\"info\",\"data\":\"{n} {padding}\"}}}}\n\n"
        );
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        let bytes = chunk.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            if reset.load(Ordering::SeqCst) {
                state.streaming.store(false, Ordering::SeqCst);
                linger_zero(stream);
                return false;
            }
            match stream.write(&bytes[at..]) {
                Ok(0) => {
                    state.streaming.store(false, Ordering::SeqCst);
                    return false;
                }
                Ok(written) => {
                    at += written;
                    state.streamed.fetch_add(written, Ordering::SeqCst);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    state.streaming.store(false, Ordering::SeqCst);
                    return false;
                }
            }
        }
    }
    let sent = stream.write_all(b"0\r\n\r\n").is_ok();
    state.streaming.store(false, Ordering::SeqCst);
    sent
}
