//! A stream's replay buffer: the events it sent, newest last, bounded by count
//! and bytes, so a client that reconnects with `Last-Event-ID` gets exactly
//! what it missed, or a clear "evicted" when too much happened meanwhile.

use std::collections::VecDeque;
use std::rc::Rc;

/// An event's bytes, shared between the replay history and the write of the
/// event (and a resume's replay), so recording an event copies nothing.
pub(crate) type EventBytes = Rc<Vec<u8>>;

/// Events kept per stream for replay.
pub const DEFAULT_REPLAY_MAX_EVENTS: usize = 1000;
/// Bytes of event data kept per stream for replay.
pub const DEFAULT_REPLAY_MAX_BYTES: usize = 1024 * 1024;

/// Why a resume point cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Events after the resume point were dropped to respect the bounds.
    Evicted,
    /// The resume point is later than anything the stream sent.
    FromTheFuture,
}

/// The bounded history of one stream.
#[derive(Debug)]
pub struct ReplayBuffer {
    events: VecDeque<(u64, EventBytes)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// The highest sequence number dropped, 0 when nothing was.
    evicted_through: u64,
    /// The highest sequence number ever pushed.
    last_seq: u64,
}

impl ReplayBuffer {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        ReplayBuffer {
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
            evicted_through: 0,
            last_seq: 0,
        }
    }

    /// Records an event (shared, not copied); sequence numbers must increase.
    pub(crate) fn push(&mut self, seq: u64, data: EventBytes) {
        self.last_seq = seq;
        self.bytes += data.len();
        self.events.push_back((seq, data));
        while self.events.len() > self.max_events || self.bytes > self.max_bytes {
            match self.events.pop_front() {
                Some((dropped, data)) => {
                    self.bytes -= data.len();
                    self.evicted_through = dropped;
                }
                None => break,
            }
        }
    }

    /// The events after `seq`, oldest first.
    pub(crate) fn after(&self, seq: u64) -> Result<Vec<(u64, EventBytes)>, ReplayError> {
        if seq < self.evicted_through {
            return Err(ReplayError::Evicted);
        }
        if seq > self.last_seq {
            return Err(ReplayError::FromTheFuture);
        }
        Ok(self
            .events
            .iter()
            .filter(|(event_seq, _)| *event_seq > seq)
            .cloned()
            .collect())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_what_came_after_the_resume_point() {
        let mut buffer = ReplayBuffer::new(10, 1000);
        for seq in 1..=5 {
            buffer.push(seq, Rc::new(format!("e{seq}").into_bytes()));
        }
        let replay = buffer.after(3).unwrap();
        assert_eq!(
            replay,
            vec![(4, Rc::new(b"e4".to_vec())), (5, Rc::new(b"e5".to_vec()))]
        );
        assert_eq!(buffer.after(0).unwrap().len(), 5);
        assert!(buffer.after(5).unwrap().is_empty());
        assert_eq!(buffer.after(6), Err(ReplayError::FromTheFuture));
    }

    #[test]
    fn evicts_by_count_and_by_bytes_and_says_so() {
        let mut by_count = ReplayBuffer::new(3, 1000);
        for seq in 1..=5 {
            by_count.push(seq, Rc::new(b"x".to_vec()));
        }
        assert_eq!(by_count.after(1), Err(ReplayError::Evicted));
        assert_eq!(by_count.after(2).unwrap().len(), 3);

        let mut by_bytes = ReplayBuffer::new(100, 10);
        for seq in 1..=4 {
            by_bytes.push(seq, Rc::new(b"abcd".to_vec()));
        }
        assert!(by_bytes.bytes() <= 10);
        assert_eq!(by_bytes.after(1), Err(ReplayError::Evicted));
        assert_eq!(by_bytes.after(2).unwrap().len(), 2);
    }
}
