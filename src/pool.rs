//! The upstream HTTP/1.1 keep-alive pool, as bookkeeping without sockets.
//!
//! For each upstream host `(scheme, host, port)` the pool owns the stack of
//! idle connections, the FIFO queue of requests waiting for one, the count of
//! connections being opened or in use, and a gauge of the long-lived SSE
//! streams (which live outside the pool). It also keeps the pool metrics.
//! It owns no socket and reads no clock: the reactor reports events with an
//! explicit `now`, carries out the [`PoolAction`]s each call appends, and calls
//! [`Pool::expire`] when [`Pool::next_deadline`] passes. That keeps every rule
//! testable on a virtual clock.
//!
//! A connection is named by the reactor's slab key ([`ConnId`]); its life:
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::http::url::Scheme;

/// Below the 5 s keep-alive timeout of Node and uvicorn, where most MCP HTTP
/// servers live, so the pool drops a connection before the server does and
/// never writes into a socket the server is closing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per host; a burst beyond this costs a reconnect later
/// rather than file descriptors and kernel buffers now.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 32;
/// Connections per host, in use, idle and connecting together; SSE streams are
/// counted apart. Beyond this, requests queue instead of opening sockets.
pub const DEFAULT_MAX_PER_HOST: usize = 256;
/// A connection older than this is closed on release (or while idle), so
/// upstream load balancers and DNS changes are picked up eventually.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Requests per connection before it is closed on release, as nginx does,
/// bounding whatever state a server accumulates per connection.
pub const DEFAULT_MAX_REQUESTS: u32 = 1000;
/// A connect that has not completed within this long fails.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A request waiting for a connection for this long gets an error instead.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection older than this is peeked at before reuse: a close that
/// arrived in the same loop iteration may not have been seen as an event yet.
pub const DEFAULT_PEEK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// MCP methods whose request may be sent twice without harm: reads, listings
/// and settings that converge. `tools/call` and `initialize` are absent on
/// purpose: a tool may act on the world and `initialize` creates state.
pub const REPLAYABLE_METHODS: &[&str] = &[
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
];

/// Which connections may serve a request: only those to the same scheme, host
/// and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey {
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
pub type ConnId = usize;

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
pub enum EvictCause {
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
}

impl EvictCause {
    pub const ALL: [EvictCause; 8] = [
        EvictCause::IdleTimeout,
        EvictCause::PeerClosed,
        EvictCause::UnexpectedData,
        EvictCause::Error,
        EvictCause::Lifetime,
        EvictCause::RequestCount,
        EvictCause::NotReusable,
        EvictCause::Surplus,
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
        }
    }
}

/// What the reactor must do. `W` is the caller's token for a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolAction<W> {
    /// Send `waiter`'s request on `conn`. `reused`: the connection is not brand
    /// new (it served a request or sat idle), so the server may have closed it
    /// under us and [`may_retry`] applies. `peek`: it idled longer than
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

/// Pool-wide counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolMetrics {
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
    /// Requests the reactor sent again after a failure ([`Pool::note_retry`]).
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

    fn evicted(&mut self, cause: EvictCause) {
        let slot = &mut self.evictions[cause.index()];
        *slot = slot.saturating_add(1);
    }

    fn waited(&mut self, waited: Duration) {
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
pub struct HostGauges {
    pub idle: usize,
    pub in_use: usize,
    /// Connects asked for or under way.
    pub connecting: usize,
    pub waiting: usize,
    /// Open SSE streams, outside the pool and its cap.
    pub streams: usize,
}

/// The retry rule: retry once, on a fresh connection, only when the connection
/// was reused AND (nothing of the request was written, OR EOF came before any
/// response byte and the method is safe to repeat).
///
/// A reused connection may have been closed by the server just as we wrote,
/// which says nothing about the request; a fresh one failing does. Once bytes
/// are out the server may have acted on them, so only [`REPLAYABLE_METHODS`]
/// go again; `method: None` (a notification or a response, not a request) is
/// never repeated once written.
pub fn may_retry(
    reused: bool,
    already_retried: bool,
    written_any: bool,
    response_started: bool,
    method: Option<&str>,
) -> bool {
    if !reused || already_retried {
        return false;
    }
    if !written_any {
        return true;
    }
    !response_started && method.is_some_and(|m| REPLAYABLE_METHODS.contains(&m))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Connecting { since: Instant },
    Idle { since: Instant },
    InUse,
}

#[derive(Debug)]
struct ConnMeta {
    host: HostKey,
    /// When the connect completed (when it started, while connecting).
    created: Instant,
    requests: u32,
    /// It sat in the idle stack at least once.
    idled: bool,
    state: ConnState,
}

#[derive(Debug, Clone, Copy)]
struct Waiter<W> {
    token: W,
    since: Instant,
}

#[derive(Debug)]
struct HostPool<W> {
    key: HostKey,
    /// LIFO stack: the top (end) is the most recently used connection, so the
    /// bottom is the first to age out or to go as surplus.
    idle: Vec<ConnId>,
    /// Requests waiting for any connection, oldest first. Never non-empty
    /// while `idle` is, since a checkout takes an idle connection first and a
    /// released one goes to a waiter first.
    waiters: VecDeque<Waiter<W>>,
    /// Retries waiting for a connection nobody has used yet, oldest first.
    /// Only a completed connect serves them.
    fresh: VecDeque<Waiter<W>>,
    /// Sockets being connected, in the order they were opened.
    connecting: VecDeque<ConnId>,
    /// `Connect` actions the reactor has not yet answered with `connecting`
    /// or `open_failed`; counted so a batch of checkouts does not over-connect.
    pending: usize,
    in_use: usize,
    streams: usize,
}

impl<W> HostPool<W> {
    fn new(key: HostKey) -> Self {
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

    fn attempts(&self) -> usize {
        self.pending + self.connecting.len()
    }

    /// What counts toward `max_per_host`.
    fn held(&self) -> usize {
        self.idle.len() + self.in_use + self.attempts()
    }

    fn waiting(&self) -> usize {
        self.waiters.len() + self.fresh.len()
    }

    fn is_empty(&self) -> bool {
        self.held() == 0 && self.waiting() == 0 && self.streams == 0
    }

    fn gauges(&self) -> HostGauges {
        HostGauges {
            idle: self.idle.len(),
            in_use: self.in_use,
            connecting: self.attempts(),
            waiting: self.waiting(),
            streams: self.streams,
        }
    }
}

/// Everything but the hosts, so helpers can borrow it beside one host.
#[derive(Debug)]
struct Book {
    config: PoolConfig,
    conns: HashMap<ConnId, ConnMeta>,
    metrics: PoolMetrics,
}

impl Book {
    /// Hands `conn` to a request; the caller has taken it off the idle stack
    /// or out of the connecting list, and has just seen it in `conns`.
    fn assign<W>(
        &mut self,
        hp: &mut HostPool<W>,
        conn: ConnId,
        waiter: W,
        peek: bool,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        let Some(meta) = self.conns.get_mut(&conn) else {
            return;
        };
        let reused = meta.requests > 0 || meta.idled;
        if meta.requests > 0 {
            self.metrics.reuses += 1;
        }
        meta.requests = meta.requests.saturating_add(1);
        meta.state = ConnState::InUse;
        hp.in_use += 1;
        actions.push(PoolAction::Assign {
            waiter,
            conn,
            reused,
            peek,
        });
    }

    /// Forgets a connection already detached from its host and tells the
    /// reactor to close it.
    fn close<W>(&mut self, conn: ConnId, cause: EvictCause, actions: &mut Vec<PoolAction<W>>) {
        self.conns.remove(&conn);
        self.metrics.evicted(cause);
        actions.push(PoolAction::Close { conn, cause });
    }

    /// Why a connection must not be used again, by its age and use alone.
    fn worn_out(&self, meta: &ConnMeta, now: Instant) -> Option<EvictCause> {
        if meta.requests >= self.config.max_requests {
            Some(EvictCause::RequestCount)
        } else if now.saturating_duration_since(meta.created) >= self.config.max_lifetime {
            Some(EvictCause::Lifetime)
        } else {
            None
        }
    }

    /// Why an idle connection must not be reused, if it must not.
    fn stale(&self, meta: &ConnMeta, now: Instant) -> Option<EvictCause> {
        match meta.state {
            ConnState::Idle { since }
                if now.saturating_duration_since(since) >= self.config.idle_timeout =>
            {
                Some(EvictCause::IdleTimeout)
            }
            _ => self.worn_out(meta, now),
        }
    }

    /// Puts a connection on top of its host's idle stack, keeping at most
    /// `max_idle_per_host` by closing from the bottom.
    fn make_idle<W>(
        &mut self,
        hp: &mut HostPool<W>,
        conn: ConnId,
        now: Instant,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        let Some(meta) = self.conns.get_mut(&conn) else {
            return;
        };
        meta.state = ConnState::Idle { since: now };
        meta.idled = true;
        hp.idle.push(conn);
        let surplus = hp.idle.len().saturating_sub(self.config.max_idle_per_host);
        for old in hp.idle.drain(..surplus) {
            self.close(old, EvictCause::Surplus, actions);
        }
    }

    /// Asks for connects until every waiter has an attempt on its way, within
    /// `max_per_host`.
    fn top_up<W>(&mut self, hp: &mut HostPool<W>, actions: &mut Vec<PoolAction<W>>) {
        while hp.attempts() < hp.waiting() {
            if hp.held() >= self.config.max_per_host {
                // Only fresh waiters can go uncovered beside idle connections
                // (plain waiters take those first), and a retry that needs an
                // unused connection is worth more than an idle one.
                if hp.idle.is_empty() {
                    break;
                }
                let old = hp.idle.remove(0);
                self.close(old, EvictCause::Surplus, actions);
                continue;
            }
            hp.pending += 1;
            actions.push(PoolAction::Connect {
                host: hp.key.clone(),
            });
        }
    }

    /// After an attempt failed: if none is left, nothing will serve the
    /// waiters, so they fail now rather than at their queue timeout.
    fn after_failed_attempt<W>(&mut self, hp: &mut HostPool<W>, actions: &mut Vec<PoolAction<W>>) {
        if hp.attempts() > 0 || hp.waiting() == 0 {
            return;
        }
        let mut waiters: Vec<Waiter<W>> = hp.fresh.drain(..).chain(hp.waiters.drain(..)).collect();
        waiters.sort_by_key(|w| w.since);
        self.metrics.waiters_failed += waiters.len() as u64;
        actions.push(PoolAction::WaitersFailed {
            host: hp.key.clone(),
            waiters: waiters.into_iter().map(|w| w.token).collect(),
        });
    }
}

/// The keep-alive pool for every upstream host. `W` is the caller's token for
/// a request waiting for a connection.
#[derive(Debug)]
pub struct Pool<W> {
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

    pub fn config(&self) -> &PoolConfig {
        &self.book.config
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

    pub fn metrics(&self) -> &PoolMetrics {
        &self.book.metrics
    }

    /// One host's gauges, zero for a host the pool does not know.
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

#[cfg(test)]
mod tests {
    use super::*;

    type Act = PoolAction<u32>;

    fn host() -> HostKey {
        HostKey::new(Scheme::Http, "127.0.0.1", 8000)
    }

    fn other_host() -> HostKey {
        HostKey::new(Scheme::Https, "example.test", 443)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pool_with(config: PoolConfig) -> Pool<u32> {
        Pool::new(config)
    }

    fn pool() -> Pool<u32> {
        pool_with(PoolConfig::default())
    }

    fn assign(waiter: u32, conn: ConnId, reused: bool, peek: bool) -> Act {
        PoolAction::Assign {
            waiter,
            conn,
            reused,
            peek,
        }
    }

    fn connect(host: &HostKey) -> Act {
        PoolAction::Connect { host: host.clone() }
    }

    fn close(conn: ConnId, cause: EvictCause) -> Act {
        PoolAction::Close { conn, cause }
    }

    fn checkout(pool: &mut Pool<u32>, h: &HostKey, waiter: u32, now: Instant) -> Vec<Act> {
        let mut out = Vec::new();
        pool.checkout(h, waiter, now, &mut out);
        out
    }

    fn release(pool: &mut Pool<u32>, conn: ConnId, reusable: bool, now: Instant) -> Vec<Act> {
        let mut out = Vec::new();
        pool.release(conn, reusable, now, &mut out);
        out
    }

    fn expire(pool: &mut Pool<u32>, now: Instant) -> Vec<Act> {
        let mut out = Vec::new();
        pool.expire(now, &mut out);
        out
    }

    fn connected(pool: &mut Pool<u32>, conn: ConnId, now: Instant) -> Vec<Act> {
        let mut out = Vec::new();
        pool.connected(conn, now, &mut out);
        out
    }

    fn evict(pool: &mut Pool<u32>, conn: ConnId, cause: EvictCause) -> Vec<Act> {
        let mut out = Vec::new();
        pool.evict(conn, cause, &mut out);
        out
    }

    /// A checkout that has to connect, carried through to its `Assign`.
    fn open(pool: &mut Pool<u32>, h: &HostKey, waiter: u32, conn: ConnId, now: Instant) {
        assert_eq!(checkout(pool, h, waiter, now), vec![connect(h)]);
        pool.connecting(h, conn, now);
        assert_eq!(
            connected(pool, conn, now),
            vec![assign(waiter, conn, false, false)]
        );
    }

    /// Opens `conns` at once and releases them in order, so the last is on
    /// top of the idle stack.
    fn open_idle(pool: &mut Pool<u32>, h: &HostKey, conns: &[ConnId], now: Instant) {
        for &c in conns {
            open(pool, h, c as u32 + 100, c, now);
        }
        for &c in conns {
            assert_eq!(release(pool, c, true, now), vec![]);
        }
    }

    fn gauges(idle: usize, in_use: usize, connecting: usize, waiting: usize) -> HostGauges {
        HostGauges {
            idle,
            in_use,
            connecting,
            waiting,
            streams: 0,
        }
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = PoolConfig::default();
        assert_eq!(c.idle_timeout, Duration::from_secs(4));
        assert_eq!(c.max_idle_per_host, 32);
        assert_eq!(c.max_per_host, 256);
        assert_eq!(c.max_lifetime, Duration::from_secs(3600));
        assert_eq!(c.max_requests, 1000);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.queue_timeout, Duration::from_secs(5));
        assert_eq!(c.peek_after_idle, Duration::from_secs(1));
    }

    #[test]
    fn first_checkout_connects_and_gets_a_fresh_connection() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        assert_eq!(p.gauges(&h), gauges(0, 0, 1, 1));
        p.connecting(&h, 7, t0);
        assert_eq!(p.gauges(&h), gauges(0, 0, 1, 1));
        assert_eq!(
            connected(&mut p, 7, t0 + ms(2)),
            vec![assign(1, 7, false, false)]
        );
        assert_eq!(p.gauges(&h), gauges(0, 1, 0, 0));
        let m = p.metrics();
        assert_eq!((m.hits, m.misses, m.connects, m.reuses), (0, 1, 1, 0));
        assert_eq!(m.connect_time_max, ms(2));
        assert_eq!(m.queue_waits, 1);
        assert_eq!(m.queue_wait_max, ms(2));
    }

    #[test]
    fn idle_connections_are_reused_last_in_first_out() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1, 2, 3], t0);
        assert_eq!(p.gauges(&h), gauges(3, 0, 0, 0));
        assert_eq!(
            checkout(&mut p, &h, 10, t0),
            vec![assign(10, 3, true, false)]
        );
        assert_eq!(
            checkout(&mut p, &h, 11, t0),
            vec![assign(11, 2, true, false)]
        );
        assert_eq!(release(&mut p, 3, true, t0), vec![]);
        assert_eq!(
            checkout(&mut p, &h, 12, t0),
            vec![assign(12, 3, true, false)]
        );
        assert_eq!(
            checkout(&mut p, &h, 13, t0),
            vec![assign(13, 1, true, false)]
        );
        let m = p.metrics();
        assert_eq!((m.hits, m.misses, m.reuses), (4, 3, 4));
    }

    #[test]
    fn hosts_do_not_share_connections() {
        let t0 = Instant::now();
        let mut p = pool();
        let (a, b) = (host(), other_host());
        open_idle(&mut p, &a, &[1], t0);
        assert_eq!(checkout(&mut p, &b, 2, t0), vec![connect(&b)]);
        assert_eq!(
            p.host_gauges(),
            vec![(a, gauges(1, 0, 0, 0)), (b, gauges(0, 0, 1, 1))]
        );
    }

    #[test]
    fn idle_connection_expires_at_idle_timeout() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1], t0);
        assert_eq!(p.next_deadline(), Some(t0 + DEFAULT_IDLE_TIMEOUT));
        assert_eq!(expire(&mut p, t0 + DEFAULT_IDLE_TIMEOUT - ms(1)), vec![]);
        assert_eq!(
            expire(&mut p, t0 + DEFAULT_IDLE_TIMEOUT),
            vec![close(1, EvictCause::IdleTimeout)]
        );
        assert_eq!(p.metrics().evictions(EvictCause::IdleTimeout), 1);
        assert_eq!(p.next_deadline(), None);
        // An empty host is forgotten.
        assert!(p.host_gauges().is_empty());
    }

    #[test]
    fn idle_expiry_keeps_the_recently_used() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1, 2], t0);
        assert_eq!(checkout(&mut p, &h, 9, t0 + ms(3000)), {
            vec![assign(9, 2, true, true)]
        });
        assert_eq!(release(&mut p, 2, true, t0 + ms(3000)), vec![]);
        assert_eq!(p.next_deadline(), Some(t0 + DEFAULT_IDLE_TIMEOUT));
        assert_eq!(
            expire(&mut p, t0 + DEFAULT_IDLE_TIMEOUT),
            vec![close(1, EvictCause::IdleTimeout)]
        );
        assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
        assert_eq!(
            p.next_deadline(),
            Some(t0 + ms(3000) + DEFAULT_IDLE_TIMEOUT)
        );
    }

    #[test]
    fn checkout_never_hands_out_a_connection_expire_was_late_to_close() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1], t0);
        assert_eq!(
            checkout(&mut p, &h, 2, t0 + DEFAULT_IDLE_TIMEOUT),
            vec![close(1, EvictCause::IdleTimeout), connect(&h)]
        );
    }

    #[test]
    fn idle_overflow_closes_the_least_recently_used() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_idle_per_host: 2,
            ..PoolConfig::default()
        });
        let h = host();
        for c in [1, 2, 3] {
            open(&mut p, &h, c as u32, c, t0);
        }
        assert_eq!(release(&mut p, 1, true, t0), vec![]);
        assert_eq!(release(&mut p, 2, true, t0), vec![]);
        assert_eq!(
            release(&mut p, 3, true, t0),
            vec![close(1, EvictCause::Surplus)]
        );
        assert_eq!(p.gauges(&h), gauges(2, 0, 0, 0));
        assert_eq!(checkout(&mut p, &h, 9, t0), vec![assign(9, 3, true, false)]);
        assert_eq!(p.metrics().evictions(EvictCause::Surplus), 1);
    }

    #[test]
    fn no_idle_allowed_closes_on_release() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_idle_per_host: 0,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        assert_eq!(
            release(&mut p, 1, true, t0),
            vec![close(1, EvictCause::Surplus)]
        );
        assert!(p.host_gauges().is_empty() || p.gauges(&h) == HostGauges::default());
    }

    #[test]
    fn lifetime_cap_closes_on_release_and_connects_for_a_waiter() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_lifetime: Duration::from_secs(10),
            max_per_host: 1,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        assert_eq!(checkout(&mut p, &h, 2, t0 + ms(9000)), vec![]);
        let t = t0 + Duration::from_secs(10);
        assert_eq!(
            release(&mut p, 1, true, t),
            vec![close(1, EvictCause::Lifetime), connect(&h)]
        );
        assert_eq!(p.metrics().evictions(EvictCause::Lifetime), 1);
    }

    #[test]
    fn lifetime_cap_closes_an_idle_connection() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_lifetime: Duration::from_secs(10),
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        let t7 = t0 + Duration::from_secs(7);
        assert_eq!(release(&mut p, 1, true, t7), vec![]);
        // The lifetime ends before the idle timeout would.
        let end = t0 + Duration::from_secs(10);
        assert_eq!(p.next_deadline(), Some(end));
        assert_eq!(expire(&mut p, end - ms(1)), vec![]);
        assert_eq!(expire(&mut p, end), vec![close(1, EvictCause::Lifetime)]);
    }

    #[test]
    fn request_cap_closes_on_release() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_requests: 3,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        assert_eq!(release(&mut p, 1, true, t0), vec![]);
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![assign(2, 1, true, false)]);
        assert_eq!(release(&mut p, 1, true, t0), vec![]);
        assert_eq!(checkout(&mut p, &h, 3, t0), vec![assign(3, 1, true, false)]);
        assert_eq!(
            release(&mut p, 1, true, t0),
            vec![close(1, EvictCause::RequestCount)]
        );
        assert_eq!(p.metrics().evictions(EvictCause::RequestCount), 1);
        assert_eq!(p.metrics().reuses, 2);
    }

    #[test]
    fn not_reusable_closes_and_never_goes_idle() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        assert_eq!(
            release(&mut p, 1, false, t0),
            vec![close(1, EvictCause::NotReusable)]
        );
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
        assert_eq!(p.metrics().evictions(EvictCause::NotReusable), 1);
    }

    #[test]
    fn waiters_are_served_in_order_before_a_connection_goes_idle() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 1,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        // At the cap: the requests queue and nothing connects.
        assert_eq!(checkout(&mut p, &h, 2, t0 + ms(1)), vec![]);
        assert_eq!(checkout(&mut p, &h, 3, t0 + ms(2)), vec![]);
        assert_eq!(p.gauges(&h), gauges(0, 1, 0, 2));
        assert_eq!(
            release(&mut p, 1, true, t0 + ms(10)),
            vec![assign(2, 1, true, false)]
        );
        assert_eq!(
            release(&mut p, 1, true, t0 + ms(20)),
            vec![assign(3, 1, true, false)]
        );
        assert_eq!(release(&mut p, 1, true, t0 + ms(30)), vec![]);
        assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
        let m = p.metrics();
        assert_eq!(m.queue_waits, 3);
        assert_eq!(m.queue_wait_max, ms(18));
        assert_eq!(m.queue_wait_total, ms(9 + 18));
    }

    #[test]
    fn a_queued_request_times_out_with_an_error() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 1,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        assert_eq!(checkout(&mut p, &h, 2, t0 + ms(100)), vec![]);
        let due = t0 + ms(100) + DEFAULT_QUEUE_TIMEOUT;
        assert_eq!(p.next_deadline(), Some(due));
        assert_eq!(expire(&mut p, due - ms(1)), vec![]);
        assert_eq!(
            expire(&mut p, due),
            vec![PoolAction::WaiterTimedOut { waiter: 2 }]
        );
        assert_eq!(p.metrics().waiter_timeouts, 1);
        // The next release finds nobody waiting.
        assert_eq!(release(&mut p, 1, true, due), vec![]);
        assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
    }

    #[test]
    fn connect_timeout_aborts_and_fails_the_waiters() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        p.connecting(&h, 5, t0 + ms(1));
        let due = t0 + ms(1) + DEFAULT_CONNECT_TIMEOUT;
        assert_eq!(p.next_deadline(), Some(due));
        assert_eq!(expire(&mut p, due - ms(1)), vec![]);
        assert_eq!(
            expire(&mut p, due),
            vec![
                PoolAction::AbortConnect { conn: 5 },
                PoolAction::WaitersFailed {
                    host: h.clone(),
                    waiters: vec![1]
                }
            ]
        );
        let m = p.metrics();
        assert_eq!(
            (m.connect_failures, m.connect_timeouts, m.waiters_failed),
            (1, 1, 1)
        );
        assert!(p.host_gauges().is_empty());
        // A late completion of the aborted socket is ignored.
        assert_eq!(connected(&mut p, 5, due), vec![]);
    }

    #[test]
    fn waiters_fail_only_when_the_last_attempt_fails() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        assert_eq!(checkout(&mut p, &h, 2, t0 + ms(1)), vec![connect(&h)]);
        p.connecting(&h, 10, t0);
        p.connecting(&h, 11, t0);
        let mut out = Vec::new();
        p.connect_failed(10, &mut out);
        assert_eq!(out, vec![]);
        p.connect_failed(11, &mut out);
        assert_eq!(
            out,
            vec![PoolAction::WaitersFailed {
                host: h.clone(),
                waiters: vec![1, 2]
            }]
        );
        assert_eq!(p.metrics().connect_failures, 2);
        assert_eq!(p.metrics().connect_timeouts, 0);
    }

    #[test]
    fn a_failed_attempt_is_not_replaced() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        checkout(&mut p, &h, 1, t0);
        checkout(&mut p, &h, 2, t0);
        p.connecting(&h, 10, t0);
        p.connecting(&h, 11, t0);
        let mut out = Vec::new();
        p.connect_failed(10, &mut out);
        assert_eq!(out, vec![]);
        // The survivor serves the oldest; the other waits for a release.
        assert_eq!(connected(&mut p, 11, t0), vec![assign(1, 11, false, false)]);
        assert_eq!(p.gauges(&h), gauges(0, 1, 0, 1));
        assert_eq!(
            release(&mut p, 11, true, t0),
            vec![assign(2, 11, true, false)]
        );
    }

    #[test]
    fn open_failed_counts_and_fails_the_waiters() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        let mut out = Vec::new();
        p.open_failed(&h, &mut out);
        assert_eq!(
            out,
            vec![PoolAction::WaitersFailed {
                host: h.clone(),
                waiters: vec![1]
            }]
        );
        assert_eq!(p.gauges(&h), HostGauges::default());
        assert_eq!(p.metrics().connect_failures, 1);
    }

    #[test]
    fn evicting_a_connecting_socket_is_a_connect_failure() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        checkout(&mut p, &h, 1, t0);
        p.connecting(&h, 3, t0);
        assert_eq!(
            evict(&mut p, 3, EvictCause::Error),
            vec![
                close(3, EvictCause::Error),
                PoolAction::WaitersFailed {
                    host: h.clone(),
                    waiters: vec![1]
                }
            ]
        );
        assert_eq!(p.metrics().connect_failures, 1);
        assert_eq!(p.metrics().evictions(EvictCause::Error), 0);
    }

    #[test]
    fn peer_close_while_idle_evicts_and_the_next_checkout_connects() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1], t0);
        assert_eq!(
            evict(&mut p, 1, EvictCause::PeerClosed),
            vec![close(1, EvictCause::PeerClosed)]
        );
        assert_eq!(p.gauges(&h), HostGauges::default());
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
        assert_eq!(p.metrics().evictions(EvictCause::PeerClosed), 1);
        // The evicted id is no longer the pool's.
        assert_eq!(release(&mut p, 1, true, t0), vec![]);
        assert_eq!(evict(&mut p, 1, EvictCause::Error), vec![]);
    }

    #[test]
    fn unexpected_data_while_idle_evicts() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1, 2], t0);
        assert_eq!(
            evict(&mut p, 1, EvictCause::UnexpectedData),
            vec![close(1, EvictCause::UnexpectedData)]
        );
        assert_eq!(checkout(&mut p, &h, 9, t0), vec![assign(9, 2, true, false)]);
        assert_eq!(checkout(&mut p, &h, 10, t0), vec![connect(&h)]);
    }

    #[test]
    fn peek_after_more_than_a_second_idle_and_recheck_after_a_failed_peek() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1, 2], t0);
        // Exactly the threshold: no peek.
        let t1 = t0 + DEFAULT_PEEK_AFTER_IDLE;
        assert_eq!(
            checkout(&mut p, &h, 10, t1),
            vec![assign(10, 2, true, false)]
        );
        let t2 = t0 + DEFAULT_PEEK_AFTER_IDLE + ms(1);
        assert_eq!(
            checkout(&mut p, &h, 11, t2),
            vec![assign(11, 1, true, true)]
        );
        // The peek saw EOF: the reactor evicts and checks out again.
        assert_eq!(
            evict(&mut p, 1, EvictCause::PeerClosed),
            vec![close(1, EvictCause::PeerClosed)]
        );
        assert_eq!(checkout(&mut p, &h, 11, t2), vec![connect(&h)]);
        // A connection handed over on release needs no peek.
        assert_eq!(
            release(&mut p, 2, true, t2),
            vec![assign(11, 2, true, false)]
        );
    }

    #[test]
    fn the_host_cap_queues_instead_of_connecting() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 2,
            ..PoolConfig::default()
        });
        let h = host();
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
        assert_eq!(checkout(&mut p, &h, 3, t0), vec![]);
        assert_eq!(p.gauges(&h), gauges(0, 0, 2, 3));
        p.connecting(&h, 1, t0);
        p.connecting(&h, 2, t0);
        assert_eq!(connected(&mut p, 1, t0), vec![assign(1, 1, false, false)]);
        assert_eq!(connected(&mut p, 2, t0), vec![assign(2, 2, false, false)]);
        assert_eq!(p.gauges(&h), gauges(0, 2, 0, 1));
        // A broken connection frees a slot for the queued request.
        assert_eq!(
            evict(&mut p, 1, EvictCause::Error),
            vec![close(1, EvictCause::Error), connect(&h)]
        );
        assert_eq!(p.gauges(&h), gauges(0, 1, 1, 1));
    }

    #[test]
    fn connects_are_not_asked_twice_for_the_same_waiter() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        // One connect covers one waiter, even before the reactor opens it.
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
        // A release serves that waiter; the connect still on its way covers the next.
        assert_eq!(
            release(&mut p, 1, true, t0),
            vec![assign(2, 1, true, false)]
        );
        assert_eq!(checkout(&mut p, &h, 3, t0), vec![]);
        p.connecting(&h, 4, t0);
        assert_eq!(connected(&mut p, 4, t0), vec![assign(3, 4, false, false)]);
        assert_eq!(p.metrics().misses, 3);
    }

    #[test]
    fn a_connection_nobody_waits_for_goes_idle_unused() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        assert!(p.cancel_waiter(1));
        assert!(!p.cancel_waiter(1));
        p.connecting(&h, 6, t0);
        assert_eq!(connected(&mut p, 6, t0), vec![]);
        assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
        // It sat idle, so the server may have dropped it: it counts as reused
        // for the retry rule, but not as a reuse in the metrics.
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![assign(2, 6, true, false)]);
        assert_eq!(p.metrics().reuses, 0);
    }

    #[test]
    fn streams_are_counted_apart_from_the_cap() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 1,
            ..PoolConfig::default()
        });
        let h = host();
        for _ in 0..3 {
            p.stream_opened(&h);
        }
        assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
        assert_eq!(p.gauges(&h).streams, 3);
        p.stream_closed(&h);
        assert_eq!(p.gauges(&h).streams, 2);
        p.stream_closed(&other_host());
        assert!(p.summary().contains("streams=2"));
        // A host with only streams survives expiry.
        p.cancel_waiter(1);
        let mut out = Vec::new();
        p.open_failed(&h, &mut out);
        assert_eq!(expire(&mut p, t0), vec![]);
        assert_eq!(p.host_gauges().len(), 1);
        p.stream_closed(&h);
        p.stream_closed(&h);
        p.stream_closed(&h);
        assert_eq!(p.gauges(&h).streams, 0);
    }

    #[test]
    fn a_retry_gets_a_new_connection_even_with_idle_ones() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1], t0);
        let mut out = Vec::new();
        p.checkout_fresh(&h, 9, t0, &mut out);
        assert_eq!(out, vec![connect(&h)]);
        // A plain request still takes the idle one, and its release does not
        // serve the retry.
        assert_eq!(checkout(&mut p, &h, 8, t0), vec![assign(8, 1, true, false)]);
        assert_eq!(release(&mut p, 1, true, t0), vec![]);
        p.connecting(&h, 3, t0);
        assert_eq!(connected(&mut p, 3, t0), vec![assign(9, 3, false, false)]);
        assert_eq!(p.gauges(&h), gauges(1, 1, 0, 0));
    }

    #[test]
    fn a_retry_at_the_cap_makes_room_by_closing_an_idle_connection() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 2,
            ..PoolConfig::default()
        });
        let h = host();
        open_idle(&mut p, &h, &[1, 2], t0);
        let mut out = Vec::new();
        p.checkout_fresh(&h, 9, t0, &mut out);
        assert_eq!(out, vec![close(1, EvictCause::Surplus), connect(&h)]);
        assert_eq!(p.gauges(&h), gauges(1, 0, 1, 1));
    }

    #[test]
    fn a_retry_at_the_cap_waits_for_a_slot() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 1,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        let mut out = Vec::new();
        p.checkout_fresh(&h, 9, t0, &mut out);
        assert_eq!(out, vec![]);
        // The release would leave it idle; the retry needs the slot more.
        assert_eq!(
            release(&mut p, 1, true, t0),
            vec![close(1, EvictCause::Surplus), connect(&h)]
        );
        // A fresh retry also times out in the queue.
        assert_eq!(
            expire(&mut p, t0 + DEFAULT_QUEUE_TIMEOUT),
            vec![PoolAction::WaiterTimedOut { waiter: 9 }]
        );
    }

    #[test]
    fn evicting_a_busy_connection_connects_for_waiters() {
        let t0 = Instant::now();
        let mut p = pool_with(PoolConfig {
            max_per_host: 1,
            ..PoolConfig::default()
        });
        let h = host();
        open(&mut p, &h, 1, 1, t0);
        assert_eq!(checkout(&mut p, &h, 2, t0), vec![]);
        assert_eq!(
            evict(&mut p, 1, EvictCause::Error),
            vec![close(1, EvictCause::Error), connect(&h)]
        );
        assert_eq!(p.metrics().evictions(EvictCause::Error), 1);
    }

    #[test]
    fn stale_reports_are_ignored() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        assert_eq!(release(&mut p, 42, true, t0), vec![]);
        assert_eq!(connected(&mut p, 42, t0), vec![]);
        assert_eq!(evict(&mut p, 42, EvictCause::Error), vec![]);
        let mut out = Vec::new();
        p.connect_failed(42, &mut out);
        p.open_failed(&h, &mut out);
        assert_eq!(out, vec![]);
        // Releasing an idle connection again changes nothing.
        open_idle(&mut p, &h, &[1], t0);
        assert_eq!(release(&mut p, 1, true, t0), vec![]);
        assert_eq!(connected(&mut p, 1, t0), vec![]);
        assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
        assert_eq!(p.metrics().connect_failures, 0);
    }

    #[test]
    fn a_reused_slab_key_replaces_the_stale_record() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1], t0);
        checkout(&mut p, &h, 2, t0);
        checkout(&mut p, &h, 3, t0);
        // The reactor reuses key 1 without having told the pool: the old
        // record goes, and the in-use count with it.
        p.connecting(&h, 1, t0);
        assert_eq!(p.gauges(&h), gauges(0, 0, 1, 1));
    }

    #[test]
    fn next_deadline_is_the_earliest_of_all_timers() {
        let t0 = Instant::now();
        let mut p = pool();
        let (a, b) = (host(), other_host());
        assert_eq!(p.next_deadline(), None);
        open_idle(&mut p, &a, &[1], t0);
        checkout(&mut p, &b, 5, t0 + ms(500));
        p.connecting(&b, 2, t0 + ms(500));
        // Connect timeout (3.5 s) before idle timeout (4 s) and queue timeout (5.5 s).
        assert_eq!(p.next_deadline(), Some(t0 + ms(3500)));
        p.connecting(&b, 2, t0 + ms(500));
        let mut out = Vec::new();
        p.connect_failed(2, &mut out);
        assert_eq!(p.next_deadline(), Some(t0 + ms(4000)));
    }

    #[test]
    fn metrics_and_summary() {
        let t0 = Instant::now();
        let mut p = pool();
        let h = host();
        open_idle(&mut p, &h, &[1], t0);
        checkout(&mut p, &h, 2, t0);
        release(&mut p, 1, true, t0);
        checkout(&mut p, &h, 3, t0 + ms(1500));
        evict(&mut p, 1, EvictCause::PeerClosed);
        p.note_retry();
        let m = p.metrics().clone();
        assert_eq!(
            (m.hits, m.misses, m.connects, m.reuses, m.retries),
            (2, 1, 1, 2, 1)
        );
        assert_eq!(m.evictions(EvictCause::PeerClosed), 1);
        let total: u64 = EvictCause::ALL.iter().map(|c| m.evictions(*c)).sum();
        assert_eq!(total, 1);
        let line = p.summary();
        assert!(!line.contains('\n'));
        for part in [
            "hits=2",
            "misses=1",
            "connects=1",
            "reuses=2",
            "retries=1",
            "peer_closed=1",
            "idle_timeout=0",
            "waiting=0",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
    }

    #[test]
    fn host_key_display() {
        assert_eq!(host().to_string(), "http://127.0.0.1:8000");
        assert_eq!(
            HostKey::new(Scheme::Https, "::1", 8443).to_string(),
            "https://[::1]:8443"
        );
    }

    #[test]
    fn retry_truth_table() {
        // (reused, already_retried, written_any, response_started, method, verdict)
        type Case = (bool, bool, bool, bool, Option<&'static str>, bool);
        let cases: &[Case] = &[
            // Nothing written on a reused connection: any message may go again.
            (true, false, false, false, Some("tools/call"), true),
            (true, false, false, false, Some("initialize"), true),
            (true, false, false, false, None, true),
            // Written, EOF before any response byte: only replayable methods.
            (true, false, true, false, Some("tools/list"), true),
            (true, false, true, false, Some("ping"), true),
            (true, false, true, false, Some("resources/read"), true),
            (true, false, true, false, Some("server/discover"), true),
            (true, false, true, false, Some("tools/call"), false),
            (true, false, true, false, Some("initialize"), false),
            (
                true,
                false,
                true,
                false,
                Some("sampling/createMessage"),
                false,
            ),
            (true, false, true, false, None, false),
            // The response had begun: never.
            (true, false, true, true, Some("tools/list"), false),
            (true, false, true, true, Some("tools/call"), false),
            // A fresh connection failing says something about the request: never.
            (false, false, false, false, Some("tools/list"), false),
            (false, false, false, false, Some("tools/call"), false),
            (false, false, true, false, Some("ping"), false),
            // Never twice.
            (true, true, false, false, Some("ping"), false),
            (true, true, true, false, Some("tools/list"), false),
        ];
        for &(reused, retried, written, started, method, want) in cases {
            assert_eq!(
                may_retry(reused, retried, written, started, method),
                want,
                "reused={reused} retried={retried} written={written} started={started} method={method:?}"
            );
        }
        for method in REPLAYABLE_METHODS {
            assert!(may_retry(true, false, true, false, Some(method)));
        }
    }
}
