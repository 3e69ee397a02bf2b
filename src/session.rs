//! One client session's state: its id, its routing table, its child process
//! with the three pipes (stdin write queue, stdout and stderr line framers),
//! and its lifecycle from start to reaping.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::unix::pipe::{Receiver, Sender};

use crate::child::{ExitStatus, SpawnedChild};
use crate::jsonrpc::IdKey;
use crate::lines::LineFramer;
use crate::mcp::router::{Router, RouterLimits, StreamId};

/// Longest stderr line logged whole; longer ones are cut.
pub const MAX_STDERR_LINE_BYTES: usize = 64 * 1024;

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reachable by its id.
    Live,
    /// Ended (no longer reachable); its child is being shut down and reaped.
    Ending { reason: String },
}

/// A child's stdin: a queue of bytes and how much of it is written.
pub struct StdinQueue {
    pub pipe: Option<Sender>,
    buffer: Vec<u8>,
    written: usize,
    pub writable: bool,
}

impl StdinQueue {
    fn new(pipe: Sender) -> Self {
        StdinQueue {
            pipe: Some(pipe),
            buffer: Vec::new(),
            written: 0,
            writable: true,
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
        while self.written < self.buffer.len() && self.writable {
            match pipe.write(&self.buffer[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
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
    pub readable: bool,
}

/// What one read from a pipe gave.
pub enum PipeRead {
    /// Bytes were fed to the framer.
    Data,
    /// Nothing to read now.
    WouldBlock,
    /// End of file, or the pipe failed.
    Closed,
}

impl LinePipe {
    fn new(pipe: Receiver, max_line: usize) -> Self {
        LinePipe {
            pipe: Some(pipe),
            framer: LineFramer::new(max_line),
            readable: true,
        }
    }

    /// One `read` into the framer.
    pub fn read_once(&mut self, scratch: &mut [u8]) -> PipeRead {
        let Some(pipe) = self.pipe.as_mut() else {
            return PipeRead::Closed;
        };
        loop {
            match pipe.read(scratch) {
                Ok(0) => return PipeRead::Closed,
                Ok(count) => {
                    self.framer.feed(&scratch[..count]);
                    return PipeRead::Data;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return PipeRead::WouldBlock;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return PipeRead::Closed,
            }
        }
    }
}

/// One client session and its child.
pub struct Session {
    /// Distinguishes this session from later ones that reuse its slab key.
    pub serial: u64,
    pub id: String,
    pub pid: u32,
    pub phase: Phase,
    pub router: Router,
    /// Which client connection carries each open stream.
    pub stream_conns: HashMap<StreamId, usize>,
    pub stdin: StdinQueue,
    pub stdout: LinePipe,
    pub stderr: LinePipe,
    /// The id of the `initialize` request, until its answer arrives.
    pub initialize_id: Option<IdKey>,
    /// The id `initialize` had, kept for the session's life: a cancel naming
    /// it is never forwarded.
    pub initialize_request: Option<IdKey>,
    /// The protocol version the child agreed to.
    pub protocol_version: Option<String>,
    pub started: Instant,
    pub last_activity: Instant,
    /// The deadline of the armed request-timeout timer.
    pub request_timer: Option<Instant>,
    pub exit: Option<ExitStatus>,
}

impl Session {
    pub fn new(
        serial: u64,
        id: String,
        child: SpawnedChild,
        limits: RouterLimits,
        max_line_bytes: usize,
        now: Instant,
    ) -> Self {
        Session {
            serial,
            id,
            pid: child.pid,
            phase: Phase::Live,
            router: Router::new(limits),
            stream_conns: HashMap::new(),
            stdin: StdinQueue::new(child.stdin),
            stdout: LinePipe::new(child.stdout, max_line_bytes),
            stderr: LinePipe::new(child.stderr, MAX_STDERR_LINE_BYTES),
            initialize_id: None,
            initialize_request: None,
            protocol_version: None,
            started: now,
            last_activity: now,
            request_timer: None,
            exit: None,
        }
    }

    /// The first characters of the id, enough to tell sessions apart in logs
    /// without writing the full bearer-like id into them.
    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }

    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }
}
