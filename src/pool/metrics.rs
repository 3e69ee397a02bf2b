//! The pool's counters since start, its per-host gauges, and the one-line
//! summary the reactor logs at shutdown: every reading of the pool, none of
//! the rules that change it.

use std::fmt;
use std::time::Duration;

#[cfg(test)]
use super::HostPool;
use super::{EvictCause, HostKey, Pool};

/// Pool-wide counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PoolMetrics {
    /// Checkouts served at once by an idle connection. A checkout whose peek
    /// then fails counts, and so does the checkout the reactor makes next.
    pub hits: u64,
    /// Checkouts that had to queue (and perhaps connect).
    pub misses: u64,
    /// Connects that completed.
    pub connects: u64,
    /// Connects that failed, timeouts included.
    pub connect_failures: u64,
    /// The part of `connect_failures` that timed out.
    pub connect_timeouts: u64,
    /// Requests sent on a connection that had already served one.
    pub reuses: u64,
    /// Requests the reactor sent again after a failure
    /// ([`Pool::note_retry`](super::Pool::note_retry)).
    pub retries: u64,
    /// Waiters dropped after `queue_timeout`.
    pub waiter_timeouts: u64,
    /// Waiters failed because every connection attempt to their host failed.
    pub waiters_failed: u64,
    /// Waiters that got a connection after queueing, and their total and
    /// longest wait.
    pub queue_waits: u64,
    pub queue_wait_total: Duration,
    pub queue_wait_max: Duration,
    /// Total and longest time from `connecting` to `connected`.
    pub connect_time_total: Duration,
    pub connect_time_max: Duration,
    evictions: [u64; EvictCause::ALL.len()],
}

impl PoolMetrics {
    /// Connections closed for `cause`.
    pub fn evictions(&self, cause: EvictCause) -> u64 {
        self.evictions[cause.index()]
    }

    pub(super) fn evicted(&mut self, cause: EvictCause) {
        let slot = &mut self.evictions[cause.index()];
        *slot = slot.saturating_add(1);
    }

    pub(super) fn waited(&mut self, waited: Duration) {
        self.queue_waits += 1;
        self.queue_wait_total = self.queue_wait_total.saturating_add(waited);
        self.queue_wait_max = self.queue_wait_max.max(waited);
    }
}

fn average(total: Duration, count: u64) -> Duration {
    match u32::try_from(count) {
        Ok(0) => Duration::ZERO,
        Ok(count) => total / count,
        Err(_) => Duration::from_secs_f64(total.as_secs_f64() / count as f64),
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl fmt::Display for PoolMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hits={} misses={} connects={} connect_failures={} connect_timeouts={} \
             reuses={} retries={} waiter_timeouts={} waiters_failed={} evictions[",
            self.hits,
            self.misses,
            self.connects,
            self.connect_failures,
            self.connect_timeouts,
            self.reuses,
            self.retries,
            self.waiter_timeouts,
            self.waiters_failed,
        )?;
        for (i, cause) in EvictCause::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", cause.name(), self.evictions(*cause))?;
        }
        write!(
            f,
            "] queue_wait_ms[avg={:.1} max={:.1}] connect_ms[avg={:.1} max={:.1}]",
            millis(average(self.queue_wait_total, self.queue_waits)),
            millis(self.queue_wait_max),
            millis(average(self.connect_time_total, self.connects)),
            millis(self.connect_time_max),
        )
    }
}

/// One host's current numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HostGauges {
    pub idle: usize,
    pub in_use: usize,
    /// Connects asked for or under way.
    pub connecting: usize,
    pub waiting: usize,
    /// Open SSE streams, outside the pool and its cap.
    pub streams: usize,
}

/// The pool's readings, kept beside the types they return; the events that
/// change them are `Pool`'s operations in the parent module. The reactor logs
/// `summary` at shutdown, and `/metrics` reads the rest.
impl<W> Pool<W> {
    /// Pool-wide counters since start.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.book.metrics
    }

    /// One host's gauges, zero for a host the pool does not know.
    #[cfg(test)]
    pub fn gauges(&self, host: &HostKey) -> HostGauges {
        self.hosts
            .get(host)
            .map(HostPool::gauges)
            .unwrap_or_default()
    }

    /// Every known host's gauges, in host order.
    pub fn host_gauges(&self) -> Vec<(HostKey, HostGauges)> {
        self.hosts
            .iter()
            .map(|(key, hp)| (key.clone(), hp.gauges()))
            .collect()
    }

    /// The metrics and the gauges summed over hosts, as one log line.
    pub fn summary(&self) -> String {
        let mut total = HostGauges::default();
        for hp in self.hosts.values() {
            let g = hp.gauges();
            total.idle += g.idle;
            total.in_use += g.in_use;
            total.connecting += g.connecting;
            total.waiting += g.waiting;
            total.streams += g.streams;
        }
        format!(
            "pool: hosts={} idle={} in_use={} connecting={} waiting={} streams={} {}",
            self.hosts.len(),
            total.idle,
            total.in_use,
            total.connecting,
            total.waiting,
            total.streams,
            self.book.metrics
        )
    }
}
