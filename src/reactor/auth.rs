//! Inbound authentication in the reactor: the `--auth-token-file` read at
//! start-up (a missing or broken file stops mcphop) and again on SIGHUP (a
//! broken or unreadable file then keeps the old set, and the error is
//! logged), and each request on the listener checked against it. The rules
//! are `mcp::auth`'s; this holds the file's path and the current set.

use std::io;

use log::{error, info, warn};

use crate::config::Config;
use crate::http::request::Request;
use crate::mcp::auth::{unauthorized, Principal, TokenSet};
use crate::mcp::endpoint::Reply;

/// Who may use the listener.
#[derive(Debug, Default)]
pub(super) struct Auth {
    /// The token file and its current set; none when authentication is
    /// off.
    tokens: Option<(String, TokenSet)>,
}

fn read(path: &str) -> Result<TokenSet, String> {
    let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
    TokenSet::parse(&text)
}

impl Auth {
    /// Reads the token file, if the configuration names one. With none on
    /// a non-loopback listener (`--allow-unauthenticated`), warns.
    pub(super) fn from_config(config: &Config) -> io::Result<Auth> {
        let Some(path) = config.auth_token_file.clone() else {
            if config.stdio.is_none() && !config.listen.ip().is_loopback() {
                warn!(
                    "listening on {} with no authentication (--allow-unauthenticated): \
                     anyone who reaches this port can open sessions",
                    config.listen
                );
            }
            return Ok(Auth::default());
        };
        let set = read(&path).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("--auth-token-file {path}: {why}"),
            )
        })?;
        info!("bearer tokens required: {} in {path}", set.len());
        Ok(Auth {
            tokens: Some((path, set)),
        })
    }

    /// The principal `request` proves (none when authentication is off),
    /// or the 401 it earns.
    pub(super) fn check(&self, request: &Request) -> Result<Option<Principal>, Reply> {
        let Some((_, set)) = &self.tokens else {
            return Ok(None);
        };
        set.check(request).map(Some).map_err(|refused| {
            log::debug!(
                "{} {}: 401 ({refused:?} token)",
                request.method,
                request.path()
            );
            unauthorized(refused)
        })
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
