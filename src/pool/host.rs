//! One host's share of the pool: its stack of idle connections, its queues
//! of waiting requests, and the counts that `max_per_host` and the gauges are
//! made of. Which connection goes where is decided by `Book` and `Pool`; this
//! only holds the state and derives the counts from it.

use std::collections::VecDeque;
use std::time::Instant;

use super::{ConnId, HostGauges, HostKey};

#[derive(Debug, Clone, Copy)]
pub(super) struct Waiter<W> {
    pub(super) token: W,
    pub(super) since: Instant,
}

#[derive(Debug)]
pub(super) struct HostPool<W> {
    pub(super) key: HostKey,
    /// LIFO stack: the top (end) is the most recently used connection, so the
    /// bottom is the first to age out or to go as surplus.
    pub(super) idle: Vec<ConnId>,
    /// Requests waiting for any connection, oldest first. Never non-empty
    /// while `idle` is, since a checkout takes an idle connection first and a
    /// released one goes to a waiter first.
    pub(super) waiters: VecDeque<Waiter<W>>,
    /// Retries waiting for a connection nobody has used yet, oldest first.
    /// Only a completed connect serves them.
    pub(super) fresh: VecDeque<Waiter<W>>,
    /// Sockets being connected, in the order they were opened.
    pub(super) connecting: VecDeque<ConnId>,
    /// `Connect` actions the reactor has not yet answered with `connecting`
    /// or `open_failed`; counted so a batch of checkouts does not over-connect.
    pub(super) pending: usize,
    pub(super) in_use: usize,
    pub(super) streams: usize,
}

impl<W> HostPool<W> {
    pub(super) fn new(key: HostKey) -> Self {
        HostPool {
            key,
            idle: Vec::new(),
            waiters: VecDeque::new(),
            fresh: VecDeque::new(),
            connecting: VecDeque::new(),
            pending: 0,
            in_use: 0,
            streams: 0,
        }
    }

    pub(super) fn attempts(&self) -> usize {
        self.pending + self.connecting.len()
    }

    /// What counts toward `max_per_host`.
    pub(super) fn held(&self) -> usize {
        self.idle.len() + self.in_use + self.attempts()
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiters.len() + self.fresh.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held() == 0 && self.waiting() == 0 && self.streams == 0
    }

    pub(super) fn gauges(&self) -> HostGauges {
        HostGauges {
            idle: self.idle.len(),
            in_use: self.in_use,
            connecting: self.attempts(),
            waiting: self.waiting(),
            streams: self.streams,
        }
    }
}
