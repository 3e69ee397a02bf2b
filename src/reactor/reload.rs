//! SIGHUP: the `--config` file read again and applied to the servers. The
//! new file is checked whole first (`config_file::load`); any error leaves
//! the running configuration as it was, and is logged. A server whose
//! definition did not change keeps its adapter and its sessions untouched.
//! A removed server loses its routes (new sessions get 404) while its open
//! sessions finish on it. A changed server is retired the same way and its
//! new definition serves new sessions under the same name. The `mcphop`
//! block's options (listen address, limits) are not re-applied: they need a
//! restart, which the log says.

use std::collections::HashSet;

use log::{info, warn};
use mio::Registry;

use crate::config::{Config, DEFAULT_SERVER_NAME, MAX_SERVERS};
use crate::config_file::{self, ConfigFile};
use crate::http::url::Scheme;

use super::servers::{Server, ServerId, Servers};
use super::{Proxy, Timer};

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub kept: Vec<String>,
    pub added: Vec<ServerId>,
    pub retired: Vec<String>,
}

/// SIGHUP: reads the `--config` file again and applies its servers.
pub(super) fn reload_config(proxy: &mut Proxy) {
    let Some(path) = proxy.config.config_file.clone() else {
        info!("SIGHUP: no --config file to read again");
        return;
    };
    let file = match config_file::load(&path) {
        Ok(file) => file,
        Err(errors) => {
            warn!(
                "SIGHUP: {path} not reloaded, the running configuration stays: {}",
                errors.join("; ")
            );
            return;
        }
    };
    if !file.options.is_empty() {
        info!("SIGHUP: the mcphop block's options apply at the next start, not now");
    }
    let sessions = &proxy.sessions;
    let in_use: HashSet<ServerId> = sessions.iter().map(|(_, session)| session.server).collect();
    let registry = proxy.poll.registry();
    match proxy.servers.reload(&proxy.config, file, &in_use, registry) {
        Ok(reloaded) => {
            info!(
                "SIGHUP: {path} reloaded: {} kept, {} new or changed, {} retired ({})",
                reloaded.kept.len(),
                reloaded.added.len(),
                reloaded.retired.len(),
                reloaded.retired.join(", ")
            );
            if !proxy.config.health_interval.is_zero() && proxy.health_workers.is_some() {
                for server in reloaded.added {
                    let probed = proxy
                        .servers
                        .get(server)
                        .is_some_and(|entry| entry.upstream.http().is_some());
                    if probed {
                        proxy.timers.schedule(proxy.now, Timer::Probe(server));
                    }
                }
            }
        }
        Err(why) => warn!("SIGHUP: {path} not reloaded, the running configuration stays: {why}"),
    }
}

impl Servers {
    /// Applies `file`'s servers (see the module header); `in_use`: the
    /// servers sessions are open on. Every new adapter is built before
    /// anything changes, so an error (an address that does not resolve, no
    /// room) changes nothing.
    pub(crate) fn reload(
        &mut self,
        config: &Config,
        file: ConfigFile,
        in_use: &HashSet<ServerId>,
        registry: &Registry,
    ) -> Result<Reloaded, String> {
        let mut wanted = file.servers;
        let https = wanted
            .iter()
            .any(|s| s.url().is_some_and(|url| url.scheme == Scheme::Https));
        if https && self.tls.is_none() {
            self.tls = Some(crate::tls::client_config(config.upstream_ca.as_deref())?);
        }
        let mut default_name = file
            .default
            .and_then(|i| wanted.get(i))
            .map(|s| s.name.clone());
        // The command line's own server stays, and stays the default.
        let live = |name: &str| self.by_name.get(name).and_then(|id| self.get(*id));
        if let Some(own) = live(DEFAULT_SERVER_NAME) {
            if !wanted.iter().any(|s| s.name == DEFAULT_SERVER_NAME) {
                wanted.push(own.definition.clone());
                default_name = Some(DEFAULT_SERVER_NAME.to_string());
            }
        }
        let mut reloaded = Reloaded::default();
        let mut staged: Vec<(ServerId, Server)> = Vec::new();
        let mut free = self.free_slots(in_use);
        for definition in &wanted {
            if live(&definition.name).is_some_and(|s| s.definition == *definition) {
                reloaded.kept.push(definition.name.clone());
                continue;
            }
            let id = free
                .pop()
                .ok_or_else(|| format!("more than {MAX_SERVERS} servers, old and new"))?;
            let server = Server::new(config, definition, id, self.tls.as_ref())
                .map_err(|error| format!("server {}: {error}", definition.name))?;
            staged.push((id, server));
        }
        // Nothing can fail from here on. What is not kept was removed or
        // changed: it is retired (a changed one comes back, new, below).
        let kept: HashSet<&str> = reloaded.kept.iter().map(String::as_str).collect();
        for (name, id) in std::mem::take(&mut self.by_name) {
            if kept.contains(name.as_str()) {
                self.by_name.insert(name, id);
            } else {
                self.retire(id, in_use, registry);
                reloaded.retired.push(name);
            }
        }
        for (id, server) in staged {
            self.by_name.insert(server.name.clone(), id);
            reloaded.added.push(id);
            match self.list.get_mut(id.index()) {
                Some(slot) => *slot = server,
                None => self.list.push(server),
            }
        }
        self.default = default_name.and_then(|name| self.by_name.get(&name).copied());
        Ok(reloaded)
    }

    /// Slots a new server may take: retired ones nothing uses any more,
    /// then fresh ones up to `MAX_SERVERS` (the lowest taken first).
    fn free_slots(&self, in_use: &HashSet<ServerId>) -> Vec<ServerId> {
        let mut free: Vec<ServerId> = (0..MAX_SERVERS)
            .filter_map(ServerId::at)
            .filter(|id| match self.get(*id) {
                Some(server) => server.retired && !in_use.contains(id),
                None => true,
            })
            .collect();
        free.reverse();
        free
    }

    /// Takes a server off its routes; one no session uses any more lets go
    /// of its connections now.
    fn retire(&mut self, id: ServerId, in_use: &HashSet<ServerId>, registry: &Registry) {
        if let Some(server) = self.get_mut(id) {
            server.retired = true;
            if !in_use.contains(&id) {
                server.upstream.abandon(registry);
            }
        }
    }
}
