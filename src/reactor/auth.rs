//! Inbound authentication in the reactor. Static bearer tokens: the
//! `--auth-token-file` read at start-up (a missing or broken file stops
//! mcphop) and again on SIGHUP (a broken or unreadable file then keeps the
//! old set, and the error is logged). OAuth access tokens: the resource
//! server of `mcp::oauth`, its one document fetch on the loop
//! (`key_fetch`), and the requests parked while keys they need are on
//! their way. Each request on the listener is checked here; the rules are
//! `mcp::auth`'s and `mcp::oauth`'s, and the clocks are read here.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use mio::event::Event;
use mio::Registry;
use rustls::ClientConfig;

use crate::client::ConnKey;
use crate::config::Config;
use crate::http::request::Request;
use crate::http::url::UpstreamUrl;
use crate::mcp::auth::{bearer, unauthorized, Principal, Refused, TokenSet};
use crate::mcp::endpoint::Reply;
use crate::mcp::oauth::{keys_unavailable, OAuthConfig, ResourceServer, Verdict};
use crate::metrics::Metrics;

use super::front_door::HttpFrontDoor;
use super::key_fetch::{Fetched, KeyFetch, Resolved};
use super::replies::shutting_down_reply;
use super::Timer;
use crate::timers::TimerQueue;

/// How long one fetch of the issuer's metadata or key set may take.
pub(super) const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests that may wait for keys at once; more get 503 at once.
const MAX_PARKED: usize = 1024;

/// What to do with a request.
enum Gate {
    /// Let it in, as this principal (none when authentication is off).
    Pass(Option<Principal>),
    Refuse(Reply),
    /// Park it until the key fetch is over.
    Park,
}

/// What became of a request the gate kept (`Auth::admit`).
pub(super) enum Held {
    /// It was answered: the metadata, a 401, or a 503.
    Answered,
    /// It waits for the key fetch (`Auth::progress` gives it back).
    Parked,
}

/// Who may use the listener.
#[derive(Default)]
pub(super) struct Auth {
    /// The token file and its current set; none when there is no file.
    tokens: Option<(String, TokenSet)>,
    oauth: Option<OAuthSide>,
}

/// The OAuth resource server and its I/O.
struct OAuthSide {
    server: ResourceServer,
    fetch: Option<KeyFetch>,
    resolved: Resolved,
    tls: Option<Arc<ClientConfig>>,
    /// Requests waiting for the fetch, in arrival order.
    parked: Vec<(ConnKey, Request)>,
}

fn read(path: &str) -> Result<TokenSet, String> {
    let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
    TokenSet::parse(&text)
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl OAuthSide {
    fn new(config: &OAuthConfig, ca_file: Option<&str>) -> io::Result<OAuthSide> {
        let server = ResourceServer::new(config).map_err(invalid)?;
        // The first document's host (the key set's when given, else the
        // issuer's) is looked up now, so it costs no lookup on the loop;
        // one that does not resolve is not fatal (the fetch fails, and is
        // retried).
        let mut resolved = Resolved::default();
        let first = config.jwks_url.as_deref().unwrap_or(&config.issuer);
        if let Err(why) = UpstreamUrl::parse(first).and_then(|url| resolved.address(&url)) {
            warn!("OAuth: {why}");
        }
        let https = [Some(&config.issuer), config.jwks_url.as_ref()]
            .into_iter()
            .flatten()
            .any(|url| url.starts_with("https://"));
        let tls = if https {
            Some(crate::tls::client_config(ca_file).map_err(invalid)?)
        } else {
            None
        };
        info!(
            "OAuth access tokens of {} for {} required",
            config.issuer, config.audience
        );
        Ok(OAuthSide {
            server,
            fetch: None,
            resolved,
            tls,
            parked: Vec::new(),
        })
    }

    /// Starts the fetch of `url`, or of the next document whenever one
    /// cannot start; the deadline of the one started.
    fn launch(&mut self, mut url: String, registry: &Registry, now: Instant) -> Option<Instant> {
        loop {
            let deadline = now + KEY_FETCH_TIMEOUT;
            let tls = self.tls.as_ref();
            match KeyFetch::start(&url, &mut self.resolved, tls, registry, deadline) {
                Ok(fetch) => {
                    debug!("OAuth: fetching {url}");
                    self.fetch = Some(fetch);
                    return Some(deadline);
                }
                Err(why) => url = self.server.fetched(Err(why), now)?,
            }
        }
    }

    /// The fetch ended with `outcome`: the next one starts if the document
    /// leads to another.
    fn finish(&mut self, outcome: Fetched, registry: &Registry, now: Instant) -> Option<Instant> {
        if let Some(fetch) = self.fetch.take() {
            fetch.close(registry);
        }
        let next = self.server.fetched(outcome, now)?;
        self.launch(next, registry, now)
    }
}

impl Auth {
    /// Reads the token file and sets up the resource server, as the
    /// configuration says. With neither on a non-loopback listener
    /// (`--allow-unauthenticated`), warns.
    pub(super) fn from_config(config: &Config) -> io::Result<Auth> {
        let oauth = match &config.oauth {
            Some(oauth) => Some(OAuthSide::new(oauth, config.upstream_ca.as_deref())?),
            None => None,
        };
        let Some(path) = config.auth_token_file.clone() else {
            if oauth.is_none() && config.stdio.is_none() && !config.listen.ip().is_loopback() {
                warn!(
                    "listening on {} with no authentication (--allow-unauthenticated): \
                     anyone who reaches this port can open sessions",
                    config.listen
                );
            }
            return Ok(Auth {
                tokens: None,
                oauth,
            });
        };
        let set = read(&path).map_err(|why| invalid(format!("--auth-token-file {path}: {why}")))?;
        info!("bearer tokens required: {} in {path}", set.len());
        Ok(Auth {
            tokens: Some((path, set)),
            oauth,
        })
    }

    /// The gate every request on the listener passes first: the
    /// protected resource metadata is served to anyone; a request with no
    /// valid credentials is answered (and counted); one whose token needs
    /// a key being fetched is parked. The request goes on, with the
    /// principal it proved (none when authentication is off), or is held.
    pub(super) fn admit(
        &mut self,
        key: ConnKey,
        request: Request,
        now: Instant,
        front: &mut HttpFrontDoor,
        metrics: &mut Metrics,
    ) -> Result<(Request, Option<Principal>), Held> {
        let metadata = self
            .oauth
            .as_ref()
            .and_then(|oauth| (oauth.server).metadata_reply(&request.method, request.path()));
        if let Some(reply) = metadata {
            front.reply(key, &reply, request.keep_alive);
            return Err(Held::Answered);
        }
        let refusal = match self.check(&request, now) {
            Gate::Pass(principal) => return Ok((request, principal)),
            Gate::Refuse(reply) => reply,
            Gate::Park => match self.park(front, key) {
                Ok(()) => return Err(self.keep(key, request)),
                Err(reply) => reply,
            },
        };
        metrics.auth_refused(refusal.status);
        front.reply(key, &refusal, request.keep_alive);
        Err(Held::Answered)
    }

    /// Whether `request` may go on, and as whom.
    fn check(&mut self, request: &Request, now: Instant) -> Gate {
        if self.tokens.is_none() && self.oauth.is_none() {
            return Gate::Pass(None);
        }
        let refuse = |auth: &Auth, refused: Refused| {
            debug!(
                "{} {}: 401 ({refused:?} token)",
                request.method,
                request.path()
            );
            Gate::Refuse(match &auth.oauth {
                Some(oauth) => oauth.server.challenge(refused, None),
                None => unauthorized(refused, None, None),
            })
        };
        let token = match bearer(request) {
            Ok(token) => token,
            Err(refused) => return refuse(self, refused),
        };
        if let Some((_, set)) = &self.tokens {
            if let Ok(principal) = set.check_token(token) {
                return Gate::Pass(Some(principal));
            }
        }
        let Some(oauth) = &mut self.oauth else {
            return refuse(self, Refused::Invalid);
        };
        match oauth.server.check(token, unix_now(), now) {
            Verdict::Allowed(principal) => Gate::Pass(Some(principal)),
            Verdict::Refused(reply) => Gate::Refuse(reply),
            Verdict::AwaitKeys => Gate::Park,
        }
    }

    /// Makes room for a parked request: its connection waits; the 503 to
    /// answer when too many wait.
    fn park(&mut self, front: &mut HttpFrontDoor, key: ConnKey) -> Result<(), Reply> {
        match &self.oauth {
            Some(oauth) if oauth.parked.len() < MAX_PARKED && front.await_keys(key) => Ok(()),
            _ => Err(keys_unavailable()),
        }
    }

    /// Keeps a parked request until `progress` gives it back.
    fn keep(&mut self, key: ConnKey, request: Request) -> Held {
        if let Some(oauth) = &mut self.oauth {
            oauth.parked.push((key, request));
        }
        Held::Parked
    }

    /// Starts the fetch that is due, if any (arming its deadline), and
    /// gives back the parked requests, their connections taking requests
    /// again, once no fetch is in flight or due: they are to be checked
    /// again. Requests of connections that closed meanwhile are dropped.
    pub(super) fn progress(
        &mut self,
        registry: &Registry,
        now: Instant,
        timers: &mut TimerQueue<Timer>,
        front: &mut HttpFrontDoor,
    ) -> Vec<(ConnKey, Request)> {
        let Some(oauth) = self.oauth.as_mut() else {
            return Vec::new();
        };
        if oauth.fetch.is_none() {
            if let Some(url) = oauth.server.next_fetch() {
                if let Some(deadline) = oauth.launch(url, registry, now) {
                    timers.schedule(deadline, Timer::KeyFetch);
                }
            }
        }
        if oauth.server.busy() {
            return Vec::new();
        }
        let mut resumed = std::mem::take(&mut oauth.parked);
        resumed.retain(|(key, _)| front.end_await_keys(*key));
        resumed
    }

    /// An edge on the fetch's socket; the next fetch's deadline is armed
    /// if one started.
    pub(super) fn on_fetch_event(
        &mut self,
        event: &Event,
        registry: &Registry,
        now: Instant,
        timers: &mut TimerQueue<Timer>,
    ) {
        let Some(oauth) = self.oauth.as_mut() else {
            return;
        };
        let Some(outcome) = oauth.fetch.as_mut().and_then(|fetch| fetch.on_event(event)) else {
            return;
        };
        if let Some(deadline) = oauth.finish(outcome, registry, now) {
            timers.schedule(deadline, Timer::KeyFetch);
        }
    }

    /// The fetch's deadline passed; as `on_fetch_event`.
    pub(super) fn on_fetch_deadline(
        &mut self,
        deadline: Instant,
        registry: &Registry,
        now: Instant,
        timers: &mut TimerQueue<Timer>,
    ) {
        let Some(oauth) = self.oauth.as_mut() else {
            return;
        };
        let Some(fetch) = oauth
            .fetch
            .as_ref()
            .filter(|fetch| fetch.deadline == deadline)
        else {
            return;
        };
        let why = format!("{}: no answer within {KEY_FETCH_TIMEOUT:?}", fetch.url);
        if let Some(next) = oauth.finish(Err(why), registry, now) {
            timers.schedule(next, Timer::KeyFetch);
        }
    }

    /// True while `deadline` is the fetch's (the timer is not stale).
    pub(super) fn fetch_due_at(&self, deadline: Instant) -> bool {
        let fetch = self.oauth.as_ref().and_then(|oauth| oauth.fetch.as_ref());
        fetch.is_some_and(|fetch| fetch.deadline == deadline)
    }

    /// mcphop is shutting down: every parked request gets 503 now.
    pub(super) fn refuse_parked(&mut self, front: &mut HttpFrontDoor) {
        let Some(oauth) = self.oauth.as_mut() else {
            return;
        };
        for (key, _) in oauth.parked.drain(..) {
            if front.end_await_keys(key) {
                front.reply(key, &shutting_down_reply(), false);
            }
        }
    }

    /// SIGHUP: the token file is read again; a broken one changes nothing.
    pub(super) fn reload(&mut self) {
        let Some((path, set)) = &mut self.tokens else {
            info!("SIGHUP: no token file to reload");
            return;
        };
        match read(path) {
            Ok(fresh) => {
                info!("SIGHUP: reloaded {path}: {} bearer token(s)", fresh.len());
                *set = fresh;
            }
            Err(why) => error!(
                "SIGHUP: reloading {path} failed, keeping the {} token(s) in use: {why}",
                set.len()
            ),
        }
    }
}
