//! `--config FILE`: the `mcpServers` JSON desktop clients read, plus an
//! optional `mcphop` block holding what the command line holds. Each server
//! is stdio (`command`, `args`, `env`, `cwd`) or remote (`url`, `headers`,
//! `transport`: `streamable-http` or `sse`); `"default": true` also serves
//! it at `/mcp`; `tools: {allow, deny}` hides tools by glob. `${VAR}` in any
//! string expands from the environment, and an unset variable is an error
//! naming it. Loading collects every error with its location, for
//! `--check-config`. Plain code: text and an environment in, values out.

use serde_json::{Map, Value};

use crate::config::{ServerConfig, UpstreamKind, MAX_SERVERS};
use crate::http::url::UpstreamUrl;
use crate::mcp::tools::ToolFilter;

/// The `mcphop` block's keys: each is the command-line option of the same
/// name with `_` for `-` (`max_sessions` is `--max-sessions`).
pub const FILE_OPTIONS: &[&str] = &[
    "listen",
    "max_sessions_per_client",
    "initialize_rate",
    "path",
    "sse_path",
    "message_path",
    "admin_listen",
    "auth_token_file",
    "auth_issuer",
    "auth_audience",
    "auth_jwks_url",
    "auth_jwks_refresh",
    "forward_header",
    "upstream_ca",
    "pool_idle_timeout",
    "pool_max_idle_per_host",
    "pool_max_per_host",
    "pool_max_lifetime",
    "pool_max_requests",
    "pool_connect_timeout",
    "pool_queue_timeout",
    "max_sessions",
    "session_idle_timeout",
    "shutdown_grace",
    "head_timeout",
    "body_timeout",
    "child_grace",
    "request_timeout",
    "request_timeout_max",
    "spawn_timeout",
    "sse_keepalive",
    "sse_retry",
    "resume_window",
    "replay_events",
    "replay_bytes",
    "max_body",
    "max_line",
    "allowed_host",
    "allowed_origin",
    "log_level",
    "health_interval",
    "health_timeout",
    "health_workers",
    "health_path",
];

/// What a config file says.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub servers: Vec<ServerConfig>,
    /// The server marked `"default": true`.
    pub default: Option<usize>,
    /// The `mcphop` block as command-line arguments, to be parsed before
    /// the real command line (which overrides them).
    pub options: Vec<String>,
}

/// Reads and checks `path`; every error, each with its location, on failure.
pub fn load(path: &str) -> Result<ConfigFile, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|error| vec![format!("{path}: {error}")])?;
    parse(&text, &|name| std::env::var(name).ok())
}

/// Parses a config file's text, expanding `${VAR}` with `env`.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConfigFile, Vec<String>> {
    let root: Value = serde_json::from_str(text).map_err(|error| {
        vec![format!(
            "line {}, column {}: not JSON: {error}",
            error.line(),
            error.column()
        )]
    })?;
    let mut errors = Vec::new();
    let mut file = ConfigFile::default();
    let Some(root) = root.as_object() else {
        return Err(vec!["the file must hold a JSON object".into()]);
    };
    for key in root.keys() {
        if key != "mcpServers" && key != "mcphop" {
            errors.push(format!("{key}: unknown key (expected mcpServers, mcphop)"));
        }
    }
    match root.get("mcpServers").map(Value::as_object) {
        Some(Some(servers)) => {
            for (name, entry) in servers {
                let at = format!("mcpServers.{name}");
                match server(name, entry, &at, env, &mut errors) {
                    Some((server, default)) => {
                        if default {
                            if file.default.is_some() {
                                errors.push(format!(
                                    "{at}.default: only one server may be the default"
                                ));
                            }
                            file.default = Some(file.servers.len());
                        }
                        file.servers.push(server);
                    }
                    None => continue,
                }
            }
            if servers.is_empty() {
                errors.push("mcpServers: no server".into());
            }
            if servers.len() > MAX_SERVERS {
                errors.push(format!("mcpServers: more than {MAX_SERVERS} servers"));
            }
        }
        Some(None) => errors.push("mcpServers: must be an object of servers".into()),
        None => errors.push("mcpServers: missing".into()),
    }
    if let Some(block) = root.get("mcphop") {
        match block.as_object() {
            Some(block) => file.options = options(block, env, &mut errors),
            None => errors.push("mcphop: must be an object".into()),
        }
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// One server entry, and whether it is the default.
fn server(
    name: &str,
    entry: &Value,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<(ServerConfig, bool)> {
    let before = errors.len();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errors.push(format!(
            "{at}: a server name is letters, digits, '-', '_' and '.'"
        ));
    }
    let Some(entry) = entry.as_object() else {
        errors.push(format!("{at}: must be an object"));
        return None;
    };
    const KEYS: &[&str] = &[
        "command",
        "args",
        "env",
        "cwd",
        "url",
        "headers",
        "transport",
        "type",
        "default",
        "tools",
    ];
    for key in entry.keys().filter(|key| !KEYS.contains(&key.as_str())) {
        errors.push(format!("{at}.{key}: unknown key"));
    }
    let text = |key: &str, errors: &mut Vec<String>| -> Option<String> {
        let value = entry.get(key)?;
        match value.as_str() {
            Some(raw) => expand(raw, &format!("{at}.{key}"), env, errors),
            None => {
                errors.push(format!("{at}.{key}: must be a string"));
                None
            }
        }
    };
    let command = text("command", errors);
    let url = text("url", errors);
    let transport = text("transport", errors).or_else(|| text("type", errors));
    let cwd = text("cwd", errors);
    let args = strings(entry.get("args"), &format!("{at}.args"), env, errors);
    let env_pairs = pairs(entry.get("env"), &format!("{at}.env"), env, errors);
    let headers = pairs(entry.get("headers"), &format!("{at}.headers"), env, errors);
    let default = match entry.get("default") {
        None => false,
        Some(Value::Bool(default)) => *default,
        Some(_) => {
            errors.push(format!("{at}.default: must be true or false"));
            false
        }
    };
    let tools = tool_filter(entry.get("tools"), &format!("{at}.tools"), errors);
    let upstream = match (command, url) {
        (Some(_), Some(_)) => {
            errors.push(format!("{at}: give either command or url, not both"));
            None
        }
        (None, None) => {
            errors.push(format!("{at}: needs a command or a url"));
            None
        }
        (Some(command), None) => {
            if command.trim().is_empty() {
                errors.push(format!("{at}.command: is empty"));
            }
            let mut argv = vec![command];
            argv.extend(args);
            Some(UpstreamKind::Stdio { command: argv })
        }
        (None, Some(url)) => remote(&url, transport.as_deref(), at, errors),
    };
    if errors.len() > before {
        return None;
    }
    let mut server = ServerConfig::new(name, upstream?);
    server.headers = headers;
    server.env = env_pairs;
    server.cwd = cwd;
    server.tools = tools;
    Some((server, default))
}

fn remote(
    url: &str,
    transport: Option<&str>,
    at: &str,
    errors: &mut Vec<String>,
) -> Option<UpstreamKind> {
    let url = match UpstreamUrl::parse(url) {
        Ok(url) => url,
        Err(error) => {
            errors.push(format!("{at}.url: {error}"));
            return None;
        }
    };
    match transport.unwrap_or("streamable-http") {
        "streamable-http" | "streamableHttp" | "http" => Some(UpstreamKind::Http { url }),
        "sse" => Some(UpstreamKind::Sse { url }),
        other => {
            errors.push(format!(
                "{at}.transport: {other:?} is not streamable-http or sse"
            ));
            None
        }
    }
}

/// An array of strings, each expanded.
fn strings(
    value: Option<&Value>,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.push(format!("{at}: must be an array of strings"));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item.as_str() {
            Some(raw) => expand(raw, &format!("{at}[{i}]"), env, errors),
            None => {
                errors.push(format!("{at}[{i}]: must be a string"));
                None
            }
        })
        .collect()
}

/// An object of strings (`env`, `headers`), each value expanded.
fn pairs(
    value: Option<&Value>,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Vec<(String, String)> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Some(map) = value.as_object() else {
        errors.push(format!("{at}: must be an object of strings"));
        return Vec::new();
    };
    map.iter()
        .filter_map(|(key, item)| match item.as_str() {
            Some(raw) => expand(raw, &format!("{at}.{key}"), env, errors).map(|v| (key.clone(), v)),
            None => {
                errors.push(format!("{at}.{key}: must be a string"));
                None
            }
        })
        .collect()
}

fn tool_filter(value: Option<&Value>, at: &str, errors: &mut Vec<String>) -> ToolFilter {
    let Some(value) = value else {
        return ToolFilter::default();
    };
    let Some(map) = value.as_object() else {
        errors.push(format!("{at}: must be an object with allow and deny lists"));
        return ToolFilter::default();
    };
    let no_env = |_: &str| None;
    let mut filter = ToolFilter::default();
    for (key, list) in map {
        let globs = strings(Some(list), &format!("{at}.{key}"), &no_env, errors);
        match key.as_str() {
            "allow" => filter.allow = globs,
            "deny" => filter.deny = globs,
            _ => errors.push(format!("{at}.{key}: unknown key (expected allow, deny)")),
        }
    }
    filter
}

/// The `mcphop` block as command-line arguments.
fn options(
    block: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let mut args = Vec::new();
    for (key, value) in block {
        let at = format!("mcphop.{key}");
        if !FILE_OPTIONS.contains(&key.as_str()) {
            errors.push(format!("{at}: unknown option"));
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            let text = match value {
                Value::String(raw) => expand(raw, &at, env, errors),
                Value::Number(number) => Some(number.to_string()),
                _ => {
                    errors.push(format!("{at}: must be a string or a number"));
                    None
                }
            };
            if let Some(text) = text {
                args.push(flag.clone());
                args.push(text);
            }
        }
    }
    args
}

/// Expands `${VAR}` from `env`; an unset or malformed one is an error.
pub fn expand(
    raw: &str,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            errors.push(format!("{at}: unclosed ${{ in {raw:?}"));
            return None;
        };
        let name = &after[..end];
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            errors.push(format!("{at}: ${{{name}}} is not a variable name"));
            return None;
        }
        match env(name) {
            Some(value) => out.push_str(&value),
            None => {
                errors.push(format!("{at}: the environment variable {name} is not set"));
                return None;
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "HOME" => Some("/home/u".into()),
            _ => None,
        }
    }

    #[test]
    fn servers_of_both_kinds_with_defaults_and_expansion() {
        let text = r#"{
            "mcpServers": {
                "local": {"command": "server", "args": ["--dir", "${HOME}/x"], "env": {"A": "1"},
                          "cwd": "/tmp", "default": true, "tools": {"deny": ["secret*"]}},
                "remote": {"url": "http://127.0.0.1:3001/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
                "legacy": {"url": "https://localhost:3002/sse", "transport": "sse"}
            },
            "mcphop": {"listen": "127.0.0.1:9000", "max_sessions": 5, "allowed_host": ["a", "b"],
                       "upstream_ca": "/etc/ca.pem"}
        }"#;
        let file = parse(text, &env).unwrap();
        assert_eq!(file.servers.len(), 3);
        let by_name = |name: &str| {
            file.servers
                .iter()
                .position(|server| server.name == name)
                .unwrap()
        };
        let local = &file.servers[by_name("local")];
        assert_eq!(local.command(), ["server", "--dir", "/home/u/x"]);
        assert_eq!(local.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(local.cwd.as_deref(), Some("/tmp"));
        assert!(!local.tools.allows("secret-a"));
        assert_eq!(file.default, Some(by_name("local")));
        let remote = &file.servers[by_name("remote")];
        assert!(matches!(remote.upstream, UpstreamKind::Http { .. }));
        assert_eq!(remote.headers[0].1, "Bearer s3cret");
        assert!(matches!(
            file.servers[by_name("legacy")].upstream,
            UpstreamKind::Sse { .. }
        ));
        assert_eq!(
            file.options,
            [
                "--allowed-host",
                "a",
                "--allowed-host",
                "b",
                "--listen",
                "127.0.0.1:9000",
                "--max-sessions",
                "5",
                "--upstream-ca",
                "/etc/ca.pem"
            ]
        );
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let text = r#"{
            "mcpServers": {
                "a b": {"command": "x"},
                "both": {"command": "x", "url": "http://h/"},
                "neither": {},
                "unset": {"url": "http://h/", "headers": {"X": "${NOPE}"}},
                "kind": {"url": "http://h/", "transport": "websocket"},
                "odd": {"command": "x", "colour": "blue"}
            },
            "mcphop": {"listn": "x"},
            "extra": 1
        }"#;
        let errors = parse(text, &env).unwrap_err();
        let all = errors.join("\n");
        for expected in [
            "mcpServers.a b: a server name",
            "mcpServers.both: give either command or url",
            "mcpServers.neither: needs a command or a url",
            "mcpServers.unset.headers.X: the environment variable NOPE is not set",
            "mcpServers.kind.transport: \"websocket\"",
            "mcpServers.odd.colour: unknown key",
            "mcphop.listn: unknown option",
            "extra: unknown key",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert!(parse("{ nope", &env).unwrap_err()[0].starts_with("line 1"));
    }
}
