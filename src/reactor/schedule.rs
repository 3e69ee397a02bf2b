//! What the loop's timers are for, and whether it is serving or shutting
//! down: the two enums the loop's turn is decided by.

use std::time::Instant;

use crate::client::ConnKey;
use crate::session::SessionKey;

use super::servers::ServerId;

/// What a timer is for. Stale entries are recognised by their key's
/// generation and the owner's current deadline, and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Conn(ConnKey),
    Heartbeat(ConnKey),
    /// A connection's held output is due (`front_door::HEAD_HOLD`).
    HeadHold(ConnKey),
    /// A session core's `poll_timeout`.
    Session(SessionKey),
    ShutdownGrace,
    FinalExit,
    /// Wakes the loop when the last flush before exit is over.
    ExitFlush,
    RetryAccept,
    /// A server's pool has something due.
    Pool(ServerId),
    /// A session's upstream streams: a gate's wait, a continuation or a
    /// reopen is due.
    Upstream(SessionKey),
    /// The next health probe of the upstream is due.
    Probe(ServerId),
    /// Admin connections that sent no request in time are closed.
    AdminExpire,
    /// No session for a while: memory is given back (`idle`).
    IdleRelease,
    /// The OAuth key fetch in flight is given up (`auth`).
    KeyFetch,
}

/// Whether the proxy is serving or shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunState {
    Serving,
    /// Not accepting; in-flight requests finish; sessions end as they go quiet.
    Draining,
    /// Every session ended: queued output is flushed until `until`, then
    /// mcphop exits.
    Exiting {
        until: Instant,
    },
}
