//! loadgen's command line: `--url`, `--sessions`, durations and the other
//! options, parsed into a [`Config`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use crate::MAX_RESPONSE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Call,
    Idle,
}

/// How the sessions talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP: one endpoint, POST answered in the response.
    Streamable,
    /// Legacy HTTP+SSE (2024-11-05): `GET` the SSE URL, POST to the
    /// endpoint it names, answers on the stream.
    Sse,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The Host header.
    pub host: String,
    pub path: String,
    pub sessions: usize,
    pub duration: Duration,
    pub calls: Option<u64>,
    pub payload: usize,
    pub warmup: Duration,
    pub mode: Mode,
    pub hold: Duration,
    pub json: bool,
    pub threads: usize,
    pub setup_concurrency: usize,
    pub timeout: Duration,
    pub setup_timeout: Duration,
    pub max_time: Duration,
    pub delete: bool,
    /// `--header 'Name: value'` lines, each ending in CRLF.
    pub headers: String,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?}")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Splits `http://host[:port]/path` into its address, Host header and path.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .min_by_key(|addr| addr.is_ipv6())
        .ok_or_else(|| format!("{authority} resolves to nothing"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

pub fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut url = None;
    let mut transport = Transport::Streamable;
    let mut sessions = 1usize;
    let mut duration = None;
    let mut calls = None;
    let mut payload = 64usize;
    let mut warmup = Duration::from_secs(1);
    let mut mode = Mode::Call;
    let mut hold = Duration::from_secs(30);
    let mut json = false;
    let mut threads = None;
    let mut setup_concurrency = 4usize;
    let mut timeout = Duration::from_secs(10);
    let mut setup_timeout = Duration::from_secs(60);
    let mut max_time = Duration::from_secs(300);
    let mut delete = true;
    let mut headers = String::new();
    let mut at = 0;
    while at < args.len() {
        let arg = args[at].as_str();
        at += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            if let Some(value) = inline.clone() {
                return Ok(value);
            }
            let value = args
                .get(at)
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?;
            at += 1;
            Ok(value)
        };
        let number = |name: &str, text: String| -> Result<u64, String> {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("{name} takes a whole number, not {text:?}"))
        };
        match name {
            "--url" => url = Some(value(name)?),
            "--transport" => {
                transport = match value(name)?.as_str() {
                    "streamable" | "http" => Transport::Streamable,
                    "sse" => Transport::Sse,
                    other => {
                        return Err(format!("--transport is streamable or sse, not {other:?}"))
                    }
                }
            }
            "--sessions" => sessions = number(name, value(name)?)? as usize,
            "--duration" => duration = Some(parse_duration(&value(name)?)?),
            "--calls" => calls = Some(number(name, value(name)?)?),
            "--payload" => payload = number(name, value(name)?)? as usize,
            "--warmup" => warmup = parse_duration(&value(name)?)?,
            "--mode" => {
                mode = match value(name)?.as_str() {
                    "call" => Mode::Call,
                    "idle" => Mode::Idle,
                    other => return Err(format!("--mode is call or idle, not {other:?}")),
                }
            }
            "--hold" => hold = parse_duration(&value(name)?)?,
            "--json" => json = true,
            "--threads" => threads = Some(number(name, value(name)?)? as usize),
            "--setup-concurrency" => setup_concurrency = number(name, value(name)?)? as usize,
            "--timeout" => timeout = parse_duration(&value(name)?)?,
            "--setup-timeout" => setup_timeout = parse_duration(&value(name)?)?,
            "--max-time" => max_time = parse_duration(&value(name)?)?,
            "--no-delete" => delete = false,
            "--header" => {
                let line = value(name)?;
                if !line.contains(':') || line.contains(['\r', '\n']) {
                    return Err(format!("--header takes 'Name: value', not {line:?}"));
                }
                headers.push_str(&line);
                headers.push_str("\r\n");
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let (addr, host, path) = parse_url(&url)?;
    if sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    if duration.is_some() && calls.is_some() {
        return Err("give --duration or --calls, not both".into());
    }
    if calls == Some(0) {
        return Err("--calls must be at least 1".into());
    }
    if payload > MAX_RESPONSE / 2 {
        return Err("--payload is too large".into());
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    // Idle mode holds every session on the main thread.
    let threads = match mode {
        Mode::Call => threads.unwrap_or(cores).clamp(1, sessions),
        Mode::Idle => 1,
    };
    Ok(Config {
        url,
        transport,
        addr,
        host,
        path,
        sessions,
        duration: duration.unwrap_or(Duration::from_secs(5)),
        calls,
        payload,
        warmup,
        mode,
        hold,
        json,
        threads,
        setup_concurrency: setup_concurrency.max(1),
        timeout: timeout.max(Duration::from_millis(1)),
        setup_timeout,
        max_time,
        delete,
        headers,
    })
}
