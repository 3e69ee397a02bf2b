//! Upstream health, sans-IO: the state machine each upstream's probe results
//! and passive signals feed (`HealthState`: unhealthy after
//! `UNHEALTHY_AFTER` failures in a row, healthy again after `HEALTHY_AFTER`
//! successes in a row), and the spawn rule of a stdio upstream
//! (`SpawnHealth`: a command that crashes soon after it starts, again and
//! again, is unhealthy for a backoff that doubles). Probes themselves run on
//! the health workers (`reactor/health_workers.rs`); this module only keeps
//! score, with `now` as a parameter.

use std::time::{Duration, Instant, SystemTime};

/// How often each HTTP upstream host is probed.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// How long one probe (connect and answer) may take.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads that run probes.
pub const DEFAULT_HEALTH_WORKERS: usize = 2;
/// Failures in a row that make a healthy (or unknown) upstream unhealthy.
pub const UNHEALTHY_AFTER: u32 = 3;
/// Successes in a row that make an unhealthy upstream healthy again.
pub const HEALTHY_AFTER: u32 = 2;
/// A child that exits this soon after its spawn crashed at start-up.
pub const CRASH_WINDOW: Duration = Duration::from_secs(1);
/// Start-up crashes in a row that make a stdio upstream unhealthy.
pub const CRASHES_BEFORE_UNHEALTHY: u32 = 5;
/// The first wait before a crashing command is tried again; it doubles with
/// each failed try, up to `MAX_SPAWN_BACKOFF`.
pub const FIRST_SPAWN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_SPAWN_BACKOFF: Duration = Duration::from_secs(60);

/// Where an upstream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing is known yet (no probe answered): traffic flows, but the
    /// proxy is not ready.
    Unknown,
    Healthy,
    /// New sessions and requests fail fast until it recovers.
    Unhealthy,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A change of state, for the log and the pool (idle connections to an
/// unhealthy host are closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// One upstream's health, from probes and passive signals.
#[derive(Debug, Clone)]
pub struct HealthState {
    state: Health,
    failures_in_row: u32,
    successes_in_row: u32,
    last_error: Option<String>,
    /// Wall-clock time of the last probe, for `/status`.
    last_check: Option<SystemTime>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            state: Health::Unknown,
            failures_in_row: 0,
            successes_in_row: 0,
            last_error: None,
            last_check: None,
        }
    }
}

impl HealthState {
    pub fn state(&self) -> Health {
        self.state
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn last_check(&self) -> Option<SystemTime> {
        self.last_check
    }

    /// A probe answered. The first answer ever makes an unknown upstream
    /// healthy at once; an unhealthy one needs `HEALTHY_AFTER` in a row.
    pub fn probe_succeeded(&mut self, at: SystemTime) -> Option<Transition> {
        self.last_check = Some(at);
        self.failures_in_row = 0;
        self.successes_in_row = self.successes_in_row.saturating_add(1);
        let healthy = match self.state {
            Health::Unknown => true,
            Health::Unhealthy => self.successes_in_row >= HEALTHY_AFTER,
            Health::Healthy => false,
        };
        healthy.then(|| self.become_(Health::Healthy))
    }

    /// A probe failed (`at`: when), or real traffic failed to reach the
    /// upstream (`at`: none; a connect failure or a reset).
    pub fn failed(&mut self, error: &str, at: Option<SystemTime>) -> Option<Transition> {
        if at.is_some() {
            self.last_check = at;
        }
        self.last_error = Some(error.to_string());
        self.successes_in_row = 0;
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        let unhealthy = self.state != Health::Unhealthy && self.failures_in_row >= UNHEALTHY_AFTER;
        unhealthy.then(|| self.become_(Health::Unhealthy))
    }

    fn become_(&mut self, to: Health) -> Transition {
        let from = self.state;
        self.state = to;
        Transition { from, to }
    }
}

/// A stdio upstream's health: its command is healthy while it can be
/// spawned and stays up. `CRASHES_BEFORE_UNHEALTHY` children in a row that
/// exit within `CRASH_WINDOW` of their spawn (or fail to spawn) make it
/// unhealthy until a backoff passes; then one spawn is tried, and a child
/// that outlives the window makes it healthy again.
#[derive(Debug, Clone)]
pub struct SpawnHealth {
    crashes_in_row: u32,
    /// While unhealthy: when the next spawn may be tried.
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
}

impl Default for SpawnHealth {
    fn default() -> Self {
        SpawnHealth {
            crashes_in_row: 0,
            retry_at: None,
            backoff: FIRST_SPAWN_BACKOFF,
            last_error: None,
        }
    }
}

impl SpawnHealth {
    pub fn state(&self) -> Health {
        if self.retry_at.is_some() {
            Health::Unhealthy
        } else {
            Health::Healthy
        }
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// True while the backoff holds new spawns back.
    pub fn blocked(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    /// May a child be spawned now? While unhealthy, only once the backoff
    /// passed (one try; its outcome decides).
    pub fn may_spawn(&mut self, now: Instant) -> bool {
        match self.retry_at {
            None => true,
            Some(at) if now >= at => {
                // One try: the next one waits for its outcome's backoff.
                self.retry_at = Some(now + self.backoff);
                true
            }
            Some(_) => false,
        }
    }

    /// A child exited (or could not be spawned: `lived` zero). Returns a
    /// transition when the command became unhealthy.
    pub fn child_ended(&mut self, lived: Duration, why: &str, now: Instant) -> Option<Transition> {
        if lived >= CRASH_WINDOW {
            return self.child_survived();
        }
        self.last_error = Some(why.to_string());
        self.crashes_in_row = self.crashes_in_row.saturating_add(1);
        if self.crashes_in_row < CRASHES_BEFORE_UNHEALTHY {
            return None;
        }
        let was = self.state();
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_SPAWN_BACKOFF);
        (was != Health::Unhealthy).then_some(Transition {
            from: was,
            to: Health::Unhealthy,
        })
    }

    /// A child outlived the crash window: the command works.
    pub fn child_survived(&mut self) -> Option<Transition> {
        self.crashes_in_row = 0;
        self.backoff = FIRST_SPAWN_BACKOFF;
        self.retry_at.take().map(|_| Transition {
            from: Health::Unhealthy,
            to: Health::Healthy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_hysteresis() {
        let t = SystemTime::UNIX_EPOCH;
        let mut health = HealthState::default();
        assert_eq!(health.state(), Health::Unknown);
        assert_eq!(
            health.probe_succeeded(t),
            Some(Transition {
                from: Health::Unknown,
                to: Health::Healthy
            })
        );
        // Two failures are not enough; a success in between resets the count.
        assert_eq!(health.failed("refused", Some(t)), None);
        assert_eq!(health.failed("refused", Some(t)), None);
        assert_eq!(health.probe_succeeded(t), None);
        assert_eq!(health.failed("refused", Some(t)), None);
        assert_eq!(health.failed("reset", None), None);
        assert_eq!(
            health.failed("refused", Some(t)).map(|t| t.to),
            Some(Health::Unhealthy)
        );
        assert_eq!(health.last_error(), Some("refused"));
        assert_eq!(health.failed("refused", Some(t)), None);
        // One success is not enough to come back.
        assert_eq!(health.probe_succeeded(t), None);
        assert_eq!(health.state(), Health::Unhealthy);
        assert_eq!(
            health.probe_succeeded(t).map(|t| t.to),
            Some(Health::Healthy)
        );
    }

    #[test]
    fn an_unknown_upstream_that_never_answers_becomes_unhealthy() {
        let mut health = HealthState::default();
        for _ in 0..UNHEALTHY_AFTER - 1 {
            assert_eq!(health.failed("refused", None), None);
        }
        assert_eq!(
            health.failed("refused", None),
            Some(Transition {
                from: Health::Unknown,
                to: Health::Unhealthy
            })
        );
    }

    #[test]
    fn a_crashing_command_backs_off_and_recovers() {
        let start = Instant::now();
        let mut spawn = SpawnHealth::default();
        let quick = Duration::from_millis(100);
        for _ in 0..CRASHES_BEFORE_UNHEALTHY - 1 {
            assert!(spawn.may_spawn(start));
            assert_eq!(spawn.child_ended(quick, "exit 1", start), None);
        }
        assert!(spawn.may_spawn(start));
        assert_eq!(
            spawn.child_ended(quick, "exit 1", start).map(|t| t.to),
            Some(Health::Unhealthy)
        );
        assert!(!spawn.may_spawn(start));
        let later = start + FIRST_SPAWN_BACKOFF;
        assert!(spawn.may_spawn(later), "one try after the backoff");
        assert!(!spawn.may_spawn(later), "only one");
        // It crashed again: the backoff doubled.
        assert_eq!(spawn.child_ended(quick, "exit 1", later), None);
        assert!(!spawn.may_spawn(later + FIRST_SPAWN_BACKOFF));
        let after = later + FIRST_SPAWN_BACKOFF * 2;
        assert!(spawn.may_spawn(after));
        assert_eq!(
            spawn
                .child_ended(CRASH_WINDOW, "exit 0", after)
                .map(|t| t.to),
            Some(Health::Healthy)
        );
        assert!(spawn.may_spawn(after));
        // A long-lived child in between resets the count.
        for _ in 0..CRASHES_BEFORE_UNHEALTHY - 1 {
            spawn.child_ended(quick, "exit 1", after);
        }
        spawn.child_survived();
        assert_eq!(spawn.child_ended(quick, "exit 1", after), None);
        assert_eq!(spawn.state(), Health::Healthy);
    }
}
