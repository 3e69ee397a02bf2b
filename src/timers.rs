//! Deadline timers for the event loop: a min-heap of `(deadline, key)` with lazy
//! cancellation. An owner keeps its own current deadline; a popped entry whose
//! deadline no longer matches its owner's is simply stale and ignored, so
//! re-arming or cancelling never has to search the heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A queue of deadlines, each naming what it is for.
#[derive(Debug)]
pub struct TimerQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    sequence: u64,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            sequence: 0,
        }
    }
}

impl<K: Ord> TimerQueue<K> {
    /// Arms a timer for `key` at `deadline`.
    pub fn schedule(&mut self, deadline: Instant, key: K) {
        // The sequence number keeps equal deadlines in arming order.
        self.sequence = self.sequence.wrapping_add(1);
        self.heap.push(Reverse((deadline, self.sequence, key)));
    }

    /// The earliest deadline, stale or not.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// The earliest timer, without removing it.
    pub fn peek(&self) -> Option<(Instant, &K)> {
        self.heap
            .peek()
            .map(|Reverse((deadline, _, key))| (*deadline, key))
    }

    /// Removes the earliest timer (a stale one, typically).
    pub fn pop(&mut self) -> Option<(Instant, K)> {
        self.heap
            .pop()
            .map(|Reverse((deadline, _, key))| (deadline, key))
    }

    /// Removes and returns one timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((deadline, _, _))) if *deadline <= now => self
                .heap
                .pop()
                .map(|Reverse((deadline, _, key))| (deadline, key)),
            _ => None,
        }
    }

    /// Keeps only the timers `live` accepts and gives back the heap's spare
    /// capacity: stale entries past the front would otherwise stay until
    /// their deadlines, and the heap as large as its busiest moment. For an
    /// idle proxy, after load went away.
    pub fn retain_and_shrink(&mut self, mut live: impl FnMut(Instant, &K) -> bool) {
        self.heap
            .retain(|Reverse((deadline, _, key))| live(*deadline, key));
        self.heap.shrink_to_fit();
    }

    /// Number of armed entries, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// How long `poll` may sleep at `now` for `deadline`: rounded up to a whole
/// millisecond (epoll's unit) so an early wake-up does not spin.
pub fn wait_until(now: Instant, deadline: Instant) -> Duration {
    let wait = deadline.saturating_duration_since(now);
    let millis = wait.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_on_a_virtual_clock() {
        let start = Instant::now();
        let mut timers = TimerQueue::default();
        timers.schedule(start + Duration::from_secs(3), "c");
        timers.schedule(start + Duration::from_secs(1), "a");
        timers.schedule(start + Duration::from_secs(2), "b");
        assert_eq!(timers.pop_expired(start), None);
        let later = start + Duration::from_secs(2);
        assert_eq!(timers.pop_expired(later).map(|(_, k)| k), Some("a"));
        assert_eq!(timers.pop_expired(later).map(|(_, k)| k), Some("b"));
        assert_eq!(timers.pop_expired(later), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn poll_timeout_rounds_up_to_a_millisecond() {
        let start = Instant::now();
        let mut timers = TimerQueue::default();
        let poll_timeout = |timers: &TimerQueue<u8>, now| {
            timers
                .next_deadline()
                .map(|deadline| wait_until(now, deadline))
        };
        assert_eq!(poll_timeout(&timers, start), None);
        timers.schedule(start + Duration::from_micros(1500), 1u8);
        assert_eq!(poll_timeout(&timers, start), Some(Duration::from_millis(2)));
        timers.schedule(start + Duration::from_micros(10), 2u8);
        assert_eq!(poll_timeout(&timers, start), Some(Duration::from_millis(1)));
        assert_eq!(
            poll_timeout(&timers, start + Duration::from_secs(9)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn peek_and_pop_take_the_earliest() {
        let start = Instant::now();
        let mut timers = TimerQueue::default();
        timers.schedule(start + Duration::from_secs(2), 'b');
        timers.schedule(start + Duration::from_secs(1), 'a');
        assert_eq!(timers.peek(), Some((start + Duration::from_secs(1), &'a')));
        assert_eq!(timers.pop(), Some((start + Duration::from_secs(1), 'a')));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn retain_drops_stale_entries_and_capacity() {
        let start = Instant::now();
        let mut timers = TimerQueue::default();
        for key in 0..1000u32 {
            timers.schedule(start + Duration::from_secs(u64::from(key)), key);
        }
        timers.retain_and_shrink(|_, key| key % 100 == 0);
        assert_eq!(timers.len(), 10);
        assert!(timers.heap.capacity() < 1000);
        let order: Vec<u32> = std::iter::from_fn(|| timers.pop().map(|(_, k)| k)).collect();
        assert_eq!(order, (0..10).map(|n| n * 100).collect::<Vec<_>>());
    }

    #[test]
    fn equal_deadlines_keep_arming_order() {
        let start = Instant::now();
        let mut timers = TimerQueue::default();
        for key in [5u32, 3, 9] {
            timers.schedule(start, key);
        }
        let order: Vec<u32> =
            std::iter::from_fn(|| timers.pop_expired(start).map(|(_, k)| k)).collect();
        assert_eq!(order, vec![5, 3, 9]);
    }
}
