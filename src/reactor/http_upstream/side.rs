//! The Streamable HTTP upstream's own state: the upstream's address, the
//! keep-alive pool, the upstream connections and the exchanges in flight,
//! with the operations on them that need nothing of the sessions or client
//! connections (opening and closing connections, shutdown).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Interest, Registry};
use rustls::ClientConfig;

use crate::arena::Arena;
use crate::health::{Health, HealthState, Transition};
use crate::http::url::{Scheme, UpstreamUrl};
use crate::pool::{HostGauges, HostKey, Pool, PoolAction, PoolConfig, PoolMetrics};
use crate::timers::TimerQueue;
use crate::token::Source;

use super::super::health_workers::{ProbeJob, ProbeResult};
use super::super::servers::ServerId;
use super::super::stdio_upstream::log_transition;
use super::stream::{TlsTarget, UpStream};
use super::{Exchange, ExchangeKey, UpConn, UpConnKey};

/// The HTTP upstream, its pool, its connections and the exchanges in flight.
pub(crate) struct HttpSide {
    pub(crate) url: UpstreamUrl,
    pub(super) host: HostKey,
    pub(super) authority: String,
    pub(super) addr: SocketAddr,
    /// For an https upstream: the TLS configuration and the server's name.
    pub(super) tls: Option<TlsTarget>,
    pub(super) pool: Pool<ExchangeKey>,
    pub(crate) conns: Arena<UpConn>,
    pub(super) exchanges: Arena<Exchange>,
    pub(super) actions: Vec<PoolAction<ExchangeKey>>,
    /// The deadline of the armed pool timer.
    pub(super) timer: Option<Instant>,
    /// The host's health, from probes and from real traffic's failures.
    pub(crate) health: HealthState,
    /// A probe of the host is out with the health workers.
    pub(crate) probing: bool,
    /// Which server of the run this is (in its sockets' tokens and timers).
    pub(crate) server: ServerId,
    /// Headers added to every request (the server's `headers`).
    pub(crate) headers: Vec<(String, String)>,
    /// When each answer stream is next checked for a silent end with no
    /// request left on it (`check_answer_streams`); an entry for an
    /// exchange that ended since is stale and skipped.
    pub(super) answer_checks: TimerQueue<ExchangeKey>,
}

impl HttpSide {
    /// Resolves the upstream's address once, at start-up. `tls`: the
    /// run's TLS client configuration, which an https URL needs.
    pub(crate) fn new(
        url: UpstreamUrl,
        config: PoolConfig,
        server: ServerId,
        headers: Vec<(String, String)>,
        tls: Option<&Arc<ClientConfig>>,
    ) -> io::Result<HttpSide> {
        use std::net::ToSocketAddrs;
        let tls = match (url.scheme, tls) {
            (Scheme::Http, _) => None,
            (Scheme::Https, Some(config)) => Some(TlsTarget {
                config: Arc::clone(config),
                name: crate::tls::server_name(&url.host).map_err(io::Error::other)?,
            }),
            (Scheme::Https, None) => {
                return Err(io::Error::other(
                    "an https upstream with no TLS configuration",
                ))
            }
        };
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} has no address", url.host)))?;
        Ok(HttpSide {
            host: HostKey::new(url.scheme, url.host.clone(), url.port),
            authority: url.authority(),
            addr,
            tls,
            url,
            pool: Pool::new(config),
            conns: Arena::default(),
            exchanges: Arena::default(),
            actions: Vec::new(),
            timer: None,
            health: HealthState::default(),
            probing: false,
            server,
            headers,
            answer_checks: TimerQueue::default(),
        })
    }

    /// Gives back the capacity of the connection and exchange slabs past
    /// their last live entries, and of the pool's maps (an idle proxy).
    pub(crate) fn release_idle_capacity(&mut self) {
        self.conns.shrink_to_fit();
        self.exchanges.shrink_to_fit();
        self.actions.shrink_to_fit();
        self.pool.shrink_to_fit();
        let exchanges = &self.exchanges;
        self.answer_checks
            .retain_and_shrink(|_, exchange| exchanges.contains(*exchange));
    }

    /// The next answer stream check, once the checks of exchanges that
    /// ended are dropped from the front (an idle proxy never wakes for
    /// them).
    pub(crate) fn next_answer_check(&mut self) -> Option<Instant> {
        while let Some((_, exchange)) = self.answer_checks.peek() {
            if self.exchanges.contains(*exchange) {
                break;
            }
            self.answer_checks.pop();
        }
        self.answer_checks.next_deadline()
    }

    /// The host, as the log and the metrics name it.
    pub(crate) fn name(&self) -> String {
        format!("{}://{}", self.url.scheme.as_str(), self.authority)
    }

    /// The probe to run now, unless one is out already. `path`: what it
    /// GETs (see `Config::health_path`).
    pub(crate) fn probe_job(&mut self, path: &str, timeout: Duration) -> Option<ProbeJob> {
        if self.probing {
            return None;
        }
        self.probing = true;
        Some(ProbeJob {
            server: self.server,
            addr: self.addr,
            authority: self.authority.clone(),
            path: path.to_string(),
            headers: self.headers.clone(),
            tls: self.tls.clone(),
            timeout,
        })
    }

    /// A probe came back: any HTTP answer means alive.
    pub(crate) fn probe_done(&mut self, result: &ProbeResult) {
        self.probing = false;
        log::debug!(
            "health probe of {}: {:?} in {:?}",
            self.name(),
            result.outcome,
            result.took
        );
        let change = match &result.outcome {
            Ok(_) => self.health.probe_succeeded(result.at),
            Err(error) => self.health.failed(error, Some(result.at)),
        };
        self.health_changed(change);
    }

    /// Real traffic could not reach the host (a refused connect, a reset).
    pub(super) fn passive_failure(&mut self, why: &str) {
        let change = self.health.failed(why, None);
        self.health_changed(change);
    }

    fn health_changed(&mut self, change: Option<Transition>) {
        let Some(change) = change else {
            return;
        };
        log_transition(&self.name(), change);
        if change.to == Health::Unhealthy {
            let host = self.host.clone();
            self.pool.close_idle(&host, &mut self.actions);
        }
    }

    /// Every pool host's gauges, each with the upstream's health.
    pub(crate) fn pool_gauges(&self, health: Health) -> Vec<(String, HostGauges, Health)> {
        let mut hosts: Vec<_> = self
            .pool
            .host_gauges()
            .into_iter()
            .map(|(host, gauges)| (host.to_string(), gauges, health))
            .collect();
        if hosts.is_empty() {
            hosts.push((self.host.to_string(), HostGauges::default(), health));
        }
        hosts
    }

    /// The pool's counters since start.
    pub(crate) fn pool_metrics(&self) -> PoolMetrics {
        self.pool.metrics().clone()
    }

    /// Why requests fail fast now (the host is unhealthy), if so.
    pub(crate) fn refusal(&self) -> Option<String> {
        (self.health.state() == Health::Unhealthy).then(|| {
            format!(
                "the upstream {} is unhealthy ({})",
                self.name(),
                self.health.last_error().unwrap_or("no reason known")
            )
        })
    }

    /// Opens a pooled connection for `host` and tells the pool.
    pub(super) fn connect_pooled(&mut self, host: &HostKey, registry: &Registry, now: Instant) {
        let key = self.conns.next_key();
        let socket = UpStream::connect(self.addr, self.tls.as_ref()).and_then(|mut socket| {
            registry.register(
                socket.socket_mut(),
                Source::Upstream {
                    server: self.server.index(),
                    conn: key.index(),
                }
                .token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(socket)
        });
        match socket {
            Ok(socket) => {
                let key = self.conns.insert(UpConn::new(socket, true, None));
                self.pool.connecting(host, key.index(), now);
            }
            Err(error) => {
                warn!("cannot open a connection to the upstream {host}: {error}");
                self.passive_failure(&format!("connect: {error}"));
                self.pool.open_failed(host, &mut self.actions);
            }
        }
    }

    /// Closes an upstream connection (a dedicated one is counted out of the
    /// pool's streams).
    pub(super) fn drop_conn(&mut self, key: UpConnKey, registry: &Registry) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        let _ = registry.deregister(conn.socket.socket_mut());
        if !conn.pooled {
            let host = self.host.clone();
            self.pool.stream_closed(&host);
        }
    }

    /// True while exchanges are in flight (a shutdown waits for DELETEs).
    pub(crate) fn in_flight(&self) -> bool {
        !self.exchanges.is_empty()
    }

    /// Gives up on every exchange still in flight and closes every
    /// connection (the shutdown's last step).
    pub(crate) fn abandon(&mut self, registry: &Registry) {
        if !self.exchanges.is_empty() {
            warn!(
                "exiting with {} upstream request(s) unfinished",
                self.exchanges.len()
            );
        }
        self.exchanges.clear();
        for key in self.conns.keys() {
            self.drop_conn(key, registry);
        }
    }

    /// Logs the pool's figures (at shutdown).
    pub(crate) fn log_summary(&self) {
        info!("upstream pool: {}", self.pool.summary());
    }
}
