//! One client session's state: its id, its routing table, its child process
//! with the three pipes (stdin write queue, stdout and stderr line framers),
//! and its lifecycle from start to reaping.

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use mio::unix::pipe::{Receiver, Sender};

use crate::child::{ExitStatus, SpawnedChild};
use crate::core::SessionCore;
use crate::lines::LineFramer;
use crate::mcp::router::StreamId;
use crate::reactor::edge_io::{read_into, write_from, ReadOutcome, Readiness};

/// Longest stderr line logged whole; longer ones are cut.
pub const MAX_STDERR_LINE_BYTES: usize = 64 * 1024;

/// A child's stdin: a queue of bytes and how much of it is written.
pub struct StdinQueue {
    pub pipe: Option<Sender>,
    buffer: Vec<u8>,
    written: usize,
    pub ready: Readiness,
}

impl StdinQueue {
    fn new(pipe: Sender) -> Self {
        StdinQueue {
            pipe: Some(pipe),
            buffer: Vec::new(),
            written: 0,
            ready: Readiness::ready(),
        }
    }

    /// Bytes queued and not yet written.
    pub fn unwritten(&self) -> usize {
        self.buffer.len() - self.written
    }

    /// Queues one message as a line; dropped when the child no longer reads
    /// its stdin (its session is about to end).
    pub fn push_line(&mut self, message: &[u8]) {
        if self.pipe.is_none() {
            return;
        }
        self.buffer.extend_from_slice(message);
        self.buffer.push(b'\n');
    }

    /// Writes until done or the pipe would block. An error means the child
    /// no longer reads its stdin.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        if self.written < self.buffer.len() {
            let outcome = write_from(pipe, &mut self.ready, &self.buffer[self.written..]);
            self.written += outcome.written;
            if let Some(error) = outcome.failed {
                return Err(error);
            }
        }
        if self.written == self.buffer.len() {
            self.buffer.clear();
            self.written = 0;
        }
        Ok(())
    }
}

/// A readable pipe with its framer and remembered readiness.
pub struct LinePipe {
    pub pipe: Option<Receiver>,
    pub framer: LineFramer,
    pub ready: Readiness,
}

/// What one read from a pipe gave.
pub enum PipeRead {
    /// Bytes were fed to the framer.
    Data,
    /// Nothing to read now (drained until the next edge).
    WouldBlock,
    /// End of file, or the pipe failed.
    Closed,
}

impl LinePipe {
    fn new(pipe: Receiver, max_line: usize) -> Self {
        LinePipe {
            pipe: Some(pipe),
            framer: LineFramer::new(max_line),
            ready: Readiness::ready(),
        }
    }

    /// One `read` into the framer (none when the pipe is not readable, or
    /// was drained by a short read).
    pub fn read_once(&mut self, scratch: &mut [u8]) -> PipeRead {
        let Some(pipe) = self.pipe.as_mut() else {
            return PipeRead::Closed;
        };
        match read_into(pipe, &mut self.ready, scratch) {
            ReadOutcome::Data(count) => {
                self.framer.feed(&scratch[..count]);
                PipeRead::Data
            }
            ReadOutcome::Blocked => PipeRead::WouldBlock,
            ReadOutcome::Eof | ReadOutcome::Failed(_) => PipeRead::Closed,
        }
    }
}

/// A stdio upstream: the session's own child process and its three pipes.
pub struct ChildIo {
    pub pid: u32,
    pub stdin: StdinQueue,
    pub stdout: LinePipe,
    pub stderr: LinePipe,
    /// How it ended, once reaped.
    pub exit: Option<ExitStatus>,
}

impl ChildIo {
    pub fn new(child: SpawnedChild, max_line_bytes: usize) -> Self {
        ChildIo {
            pid: child.pid,
            stdin: StdinQueue::new(child.stdin),
            stdout: LinePipe::new(child.stdout, max_line_bytes),
            stderr: LinePipe::new(child.stderr, MAX_STDERR_LINE_BYTES),
            exit: None,
        }
    }
}

/// A Streamable HTTP upstream: the session's counterpart on the server.
#[derive(Debug, Default)]
pub struct HttpSession {
    /// The upstream's own `Mcp-Session-Id`, once its initialize answer named
    /// one. The client never sees it.
    pub upstream_id: Option<String>,
    /// The exchange carrying the upstream GET stream, while one is open.
    pub get_exchange: Option<(usize, u64)>,
    /// The upstream answered the GET stream with something else than a
    /// stream (405): do not ask again.
    pub get_refused: bool,
    /// Upstream connections not read from because a client stream is full.
    pub paused: Vec<usize>,
    /// The headers (`--forward-header`) the client sent last: mcphop's own
    /// requests for the session (GET stream, cancels, DELETE) carry them too.
    pub forwarded: Vec<(String, String)>,
    /// The upstream answered 404: the session is gone there already.
    pub forgotten: bool,
    /// Until when this session's exchanges wait for its upstream GET stream
    /// to be open (its response head), so that nothing the server sends on
    /// that stream is sent before the stream exists: servers drop what they
    /// send to a standalone stream that is not open. `None`: no wait.
    pub gate_until: Option<Instant>,
    /// Exchanges held by the gate, in the order they were started.
    pub gated: Vec<(usize, u64)>,
    /// The last event id seen on the upstream GET stream, to continue it.
    pub get_last_event_id: Option<String>,
    /// When to reopen the upstream GET stream the server closed.
    pub get_reopen_at: Option<Instant>,
    /// Reopens of the GET stream in a row that brought no event.
    pub get_empty_reopens: u32,
    /// Answer streams the upstream closed with requests unanswered, to be
    /// continued with a GET and `Last-Event-ID` (SSE polling).
    pub continuations: Vec<Continuation>,
    /// The deadline of the armed upstream timer (gate, reopen, continue).
    pub upstream_timer: Option<Instant>,
}

/// An upstream answer stream to pick up again where it stopped.
#[derive(Debug, Clone)]
pub struct Continuation {
    /// The router stream its events feed.
    pub stream: StreamId,
    /// The last event id the upstream gave on it.
    pub last_event_id: String,
    /// When to reconnect (the server's `retry:` hint after the close).
    pub at: Instant,
    /// Reconnects in a row that brought no event.
    pub empty_reconnects: u32,
}

impl HttpSession {
    /// The earliest moment something upstream is due for this session.
    pub fn next_upstream_deadline(&self) -> Option<Instant> {
        self.continuations
            .iter()
            .map(|continuation| continuation.at)
            .chain(self.gate_until)
            .chain(self.get_reopen_at)
            .min()
    }
}

/// What a session talks to upstream.
pub enum Upstream {
    /// Its own stdio child.
    Child(ChildIo),
    /// A session on a Streamable HTTP server, reached through the pool.
    Http(HttpSession),
}

/// One client session: its sans-IO core, the client connections carrying
/// its streams, and its upstream.
pub struct Session {
    /// Distinguishes this session from later ones that reuse its slab key.
    pub serial: u64,
    pub core: SessionCore,
    /// Which client connection carries each open stream.
    pub stream_conns: HashMap<StreamId, usize>,
    pub upstream: Upstream,
    /// The deadline of the armed session timer (the core's `poll_timeout`).
    pub timer: Option<Instant>,
}

impl Upstream {
    /// Bytes queued for the upstream and not yet taken (a child's stdin).
    pub fn backlog(&self) -> usize {
        match self {
            Upstream::Child(child) => child.stdin.unwritten(),
            Upstream::Http(_) => 0,
        }
    }
}

impl Session {
    pub fn new(serial: u64, core: SessionCore, upstream: Upstream) -> Self {
        Session {
            serial,
            core,
            stream_conns: HashMap::new(),
            upstream,
            timer: None,
        }
    }

    /// The stdio child, for a session with one.
    pub fn child(&self) -> Option<&ChildIo> {
        match &self.upstream {
            Upstream::Child(child) => Some(child),
            Upstream::Http(_) => None,
        }
    }

    /// The stdio child, for a session with one.
    pub fn child_mut(&mut self) -> Option<&mut ChildIo> {
        match &mut self.upstream {
            Upstream::Child(child) => Some(child),
            Upstream::Http(_) => None,
        }
    }

    /// The HTTP upstream session, for a session with one.
    pub fn http_mut(&mut self) -> Option<&mut HttpSession> {
        match &mut self.upstream {
            Upstream::Http(http) => Some(http),
            Upstream::Child(_) => None,
        }
    }

    /// The HTTP upstream session, for a session with one.
    pub fn http(&self) -> Option<&HttpSession> {
        match &self.upstream {
            Upstream::Http(http) => Some(http),
            Upstream::Child(_) => None,
        }
    }

    /// True once nothing upstream is left to wait for: the child was reaped.
    pub fn upstream_done(&self) -> bool {
        match &self.upstream {
            Upstream::Child(child) => child.exit.is_some(),
            // Its DELETE goes out when it ends; nothing to wait for.
            Upstream::Http(_) => true,
        }
    }

    /// True when upstream output waits only for the client to read (the
    /// child's stdout is readable but paused by back-pressure).
    pub fn upstream_has_backlog(&self) -> bool {
        match &self.upstream {
            Upstream::Child(child) => child.stdout.ready.readable(),
            Upstream::Http(http) => !http.paused.is_empty(),
        }
    }

    /// Describes the upstream's end for the session's last log line.
    pub fn upstream_summary(&self) -> String {
        match &self.upstream {
            Upstream::Child(child) => match child.exit {
                Some(exit) => format!("child pid {} {exit}", child.pid),
                None => format!("child pid {} not reaped", child.pid),
            },
            Upstream::Http(http) => match (&http.upstream_id, http.forgotten) {
                (_, true) => "the upstream had forgotten its session".to_string(),
                (Some(_), false) => "upstream session deleted".to_string(),
                (None, false) => "the upstream kept no session".to_string(),
            },
        }
    }
}
