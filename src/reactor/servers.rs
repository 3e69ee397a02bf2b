//! The upstream servers of a run, each with its own upstream adapter
//! (`Upstreams`), and the routes that reach them: `/servers/NAME/mcp` and
//! the legacy `/servers/NAME/sse` + `/servers/NAME/message`, plus `--path`
//! and the legacy paths for the default server. A session belongs to one
//! server for its whole life (`ServerId` in `Session`).

use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mio::Registry;
use rustls::ClientConfig;

use crate::config::{Config, ServerConfig, UpstreamKind, SERVERS_PREFIX};
use crate::http::url::{Scheme, UpstreamUrl};
use log::{error, info, warn};
use serde_json::value::RawValue;

use crate::arena::Arena;
use crate::config::RETRY_AFTER_SECONDS;
use crate::core::{CoreConfig, SessionCore};
use crate::jsonrpc;
use crate::mcp::auth::Principal;
use crate::mcp::endpoint::Reply;
use crate::mcp::legacy_endpoint::LegacyPaths;
use crate::mcp::limits::{ClientLimits, Refused};
use crate::mcp::router::RouterLimits;
use crate::mcp::tools::ToolFilter;
use crate::session::Session;
use crate::session_id;
use std::net::IpAddr;

use super::http_upstream::HttpSide;
use super::stdio_upstream::StdioUpstream;
use super::upstreams::{UpstreamHealth, Upstreams};
use crate::metrics::Snapshot;
use crate::session::SessionKey;

/// Names a server: its place in `Config::servers`, fixed for the run, and
/// below `config::MAX_SERVERS` (it travels in upstream sockets' tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ServerId(u8);

impl ServerId {
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The server at `index`, if `index` can name one.
    pub(crate) fn at(index: usize) -> Option<ServerId> {
        u8::try_from(index).ok().map(ServerId)
    }
}

/// Which front door a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    Streamable,
    Legacy,
}

/// A route: the server and the door (the paths that door serves there are
/// `Servers::mcp_path` and `Servers::legacy_paths`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub server: ServerId,
    pub door: Door,
    /// Reached through `--path` and the legacy paths, not `/servers/NAME/`.
    pub default: bool,
    /// Only a retired server has this name: its open sessions are reached
    /// here, and no new session starts.
    pub retired: bool,
}

/// One upstream server of the run.
pub(crate) struct Server {
    pub name: String,
    pub upstream: Upstreams,
    /// The tools its clients may not see or call, shared by its sessions.
    pub tools: Rc<ToolFilter>,
    /// Its definition, as the configuration gave it.
    pub definition: ServerConfig,
    /// A reload removed or replaced it: no route leads to it, and its open
    /// sessions finish on it.
    pub retired: bool,
    /// Its routes' paths, made once (requests are matched against them).
    mcp_path: String,
    legacy: LegacyPaths,
}

impl Server {
    pub(super) fn new(
        config: &Config,
        definition: &ServerConfig,
        id: ServerId,
        tls: Option<&Arc<ClientConfig>>,
    ) -> io::Result<Server> {
        Ok(Server {
            name: definition.name.clone(),
            upstream: adapter(config, definition, id, tls)?,
            tools: Rc::new(definition.tools.clone()),
            definition: definition.clone(),
            retired: false,
            mcp_path: definition.mcp_path(),
            legacy: definition.legacy_paths(),
        })
    }
}

/// Every server, and the routes to them.
pub(crate) struct Servers {
    pub(super) list: Vec<Server>,
    pub(super) by_name: HashMap<String, ServerId>,
    pub(super) default: Option<ServerId>,
    /// The one TLS configuration of every https upstream (and its session
    /// cache), once one is configured.
    pub(super) tls: Option<Arc<ClientConfig>>,
    /// Sessions and session openings per client.
    pub(super) limits: ClientLimits,
}

impl Servers {
    /// Builds each server's adapter (an HTTP server's address is resolved
    /// now).
    pub(crate) fn new(config: &Config) -> io::Result<Servers> {
        let mut list = Vec::with_capacity(config.servers.len());
        let mut by_name = HashMap::new();
        // One TLS configuration for every https upstream (and its session
        // cache), built only when one is configured.
        let https = config
            .servers
            .iter()
            .any(|server| server.url().is_some_and(|url| url.scheme == Scheme::Https));
        let tls = match https {
            true => Some(
                crate::tls::client_config(config.upstream_ca.as_deref())
                    .map_err(io::Error::other)?,
            ),
            false => None,
        };
        for (index, server) in config.servers.iter().enumerate() {
            let id = ServerId::at(index).ok_or_else(|| io::Error::other("too many servers"))?;
            list.push(Server::new(config, server, id, tls.as_ref())?);
            by_name.insert(server.name.clone(), id);
        }
        Ok(Servers {
            list,
            by_name,
            default: config.default_server.and_then(ServerId::at),
            tls,
            limits: ClientLimits::new(config.max_sessions_per_client, config.initialize_rate),
        })
    }

    pub(crate) fn get(&self, id: ServerId) -> Option<&Server> {
        self.list.get(id.index())
    }

    pub(crate) fn get_mut(&mut self, id: ServerId) -> Option<&mut Server> {
        self.list.get_mut(id.index())
    }

    /// Every server with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ServerId, &Server)> {
        self.list
            .iter()
            .enumerate()
            .filter_map(|(index, server)| Some((ServerId::at(index)?, server)))
    }

    /// The route `path` takes, if it names one.
    pub(crate) fn route(&self, path: &str, config: &Config) -> Option<Route> {
        if let Some(default) = self.default {
            let legacy = &config.legacy_paths;
            let door = if path == config.path {
                Some(Door::Streamable)
            } else if path == legacy.sse || path == legacy.message {
                Some(Door::Legacy)
            } else {
                None
            };
            if let Some(door) = door {
                return Some(Route {
                    server: default,
                    door,
                    default: true,
                    retired: false,
                });
            }
        }
        let (name, what) = path.strip_prefix(SERVERS_PREFIX)?.split_once('/')?;
        let live = self.by_name.get(name).copied();
        let server = live.or_else(|| {
            self.iter()
                .find(|(_, server)| server.retired && server.name == name)
                .map(|(id, _)| id)
        })?;
        let door = match what {
            "mcp" => Door::Streamable,
            "sse" | "message" => Door::Legacy,
            _ => return None,
        };
        Some(Route {
            server,
            door,
            default: false,
            retired: live.is_none(),
        })
    }

    /// The Streamable HTTP endpoint's path on `route`.
    pub(crate) fn mcp_path<'a>(&'a self, route: &Route, config: &'a Config) -> &'a str {
        match self.get(route.server) {
            Some(server) if !route.default => &server.mcp_path,
            _ => &config.path,
        }
    }

    /// The legacy front door's paths on `route`.
    pub(crate) fn legacy_paths<'a>(&'a self, route: &Route, config: &'a Config) -> &'a LegacyPaths {
        match self.get(route.server) {
            Some(server) if !route.default => &server.legacy,
            _ => &config.legacy_paths,
        }
    }
}

/// The adapter of one server.
fn adapter(
    config: &Config,
    server: &ServerConfig,
    id: ServerId,
    tls: Option<&Arc<ClientConfig>>,
) -> io::Result<Upstreams> {
    let side = |url: &UpstreamUrl| {
        HttpSide::new(url.clone(), config.pool, id, server.headers.clone(), tls)
    };
    Ok(match &server.upstream {
        UpstreamKind::Http { url } => Upstreams::Http(side(url)?),
        UpstreamKind::Sse { url } => Upstreams::Sse(side(url)?),
        UpstreamKind::Stdio { command } => Upstreams::Stdio(StdioUpstream::new(
            command.clone(),
            server.env.clone(),
            server.cwd.clone(),
            config.max_line_bytes,
            config.child_grace,
        )),
    })
}

/// Why a session could not be opened, as its client hears it.
pub(crate) struct Refusal {
    status: u16,
    text: String,
    /// Seconds the client is told to wait, if any.
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: u16, text: String, retry_after: Option<u64>) -> Refusal {
        Refusal {
            status,
            text,
            retry_after,
        }
    }

    /// The answer to the request with `id`.
    pub(crate) fn reply(&self, id: &RawValue) -> Reply {
        let reply = Reply::error(self.status, id, jsonrpc::UPSTREAM_GONE, &self.text);
        match self.retry_after {
            Some(seconds) => reply.with_header("Retry-After", seconds.to_string()),
            None => reply,
        }
    }
}

/// What the loop asks of every server at once.
impl Servers {
    /// Opens a session on `server`: its id, its upstream (a stdio child is
    /// spawned now), its core; registered in `sessions` and `session_ids`.
    pub(crate) fn open_session(
        &mut self,
        server: ServerId,
        config: &Config,
        (sessions, session_ids): (&mut Arena<Session>, &mut HashMap<String, SessionKey>),
        registry: &Registry,
        now: Instant,
        (owner, peer): (Option<&Principal>, Option<IpAddr>),
    ) -> Result<SessionKey, Refusal> {
        // Who it counts against: its token's owner, else its address.
        let client = owner.map_or_else(
            || peer.map_or_else(|| "stdin".to_string(), |ip| ip.to_string()),
            |owner| owner.name().to_string(),
        );
        let client = client.as_str();
        if let Err(refused) = self.limits.admit(client, now) {
            let (text, wait) = match refused {
                Refused::Sessions { max } => (
                    format!("Too Many Requests: {max} sessions open for this client"),
                    RETRY_AFTER_SECONDS,
                ),
                Refused::Rate { retry_after } => (
                    "Too Many Requests: sessions opened too fast".to_string(),
                    retry_after.as_secs().max(1),
                ),
            };
            warn!("client {client}: {text}");
            return Err(Refusal::new(429, text, Some(wait)));
        }
        if session_ids.len() >= config.max_sessions {
            warn!(
                "refusing a new session: {} sessions open (--max-sessions)",
                session_ids.len()
            );
            let text = "Service Unavailable: too many sessions; retry later";
            return Err(Refusal::new(503, text.into(), Some(RETRY_AFTER_SECONDS)));
        }
        let session_id =
            session_id::new_session_id(config.instance_id.as_deref()).map_err(|error| {
                error!("no randomness for a session id: {error}");
                Refusal::new(500, "no session id".into(), None)
            })?;
        let core_config = self.core_config(config, server);
        let entry = self
            .get_mut(server)
            .ok_or_else(|| Refusal::new(404, "no such server".into(), None))?;
        if let Some(why) = entry.upstream.session_refusal(now) {
            return Err(Refusal::new(
                503,
                format!("Service Unavailable: {why}"),
                Some(RETRY_AFTER_SECONDS),
            ));
        }
        let session_key = sessions.next_key();
        let (upstream, description) =
            entry
                .upstream
                .start(session_key, registry, now)
                .map_err(|error| {
                    let text =
                        format!("Bad Gateway: the upstream server could not be started: {error}");
                    Refusal::new(502, text, None)
                })?;
        let core = SessionCore::new(session_id, core_config, now);
        info!(
            "session {} started: {description}, {} live",
            core.short_id(),
            session_ids.len() + 1
        );
        session_ids.insert(core.id().to_string(), session_key);
        self.limits.opened(client);
        let mut session = Session::new(core, upstream, server);
        session.client = client.to_string();
        Ok(sessions.insert(session))
    }

    /// A session of `client`'s was removed.
    pub(crate) fn session_closed(&mut self, client: &str) {
        self.limits.closed(client);
    }

    /// What the cores of `server`'s sessions need of the configuration.
    pub(crate) fn core_config(&self, config: &Config, server: ServerId) -> CoreConfig {
        CoreConfig {
            tools: self
                .get(server)
                .map(|entry| Rc::clone(&entry.tools))
                .unwrap_or_default(),
            router: RouterLimits {
                max_held_bytes: config.max_held_bytes,
                replay_max_events: config.replay_max_events,
                replay_max_bytes: config.replay_max_bytes,
                request_timeout: config.request_timeout,
                request_timeout_max: config.request_timeout_max,
                initialize_timeout: config.spawn_timeout,
            },
            idle_timeout: config.session_idle_timeout,
            resume_window: config.resume_window,
        }
    }

    /// The server whose stdio adapter spawned `pid`.
    pub(crate) fn child_owner(&self, pid: u32) -> Option<ServerId> {
        self.iter()
            .find(|(_, server)| server.upstream.owns_child(pid))
            .map(|(id, _)| id)
    }

    /// Bytes queued to a session's upstream input (a stdio child's stdin).
    pub(crate) fn input_backlog(&self, session_key: SessionKey, session: &Session) -> usize {
        self.get(session.server)
            .map_or(0, |entry| entry.upstream.input_backlog(session_key))
    }

    /// True when a session's upstream output waits for its client.
    pub(crate) fn has_backlog(&self, session_key: SessionKey, session: &Session) -> bool {
        self.get(session.server)
            .is_some_and(|entry| entry.upstream.has_backlog(session_key, session))
    }

    /// True when some server's output is to be read again this turn.
    pub(crate) fn has_pending_reads(&self) -> bool {
        self.list
            .iter()
            .any(|server| server.upstream.has_pending_reads())
    }

    /// The sessions whose upstream output is to be read again now.
    pub(crate) fn take_pending_reads(&mut self) -> Vec<SessionKey> {
        self.list
            .iter_mut()
            .flat_map(|server| server.upstream.take_pending_reads())
            .collect()
    }

    /// The earliest moment some server has something to do on its own.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.list
            .iter_mut()
            .filter_map(|server| server.upstream.next_deadline())
            .min()
    }

    /// The servers with something due on their own at `now` (see
    /// `Upstreams::next_deadline`).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<ServerId> {
        let mut due = Vec::new();
        for (index, server) in self.list.iter_mut().enumerate() {
            if server.upstream.next_deadline().is_some_and(|at| at <= now) {
                due.extend(ServerId::at(index));
            }
        }
        due
    }

    /// Gives back what a busy moment left allocated (no session is open).
    pub(crate) fn release_idle_capacity(&mut self) {
        for server in &mut self.list {
            server.upstream.release_idle_capacity();
        }
    }

    /// True while some server has upstream requests in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.list.iter().any(|server| server.upstream.in_flight())
    }

    pub(crate) fn log_summary(&self) {
        for server in &self.list {
            server.upstream.log_summary();
        }
    }

    /// SIGKILL to every child of every server.
    pub(crate) fn kill_all(&self) {
        for server in &self.list {
            server.upstream.kill_all();
        }
    }

    pub(crate) fn abandon(&mut self, registry: &Registry) {
        for server in &mut self.list {
            server.upstream.abandon(registry);
        }
    }

    /// Every server's health, for `/status` and `/readyz`.
    pub(crate) fn health_report(&self) -> Vec<UpstreamHealth> {
        self.list
            .iter()
            .filter(|server| !server.retired)
            .flat_map(|server| {
                server
                    .upstream
                    .health_report()
                    .into_iter()
                    .map(|mut health| {
                        health.name = format!("{}: {}", server.name, health.name);
                        health
                    })
            })
            .collect()
    }

    /// What every server adds to a `/metrics` scrape.
    pub(crate) fn fill_snapshot(&self, snapshot: &mut Snapshot) {
        snapshot.limit_refusals = (self.limits.refused_sessions, self.limits.refused_rate);
        for server in &self.list {
            server.upstream.fill_snapshot(&server.name, snapshot);
        }
    }

    /// Children alive now, over every stdio server.
    pub(crate) fn live_children(&self) -> usize {
        self.list
            .iter()
            .filter_map(|server| server.upstream.stdio())
            .map(StdioUpstream::live_children)
            .sum()
    }
}
