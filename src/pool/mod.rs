//! The upstream HTTP/1.1 keep-alive pool, as bookkeeping without sockets.
//!
//! For each upstream host `(scheme, host, port)` the pool owns the stack of
//! idle connections, the FIFO queue of requests waiting for one, the count of
//! connections being opened or in use, and a gauge of the long-lived SSE
//! streams (which live outside the pool). It also keeps the pool metrics.
//! It owns no socket and reads no clock: the reactor reports events with an
//! explicit `now`, carries out the `PoolAction`s each call appends, and calls
//! `Pool::expire` when `Pool::next_deadline` passes. That keeps every rule
//! testable on a virtual clock.
//!
//! It knows hosts and connections only, never what a request means: whether
//! a failed request may be sent again is the caller's decision, made where
//! the request's content is known (`crate::upstream_retry`).
//!
//! A connection is named by the reactor's slab key (`ConnId`); its life:
//!
//! ```text
//!  state        event                                        next
//!  (none)       Connect action, then connecting()            CONNECTING
//!  CONNECTING   connected(), someone waits                   CHECKED OUT
//!  CONNECTING   connected(), nobody waits                    IDLE
//!  CONNECTING   connect_failed(), evict(), connect timeout   forgotten
//!  IDLE         checkout(): top of the LIFO stack            CHECKED OUT
//!  IDLE         evict(), idle timeout, lifetime, surplus     Close
//!  CHECKED OUT  release(), someone waits                     CHECKED OUT (oldest waiter)
//!  CHECKED OUT  release(), reusable, nobody waits            IDLE
//!  CHECKED OUT  release(), not reusable, lifetime,
//!               request cap; evict()                         Close
//! ```
//!
//! 1. **Connecting.** A checkout that finds no idle connection queues its
//!    request and asks for a `Connect` unless enough are on their way; the
//!    reactor opens a socket and calls `connecting`. `connected` hands it to
//!    the oldest waiter, or else it goes idle unused. A failed or timed-out
//!    connect is forgotten; when it was the host's last attempt, the waiters
//!    fail together instead of hanging until their queue timeout.
//! 2. **Idle.** On top of its host's LIFO stack, and still registered for
//!    reads by the reactor. A checkout takes the top one, asking for a peek if
//!    it idled over `peek_after_idle`. Any read event or a failed peek
//!    (`evict`), `idle_timeout` or `max_lifetime` (`expire`), or overflowing
//!    `max_idle_per_host` closes it.
//! 3. **Checked out.** It carries one request. `release` hands it straight to
//!    the oldest waiter, or back to idle, or closes it: not reusable
//!    (incomplete response, `Connection: close`, error), past `max_lifetime`,
//!    or at `max_requests`. An error mid-request is an `evict`.
//! 4. **Closed.** The pool forgets the id as it appends `Close` (or
//!    `AbortConnect`), and ignores any later report about it.
//!
//! A retry (`checkout_fresh`) waits for a connection nobody has used, so only
//! a completed connect serves it. Waiters come first, so a released
//! connection idles only when nobody queues; idle connections are reused newest first, so a warm core stays
//! busy while the surplus ages out.
//!
//! The per-host queues and counts live in `host`, the per-connection records
//! and the rules every operation shares in `book`, the counters, gauges and
//! summary line in `metrics`; this file holds the types the reactor names and
//! `Pool`'s operations.

mod book;
mod host;
mod metrics;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::http::url::Scheme;

use book::{Book, ConnMeta, ConnState};
use host::{HostPool, Waiter};
pub(crate) use metrics::{HostGauges, PoolMetrics};

/// Below the 5 s keep-alive timeout of Node and uvicorn, where most MCP HTTP
/// servers live, so the pool drops a connection before the server does and
/// never writes into a socket the server is closing.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per host; a burst beyond this costs a reconnect later
/// rather than file descriptors and kernel buffers now.
pub(crate) const DEFAULT_MAX_IDLE_PER_HOST: usize = 32;
/// Connections per host, in use, idle and connecting together; SSE streams are
/// counted apart. Beyond this, requests queue instead of opening sockets.
pub(crate) const DEFAULT_MAX_PER_HOST: usize = 256;
/// A connection older than this is closed on release (or while idle), so
/// upstream load balancers and DNS changes are picked up eventually.
pub(crate) const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Requests per connection before it is closed on release, as nginx does,
/// bounding whatever state a server accumulates per connection.
pub(crate) const DEFAULT_MAX_REQUESTS: u32 = 1000;
/// A connect that has not completed within this long fails.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A request waiting for a connection for this long gets an error instead.
pub(crate) const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection older than this is peeked at before reuse: a close that
/// arrived in the same loop iteration may not have been seen as an event yet.
pub(crate) const DEFAULT_PEEK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Which connections may serve a request: only those to the same scheme, host
/// and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostKey {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl HostKey {
    pub fn new(scheme: Scheme, host: impl Into<String>, port: u16) -> Self {
        HostKey {
            scheme,
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An IPv6 literal needs brackets, or its colons blur into the port's.
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.scheme.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

/// The reactor's slab key for an upstream socket.
pub(crate) type ConnId = usize;

/// The pool's limits and timeouts; see the `DEFAULT_*` constants for why each
/// default is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
    pub max_per_host: usize,
    pub max_lifetime: Duration,
    pub max_requests: u32,
    pub connect_timeout: Duration,
    pub queue_timeout: Duration,
    pub peek_after_idle: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_idle_per_host: DEFAULT_MAX_IDLE_PER_HOST,
            max_per_host: DEFAULT_MAX_PER_HOST,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            max_requests: DEFAULT_MAX_REQUESTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            peek_after_idle: DEFAULT_PEEK_AFTER_IDLE,
        }
    }
}

/// Why a connection left the pool; each cause has its own eviction counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EvictCause {
    /// Idle for `idle_timeout`.
    IdleTimeout,
    /// EOF while idle, or seen by the peek before reuse.
    PeerClosed,
    /// Bytes arrived while no request was outstanding: the framing is lost.
    UnexpectedData,
    /// A socket error.
    Error,
    /// Older than `max_lifetime`.
    Lifetime,
    /// Served `max_requests`.
    RequestCount,
    /// The response was incomplete, said `Connection: close`, or failed.
    NotReusable,
    /// An idle connection closed to make room: beyond `max_idle_per_host`, or
    /// at `max_per_host` when a retry needs a fresh connection.
    Surplus,
    /// Its host was found unhealthy.
    Unhealthy,
}

impl EvictCause {
    pub const ALL: [EvictCause; 9] = [
        EvictCause::IdleTimeout,
        EvictCause::PeerClosed,
        EvictCause::UnexpectedData,
        EvictCause::Error,
        EvictCause::Lifetime,
        EvictCause::RequestCount,
        EvictCause::NotReusable,
        EvictCause::Surplus,
        EvictCause::Unhealthy,
    ];

    /// The metric name of this cause.
    pub fn name(self) -> &'static str {
        match self {
            EvictCause::IdleTimeout => "idle_timeout",
            EvictCause::PeerClosed => "peer_closed",
            EvictCause::UnexpectedData => "unexpected_data",
            EvictCause::Error => "error",
            EvictCause::Lifetime => "lifetime",
            EvictCause::RequestCount => "request_count",
            EvictCause::NotReusable => "not_reusable",
            EvictCause::Surplus => "surplus",
            EvictCause::Unhealthy => "unhealthy",
        }
    }

    fn index(self) -> usize {
        match self {
            EvictCause::IdleTimeout => 0,
            EvictCause::PeerClosed => 1,
            EvictCause::UnexpectedData => 2,
            EvictCause::Error => 3,
            EvictCause::Lifetime => 4,
            EvictCause::RequestCount => 5,
            EvictCause::NotReusable => 6,
            EvictCause::Surplus => 7,
            EvictCause::Unhealthy => 8,
        }
    }
}

/// What the reactor must do. `W` is the caller's token for a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PoolAction<W> {
    /// Send `waiter`'s request on `conn`. `reused`: the connection is not brand
    /// new (it served a request or sat idle), so the server may have closed it
    /// under us, and a failure says nothing about the request itself; the
    /// caller decides whether that allows a retry. `peek`: it idled longer than
    /// `peek_after_idle`; peek one byte first and, on EOF, data or error,
    /// `evict` it and check out again.
    Assign {
        waiter: W,
        conn: ConnId,
        reused: bool,
        peek: bool,
    },
    /// Open a new connection to `host`, then call [`Pool::connecting`], or
    /// [`Pool::open_failed`] if no socket could be made.
    Connect { host: HostKey },
    /// Deregister and close `conn`; the pool has forgotten it.
    Close { conn: ConnId, cause: EvictCause },
    /// The connect on `conn` took longer than `connect_timeout`: close the
    /// socket. The pool has already counted the failure and forgotten it.
    AbortConnect { conn: ConnId },
    /// The request waited longer than `queue_timeout`: answer it with an error.
    WaiterTimedOut { waiter: W },
    /// The last connection attempt to `host` failed while these requests were
    /// waiting; answer them with an error, so a dead upstream never leaves a
    /// request hanging until its queue timeout.
    WaitersFailed { host: HostKey, waiters: Vec<W> },
}

/// The keep-alive pool for every upstream host. `W` is the caller's token for
/// a request waiting for a connection.
#[derive(Debug)]
pub(crate) struct Pool<W> {
    hosts: BTreeMap<HostKey, HostPool<W>>,
    book: Book,
}

impl<W: Copy + Eq> Pool<W> {
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            hosts: BTreeMap::new(),
            book: Book {
                config,
                conns: HashMap::new(),
                metrics: PoolMetrics::default(),
            },
        }
    }

    /// Gives back the capacity of the connection map and the hosts' queues
    /// (an idle proxy; nothing moves).
    pub fn shrink_to_fit(&mut self) {
        self.book.conns.shrink_to_fit();
        for host in self.hosts.values_mut() {
            host.idle.shrink_to_fit();
            host.waiters.shrink_to_fit();
            host.fresh.shrink_to_fit();
            host.connecting.shrink_to_fit();
        }
    }

    /// For the rare calls only: `entry` clones the key even when the host is
    /// known, which `checkout`, once per request, avoids.
    fn host_mut(&mut self, host: &HostKey) -> &mut HostPool<W> {
        self.hosts
            .entry(host.clone())
            .or_insert_with(|| HostPool::new(host.clone()))
    }

    /// A request wants a connection to `host`. Appends `Assign` with the most
    /// recently used idle connection, or queues the request and appends
    /// `Connect` unless enough connects are already on their way for the
    /// queue, or the host is at `max_per_host`.
    pub fn checkout(
        &mut self,
        host: &HostKey,
        waiter: W,
        now: Instant,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        self.checkout_inner(host, waiter, false, now, actions);
    }

    /// Like `checkout`, for a retry: the request gets a connection nobody has
    /// used, since another idle one may have gone stale the same way. At
    /// `max_per_host` an idle connection is closed to make room, or else the
    /// retry waits for a slot to free.
    pub fn checkout_fresh(
        &mut self,
        host: &HostKey,
        waiter: W,
        now: Instant,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        self.checkout_inner(host, waiter, true, now, actions);
    }

    fn checkout_inner(
        &mut self,
        host: &HostKey,
        waiter: W,
        fresh: bool,
        now: Instant,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        // Look up before inserting, so a known host costs no key clone.
        if !self.hosts.contains_key(host) {
            self.hosts.insert(host.clone(), HostPool::new(host.clone()));
        }
        let Some(hp) = self.hosts.get_mut(host) else {
            return;
        };
        let book = &mut self.book;
        if !fresh {
            while let Some(conn) = hp.idle.pop() {
                // An entry out of step with the map names no socket of ours.
                let Some(meta) = book.conns.get(&conn) else {
                    continue;
                };
                let ConnState::Idle { since } = meta.state else {
                    continue;
                };
                // `expire` may run late; never hand out what it would close.
                if let Some(cause) = book.stale(meta, now) {
                    book.close(conn, cause, actions);
                    continue;
                }
                let idle_for = now.saturating_duration_since(since);
                book.metrics.hits += 1;
                let peek = idle_for > book.config.peek_after_idle;
                book.assign(hp, conn, waiter, peek, actions);
                return;
            }
        }
        book.metrics.misses += 1;
        let entry = Waiter {
            token: waiter,
            since: now,
        };
        if fresh {
            hp.fresh.push_back(entry);
        } else {
            hp.waiters.push_back(entry);
        }
        book.top_up(hp, actions);
    }

    /// The reactor opened socket `conn` for a `Connect` to `host`; the
    /// connect timeout runs from `now`.
    pub fn connecting(&mut self, host: &HostKey, conn: ConnId, now: Instant) {
        // A slab key the pool still tracks would be a stale entry; drop it
        // rather than let two sockets share one record.
        self.detach(conn);
        let hp = self.host_mut(host);
        hp.pending = hp.pending.saturating_sub(1);
        hp.connecting.push_back(conn);
        self.book.conns.insert(
            conn,
            ConnMeta {
                host: host.clone(),
                created: now,
                requests: 0,
                idled: false,
                state: ConnState::Connecting { since: now },
            },
        );
    }

    /// No socket could be opened for a `Connect` to `host` (address
    /// resolution, descriptor limits): a connect failure without a `ConnId`.
    pub fn open_failed(&mut self, host: &HostKey, actions: &mut Vec<PoolAction<W>>) {
        let Some(hp) = self.hosts.get_mut(host) else {
            return;
        };
        hp.pending = hp.pending.saturating_sub(1);
        self.book.metrics.connect_failures += 1;
        self.book.after_failed_attempt(hp, actions);
    }

    /// The connect on `conn` completed: it goes to the oldest fresh waiter,
    /// else the oldest waiter, else idle.
    pub fn connected(&mut self, conn: ConnId, now: Instant, actions: &mut Vec<PoolAction<W>>) {
        let Some(meta) = self.book.conns.get_mut(&conn) else {
            return;
        };
        let ConnState::Connecting { since } = meta.state else {
            return;
        };
        meta.created = now;
        let Some(hp) = self.hosts.get_mut(&meta.host) else {
            return;
        };
        hp.connecting.retain(|&c| c != conn);
        let book = &mut self.book;
        let took = now.saturating_duration_since(since);
        book.metrics.connects += 1;
        book.metrics.connect_time_total = book.metrics.connect_time_total.saturating_add(took);
        book.metrics.connect_time_max = book.metrics.connect_time_max.max(took);
        if let Some(w) = hp.fresh.pop_front().or_else(|| hp.waiters.pop_front()) {
            book.metrics.waited(now.saturating_duration_since(w.since));
            book.assign(hp, conn, w.token, false, actions);
        } else {
            book.make_idle(hp, conn, now, actions);
        }
    }

    /// The connect on `conn` failed; the reactor drops the socket itself. If
    /// it was the host's last attempt, its waiters fail (`WaitersFailed`).
    pub fn connect_failed(&mut self, conn: ConnId, actions: &mut Vec<PoolAction<W>>) {
        // Tracked states other than connecting mean a stale report; ignore it.
        if !matches!(
            self.book.conns.get(&conn).map(|m| m.state),
            Some(ConnState::Connecting { .. })
        ) {
            return;
        }
        let Some(meta) = self.detach(conn) else {
            return;
        };
        self.book.metrics.connect_failures += 1;
        if let Some(hp) = self.hosts.get_mut(&meta.host) {
            self.book.after_failed_attempt(hp, actions);
        }
    }

    /// A request on `conn` finished. `reusable`: the response was complete,
    /// keep-alive, and nothing failed. The connection then goes to the oldest
    /// waiter, or idle, or is closed (not reusable, lifetime, request cap); a
    /// close frees a slot for a waiter's connect.
    pub fn release(
        &mut self,
        conn: ConnId,
        reusable: bool,
        now: Instant,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        let Some(meta) = self.book.conns.get(&conn) else {
            return;
        };
        if meta.state != ConnState::InUse {
            return;
        }
        let cause = if reusable {
            self.book.worn_out(meta, now)
        } else {
            Some(EvictCause::NotReusable)
        };
        let Some(hp) = self.hosts.get_mut(&meta.host) else {
            return;
        };
        hp.in_use = hp.in_use.saturating_sub(1);
        let book = &mut self.book;
        if let Some(cause) = cause {
            book.close(conn, cause, actions);
        } else if let Some(w) = hp.waiters.pop_front() {
            book.metrics.waited(now.saturating_duration_since(w.since));
            book.assign(hp, conn, w.token, false, actions);
            return;
        } else {
            book.make_idle(hp, conn, now, actions);
        }
        book.top_up(hp, actions);
    }

    /// `conn` died or misbehaved: the reactor saw EOF, data or an error while
    /// it was idle, a failed peek, or an error mid-request. Appends `Close`,
    /// and a `Connect` if waiters need one. On a connecting socket this is a
    /// connect failure.
    pub fn evict(&mut self, conn: ConnId, cause: EvictCause, actions: &mut Vec<PoolAction<W>>) {
        let Some(meta) = self.detach(conn) else {
            return;
        };
        actions.push(PoolAction::Close { conn, cause });
        let Some(hp) = self.hosts.get_mut(&meta.host) else {
            return;
        };
        if let ConnState::Connecting { .. } = meta.state {
            self.book.metrics.connect_failures += 1;
            self.book.after_failed_attempt(hp, actions);
        } else {
            self.book.metrics.evicted(cause);
            self.book.top_up(hp, actions);
        }
    }

    /// Removes `conn` from the map and from its host, whatever its state.
    fn detach(&mut self, conn: ConnId) -> Option<ConnMeta> {
        let meta = self.book.conns.remove(&conn)?;
        if let Some(hp) = self.hosts.get_mut(&meta.host) {
            match meta.state {
                ConnState::Connecting { .. } => hp.connecting.retain(|&c| c != conn),
                ConnState::Idle { .. } => hp.idle.retain(|&c| c != conn),
                ConnState::InUse => hp.in_use = hp.in_use.saturating_sub(1),
            }
        }
        Some(meta)
    }

    /// A waiting request gave up (its client left). Returns whether it was
    /// still queued; if not, it already holds a connection it must release.
    pub fn cancel_waiter(&mut self, waiter: W) -> bool {
        for hp in self.hosts.values_mut() {
            for queue in [&mut hp.waiters, &mut hp.fresh] {
                if let Some(i) = queue.iter().position(|w| w.token == waiter) {
                    queue.remove(i);
                    return true;
                }
            }
        }
        false
    }

    /// Runs the timers due by `now`: closes idle connections past
    /// `idle_timeout` or `max_lifetime`, times out waiters past
    /// `queue_timeout`, and aborts connects past `connect_timeout`.
    pub fn expire(&mut self, now: Instant, actions: &mut Vec<PoolAction<W>>) {
        let book = &mut self.book;
        for hp in self.hosts.values_mut() {
            let mut stale = Vec::new();
            hp.idle.retain(|&conn| {
                let Some(meta) = book.conns.get(&conn) else {
                    return false;
                };
                if !matches!(meta.state, ConnState::Idle { .. }) {
                    return false;
                }
                match book.stale(meta, now) {
                    Some(cause) => {
                        stale.push((conn, cause));
                        false
                    }
                    None => true,
                }
            });
            for (conn, cause) in stale {
                book.close(conn, cause, actions);
            }

            let queue_timeout = book.config.queue_timeout;
            for queue in [&mut hp.fresh, &mut hp.waiters] {
                while let Some(w) = queue.front() {
                    if now.saturating_duration_since(w.since) < queue_timeout {
                        break;
                    }
                    let token = w.token;
                    queue.pop_front();
                    book.metrics.waiter_timeouts += 1;
                    actions.push(PoolAction::WaiterTimedOut { waiter: token });
                }
            }

            let mut timed_out = false;
            hp.connecting.retain(|&conn| {
                let since = match book.conns.get(&conn).map(|m| m.state) {
                    Some(ConnState::Connecting { since }) => since,
                    _ => return false,
                };
                if now.saturating_duration_since(since) < book.config.connect_timeout {
                    return true;
                }
                book.conns.remove(&conn);
                book.metrics.connect_failures += 1;
                book.metrics.connect_timeouts += 1;
                actions.push(PoolAction::AbortConnect { conn });
                timed_out = true;
                false
            });
            if timed_out {
                // No new connect here: replacing each failed attempt would keep
                // one in flight forever and waiters would never fail fast.
                book.after_failed_attempt(hp, actions);
            } else {
                // Closed idle connections may have freed room for a retry.
                book.top_up(hp, actions);
            }
        }
        self.hosts.retain(|_, hp| !hp.is_empty());
    }

    /// Closes every idle connection to `host` (it was found unhealthy).
    pub fn close_idle(&mut self, host: &HostKey, actions: &mut Vec<PoolAction<W>>) {
        let Some(hp) = self.hosts.get_mut(host) else {
            return;
        };
        for conn in std::mem::take(&mut hp.idle) {
            self.book.close(conn, EvictCause::Unhealthy, actions);
        }
        self.hosts.retain(|_, hp| !hp.is_empty());
    }

    /// The earliest instant at which `expire` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let config = &self.book.config;
        let mut earliest: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        };
        for hp in self.hosts.values() {
            for conn in hp.idle.iter().chain(hp.connecting.iter()) {
                let Some(meta) = self.book.conns.get(conn) else {
                    continue;
                };
                match meta.state {
                    ConnState::Idle { since } => {
                        consider(since.checked_add(config.idle_timeout));
                        consider(meta.created.checked_add(config.max_lifetime));
                    }
                    ConnState::Connecting { since } => {
                        consider(since.checked_add(config.connect_timeout));
                    }
                    ConnState::InUse => {}
                }
            }
            // Queues are in arrival order, so the front is the first due.
            for queue in [&hp.waiters, &hp.fresh] {
                if let Some(w) = queue.front() {
                    consider(w.since.checked_add(config.queue_timeout));
                }
            }
        }
        earliest
    }

    /// A per-session SSE stream to `host` opened. Streams hold their
    /// connection for as long as the session lives, so they are only counted,
    /// never given pool slots that short requests need.
    pub fn stream_opened(&mut self, host: &HostKey) {
        self.host_mut(host).streams += 1;
    }

    pub fn stream_closed(&mut self, host: &HostKey) {
        if let Some(hp) = self.hosts.get_mut(host) {
            hp.streams = hp.streams.saturating_sub(1);
        }
    }

    /// The reactor sent a request again after a failure.
    pub fn note_retry(&mut self) {
        self.book.metrics.retries += 1;
    }
}
