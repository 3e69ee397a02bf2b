//! Tests of the command line's parsing (`config.rs`).

use super::*;

fn run(args: &[&str]) -> Result<Config, String> {
    match parse_args(args.iter().map(|s| s.to_string()))? {
        Invocation::Run(config) => Ok(*config),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn defaults_and_command() {
    let config = run(&["--", "server", "--flag"]).unwrap();
    assert_eq!(config.command(), vec!["server", "--flag"]);
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.path, DEFAULT_PATH);
    assert_eq!(config.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(config.instance_id, None);
    let config = run(&["--instance-id", "eu-1", "--", "server"]).unwrap();
    assert_eq!(config.instance_id.as_deref(), Some("eu-1"));
}

#[test]
fn options_in_both_spellings() {
    let config = run(&[
        "--listen=127.0.0.1:0",
        "--max-body",
        "1KiB",
        "--session-idle-timeout",
        "90s",
        "--shutdown-grace=500ms",
        "--",
        "x",
    ])
    .unwrap();
    assert_eq!(config.listen.port(), 0);
    assert_eq!(config.max_body_bytes, 1024);
    assert_eq!(config.session_idle_timeout, Duration::from_secs(90));
    assert_eq!(config.shutdown_grace, Duration::from_millis(500));
}

#[test]
fn an_http_upstream_with_headers() {
    let config = run(&[
        "--upstream",
        "http://127.0.0.1:3001/mcp",
        "--forward-header",
        "Authorization",
        "--upstream-header",
        "X-Api-Key: secret: with colon",
    ])
    .unwrap();
    assert!(config.command().is_empty());
    assert_eq!(config.upstream_url().unwrap().port, 3001);
    assert_eq!(config.forward_headers, vec!["authorization"]);
    assert_eq!(
        config.servers[0].headers,
        vec![("X-Api-Key".to_string(), "secret: with colon".to_string())]
    );
}

#[test]
fn a_legacy_sse_upstream() {
    let config = run(&["--upstream-sse", "http://127.0.0.1:3001/sse"]).unwrap();
    let UpstreamKind::Sse { url } = &config.servers[0].upstream else {
        panic!("not an SSE upstream: {:?}", config.servers);
    };
    assert_eq!(url.target, "/sse");
    assert_eq!(config.upstream_url().unwrap().port, 3001);
}

/// The README's option list is the `--help` text's, line for line.
#[test]
fn readme_lists_the_help_options() {
    let block = |text: &'static str| -> Vec<&'static str> {
        let start = text.find("\nOPTIONS:\n").unwrap_or(text.len());
        text[start..]
            .lines()
            .skip(1)
            .take_while(|line| !line.starts_with("```"))
            .collect()
    };
    let readme = block(include_str!("../README.md"));
    let help = block(USAGE);
    assert!(help.len() > 40, "{help:?}");
    assert_eq!(readme, help);
}

#[test]
fn errors_are_clear() {
    assert!(run(&[]).unwrap_err().contains("no upstream"));
    assert!(run(&["--upstream", "http://h:1/", "--", "x"]).is_err());
    assert!(run(&["--upstream", "ftp://h/"]).is_err());
    assert!(run(&["--upstream-ca", "", "--upstream", "https://h/"]).is_err());
    assert!(run(&[
        "--upstream",
        "http://h:1/",
        "--upstream-sse",
        "http://h:2/sse"
    ])
    .is_err());
    assert!(run(&["--upstream-sse", "http://h:1/sse", "--", "x"]).is_err());
    assert!(run(&["--upstream-header", "novalue", "--", "x"]).is_err());
    assert!(run(&["--bogus", "--", "x"])
        .unwrap_err()
        .contains("--bogus"));
    assert!(run(&["--max-body", "lots", "--", "x"]).is_err());
    assert!(run(&["--path", "mcp", "--", "x"]).is_err());
    assert!(run(&["--sse-path", "/mcp", "--", "x"]).is_err());
    assert!(run(&["--message-path", "/m?x", "--", "x"]).is_err());
    assert!(run(&["--instance-id", "A", "--", "x"]).is_err());
    assert!(run(&["--instance-id", "a.b", "--", "x"]).is_err());
    assert!(run(&["--instance-id=", "--", "x"]).is_err());
    assert!(parse_duration("d", "5 weeks").is_err());
    assert_eq!(parse_duration("d", "2m"), Ok(Duration::from_secs(120)));
}

#[test]
fn a_non_loopback_listener_needs_authentication() {
    let error = run(&["--listen", "0.0.0.0:8080", "--", "x"]).unwrap_err();
    assert!(error.contains("not a loopback address"), "{error}");
    assert!(error.contains("--allow-unauthenticated"), "{error}");
    let config = run(&[
        "--listen",
        "0.0.0.0:8080",
        "--allow-unauthenticated",
        "--",
        "x",
    ])
    .unwrap();
    assert!(config.allow_unauthenticated);
    let config = run(&["--listen=[::]:0", "--auth-token-file", "/t", "--", "x"]).unwrap();
    assert_eq!(config.auth_token_file.as_deref(), Some("/t"));
    // Loopback, and the stdio front door (no listener), need nothing.
    assert!(run(&["--listen", "[::1]:0", "--", "x"]).is_ok());
    let stdio = ["stdio", "--listen", "0.0.0.0:0", "--", "x"];
    assert!(run(&stdio).is_ok());
    let file = config_file::parse(
        r#"{"mcpServers": {"a": {"command": "x"}}, "mcphop": {"auth_token_file": "/t"}}"#,
        &|_| None,
    )
    .unwrap();
    assert_eq!(file.options, ["--auth-token-file", "/t"]);
}

#[test]
fn https_upstreams_and_their_ca() {
    let config = run(&[
        "--upstream",
        "https://h:8443/mcp",
        "--upstream-ca",
        "ca.pem",
    ])
    .unwrap();
    let url = config
        .default()
        .and_then(ServerConfig::url)
        .cloned()
        .unwrap();
    assert_eq!(
        (url.scheme, url.port),
        (crate::http::url::Scheme::Https, 8443)
    );
    assert_eq!(config.upstream_ca.as_deref(), Some("ca.pem"));
    let config = run(&["--upstream-sse", "https://h/sse"]).unwrap();
    assert_eq!(config.upstream_ca, None);
}

#[test]
fn limits_per_client_are_on_beyond_loopback_and_off_on_it() {
    let exposed = run(&[
        "--listen",
        "0.0.0.0:0",
        "--allow-unauthenticated",
        "--",
        "x",
    ])
    .unwrap();
    assert_eq!(exposed.max_sessions_per_client, Some(64));
    assert_eq!(exposed.initialize_rate, Some(10.0));
    let local = run(&["--", "x"]).unwrap();
    assert_eq!(local.max_sessions_per_client, None);
    assert_eq!(local.initialize_rate, None);
    let set = run(&[
        "--max-sessions-per-client",
        "3",
        "--initialize-rate",
        "0.5",
        "--",
        "x",
    ])
    .unwrap();
    assert_eq!(set.max_sessions_per_client, Some(3));
    assert_eq!(set.initialize_rate, Some(0.5));
    assert!(run(&["--initialize-rate", "-1", "--", "x"]).is_err());
}
