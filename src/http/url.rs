//! Upstream URLs: `http://host[:port][/path]`, parsed into what a connection
//! pool keys on (scheme, host, port), the `Host` header to send, and the
//! request target.

/// Port used when an `http` URL names none.
pub const DEFAULT_HTTP_PORT: u16 = 80;
/// Port used when an `https` URL names none.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// The scheme of an upstream URL; also what a connection pool keys on
/// (`pool::HostKey`), so a parsed URL and its pool key cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme as written in a URL, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// Port used when a URL with this scheme names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => DEFAULT_HTTP_PORT,
            Scheme::Https => DEFAULT_HTTPS_PORT,
        }
    }
}

/// A parsed upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    /// Host name or address, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// The request target: path and query, at least `/`.
    pub target: String,
}

impl UpstreamUrl {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(format!("not an http:// or https:// URL: {text}"));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let target = if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_string()
        };
        if authority.contains('@') {
            return Err(format!("credentials in the URL are not supported: {text}"));
        }
        let default_port = scheme.default_port();
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("unclosed [ in {text}"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => parse_port(port, text)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("unexpected {after:?} after the address in {text}")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), parse_port(port, text)?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in {text}"));
        }
        if target.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(format!("the path has spaces or control characters: {text}"));
        }
        Ok(UpstreamUrl {
            scheme,
            host,
            port,
            target,
        })
    }

    /// The `Host` header value: the port is left out when it is the default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn parse_port(port: &str, text: &str) -> Result<u16, String> {
    port.parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("bad port {port:?} in {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_shapes() {
        let url = UpstreamUrl::parse("http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port, url.target.as_str()),
            (Scheme::Http, "127.0.0.1", 3001, "/mcp")
        );
        assert_eq!(url.authority(), "127.0.0.1:3001");
        let url = UpstreamUrl::parse("http://example.test").unwrap();
        assert_eq!((url.port, url.target.as_str()), (80, "/"));
        assert_eq!(url.authority(), "example.test");
        let url = UpstreamUrl::parse("https://[::1]:8443/a/b?c=d").unwrap();
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port, url.target.as_str()),
            (Scheme::Https, "::1", 8443, "/a/b?c=d")
        );
        assert_eq!(url.authority(), "[::1]:8443");
        assert_eq!(UpstreamUrl::parse("http://h?x=1").unwrap().target, "/?x=1");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "ftp://h/",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://user:pw@h/",
            "http://[::1/",
            "http://h/a b",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
