//! A connection's life between requests: last-in-first-out reuse, the idle
//! limits, the lifetime and request caps, eviction and the peek before reuse,
//! and the counters that record them.

use super::*;

#[test]
fn defaults_match_the_issue() {
    let c = PoolConfig::default();
    assert_eq!(c.idle_timeout, Duration::from_secs(4));
    assert_eq!(c.max_idle_per_host, 32);
    assert_eq!(c.max_per_host, 256);
    assert_eq!(c.max_lifetime, Duration::from_secs(3600));
    assert_eq!(c.max_requests, 1000);
    assert_eq!(c.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.queue_timeout, Duration::from_secs(5));
    assert_eq!(c.peek_after_idle, Duration::from_secs(1));
}

#[test]
fn first_checkout_connects_and_gets_a_fresh_connection() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    assert_eq!(p.gauges(&h), gauges(0, 0, 1, 1));
    p.connecting(&h, 7, t0);
    assert_eq!(p.gauges(&h), gauges(0, 0, 1, 1));
    assert_eq!(
        connected(&mut p, 7, t0 + ms(2)),
        vec![assign(1, 7, false, false)]
    );
    assert_eq!(p.gauges(&h), gauges(0, 1, 0, 0));
    let m = p.metrics();
    assert_eq!((m.hits, m.misses, m.connects, m.reuses), (0, 1, 1, 0));
    assert_eq!(m.connect_time_max, ms(2));
    assert_eq!(m.queue_waits, 1);
    assert_eq!(m.queue_wait_max, ms(2));
}

#[test]
fn idle_connections_are_reused_last_in_first_out() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1, 2, 3], t0);
    assert_eq!(p.gauges(&h), gauges(3, 0, 0, 0));
    assert_eq!(
        checkout(&mut p, &h, 10, t0),
        vec![assign(10, 3, true, false)]
    );
    assert_eq!(
        checkout(&mut p, &h, 11, t0),
        vec![assign(11, 2, true, false)]
    );
    assert_eq!(release(&mut p, 3, true, t0), vec![]);
    assert_eq!(
        checkout(&mut p, &h, 12, t0),
        vec![assign(12, 3, true, false)]
    );
    assert_eq!(
        checkout(&mut p, &h, 13, t0),
        vec![assign(13, 1, true, false)]
    );
    let m = p.metrics();
    assert_eq!((m.hits, m.misses, m.reuses), (4, 3, 4));
}

#[test]
fn hosts_do_not_share_connections() {
    let t0 = Instant::now();
    let mut p = pool();
    let (a, b) = (host(), other_host());
    open_idle(&mut p, &a, &[1], t0);
    assert_eq!(checkout(&mut p, &b, 2, t0), vec![connect(&b)]);
    assert_eq!(
        p.host_gauges(),
        vec![(a, gauges(1, 0, 0, 0)), (b, gauges(0, 0, 1, 1))]
    );
}

#[test]
fn idle_connection_expires_at_idle_timeout() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1], t0);
    assert_eq!(p.next_deadline(), Some(t0 + DEFAULT_IDLE_TIMEOUT));
    assert_eq!(expire(&mut p, t0 + DEFAULT_IDLE_TIMEOUT - ms(1)), vec![]);
    assert_eq!(
        expire(&mut p, t0 + DEFAULT_IDLE_TIMEOUT),
        vec![close(1, EvictCause::IdleTimeout)]
    );
    assert_eq!(p.metrics().evictions(EvictCause::IdleTimeout), 1);
    assert_eq!(p.next_deadline(), None);
    // An empty host is forgotten.
    assert!(p.host_gauges().is_empty());
}

#[test]
fn idle_expiry_keeps_the_recently_used() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1, 2], t0);
    assert_eq!(checkout(&mut p, &h, 9, t0 + ms(3000)), {
        vec![assign(9, 2, true, true)]
    });
    assert_eq!(release(&mut p, 2, true, t0 + ms(3000)), vec![]);
    assert_eq!(p.next_deadline(), Some(t0 + DEFAULT_IDLE_TIMEOUT));
    assert_eq!(
        expire(&mut p, t0 + DEFAULT_IDLE_TIMEOUT),
        vec![close(1, EvictCause::IdleTimeout)]
    );
    assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
    assert_eq!(
        p.next_deadline(),
        Some(t0 + ms(3000) + DEFAULT_IDLE_TIMEOUT)
    );
}

#[test]
fn checkout_never_hands_out_a_connection_expire_was_late_to_close() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1], t0);
    assert_eq!(
        checkout(&mut p, &h, 2, t0 + DEFAULT_IDLE_TIMEOUT),
        vec![close(1, EvictCause::IdleTimeout), connect(&h)]
    );
}

#[test]
fn idle_overflow_closes_the_least_recently_used() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_idle_per_host: 2,
        ..PoolConfig::default()
    });
    let h = host();
    for c in [1, 2, 3] {
        open(&mut p, &h, c as u32, c, t0);
    }
    assert_eq!(release(&mut p, 1, true, t0), vec![]);
    assert_eq!(release(&mut p, 2, true, t0), vec![]);
    assert_eq!(
        release(&mut p, 3, true, t0),
        vec![close(1, EvictCause::Surplus)]
    );
    assert_eq!(p.gauges(&h), gauges(2, 0, 0, 0));
    assert_eq!(checkout(&mut p, &h, 9, t0), vec![assign(9, 3, true, false)]);
    assert_eq!(p.metrics().evictions(EvictCause::Surplus), 1);
}

#[test]
fn no_idle_allowed_closes_on_release() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_idle_per_host: 0,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    assert_eq!(
        release(&mut p, 1, true, t0),
        vec![close(1, EvictCause::Surplus)]
    );
    assert!(p.host_gauges().is_empty() || p.gauges(&h) == HostGauges::default());
}

#[test]
fn lifetime_cap_closes_on_release_and_connects_for_a_waiter() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_lifetime: Duration::from_secs(10),
        max_per_host: 1,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    assert_eq!(checkout(&mut p, &h, 2, t0 + ms(9000)), vec![]);
    let t = t0 + Duration::from_secs(10);
    assert_eq!(
        release(&mut p, 1, true, t),
        vec![close(1, EvictCause::Lifetime), connect(&h)]
    );
    assert_eq!(p.metrics().evictions(EvictCause::Lifetime), 1);
}

#[test]
fn lifetime_cap_closes_an_idle_connection() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_lifetime: Duration::from_secs(10),
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    let t7 = t0 + Duration::from_secs(7);
    assert_eq!(release(&mut p, 1, true, t7), vec![]);
    // The lifetime ends before the idle timeout would.
    let end = t0 + Duration::from_secs(10);
    assert_eq!(p.next_deadline(), Some(end));
    assert_eq!(expire(&mut p, end - ms(1)), vec![]);
    assert_eq!(expire(&mut p, end), vec![close(1, EvictCause::Lifetime)]);
}

#[test]
fn request_cap_closes_on_release() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_requests: 3,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    assert_eq!(release(&mut p, 1, true, t0), vec![]);
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![assign(2, 1, true, false)]);
    assert_eq!(release(&mut p, 1, true, t0), vec![]);
    assert_eq!(checkout(&mut p, &h, 3, t0), vec![assign(3, 1, true, false)]);
    assert_eq!(
        release(&mut p, 1, true, t0),
        vec![close(1, EvictCause::RequestCount)]
    );
    assert_eq!(p.metrics().evictions(EvictCause::RequestCount), 1);
    assert_eq!(p.metrics().reuses, 2);
}

#[test]
fn not_reusable_closes_and_never_goes_idle() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    assert_eq!(
        release(&mut p, 1, false, t0),
        vec![close(1, EvictCause::NotReusable)]
    );
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
    assert_eq!(p.metrics().evictions(EvictCause::NotReusable), 1);
}

#[test]
fn peer_close_while_idle_evicts_and_the_next_checkout_connects() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1], t0);
    assert_eq!(
        evict(&mut p, 1, EvictCause::PeerClosed),
        vec![close(1, EvictCause::PeerClosed)]
    );
    assert_eq!(p.gauges(&h), HostGauges::default());
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
    assert_eq!(p.metrics().evictions(EvictCause::PeerClosed), 1);
    // The evicted id is no longer the pool's.
    assert_eq!(release(&mut p, 1, true, t0), vec![]);
    assert_eq!(evict(&mut p, 1, EvictCause::Error), vec![]);
}

#[test]
fn unexpected_data_while_idle_evicts() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1, 2], t0);
    assert_eq!(
        evict(&mut p, 1, EvictCause::UnexpectedData),
        vec![close(1, EvictCause::UnexpectedData)]
    );
    assert_eq!(checkout(&mut p, &h, 9, t0), vec![assign(9, 2, true, false)]);
    assert_eq!(checkout(&mut p, &h, 10, t0), vec![connect(&h)]);
}

#[test]
fn peek_after_more_than_a_second_idle_and_recheck_after_a_failed_peek() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1, 2], t0);
    // Exactly the threshold: no peek.
    let t1 = t0 + DEFAULT_PEEK_AFTER_IDLE;
    assert_eq!(
        checkout(&mut p, &h, 10, t1),
        vec![assign(10, 2, true, false)]
    );
    let t2 = t0 + DEFAULT_PEEK_AFTER_IDLE + ms(1);
    assert_eq!(
        checkout(&mut p, &h, 11, t2),
        vec![assign(11, 1, true, true)]
    );
    // The peek saw EOF: the reactor evicts and checks out again.
    assert_eq!(
        evict(&mut p, 1, EvictCause::PeerClosed),
        vec![close(1, EvictCause::PeerClosed)]
    );
    assert_eq!(checkout(&mut p, &h, 11, t2), vec![connect(&h)]);
    // A connection handed over on release needs no peek.
    assert_eq!(
        release(&mut p, 2, true, t2),
        vec![assign(11, 2, true, false)]
    );
}

#[test]
fn a_connection_nobody_waits_for_goes_idle_unused() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    assert!(p.cancel_waiter(1));
    assert!(!p.cancel_waiter(1));
    p.connecting(&h, 6, t0);
    assert_eq!(connected(&mut p, 6, t0), vec![]);
    assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
    // It sat idle, so the server may have dropped it: it counts as reused
    // for the retry rule, but not as a reuse in the metrics.
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![assign(2, 6, true, false)]);
    assert_eq!(p.metrics().reuses, 0);
}

#[test]
fn metrics_and_summary() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1], t0);
    checkout(&mut p, &h, 2, t0);
    release(&mut p, 1, true, t0);
    checkout(&mut p, &h, 3, t0 + ms(1500));
    evict(&mut p, 1, EvictCause::PeerClosed);
    p.note_retry();
    let m = p.metrics().clone();
    assert_eq!(
        (m.hits, m.misses, m.connects, m.reuses, m.retries),
        (2, 1, 1, 2, 1)
    );
    assert_eq!(m.evictions(EvictCause::PeerClosed), 1);
    let total: u64 = EvictCause::ALL.iter().map(|c| m.evictions(*c)).sum();
    assert_eq!(total, 1);
    let line = p.summary();
    assert!(!line.contains('\n'));
    for part in [
        "hits=2",
        "misses=1",
        "connects=1",
        "reuses=2",
        "retries=1",
        "peer_closed=1",
        "idle_timeout=0",
        "waiting=0",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
}

#[test]
fn host_key_display() {
    assert_eq!(host().to_string(), "http://127.0.0.1:8000");
    assert_eq!(
        HostKey::new(Scheme::Https, "::1", 8443).to_string(),
        "https://[::1]:8443"
    );
}

#[test]
fn an_unhealthy_host_loses_its_idle_connections_but_not_its_busy_ones() {
    let t0 = Instant::now();
    let mut p = pool();
    let (a, b) = (host(), other_host());
    open(&mut p, &a, 7, 3, t0);
    open_idle(&mut p, &a, &[1, 2], t0);
    open_idle(&mut p, &b, &[4], t0);
    let mut actions = Vec::new();
    p.close_idle(&a, &mut actions);
    assert_eq!(
        actions,
        vec![
            close(1, EvictCause::Unhealthy),
            close(2, EvictCause::Unhealthy)
        ]
    );
    assert_eq!(
        p.host_gauges(),
        vec![(a.clone(), gauges(0, 1, 0, 0)), (b, gauges(1, 0, 0, 0))]
    );
    assert_eq!(p.metrics().evictions(EvictCause::Unhealthy), 2);
    // The busy one goes back to the pool as usual once its request is done.
    assert_eq!(release(&mut p, 3, true, t0), vec![]);
    assert_eq!(p.host_gauges()[0], (a, gauges(1, 0, 0, 0)));
}
