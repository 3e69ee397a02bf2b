//! The one readiness and buffered-I/O helper of the loop, shared by client
//! sockets, child pipes and upstream sockets. It owns the edge-triggered
//! discipline, so no other code repeats the `WouldBlock`/`Interrupted` dance:
//!
//! - readiness is remembered in user space (`Readiness`) from each edge and
//!   cleared when a call would block;
//! - no read after a short read: a read that returns fewer bytes than the
//!   buffer had room for drained the source for now, and the next arrival
//!   raises a new edge (nginx relies on this). The exception is a source whose
//!   peer hung up: its EOF raises no further edge, so it is read until EOF;
//! - a short write means the kernel buffer is full: the next edge says when
//!   there is room again, so no write is tried only to see `WouldBlock`;
//! - `Interrupted` is a wake-up, never an error; EOF and errors are values.

use std::io::{self, IoSlice, Read, Write};

use mio::event::Event;

/// Readiness remembered from edge-triggered events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer hung up (or the source failed): reads go on until EOF, since
    /// no new edge will come.
    hung_up: bool,
}

impl Readiness {
    /// Ready both ways: a fresh pipe, or a source whose first edge may have
    /// come before it was watched.
    pub(crate) fn ready() -> Readiness {
        Readiness {
            readable: true,
            writable: true,
            hung_up: false,
        }
    }

    /// Records what an edge says.
    pub(crate) fn on_event(&mut self, event: &Event) {
        let failed = event.is_error();
        if event.is_readable() || event.is_read_closed() || failed {
            self.readable = true;
        }
        if event.is_read_closed() || failed {
            self.hung_up = true;
        }
        if event.is_writable() || event.is_write_closed() || failed {
            self.writable = true;
        }
    }

    pub(crate) fn readable(&self) -> bool {
        self.readable
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn set_writable(&mut self) {
        self.writable = true;
    }

    /// True once an edge said the peer hung up (or the source failed).
    pub(crate) fn hung_up(&self) -> bool {
        self.hung_up
    }

    pub(crate) fn clear_readable(&mut self) {
        self.readable = false;
    }

    /// The writer is known gone (a reaped child): read to EOF, whatever the
    /// size of each read.
    pub(crate) fn drain_to_eof(&mut self) {
        self.readable = true;
        self.hung_up = true;
    }
}

/// What one `read_into` gave.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// This many bytes are at the front of the buffer. After a short read
    /// the source is marked not readable: the caller stops after these.
    Data(usize),
    /// Nothing to read now (not readable, or `WouldBlock`).
    Blocked,
    /// The peer closed its side.
    Eof,
    /// The read failed.
    Failed(io::Error),
}

/// What one `write_from` did: how many bytes went out (all of them, or as
/// many as the kernel took before the sink stopped being writable), and the
/// error that stopped it, if one did.
#[derive(Debug)]
pub(crate) struct WriteOutcome {
    pub written: usize,
    /// A zero-length write counts as failed.
    pub failed: Option<io::Error>,
}

/// One read from `source` into `buffer`, if it is readable.
pub(crate) fn read_into(
    source: &mut impl Read,
    ready: &mut Readiness,
    buffer: &mut [u8],
) -> ReadOutcome {
    if !ready.readable || buffer.is_empty() {
        return ReadOutcome::Blocked;
    }
    loop {
        match source.read(buffer) {
            Ok(0) => {
                ready.readable = false;
                return ReadOutcome::Eof;
            }
            Ok(count) => {
                if count < buffer.len() && !ready.hung_up {
                    ready.readable = false;
                }
                return ReadOutcome::Data(count);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                ready.readable = false;
                return ReadOutcome::Blocked;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                ready.readable = false;
                return ReadOutcome::Failed(error);
            }
        }
    }
}

/// Writes `buffer` to `sink` while it is writable; stops early at a short
/// write (the kernel buffer is full) or `WouldBlock`.
pub(crate) fn write_from(
    sink: &mut impl Write,
    ready: &mut Readiness,
    buffer: &[u8],
) -> WriteOutcome {
    let mut written = 0;
    while written < buffer.len() && ready.writable {
        let rest = &buffer[written..];
        if let Some(error) = count_write(sink.write(rest), rest.len(), &mut written, ready) {
            return WriteOutcome {
                written,
                failed: Some(error),
            };
        }
    }
    WriteOutcome {
        written,
        failed: None,
    }
}

/// `write_from` for `first` then `second` as one buffer, with vectored
/// writes (`writev`): two pieces leave in one call without being copied
/// together first. `written` counts bytes of the two together.
pub(crate) fn write_pair_from(
    sink: &mut impl Write,
    ready: &mut Readiness,
    first: &[u8],
    second: &[u8],
) -> WriteOutcome {
    let total = first.len() + second.len();
    let mut written = 0;
    while written < total && ready.writable {
        let (head, tail) = match first.get(written..) {
            Some(head) if !head.is_empty() => (head, second),
            _ => (
                second
                    .get(written - first.len().min(written)..)
                    .unwrap_or_default(),
                &[][..],
            ),
        };
        let result = sink.write_vectored(&[IoSlice::new(head), IoSlice::new(tail)]);
        let rest = head.len() + tail.len();
        if let Some(error) = count_write(result, rest, &mut written, ready) {
            return WriteOutcome {
                written,
                failed: Some(error),
            };
        }
    }
    WriteOutcome {
        written,
        failed: None,
    }
}

/// Folds one write of up to `rest` bytes into `written`: a short write or
/// `WouldBlock` clears writability, `Interrupted` is retried by the caller's
/// loop, and a zero-length write or another error is returned.
fn count_write(
    result: io::Result<usize>,
    rest: usize,
    written: &mut usize,
    ready: &mut Readiness,
) -> Option<io::Error> {
    match result {
        Ok(0) => Some(io::ErrorKind::WriteZero.into()),
        Ok(count) => {
            *written += count.min(rest);
            if count < rest {
                ready.writable = false;
            }
            None
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
            ready.writable = false;
            None
        }
        Err(error) if error.kind() == io::ErrorKind::Interrupted => None,
        Err(error) => Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted source or sink: each call takes the next step.
    enum Step {
        Bytes(usize),
        Block,
        Interrupt,
        Fail,
    }

    struct Script(VecDeque<Step>, usize);

    impl Script {
        fn new(steps: impl IntoIterator<Item = Step>) -> Script {
            Script(steps.into_iter().collect(), 0)
        }
        fn next(&mut self, room: usize) -> io::Result<usize> {
            self.1 += 1;
            match self.0.pop_front() {
                Some(Step::Bytes(count)) => Ok(count.min(room)),
                Some(Step::Block) | None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Step::Interrupt) => Err(io::ErrorKind::Interrupted.into()),
                Some(Step::Fail) => Err(io::ErrorKind::ConnectionReset.into()),
            }
        }
    }

    impl Read for Script {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            self.next(buffer.len())
        }
    }

    impl Write for Script {
        fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
            self.next(buffer.len())
        }
        fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
            self.next(buffers.iter().map(|buffer| buffer.len()).sum())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_short_read_ends_reading_until_the_next_edge() {
        let mut ready = Readiness::ready();
        let mut source = Script::new([Step::Bytes(10), Step::Bytes(10)]);
        let mut buffer = [0u8; 64];
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Data(10)
        ));
        assert!(!ready.readable());
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Blocked
        ));
        assert_eq!(source.1, 1, "no read syscall after a short read");
    }

    #[test]
    fn a_full_read_keeps_reading_and_interrupted_is_retried() {
        let mut ready = Readiness::ready();
        let mut source = Script::new([Step::Interrupt, Step::Bytes(64), Step::Block]);
        let mut buffer = [0u8; 64];
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Data(64)
        ));
        assert!(ready.readable());
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Blocked
        ));
        assert!(!ready.readable());
    }

    #[test]
    fn a_hung_up_source_is_read_to_eof_despite_short_reads() {
        let mut ready = Readiness::default();
        ready.drain_to_eof();
        let mut source = Script::new([Step::Bytes(3), Step::Bytes(0)]);
        let mut buffer = [0u8; 64];
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Data(3)
        ));
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Eof
        ));
    }

    #[test]
    fn errors_are_values() {
        let mut ready = Readiness::ready();
        let mut source = Script::new([Step::Fail]);
        let mut buffer = [0u8; 8];
        assert!(matches!(
            read_into(&mut source, &mut ready, &mut buffer),
            ReadOutcome::Failed(_)
        ));
        let mut sink = Script::new([Step::Fail]);
        let outcome = write_from(&mut sink, &mut Readiness::ready(), b"abc");
        assert!(outcome.failed.is_some());
        let mut sink = Script::new([Step::Bytes(0)]);
        let outcome = write_from(&mut sink, &mut Readiness::ready(), b"abc");
        assert!(outcome.failed.is_some());
    }

    #[test]
    fn a_pair_is_written_in_one_call_and_resumes_after_a_short_write() {
        let mut ready = Readiness::ready();
        let mut sink = Script::new([Step::Bytes(5)]);
        assert_eq!(
            write_pair_from(&mut sink, &mut ready, b"abc", b"\n").written,
            4
        );
        assert_eq!(sink.1, 1, "one call for both pieces");
        let mut sink = Script::new([Step::Interrupt, Step::Bytes(2), Step::Bytes(2)]);
        let outcome = write_pair_from(&mut sink, &mut ready, b"abc", b"\n");
        assert_eq!(outcome.written, 2);
        assert!(!ready.writable());
        ready.set_writable();
        let mut sink = Script::new([Step::Bytes(1), Step::Block]);
        assert_eq!(
            write_pair_from(&mut sink, &mut ready, b"", b"\n").written,
            1
        );
        let mut sink = Script::new([Step::Fail]);
        assert!(
            write_pair_from(&mut sink, &mut Readiness::ready(), b"a", b"b")
                .failed
                .is_some()
        );
    }

    #[test]
    fn a_short_write_waits_for_the_next_edge() {
        let mut ready = Readiness::ready();
        let mut sink = Script::new([Step::Interrupt, Step::Bytes(2), Step::Bytes(2)]);
        assert_eq!(write_from(&mut sink, &mut ready, b"abcd").written, 2);
        assert!(!ready.writable());
        assert_eq!(sink.1, 2);
        ready.set_writable();
        assert_eq!(write_from(&mut sink, &mut ready, b"cd").written, 2);
        assert!(ready.writable());
    }
}
