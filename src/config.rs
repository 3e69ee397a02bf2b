//! Run-time configuration: every tunable with its default beside its doc
//! comment, and the command-line parser that fills it in.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config_file;
use crate::health::{DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_HEALTH_WORKERS};
use crate::http::request::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEAD_BYTES};
use crate::http::url::UpstreamUrl;
use crate::lines::DEFAULT_MAX_LINE_BYTES;
use crate::mcp::legacy_endpoint::LegacyPaths;
use crate::mcp::limits::{DEFAULT_INITIALIZE_RATE, DEFAULT_MAX_SESSIONS_PER_CLIENT};
use crate::mcp::oauth::OAuthConfig;
use crate::mcp::replay::{DEFAULT_REPLAY_MAX_BYTES, DEFAULT_REPLAY_MAX_EVENTS};
use crate::mcp::tools::ToolFilter;
use crate::pool::PoolConfig;

mod usage;
pub use usage::USAGE;

/// Where mcphop listens: loopback only, so nothing else on the network can reach
/// a stdio server that was written for one local user.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The Streamable HTTP endpoint path.
pub const DEFAULT_PATH: &str = "/mcp";
/// Most concurrent sessions; one more gets 503 with `Retry-After`.
pub const DEFAULT_MAX_SESSIONS: usize = 1024;
/// A session with no client activity for this long is ended.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// On SIGINT/SIGTERM, in-flight requests get this long to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A request head not complete within this long gets 408 and a close.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body that receives nothing for this long gets 408 and a close.
/// Measured between two reads that bring body bytes, as nginx's
/// `client_body_timeout` (whose default this is), so a large body on a slow
/// link is not cut while it still moves.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// After a child's stdin is closed, how long it has to exit before SIGTERM,
/// and again after SIGTERM before SIGKILL.
pub const DEFAULT_CHILD_GRACE: Duration = Duration::from_secs(2);
/// Bytes queued to one client connection before its session's child stdout is
/// paused: a client that stops reading stalls only its own child.
pub const DEFAULT_MAX_CLIENT_BUFFER: usize = 1024 * 1024;
/// Bytes of messages held for a session while no stream is open to carry them.
pub const DEFAULT_MAX_HELD_BYTES: usize = 1024 * 1024;
/// Bytes queued to one child's stdin before its client gets 503.
pub const DEFAULT_MAX_CHILD_STDIN_BUFFER: usize = 8 * 1024 * 1024;
/// A request with no answer and no progress for this long gets a JSON-RPC
/// error, and the child gets `notifications/cancelled`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// No request lives longer than this, however much progress it reports.
pub const DEFAULT_REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// A child that has not answered `initialize` within this long is killed.
pub const DEFAULT_SPAWN_TIMEOUT: Duration = Duration::from_secs(60);
/// An open SSE stream silent for this long gets a `: keepalive` comment, so
/// load balancers that cut idle connections leave it alone.
pub const DEFAULT_SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// The `retry:` a stream advertises: how long a client waits to reconnect.
pub const DEFAULT_SSE_RETRY: Duration = Duration::from_millis(1000);
/// How long a stream whose client disconnected waits for a `Last-Event-ID`
/// resume before its requests count as cancelled.
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(5);
/// Seconds a client is told to wait when mcphop is full.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// The kind of upstream, with what reaching it takes. Each kind has its own
/// adapter in the reactor; a new kind is a new variant here.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamKind {
    /// A stdio child per session: the command and its arguments.
    Stdio { command: Vec<String> },
    /// A Streamable HTTP server, one upstream session per client session.
    Http { url: UpstreamUrl },
    /// A legacy HTTP+SSE server (2024-11-05): `url` is its SSE endpoint;
    /// each client session gets its own SSE stream there.
    Sse { url: UpstreamUrl },
}

/// Where a server's routes live: `/servers/NAME/mcp` and, for the legacy
/// front door, `/servers/NAME/sse` and `/servers/NAME/message`.
pub const SERVERS_PREFIX: &str = "/servers/";
/// Most servers one mcphop serves (a server's number travels in poll
/// tokens).
pub const MAX_SERVERS: usize = 64;

/// One upstream server: its name, what reaching it takes, and which of its
/// tools clients may use.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Its name in routes and logs: `[A-Za-z0-9_.-]+`.
    pub name: String,
    pub upstream: UpstreamKind,
    /// Headers added to every request to an HTTP or legacy SSE server.
    pub headers: Vec<(String, String)>,
    /// A stdio server's extra environment variables.
    pub env: Vec<(String, String)>,
    /// A stdio server's working directory.
    pub cwd: Option<String>,
    /// Tools hidden from its clients.
    pub tools: ToolFilter,
}

impl ServerConfig {
    pub fn new(name: &str, upstream: UpstreamKind) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            upstream,
            headers: Vec::new(),
            env: Vec::new(),
            cwd: None,
            tools: ToolFilter::default(),
        }
    }

    /// Its Streamable HTTP endpoint's path.
    pub fn mcp_path(&self) -> String {
        format!("{SERVERS_PREFIX}{}/mcp", self.name)
    }

    /// Its legacy HTTP+SSE paths.
    pub fn legacy_paths(&self) -> LegacyPaths {
        LegacyPaths {
            sse: format!("{SERVERS_PREFIX}{}/sse", self.name),
            message: format!("{SERVERS_PREFIX}{}/message", self.name),
        }
    }

    /// The stdio command, for a stdio server (else empty).
    pub fn command(&self) -> &[String] {
        match &self.upstream {
            UpstreamKind::Stdio { command } => command,
            UpstreamKind::Http { .. } | UpstreamKind::Sse { .. } => &[],
        }
    }

    /// The URL, for a Streamable HTTP or legacy SSE server.
    pub fn url(&self) -> Option<&UpstreamUrl> {
        match &self.upstream {
            UpstreamKind::Http { url } | UpstreamKind::Sse { url } => Some(url),
            UpstreamKind::Stdio { .. } => None,
        }
    }

    /// What it is, for the log.
    pub fn describe(&self) -> String {
        match &self.upstream {
            UpstreamKind::Http { url } | UpstreamKind::Sse { url } => format!(
                "{}://{}{}",
                url.scheme.as_str(),
                url.authority(),
                url.target
            ),
            UpstreamKind::Stdio { command } => command.join(" "),
        }
    }
}

/// The stdio front door's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioFront {
    /// The server its session goes to (`--server NAME`); the default one
    /// if none.
    pub server: Option<String>,
}

/// Everything the reactor needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub path: String,
    /// The legacy HTTP+SSE front door's paths, served beside `path`.
    pub legacy_paths: LegacyPaths,
    /// Every upstream server, each at its own routes.
    pub servers: Vec<ServerConfig>,
    /// The server also served at `path` and `legacy_paths` (the one given
    /// on the command line is).
    pub default_server: Option<usize>,
    /// `mcphop stdio`: one session on mcphop's own stdin and stdout, and no
    /// listener.
    pub stdio: Option<StdioFront>,
    /// The `--config` file, read again on SIGHUP.
    pub config_file: Option<String>,
    /// The bearer tokens every request on the listener must present
    /// (`--auth-token-file`), re-read on SIGHUP; none means no
    /// authentication.
    pub auth_token_file: Option<String>,
    /// OAuth access tokens accepted (`--auth-issuer`, `--auth-audience`);
    /// none means none are.
    pub oauth: Option<OAuthConfig>,
    /// Serve a non-loopback listener with no authentication
    /// (`--allow-unauthenticated`): refused by default.
    pub allow_unauthenticated: bool,
    /// Sessions one client (a token's name, or an IP address) may hold
    /// open; none means no limit. Off on loopback unless given; 64 beyond.
    pub max_sessions_per_client: Option<usize>,
    /// Sessions one client may open per second (burst: twice as many);
    /// none means no limit. Off on loopback unless given; 10 beyond.
    pub initialize_rate: Option<f64>,
    /// Client headers passed on to an HTTP upstream (lowercase names). None
    /// is by default: a client's token is not for the upstream.
    pub forward_headers: Vec<String>,
    /// The keep-alive pool's limits, for HTTP upstreams.
    pub pool: PoolConfig,
    pub max_sessions: usize,
    pub session_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub child_grace: Duration,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub max_line_bytes: usize,
    pub max_client_buffer: usize,
    pub max_held_bytes: usize,
    pub max_child_stdin_buffer: usize,
    pub request_timeout: Duration,
    pub request_timeout_max: Duration,
    pub spawn_timeout: Duration,
    pub sse_keepalive: Duration,
    pub sse_retry: Duration,
    pub resume_window: Duration,
    /// Events and bytes each stream keeps for replay.
    pub replay_max_events: usize,
    pub replay_max_bytes: usize,
    /// Extra `Host` values accepted besides the loopback names of the bound port.
    pub allowed_hosts: Vec<String>,
    /// Extra `Origin` values accepted besides the loopback origins of the bound port.
    pub allowed_origins: Vec<String>,
    pub log_level: log::LevelFilter,
    /// Where the admin endpoints (`/livez`, `/readyz`, `/status`,
    /// `/metrics`) listen; none by default. Loopback only.
    pub admin_listen: Option<SocketAddr>,
    /// Threads that run health probes.
    pub health_workers: usize,
    /// How often an HTTP upstream host is probed; zero turns probes off.
    pub health_interval: Duration,
    /// How long a probe may take.
    pub health_timeout: Duration,
    /// This instance's tag (`--instance-id`), put at the start of every
    /// session id it mints so a balancer can route a session back to it.
    pub instance_id: Option<String>,
    /// The path a probe GETs: the upstream URL's path for a Streamable HTTP
    /// upstream, `/` for a legacy SSE one (a GET of its SSE path would
    /// open a session there).
    pub health_path: Option<String>,
    /// A PEM file of CA certificates trusted for https upstreams, besides
    /// the system's roots (`--upstream-ca`).
    pub upstream_ca: Option<String>,
}

impl Config {
    /// The default server, if there is one.
    pub fn default(&self) -> Option<&ServerConfig> {
        self.servers.get(self.default_server?)
    }

    /// The default server's stdio command (else empty).
    pub fn command(&self) -> &[String] {
        self.default().map_or(&[], ServerConfig::command)
    }

    /// The default server's URL, for a Streamable HTTP or legacy SSE one.
    pub fn upstream_url(&self) -> Option<&UpstreamUrl> {
        self.default().and_then(ServerConfig::url)
    }

    /// A configuration with every default and the given upstream command.
    pub fn with_command(command: Vec<String>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: DEFAULT_PATH.to_string(),
            legacy_paths: LegacyPaths::default(),
            servers: vec![ServerConfig::new(
                DEFAULT_SERVER_NAME,
                UpstreamKind::Stdio { command },
            )],
            default_server: Some(0),
            stdio: None,
            config_file: None,
            auth_token_file: None,
            oauth: None,
            allow_unauthenticated: false,
            max_sessions_per_client: None,
            initialize_rate: None,
            forward_headers: Vec::new(),
            pool: PoolConfig::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            child_grace: DEFAULT_CHILD_GRACE,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_client_buffer: DEFAULT_MAX_CLIENT_BUFFER,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            max_child_stdin_buffer: DEFAULT_MAX_CHILD_STDIN_BUFFER,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            request_timeout_max: DEFAULT_REQUEST_TIMEOUT_MAX,
            spawn_timeout: DEFAULT_SPAWN_TIMEOUT,
            sse_keepalive: DEFAULT_SSE_KEEPALIVE,
            sse_retry: DEFAULT_SSE_RETRY,
            resume_window: DEFAULT_RESUME_WINDOW,
            replay_max_events: DEFAULT_REPLAY_MAX_EVENTS,
            replay_max_bytes: DEFAULT_REPLAY_MAX_BYTES,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            log_level: log::LevelFilter::Info,
            admin_listen: None,
            health_workers: DEFAULT_HEALTH_WORKERS,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            health_path: None,
            upstream_ca: None,
            instance_id: None,
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Help,
    Version,
    /// `--check-config FILE`: how many servers it holds, or every error.
    CheckConfig(Result<usize, Vec<String>>),
}

/// The name of the server the command line gives (`-- COMMAND`,
/// `--upstream`, `--upstream-sse`).
pub const DEFAULT_SERVER_NAME: &str = "default";

/// The value after the last `flag` (as `flag VALUE` or `flag=VALUE`),
/// before any `--`.
fn value_after(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut args = args.iter().take_while(|arg| *arg != "--");
    while let Some(arg) = args.next() {
        if arg == flag {
            found = args.next().cloned();
        } else if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_string());
        }
    }
    found
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, String> {
    let mut args: Vec<String> = args.into_iter().collect();
    let stdio = args.first().is_some_and(|first| first == "stdio");
    if stdio {
        args.remove(0);
    }
    let mut stdio_server: Option<String> = None;
    if let Some(path) = value_after(&args, "--check-config") {
        return Ok(Invocation::CheckConfig(
            config_file::load(&path).map(|file| file.servers.len()),
        ));
    }
    let args_for_reload = args.clone();
    let file = match value_after(&args, "--config") {
        Some(path) => Some(
            config_file::load(&path)
                .map_err(|errors| format!("--config {path}:\n  {}", errors.join("\n  ")))?,
        ),
        None => None,
    };
    let mut config = Config::with_command(Vec::new());
    let mut oauth = OAuthConfig::default();
    let mut command: Vec<String> = Vec::new();
    let mut remote_upstream: Option<UpstreamKind> = None;
    let mut upstream_headers: Vec<(String, String)> = Vec::new();
    let file_options = file
        .as_ref()
        .map(|file| file.options.clone())
        .unwrap_or_default();
    // The file's options first: the command line overrides them.
    let mut args = file_options.into_iter().chain(args);
    while let Some(arg) = args.next() {
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline_value {
                Some(value) => Ok(value.to_string()),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "--" => {
                command = args.by_ref().collect();
                break;
            }
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            // Read before the loop.
            "--config" => {
                value(&name)?;
            }
            "--server" if stdio => stdio_server = Some(value(&name)?),
            "--listen" => {
                let text = value(&name)?;
                config.listen = text
                    .parse()
                    .map_err(|_| format!("--listen: not an address like 127.0.0.1:8080: {text}"))?;
            }
            "--upstream" | "--upstream-sse" => {
                let url = UpstreamUrl::parse(&value(&name)?).map_err(|e| format!("{name}: {e}"))?;
                if remote_upstream.is_some() {
                    return Err("give one of --upstream and --upstream-sse, once".into());
                }
                remote_upstream = Some(if name == "--upstream" {
                    UpstreamKind::Http { url }
                } else {
                    UpstreamKind::Sse { url }
                });
            }
            "--auth-token-file" => config.auth_token_file = Some(value(&name)?),
            "--auth-issuer" => oauth.issuer = value(&name)?,
            "--auth-audience" => oauth.audience = value(&name)?,
            "--auth-jwks-url" => oauth.jwks_url = Some(value(&name)?),
            "--auth-jwks-refresh" => oauth.min_refresh = parse_duration(&name, &value(&name)?)?,
            "--allow-unauthenticated" => config.allow_unauthenticated = true,
            "--max-sessions-per-client" => {
                config.max_sessions_per_client = Some(parse_count(&name, &value(&name)?)?)
            }
            "--initialize-rate" => {
                let text = value(&name)?;
                let rate: f64 = text
                    .parse()
                    .ok()
                    .filter(|rate: &f64| rate.is_finite() && *rate > 0.0)
                    .ok_or_else(|| format!("--initialize-rate: not a positive number: {text}"))?;
                config.initialize_rate = Some(rate);
            }
            "--upstream-ca" => {
                let path = value(&name)?;
                if path.is_empty() {
                    return Err("--upstream-ca needs a file".into());
                }
                config.upstream_ca = Some(path);
            }
            "--forward-header" => {
                let header = value(&name)?.trim().to_ascii_lowercase();
                if header.is_empty() || header.contains(':') {
                    return Err(format!("--forward-header takes a header name: {header:?}"));
                }
                config.forward_headers.push(header);
            }
            "--upstream-header" => {
                let text = value(&name)?;
                let (header, value) = text
                    .split_once(':')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .filter(|(n, _)| !n.is_empty())
                    .ok_or_else(|| format!("--upstream-header takes 'Name: value': {text:?}"))?;
                upstream_headers.push((header, value));
            }
            "--pool-idle-timeout" => {
                config.pool.idle_timeout = parse_duration(&name, &value(&name)?)?
            }
            "--pool-max-idle-per-host" => {
                config.pool.max_idle_per_host = parse_count(&name, &value(&name)?)?
            }
            "--pool-max-per-host" => config.pool.max_per_host = parse_count(&name, &value(&name)?)?,
            "--pool-max-lifetime" => {
                config.pool.max_lifetime = parse_duration(&name, &value(&name)?)?
            }
            "--pool-max-requests" => {
                let count = parse_count(&name, &value(&name)?)?;
                config.pool.max_requests = u32::try_from(count).unwrap_or(u32::MAX);
            }
            "--pool-connect-timeout" => {
                config.pool.connect_timeout = parse_duration(&name, &value(&name)?)?
            }
            "--pool-queue-timeout" => {
                config.pool.queue_timeout = parse_duration(&name, &value(&name)?)?
            }
            "--path" => {
                let path = value(&name)?;
                if !path.starts_with('/') {
                    return Err(format!("--path must start with '/': {path}"));
                }
                config.path = path;
            }
            "--admin-listen" => {
                let text = value(&name)?;
                let addr: SocketAddr = text.parse().map_err(|_| {
                    format!("--admin-listen: not an address like 127.0.0.1:9090: {text}")
                })?;
                if !addr.ip().is_loopback() {
                    return Err(format!("--admin-listen must be a loopback address: {text}"));
                }
                config.admin_listen = Some(addr);
            }
            "--health-workers" => config.health_workers = parse_count(&name, &value(&name)?)?,
            "--health-interval" => config.health_interval = parse_duration(&name, &value(&name)?)?,
            "--health-timeout" => config.health_timeout = parse_duration(&name, &value(&name)?)?,
            "--health-path" => {
                let path = value(&name)?;
                if !path.starts_with('/') {
                    return Err(format!("--health-path must start with '/': {path}"));
                }
                config.health_path = Some(path);
            }
            "--sse-path" | "--message-path" => {
                let path = value(&name)?;
                if !path.starts_with('/') || path.contains(['?', '#']) {
                    return Err(format!("{name} must be a path starting with '/': {path}"));
                }
                if name == "--sse-path" {
                    config.legacy_paths.sse = path;
                } else {
                    config.legacy_paths.message = path;
                }
            }
            "--max-sessions" => config.max_sessions = parse_count(&name, &value(&name)?)?,
            "--session-idle-timeout" => {
                config.session_idle_timeout = parse_duration(&name, &value(&name)?)?
            }
            "--shutdown-grace" => config.shutdown_grace = parse_duration(&name, &value(&name)?)?,
            "--head-timeout" => config.head_timeout = parse_duration(&name, &value(&name)?)?,
            "--body-timeout" => config.body_timeout = parse_duration(&name, &value(&name)?)?,
            "--child-grace" => config.child_grace = parse_duration(&name, &value(&name)?)?,
            "--request-timeout" => config.request_timeout = parse_duration(&name, &value(&name)?)?,
            "--request-timeout-max" => {
                config.request_timeout_max = parse_duration(&name, &value(&name)?)?
            }
            "--spawn-timeout" => config.spawn_timeout = parse_duration(&name, &value(&name)?)?,
            "--sse-keepalive" => config.sse_keepalive = parse_duration(&name, &value(&name)?)?,
            "--sse-retry" => config.sse_retry = parse_duration(&name, &value(&name)?)?,
            "--resume-window" => config.resume_window = parse_duration(&name, &value(&name)?)?,
            "--replay-events" => config.replay_max_events = parse_count(&name, &value(&name)?)?,
            "--replay-bytes" => config.replay_max_bytes = parse_size(&name, &value(&name)?)?,
            "--max-body" => config.max_body_bytes = parse_size(&name, &value(&name)?)?,
            "--max-line" => config.max_line_bytes = parse_size(&name, &value(&name)?)?,
            "--allowed-host" => config
                .allowed_hosts
                .push(value(&name)?.to_ascii_lowercase()),
            "--allowed-origin" => config
                .allowed_origins
                .push(value(&name)?.to_ascii_lowercase()),
            "--instance-id" => {
                let id = value(&name)?;
                crate::session_id::check_instance_id(&id)?;
                config.instance_id = Some(id);
            }
            "--log-level" => {
                let text = value(&name)?;
                config.log_level = text
                    .parse()
                    .map_err(|_| format!("--log-level: unknown level {text}"))?;
            }
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    let from_command_line = match (command.is_empty(), remote_upstream) {
        (true, None) => None,
        (false, Some(_)) => {
            return Err("give either an upstream URL or a command after `--`, not both".into())
        }
        (false, None) => Some(UpstreamKind::Stdio { command }),
        (true, Some(kind)) => Some(kind),
    };
    let (mut servers, mut default_server) = match file {
        Some(file) => (file.servers, file.default),
        None => (Vec::new(), None),
    };
    if let Some(upstream) = from_command_line {
        if servers
            .iter()
            .any(|server| server.name == DEFAULT_SERVER_NAME)
        {
            return Err(format!(
                "the config file names a server {DEFAULT_SERVER_NAME:?}, the name of the command line's upstream"
            ));
        }
        let mut server = ServerConfig::new(DEFAULT_SERVER_NAME, upstream);
        server.headers = upstream_headers;
        default_server = Some(servers.len());
        servers.push(server);
    }
    if servers.is_empty() {
        return Err(
            "no upstream: give a command after `--` (as in `mcphop -- my-server`), --upstream URL, --upstream-sse URL or --config FILE"
                .into(),
        );
    }
    if stdio {
        let known = match &stdio_server {
            Some(name) => servers.iter().any(|server| &server.name == name),
            None => default_server.is_some(),
        };
        if !known {
            return Err(match stdio_server {
                Some(name) => format!("--server {name}: no such server in the config file"),
                None => "mcphop stdio: give --server NAME (the config file has no default)".into(),
            });
        }
        config.stdio = Some(StdioFront {
            server: stdio_server,
        });
    }
    config.servers = servers;
    config.default_server = default_server;
    config.config_file = value_after(&args_for_reload, "--config");
    let paths = [
        &config.path,
        &config.legacy_paths.sse,
        &config.legacy_paths.message,
    ];
    if paths[0] == paths[1] || paths[0] == paths[2] || paths[1] == paths[2] {
        return Err("--path, --sse-path and --message-path must differ".into());
    }
    if config.health_workers == 0 && !config.health_interval.is_zero() {
        config.health_interval = Duration::ZERO;
    }
    if config.sse_keepalive.is_zero() {
        return Err("--sse-keepalive must be longer than 0".into());
    }
    if config.pool.max_per_host == 0 || config.pool.max_requests == 0 {
        return Err("--pool-max-per-host and --pool-max-requests must be at least 1".into());
    }
    config.oauth = if oauth == OAuthConfig::default() {
        None
    } else if oauth.issuer.is_empty() || oauth.audience.is_empty() {
        return Err("--auth-issuer and --auth-audience go together (and the other --auth-* options need them)".into());
    } else {
        Some(oauth)
    };
    if config.stdio.is_none()
        && !config.listen.ip().is_loopback()
        && config.auth_token_file.is_none()
        && config.oauth.is_none()
        && !config.allow_unauthenticated
    {
        return Err(format!(
            "--listen {}: not a loopback address, and no authentication is configured; \
             give --auth-token-file FILE or --auth-issuer, or --allow-unauthenticated to let anyone who \
             reaches the port open sessions",
            config.listen
        ));
    }
    if config.stdio.is_none() && !config.listen.ip().is_loopback() {
        // Beyond loopback, limits per client apply unless set otherwise.
        config
            .max_sessions_per_client
            .get_or_insert(DEFAULT_MAX_SESSIONS_PER_CLIENT);
        config
            .initialize_rate
            .get_or_insert(DEFAULT_INITIALIZE_RATE);
    }
    if config.max_sessions == 0 {
        return Err("--max-sessions must be at least 1".into());
    }
    Ok(Invocation::Run(Box::new(config)))
}

fn parse_count(name: &str, text: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("{name}: not a whole number: {text}"))
}

/// Parses `500ms`, `10s`, `30m`, `1h` or a bare number of seconds.
pub fn parse_duration(name: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{name}: not a duration like 10s: {text}"))?;
    let seconds = |factor: u64| {
        number
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{name}: too long: {text}"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!(
            "{name}: unknown unit in {text} (use ms, s, m or h)"
        )),
    }
}

/// Parses a byte count with an optional binary suffix.
pub fn parse_size(name: &str, text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{name}: not a size like 4MiB: {text}"))?;
    let factor: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("{name}: unknown unit in {text}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{name}: too large: {text}"))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
