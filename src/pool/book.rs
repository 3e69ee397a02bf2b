//! The per-connection records and the rules every pool operation shares:
//! handing a connection to a request, idling it, closing it, deciding when it
//! is worn out, and asking for connects. Kept apart from the hosts so a rule
//! can borrow the book and one host at once.

use std::collections::HashMap;
use std::time::Instant;

use super::{ConnId, EvictCause, HostKey, HostPool, PoolAction, PoolConfig, PoolMetrics, Waiter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    Connecting { since: Instant },
    Idle { since: Instant },
    InUse,
}

#[derive(Debug)]
pub(super) struct ConnMeta {
    pub(super) host: HostKey,
    /// When the connect completed (when it started, while connecting).
    pub(super) created: Instant,
    pub(super) requests: u32,
    /// It sat in the idle stack at least once.
    pub(super) idled: bool,
    pub(super) state: ConnState,
}

/// Everything but the hosts, so helpers can borrow it beside one host.
#[derive(Debug)]
pub(super) struct Book {
    pub(super) config: PoolConfig,
    pub(super) conns: HashMap<ConnId, ConnMeta>,
    pub(super) metrics: PoolMetrics,
}

impl Book {
    /// Hands `conn` to a request; the caller has taken it off the idle stack
    /// or out of the connecting list, and has just seen it in `conns`.
    pub(super) fn assign<W>(
        &mut self,
        hp: &mut HostPool<W>,
        conn: ConnId,
        waiter: W,
        peek: bool,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        let Some(meta) = self.conns.get_mut(&conn) else {
            return;
        };
        let reused = meta.requests > 0 || meta.idled;
        if meta.requests > 0 {
            self.metrics.reuses += 1;
        }
        meta.requests = meta.requests.saturating_add(1);
        meta.state = ConnState::InUse;
        hp.in_use += 1;
        actions.push(PoolAction::Assign {
            waiter,
            conn,
            reused,
            peek,
        });
    }

    /// Forgets a connection already detached from its host and tells the
    /// reactor to close it.
    pub(super) fn close<W>(
        &mut self,
        conn: ConnId,
        cause: EvictCause,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        self.conns.remove(&conn);
        self.metrics.evicted(cause);
        actions.push(PoolAction::Close { conn, cause });
    }

    /// Why a connection must not be used again, by its age and use alone.
    pub(super) fn worn_out(&self, meta: &ConnMeta, now: Instant) -> Option<EvictCause> {
        if meta.requests >= self.config.max_requests {
            Some(EvictCause::RequestCount)
        } else if now.saturating_duration_since(meta.created) >= self.config.max_lifetime {
            Some(EvictCause::Lifetime)
        } else {
            None
        }
    }

    /// Why an idle connection must not be reused, if it must not.
    pub(super) fn stale(&self, meta: &ConnMeta, now: Instant) -> Option<EvictCause> {
        match meta.state {
            ConnState::Idle { since }
                if now.saturating_duration_since(since) >= self.config.idle_timeout =>
            {
                Some(EvictCause::IdleTimeout)
            }
            _ => self.worn_out(meta, now),
        }
    }

    /// Puts a connection on top of its host's idle stack, keeping at most
    /// `max_idle_per_host` by closing from the bottom.
    pub(super) fn make_idle<W>(
        &mut self,
        hp: &mut HostPool<W>,
        conn: ConnId,
        now: Instant,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        let Some(meta) = self.conns.get_mut(&conn) else {
            return;
        };
        meta.state = ConnState::Idle { since: now };
        meta.idled = true;
        hp.idle.push(conn);
        let surplus = hp.idle.len().saturating_sub(self.config.max_idle_per_host);
        for old in hp.idle.drain(..surplus) {
            self.close(old, EvictCause::Surplus, actions);
        }
    }

    /// Asks for connects until every waiter has an attempt on its way, within
    /// `max_per_host`.
    pub(super) fn top_up<W>(&mut self, hp: &mut HostPool<W>, actions: &mut Vec<PoolAction<W>>) {
        while hp.attempts() < hp.waiting() {
            if hp.held() >= self.config.max_per_host {
                // Only fresh waiters can go uncovered beside idle connections
                // (plain waiters take those first), and a retry that needs an
                // unused connection is worth more than an idle one.
                if hp.idle.is_empty() {
                    break;
                }
                let old = hp.idle.remove(0);
                self.close(old, EvictCause::Surplus, actions);
                continue;
            }
            hp.pending += 1;
            actions.push(PoolAction::Connect {
                host: hp.key.clone(),
            });
        }
    }

    /// After an attempt failed: if none is left, nothing will serve the
    /// waiters, so they fail now rather than at their queue timeout.
    pub(super) fn after_failed_attempt<W>(
        &mut self,
        hp: &mut HostPool<W>,
        actions: &mut Vec<PoolAction<W>>,
    ) {
        if hp.attempts() > 0 || hp.waiting() == 0 {
            return;
        }
        let mut waiters: Vec<Waiter<W>> = hp.fresh.drain(..).chain(hp.waiters.drain(..)).collect();
        waiters.sort_by_key(|w| w.since);
        self.metrics.waiters_failed += waiters.len() as u64;
        actions.push(PoolAction::WaitersFailed {
            host: hp.key.clone(),
            waiters: waiters.into_iter().map(|w| w.token).collect(),
        });
    }
}
