//! The admin endpoints, on their own loopback listener on the same loop
//! (`--admin-listen`): `/livez`, `/readyz`, `/status` and `/metrics`. Each
//! connection carries one GET and is closed after its answer, so this door
//! keeps no keep-alive state. It owns its listener and connections; what an
//! answer says is built from an `AdminView` the reactor fills (sessions,
//! upstream health, metrics text), so nothing here reads the sessions.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use log::{debug, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use serde_json::json;

use crate::arena::{Arena, Key};
use crate::health::Health;
use crate::http::request::{Decoded, Limits, Request, RequestDecoder};
use crate::http::response;
use crate::token::Source;

use super::edge_io::{read_into, write_from, ReadOutcome, Readiness};
use super::servers::Servers;
use crate::metrics::{Metrics, Snapshot};

/// Most admin connections open at once; more are closed at accept.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Largest admin request head (a GET with a few headers).
const MAX_ADMIN_REQUEST_BYTES: usize = 8 * 1024;
/// An admin connection that has not sent its request by then is closed.
pub(crate) const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Names an admin connection; stale once it closed.
pub(crate) type AdminKey = Key<AdminConn>;

/// One admin connection.
pub(crate) struct AdminConn {
    socket: TcpStream,
    ready: Readiness,
    decoder: RequestDecoder,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Its request was read and answered: it closes once the answer is out.
    answered: bool,
    opened: Instant,
}

/// The reactor's figures an admin answer reads.
pub(super) struct Figures<'a> {
    pub sessions: usize,
    /// mcphop is serving (not shutting down).
    pub serving: bool,
    pub servers: &'a Servers,
    pub metrics: &'a Metrics,
    /// Bytes read from and written to clients.
    pub bytes: (u64, u64),
}

impl Figures<'_> {
    /// `/metrics`' body.
    fn render_metrics(&self) -> String {
        let (rss_bytes, open_fds) = process_figures();
        let mut snapshot = Snapshot {
            sessions_active: self.sessions,
            rss_bytes,
            open_fds,
            ..Default::default()
        };
        self.servers.fill_snapshot(&mut snapshot);
        self.metrics.render(&snapshot, self.bytes.0, self.bytes.1)
    }
}

/// The admin listener and its connections.
pub(crate) struct AdminDoor {
    listener: TcpListener,
    local_addr: SocketAddr,
    conns: Arena<AdminConn>,
}

impl AdminDoor {
    pub(crate) fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<AdminDoor> {
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        registry.register(
            &mut listener,
            Source::AdminListener.token(),
            Interest::READABLE,
        )?;
        Ok(AdminDoor {
            listener,
            local_addr,
            conns: Arena::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts every waiting connection.
    pub(crate) fn accept_all(&mut self, registry: &Registry, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((mut socket, _)) => {
                    if self.conns.len() >= MAX_ADMIN_CONNECTIONS {
                        continue;
                    }
                    let key = self.conns.next_key();
                    let token = Source::Admin(key.index()).token();
                    if registry
                        .register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.conns.insert(AdminConn {
                        socket,
                        ready: Readiness::default(),
                        decoder: RequestDecoder::new(Limits {
                            max_head_bytes: MAX_ADMIN_REQUEST_BYTES,
                            max_body_bytes: 0,
                        }),
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                        answered: false,
                        opened: now,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    warn!("admin accept failed: {error}");
                    return;
                }
            }
        }
    }

    /// A readiness event on an admin connection. Returns the request it
    /// completed, for the reactor to answer with `answer`.
    pub(crate) fn on_event(
        &mut self,
        index: usize,
        event: &Event,
        registry: &Registry,
        scratch: &mut [u8],
    ) -> Option<(AdminKey, Request)> {
        let key = self.conns.key_at(index)?;
        let conn = self.conns.get_mut(key)?;
        conn.ready.on_event(event);
        if conn.answered {
            self.flush(key, registry);
            return None;
        }
        loop {
            match read_into(&mut conn.socket, &mut conn.ready, scratch) {
                ReadOutcome::Data(count) => {
                    if conn.input.len() + count > MAX_ADMIN_REQUEST_BYTES {
                        self.close(key, registry);
                        return None;
                    }
                    conn.input.extend_from_slice(&scratch[..count]);
                }
                ReadOutcome::Blocked => break,
                ReadOutcome::Eof | ReadOutcome::Failed(_) => {
                    self.close(key, registry);
                    return None;
                }
            }
        }
        match conn.decoder.decode(&mut conn.input) {
            Ok(Decoded::Request(request)) => Some((key, request)),
            Ok(Decoded::Incomplete) => None,
            Err(_) => {
                self.answer(key, 400, "text/plain", b"bad request\n", registry);
                None
            }
        }
    }

    /// Sends an answer and closes the connection once it is out.
    pub(crate) fn answer(
        &mut self,
        key: AdminKey,
        status: u16,
        content_type: &str,
        body: &[u8],
        registry: &Registry,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        response::write_full(
            &mut conn.output,
            status,
            &[
                ("Content-Type", content_type),
                ("Cache-Control", "no-store"),
            ],
            body,
            false,
        );
        conn.answered = true;
        self.flush(key, registry);
    }

    fn flush(&mut self, key: AdminKey, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let outcome = write_from(
            &mut conn.socket,
            &mut conn.ready,
            &conn.output[conn.written..],
        );
        conn.written += outcome.written;
        if outcome.failed.is_some() || conn.written == conn.output.len() {
            self.close(key, registry);
        }
    }

    fn close(&mut self, key: AdminKey, registry: &Registry) {
        if let Some(mut conn) = self.conns.remove(key) {
            let _ = registry.deregister(&mut conn.socket);
        }
    }

    /// Closes connections that did not send their request in time.
    pub(crate) fn expire(&mut self, now: Instant, registry: &Registry) {
        for key in self.conns.keys() {
            let stale = self.conns.get(key).is_some_and(|conn| {
                now.saturating_duration_since(conn.opened) >= ADMIN_REQUEST_TIMEOUT
            });
            if stale {
                debug!("admin connection {key}: no request in time");
                self.close(key, registry);
            }
        }
    }

    /// True while some admin connection is open (its timeout is due).
    pub(crate) fn has_conns(&self) -> bool {
        !self.conns.is_empty()
    }
}

/// The process's resident set size and open descriptors, from `/proc`.
pub(crate) fn process_figures() -> (Option<u64>, Option<u64>) {
    // SAFETY: sysconf only reads a system constant.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as u64,
        _ => 4096,
    };
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page);
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64);
    (rss, fds)
}

/// The answer to an admin request: status, content type and body.
pub(super) fn respond(request: &Request, figures: &Figures<'_>) -> (u16, &'static str, Vec<u8>) {
    if request.method != "GET" && request.method != "HEAD" {
        return (405, "text/plain", b"use GET\n".to_vec());
    }
    let upstreams = figures.servers.health_report();
    let ready = figures.serving && upstreams.iter().all(|u| u.state == Health::Healthy);
    match request.path() {
        "/livez" => (200, "text/plain", b"ok\n".to_vec()),
        "/readyz" if ready => (200, "text/plain", b"ready\n".to_vec()),
        "/readyz" => {
            let why = if figures.serving {
                upstreams
                    .iter()
                    .find(|u| u.state != Health::Healthy)
                    .map(|u| format!("upstream {} is {}\n", u.name, u.state.name()))
                    .unwrap_or_default()
            } else {
                "shutting down\n".to_string()
            };
            (503, "text/plain", why.into_bytes())
        }
        "/status" => {
            let upstreams: Vec<_> = upstreams
                .iter()
                .map(|u| {
                    json!({
                        "name": u.name,
                        "state": u.state.name(),
                        "last_error": u.last_error,
                        "last_check": u.last_check
                            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                            .map(|since| since.as_secs_f64()),
                    })
                })
                .collect();
            let body = json!({
                "ready": ready,
                "serving": figures.serving,
                "sessions": figures.sessions,
                "children": figures.servers.live_children(),
                "upstreams": upstreams,
            });
            (200, "application/json", body.to_string().into_bytes())
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            figures.render_metrics().into_bytes(),
        ),
        _ => (404, "text/plain", b"not found\n".to_vec()),
    }
}
