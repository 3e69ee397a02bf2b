//! The Streamable HTTP upstream's own state: the upstream's address, the
//! keep-alive pool, the upstream connections and the exchanges in flight,
//! with the operations on them that need nothing of the sessions or client
//! connections (opening and closing connections, shutdown).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry};

use crate::arena::Arena;
use crate::http::url::UpstreamUrl;
use crate::pool::{HostKey, Pool, PoolAction, PoolConfig};
use crate::token::Source;

use super::{Exchange, ExchangeKey, UpConn, UpConnKey};

/// The HTTP upstream, its pool, its connections and the exchanges in flight.
pub(crate) struct HttpSide {
    pub(crate) url: UpstreamUrl,
    pub(super) host: HostKey,
    pub(super) authority: String,
    pub(super) addr: SocketAddr,
    pub(super) pool: Pool<ExchangeKey>,
    pub(crate) conns: Arena<UpConn>,
    pub(super) exchanges: Arena<Exchange>,
    pub(super) actions: Vec<PoolAction<ExchangeKey>>,
    /// The deadline of the armed pool timer.
    pub(super) timer: Option<Instant>,
}

impl HttpSide {
    /// Resolves the upstream's address once, at start-up.
    pub(crate) fn new(url: UpstreamUrl, config: PoolConfig) -> io::Result<HttpSide> {
        use std::net::ToSocketAddrs;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} has no address", url.host)))?;
        Ok(HttpSide {
            host: HostKey::new(url.scheme, url.host.clone(), url.port),
            authority: url.authority(),
            addr,
            url,
            pool: Pool::new(config),
            conns: Arena::default(),
            exchanges: Arena::default(),
            actions: Vec::new(),
            timer: None,
        })
    }

    /// Opens a pooled connection for `host` and tells the pool.
    pub(super) fn connect_pooled(&mut self, host: &HostKey, registry: &Registry, now: Instant) {
        let key = self.conns.next_key();
        let socket = TcpStream::connect(self.addr).and_then(|mut socket| {
            registry.register(
                &mut socket,
                Source::Upstream(key.index()).token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(socket)
        });
        match socket {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                let key = self.conns.insert(UpConn::new(socket, true, None));
                self.pool.connecting(host, key.index(), now);
            }
            Err(error) => {
                warn!("cannot open a connection to the upstream {host}: {error}");
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
        let _ = registry.deregister(&mut conn.socket);
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
