//! One client connection's I/O state: the socket, its read and write buffers,
//! the request decoder, the readiness remembered from edge-triggered events,
//! and what the connection is doing (between requests, or carrying a stream).

use std::io;
use std::time::Instant;

use mio::net::TcpStream;
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};

use crate::arena::Key;
use crate::http::request::{Limits, RequestDecoder};
use crate::mcp::router::StreamId;
use crate::reactor::edge_io::{read_into, write_from, ReadOutcome as Read, Readiness};
use crate::reactor::http_upstream::ExchangeKey;
use crate::reactor::ServerId;
use crate::session::SessionKey;

/// Bytes read from a socket per `read` call.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Consumed output bytes kept at the front of the write buffer before it is
/// compacted: compacting on every write would be quadratic.
const COMPACT_AFTER_BYTES: usize = 64 * 1024;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Reading requests and writing immediate answers.
    Requests,
    /// Carrying an SSE stream of a session; further requests wait.
    Streaming {
        session: SessionKey,
        stream: StreamId,
        /// HTTP/1.1 streams are chunked so the connection survives them;
        /// HTTP/1.0 streams end with the connection.
        chunked: bool,
    },
    /// Carrying a legacy HTTP+SSE session's one stream (`GET /sse`): every
    /// stream of the session is written here as `message` events, and the
    /// session ends when it closes.
    LegacyStream {
        session: SessionKey,
        /// As for `Streaming`.
        chunked: bool,
    },
    /// mcphop's stdin and stdout (the stdio front door): JSON-RPC lines in,
    /// every stream of its one session out as lines; `session` once its
    /// `initialize` came.
    StdioSession {
        server: ServerId,
        session: Option<SessionKey>,
    },
    /// Its request waits for the OAuth issuer's keys (`reactor::auth`);
    /// further requests wait.
    AwaitingKeys,
    /// Waiting for an HTTP upstream's answer to this connection's request.
    AwaitingUpstream {
        server: ServerId,
        exchange: ExchangeKey,
    },
    /// Relaying an HTTP upstream's response body as it is (stateless-era
    /// requests pass straight through).
    Relaying {
        server: ServerId,
        exchange: ExchangeKey,
        chunked: bool,
    },
}

/// Which deadline a connection is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineKind {
    /// A request head has begun and must be complete in time, or it gets 408.
    Request,
    /// A request body is arriving; a pause this long gets 408.
    Body,
    /// Idle between requests; closed quietly when it passes.
    KeepAlive,
}

/// What a read pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has no more bytes for now, or the input buffer is full.
    Open,
    /// The peer closed its side, or the socket failed.
    Closed,
}

/// Names a client connection; stale once it closed.
pub(crate) type ConnKey = Key<Conn>;

/// What a client connection reads from and writes to.
pub enum Transport {
    Tcp(TcpStream),
    /// mcphop's own stdin and stdout: the stdio front door's one client.
    Stdio {
        input: Receiver,
        output: Sender,
    },
}

impl Transport {
    /// Registers it under `token` (both pipes of the stdio one).
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Transport::Tcp(socket) => {
                registry.register(socket, token, Interest::READABLE | Interest::WRITABLE)
            }
            // A regular file cannot be polled (EPERM) and never blocks: it
            // is read or written as if always ready.
            Transport::Stdio { input, output } => {
                let pollable = |result: io::Result<()>| match result {
                    Err(error) if error.raw_os_error() == Some(libc::EPERM) => Ok(()),
                    other => other,
                };
                pollable(registry.register(input, token, Interest::READABLE))?;
                pollable(registry.register(output, token, Interest::WRITABLE))
            }
        }
    }

    pub fn deregister(&mut self, registry: &Registry) {
        match self {
            Transport::Tcp(socket) => {
                let _ = registry.deregister(socket);
            }
            Transport::Stdio { input, output } => {
                let _ = registry.deregister(input);
                let _ = registry.deregister(output);
            }
        }
    }
}

impl io::Read for Transport {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(socket) => socket.read(buffer),
            Transport::Stdio { input, .. } => input.read(buffer),
        }
    }
}

impl io::Write for Transport {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(socket) => socket.write(bytes),
            Transport::Stdio { output, .. } => output.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client connection.
pub struct Conn {
    pub socket: Transport,
    pub decoder: RequestDecoder,
    pub input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Readiness remembered from the last edges.
    pub ready: Readiness,
    pub peer_closed: bool,
    pub state: ConnState,
    pub deadline: Option<(Instant, DeadlineKind)>,
    pub close_after_flush: bool,
    /// Close once the current stream ends (the client asked for
    /// `Connection: close`, or HTTP/1.0 needs the close to end the stream).
    close_when_idle: bool,
    /// Queued in the reactor's flush list.
    pub dirty: bool,
    /// While streaming: when a heartbeat comment is due if nothing is written.
    pub heartbeat_at: Option<Instant>,
    /// The deadline of this connection's one armed heartbeat timer.
    pub heartbeat_timer: Option<Instant>,
    /// Bytes arrived since the connection's deadline was last set (a
    /// request body that moves renews its body timeout).
    pub received: bool,
    /// The client's IP address (none for mcphop's own stdin).
    pub peer: Option<std::net::IpAddr>,
    /// Queued output is held (not written) until this moment, unless more
    /// output is queued first: a fresh stream's head waits for its first
    /// event, so both go out in one write (see `front_door::HEAD_HOLD`).
    held_until: Option<Instant>,
}

impl Conn {
    pub fn new(socket: Transport, limits: Limits) -> Self {
        Conn {
            socket,
            decoder: RequestDecoder::new(limits),
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            ready: Readiness::default(),
            peer_closed: false,
            state: ConnState::Requests,
            deadline: None,
            close_after_flush: false,
            close_when_idle: false,
            dirty: false,
            heartbeat_at: None,
            heartbeat_timer: None,
            received: false,
            peer: None,
            held_until: None,
        }
    }

    /// Reads until the socket is drained for now (a short read or
    /// `WouldBlock`), the peer closes, or `input` holds `max_input` bytes
    /// (then readiness stays set, to resume later).
    ///
    /// Also returns how many bytes of the last read were left at the front
    /// of `scratch` instead of being appended to `input`: when nothing was
    /// buffered and that read drained the socket, the caller decodes them
    /// from `scratch` before anything else uses it (one copy fewer), and
    /// appends only what it does not consume.
    pub fn read_available(&mut self, max_input: usize, scratch: &mut [u8]) -> (ReadOutcome, usize) {
        while self.input.len() < max_input {
            match read_into(&mut self.socket, &mut self.ready, scratch) {
                Read::Data(count) if self.input.is_empty() && !self.ready.readable() => {
                    return (ReadOutcome::Open, count);
                }
                Read::Data(count) => self.input.extend_from_slice(&scratch[..count]),
                Read::Blocked => break,
                Read::Eof | Read::Failed(_) => {
                    self.peer_closed = true;
                    return (ReadOutcome::Closed, 0);
                }
            }
        }
        (ReadOutcome::Open, 0)
    }

    /// True while part of a request has arrived and the rest has not (its
    /// head or body is still arriving), or a request waits in `input`: the
    /// connection is not idle, so shutdown waits for it (up to the grace).
    pub fn request_in_progress(&self) -> bool {
        self.state == ConnState::Requests
            && !self.close_after_flush
            && !self.peer_closed
            && (self.decoder.head_in_progress()
                || self.decoder.body_in_progress()
                || !self.input.is_empty())
    }

    /// Marks the connection to close when its current stream ends.
    pub fn close_after_flush_when_idle(&mut self) {
        self.close_when_idle = true;
    }

    /// Whether the connection closes when its current stream ends.
    pub fn wants_close_when_idle(&self) -> bool {
        self.close_when_idle
    }

    /// The output buffer, to append a response to. Whatever is appended
    /// ends a hold: held output goes out with it.
    pub fn output(&mut self) -> &mut Vec<u8> {
        self.held_until = None;
        &mut self.output
    }

    /// Holds the output queued so far until `until` (or until more output is
    /// queued, or `release_hold`), like TCP_CORK.
    pub fn hold_output(&mut self, until: Instant) {
        self.held_until = Some(until);
    }

    /// When held output is due to go out anyway, while it is held.
    pub fn held_until(&self) -> Option<Instant> {
        self.held_until
    }

    /// Ends a hold; true if there was one.
    pub fn release_hold(&mut self) -> bool {
        self.held_until.take().is_some()
    }

    /// Bytes queued and not yet written.
    /// Gives back the buffers of a connection with nothing buffered either
    /// way (an idle keep-alive connection keeps no busy moment's capacity).
    pub fn release_idle_buffers(&mut self) {
        if self.input.is_empty() {
            self.input = Vec::new();
        }
        if self.unwritten() == 0 && self.held_until.is_none() {
            self.output = Vec::new();
            self.written = 0;
        }
    }

    pub fn unwritten(&self) -> usize {
        self.output.len() - self.written
    }

    /// Writes queued output until done or the socket would block (nothing
    /// while the output is held). An error means the connection is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.written < self.output.len() && self.held_until.is_none() {
            let outcome = write_from(
                &mut self.socket,
                &mut self.ready,
                &self.output[self.written..],
            );
            self.written += outcome.written;
            if let Some(error) = outcome.failed {
                return Err(error);
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        } else if self.written >= COMPACT_AFTER_BYTES {
            self.output.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}
