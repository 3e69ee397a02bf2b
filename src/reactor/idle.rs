//! Giving memory back once load went away. A burst of sessions grows the
//! slabs, maps, queues and the timer heap to its size, and glibc keeps the
//! memory the burst freed in its heap; neither shrinks by itself. When the
//! last session is gone and none started for `IDLE_RELEASE_AFTER`, one
//! timer gives that back: collections shrink to what is live (keys stay
//! valid: slabs only drop their vacant tail), stale timers are dropped, the
//! loop thread's glibc cache of freed chunks is emptied (its chunks would
//! keep pages of the heap resident) and glibc returns its free pages
//! (`malloc_trim`). It runs once per idle period, never on the request path.

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

/// Gives glibc's free memory back to the kernel: first what the loop
/// thread's cache holds (`thread_cache`), then the free memory at the top of
/// the heap and the free pages inside it (`malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_malloc() {
    thread_cache::flush();
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // memory; it is safe to call at any time from the thread that owns no
    // lock of it (this one, between loop turns).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_malloc() {}

/// Empties the loop thread's glibc tcache into the heap's free lists, so
/// that `malloc_trim` can return the pages its chunks kept.
///
/// glibc keeps, per thread, up to 7 freed chunks of each of 64 sizes (32 to
/// 1040 bytes, in steps of 16) apart from its free lists. `malloc_trim`
/// counts them as in use; after a burst they are scattered over a heap that
/// is otherwise free, and each keeps its page resident: about 0.35 MiB
/// after one burst of 500 sessions, 0.8 MiB after ten (`benches/SOAK.md`).
/// glibc has no call to empty the cache, and a free lands in it whenever it
/// has room, so this uses malloc, realloc and free alone, in an order that
/// leaves it empty:
///
/// 1. take 7 blocks of every size: the cache hands out its own first;
/// 2. refill it, for each size, from one fresh block cut down by realloc 7
///    times by that size: glibc frees each cut-off tail into the cache. The
///    refill is packed, and free memory follows it (a 2 KiB tail, cut off
///    first);
/// 3. free the blocks of step 1: the cache is full, so they go to the free
///    lists, where they merge with their free neighbours;
/// 4. take the refill back out (7 of every size: exactly what the cache
///    holds) and, highest address first (each grows into what the one
///    above it just freed), grow each in place, into the free memory after
///    it, to a size the cache does not hold, then free it: it goes to the
///    free lists too.
///
/// This relies on glibc's behaviour, checked on 2.36: a cache of 7 per size,
/// realloc shrinking in place and freeing the tail, growing in place into a
/// free next chunk, and a request of n bytes taking a chunk of n + 8 rounded
/// up to 16 (64-bit targets). Under a glibc that caches other sizes, or
/// another allocator, it does nothing useful and nothing harmful: it only
/// allocates and frees. Safe code only: about 3,000 allocator calls, under
/// a millisecond, once per idle period. Only this thread's cache: the
/// health workers (the only other threads) have their own, which their
/// probes fill, not the bursts of sessions.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod thread_cache {
    use std::hint::black_box;

    /// Chunk sizes the cache holds: 32 to 1040 bytes.
    const SIZES: usize = 64;
    const PER_SIZE: usize = 7;
    /// The smallest chunk the cache does not hold.
    const UNCACHED: usize = 1056;
    /// A free chunk this large, grown into by a refill chunk, leaves a tail
    /// of more than 1040 bytes, which the cache would not take either.
    const SPARE: usize = 2 * UNCACHED;

    /// A block glibc serves with a chunk of exactly `chunk` bytes (its
    /// header takes 8). `black_box`: an unused allocation may be elided.
    fn block(chunk: usize) -> Vec<u8> {
        black_box(Vec::with_capacity(chunk - 8))
    }

    fn take_every_size(blocks: &mut Vec<Vec<u8>>) {
        for size in (0..SIZES).map(|n| 32 + 16 * n) {
            for _ in 0..PER_SIZE {
                blocks.push(block(size));
            }
        }
    }

    pub(super) fn flush() {
        // Allocated before the refill, so that it does not land just after
        // it (where the refill grows).
        let mut blocks = Vec::with_capacity(SIZES * PER_SIZE);
        take_every_size(&mut blocks);
        for size in (0..SIZES).map(|n| 32 + 16 * n) {
            // A head, the 7 chunks and a spare tail. The head is as large
            // as the tail: the next size's block may be cut right after
            // this refill, and its head, freed, is then what this refill
            // grows into.
            let mut cut = block(SPARE + PER_SIZE * size + SPARE);
            // First the spare tail (to the free lists), then one `size`
            // chunk at a time (to the cache).
            for kept in (0..=PER_SIZE).rev() {
                cut.shrink_to(SPARE + kept * size - 8);
                black_box(&mut cut);
            }
        }
        blocks.clear();
        take_every_size(&mut blocks);
        blocks.sort_unstable_by_key(|block| block.as_ptr());
        for mut block in blocks.into_iter().rev() {
            // Grown in place when the chunk after it is free; otherwise
            // glibc moves it and this one chunk stays in the cache.
            block.reserve_exact(UNCACHED - 8);
            black_box(&mut block);
        }
    }
}

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_pointer_width = "64")
))]
mod thread_cache {
    pub(super) fn flush() {}
}
