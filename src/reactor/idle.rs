//! Giving memory back once load went away. A burst of sessions grows the
//! slabs, maps, queues and the timer heap to its size, and glibc keeps the
//! memory the burst freed in its heap; neither shrinks by itself. When the
//! last session is gone and none started for `IDLE_RELEASE_AFTER`, one
//! timer gives that back: collections shrink to what is live (keys stay
//! valid: slabs only drop their vacant tail), stale timers are dropped, and
//! glibc returns its free pages (`malloc_trim`). It runs once per idle
//! period, never on the request path.

use std::time::Duration;

use log::debug;

use super::{admin, Proxy, RunState, Timer};

/// How long mcphop must have had no session before it gives memory back.
pub(super) const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// The last session was removed: memory is given back unless a session
/// starts within `IDLE_RELEASE_AFTER` (one timer, armed once per idle
/// period).
pub(super) fn last_session_gone(proxy: &mut Proxy) {
    if proxy.idle_release.is_some() || proxy.run_state != RunState::Serving {
        return;
    }
    let at = proxy.now + IDLE_RELEASE_AFTER;
    proxy.idle_release = Some(at);
    proxy.timers.schedule(at, Timer::IdleRelease);
}

/// The idle timer fired: if there is still no session, what the busy
/// moments left allocated is given back.
pub(super) fn release(proxy: &mut Proxy) {
    proxy.idle_release = None;
    if !proxy.sessions.is_empty() || proxy.run_state != RunState::Serving {
        return;
    }
    let before = debug_rss();
    proxy.sessions.shrink_to_fit();
    proxy.session_ids.shrink_to_fit();
    let mut timers = std::mem::take(&mut proxy.timers);
    timers.retain_and_shrink(|deadline, timer| proxy.timer_is_live(deadline, *timer));
    proxy.timers = timers;
    proxy.front_events.shrink_to_fit();
    proxy.upstream_events.shrink_to_fit();
    proxy.spare_upstream_events = Vec::new();
    proxy.front.release_idle_capacity();
    proxy.servers.release_idle_capacity();
    trim_malloc();
    if let (Some(before), Some(after)) = (before, debug_rss()) {
        debug!(
            "idle: memory given back, RSS {} KiB -> {} KiB",
            before / 1024,
            after / 1024
        );
    }
}

/// The resident size, only when it is logged.
fn debug_rss() -> Option<u64> {
    if log::log_enabled!(log::Level::Debug) {
        admin::process_figures().0
    } else {
        None
    }
}

/// Asks glibc to return the free memory at the top of its heap and the free
/// pages inside it to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_malloc() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // memory; it is safe to call at any time from the thread that owns no
    // lock of it (this one, between loop turns).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_malloc() {}
