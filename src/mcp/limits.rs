//! Limits per client, sans-IO: how many sessions one client may hold open
//! (`--max-sessions-per-client`), and how fast it may open them
//! (`--initialize-rate`, a token bucket with a burst of twice the rate). A
//! client is its principal (a token's name) or, without authentication, its
//! IP address. The reactor asks `admit` before a session starts and says
//! `opened` and `closed`; `now` is a parameter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sessions one client may hold open by default on a listener beyond
/// loopback.
pub const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 64;
/// Sessions one client may open per second by default on a listener beyond
/// loopback (the burst is twice as many).
pub const DEFAULT_INITIALIZE_RATE: f64 = 10.0;
/// Clients remembered with no session open before idle ones are dropped.
const PRUNE_AFTER_CLIENTS: usize = 4096;

/// Why a client may not open a session now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    /// It holds its most sessions.
    Sessions { max: usize },
    /// It opened sessions too fast: the next may come after `retry_after`.
    Rate { retry_after: Duration },
}

#[derive(Debug, Clone)]
struct Client {
    sessions: usize,
    tokens: f64,
    refilled: Instant,
}

/// Every client's sessions and token bucket.
#[derive(Debug, Default)]
pub struct ClientLimits {
    max_sessions: Option<usize>,
    /// Sessions per second, and the bucket's size.
    rate: Option<(f64, f64)>,
    clients: HashMap<String, Client>,
    /// Refusals since start: over the session limit, over the rate.
    pub refused_sessions: u64,
    pub refused_rate: u64,
}

impl ClientLimits {
    pub fn new(max_sessions: Option<usize>, rate: Option<f64>) -> ClientLimits {
        ClientLimits {
            max_sessions,
            rate: rate
                .filter(|rate| *rate > 0.0)
                .map(|rate| (rate, rate * 2.0)),
            ..ClientLimits::default()
        }
    }

    /// May `client` open a session now? Takes a token from its bucket if so.
    pub fn admit(&mut self, client: &str, now: Instant) -> Result<(), Refused> {
        if self.max_sessions.is_none() && self.rate.is_none() {
            return Ok(());
        }
        if self.clients.len() > PRUNE_AFTER_CLIENTS {
            self.prune(now);
        }
        let burst = self.rate.map_or(0.0, |(_, burst)| burst);
        let entry = self.clients.entry(client.to_string()).or_insert(Client {
            sessions: 0,
            tokens: burst,
            refilled: now,
        });
        if let Some(max) = self.max_sessions {
            if entry.sessions >= max {
                self.refused_sessions += 1;
                return Err(Refused::Sessions { max });
            }
        }
        if let Some((rate, burst)) = self.rate {
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * rate).min(burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                self.refused_rate += 1;
                let wait = (1.0 - entry.tokens) / rate;
                return Err(Refused::Rate {
                    retry_after: Duration::from_secs_f64(wait),
                });
            }
            entry.tokens -= 1.0;
        }
        Ok(())
    }

    /// A session of `client`'s started.
    pub fn opened(&mut self, client: &str) {
        if let Some(entry) = self.clients.get_mut(client) {
            entry.sessions += 1;
        }
    }

    /// A session of `client`'s ended.
    pub fn closed(&mut self, client: &str) {
        if let Some(entry) = self.clients.get_mut(client) {
            entry.sessions = entry.sessions.saturating_sub(1);
        }
    }

    /// Forgets clients with no session whose bucket has refilled.
    fn prune(&mut self, now: Instant) {
        let rate = self.rate;
        self.clients.retain(|_, client| {
            let full = rate.is_none_or(|(rate, burst)| {
                let elapsed = now.saturating_duration_since(client.refilled).as_secs_f64();
                client.tokens + elapsed * rate >= burst
            });
            client.sessions > 0 || !full
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_per_client() {
        let now = Instant::now();
        let mut limits = ClientLimits::new(Some(2), None);
        for _ in 0..2 {
            assert_eq!(limits.admit("alice", now), Ok(()));
            limits.opened("alice");
        }
        assert_eq!(
            limits.admit("alice", now),
            Err(Refused::Sessions { max: 2 })
        );
        assert_eq!(limits.admit("bob", now), Ok(()), "clients apart");
        limits.closed("alice");
        assert_eq!(limits.admit("alice", now), Ok(()));
        assert_eq!(limits.refused_sessions, 1);
    }

    #[test]
    fn the_rate_is_a_token_bucket_with_a_burst() {
        let now = Instant::now();
        let mut limits = ClientLimits::new(None, Some(1.0));
        assert_eq!(limits.admit("a", now), Ok(()));
        assert_eq!(limits.admit("a", now), Ok(()), "a burst of two");
        let Err(Refused::Rate { retry_after }) = limits.admit("a", now) else {
            panic!("over the rate");
        };
        assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        let later = now + Duration::from_millis(1000);
        assert_eq!(limits.admit("a", later), Ok(()), "refilled");
        assert_eq!(limits.refused_rate, 1);
    }

    #[test]
    fn no_limits_admit_everyone() {
        let mut limits = ClientLimits::new(None, None);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limits.admit("a", now), Ok(()));
            limits.opened("a");
        }
        assert!(limits.clients.is_empty(), "nothing kept");
    }
}
