//! Requests waiting for a connection: their queue and its timeout, connects
//! and their failures, the host cap, retries that need an unused connection,
//! stale reports, and the deadline the reactor sleeps until.

use super::*;

#[test]
fn waiters_are_served_in_order_before_a_connection_goes_idle() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 1,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    // At the cap: the requests queue and nothing connects.
    assert_eq!(checkout(&mut p, &h, 2, t0 + ms(1)), vec![]);
    assert_eq!(checkout(&mut p, &h, 3, t0 + ms(2)), vec![]);
    assert_eq!(p.gauges(&h), gauges(0, 1, 0, 2));
    assert_eq!(
        release(&mut p, 1, true, t0 + ms(10)),
        vec![assign(2, 1, true, false)]
    );
    assert_eq!(
        release(&mut p, 1, true, t0 + ms(20)),
        vec![assign(3, 1, true, false)]
    );
    assert_eq!(release(&mut p, 1, true, t0 + ms(30)), vec![]);
    assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
    let m = p.metrics();
    assert_eq!(m.queue_waits, 3);
    assert_eq!(m.queue_wait_max, ms(18));
    assert_eq!(m.queue_wait_total, ms(9 + 18));
}

#[test]
fn a_queued_request_times_out_with_an_error() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 1,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    assert_eq!(checkout(&mut p, &h, 2, t0 + ms(100)), vec![]);
    let due = t0 + ms(100) + DEFAULT_QUEUE_TIMEOUT;
    assert_eq!(p.next_deadline(), Some(due));
    assert_eq!(expire(&mut p, due - ms(1)), vec![]);
    assert_eq!(
        expire(&mut p, due),
        vec![PoolAction::WaiterTimedOut { waiter: 2 }]
    );
    assert_eq!(p.metrics().waiter_timeouts, 1);
    // The next release finds nobody waiting.
    assert_eq!(release(&mut p, 1, true, due), vec![]);
    assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
}

#[test]
fn connect_timeout_aborts_and_fails_the_waiters() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    p.connecting(&h, 5, t0 + ms(1));
    let due = t0 + ms(1) + DEFAULT_CONNECT_TIMEOUT;
    assert_eq!(p.next_deadline(), Some(due));
    assert_eq!(expire(&mut p, due - ms(1)), vec![]);
    assert_eq!(
        expire(&mut p, due),
        vec![
            PoolAction::AbortConnect { conn: 5 },
            PoolAction::WaitersFailed {
                host: h.clone(),
                waiters: vec![1]
            }
        ]
    );
    let m = p.metrics();
    assert_eq!(
        (m.connect_failures, m.connect_timeouts, m.waiters_failed),
        (1, 1, 1)
    );
    assert!(p.host_gauges().is_empty());
    // A late completion of the aborted socket is ignored.
    assert_eq!(connected(&mut p, 5, due), vec![]);
}

#[test]
fn waiters_fail_only_when_the_last_attempt_fails() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    assert_eq!(checkout(&mut p, &h, 2, t0 + ms(1)), vec![connect(&h)]);
    p.connecting(&h, 10, t0);
    p.connecting(&h, 11, t0);
    let mut out = Vec::new();
    p.connect_failed(10, &mut out);
    assert_eq!(out, vec![]);
    p.connect_failed(11, &mut out);
    assert_eq!(
        out,
        vec![PoolAction::WaitersFailed {
            host: h.clone(),
            waiters: vec![1, 2]
        }]
    );
    assert_eq!(p.metrics().connect_failures, 2);
    assert_eq!(p.metrics().connect_timeouts, 0);
}

#[test]
fn a_failed_attempt_is_not_replaced() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    checkout(&mut p, &h, 1, t0);
    checkout(&mut p, &h, 2, t0);
    p.connecting(&h, 10, t0);
    p.connecting(&h, 11, t0);
    let mut out = Vec::new();
    p.connect_failed(10, &mut out);
    assert_eq!(out, vec![]);
    // The survivor serves the oldest; the other waits for a release.
    assert_eq!(connected(&mut p, 11, t0), vec![assign(1, 11, false, false)]);
    assert_eq!(p.gauges(&h), gauges(0, 1, 0, 1));
    assert_eq!(
        release(&mut p, 11, true, t0),
        vec![assign(2, 11, true, false)]
    );
}

#[test]
fn open_failed_counts_and_fails_the_waiters() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    let mut out = Vec::new();
    p.open_failed(&h, &mut out);
    assert_eq!(
        out,
        vec![PoolAction::WaitersFailed {
            host: h.clone(),
            waiters: vec![1]
        }]
    );
    assert_eq!(p.gauges(&h), HostGauges::default());
    assert_eq!(p.metrics().connect_failures, 1);
}

#[test]
fn evicting_a_connecting_socket_is_a_connect_failure() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    checkout(&mut p, &h, 1, t0);
    p.connecting(&h, 3, t0);
    assert_eq!(
        evict(&mut p, 3, EvictCause::Error),
        vec![
            close(3, EvictCause::Error),
            PoolAction::WaitersFailed {
                host: h.clone(),
                waiters: vec![1]
            }
        ]
    );
    assert_eq!(p.metrics().connect_failures, 1);
    assert_eq!(p.metrics().evictions(EvictCause::Error), 0);
}

#[test]
fn the_host_cap_queues_instead_of_connecting() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 2,
        ..PoolConfig::default()
    });
    let h = host();
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
    assert_eq!(checkout(&mut p, &h, 3, t0), vec![]);
    assert_eq!(p.gauges(&h), gauges(0, 0, 2, 3));
    p.connecting(&h, 1, t0);
    p.connecting(&h, 2, t0);
    assert_eq!(connected(&mut p, 1, t0), vec![assign(1, 1, false, false)]);
    assert_eq!(connected(&mut p, 2, t0), vec![assign(2, 2, false, false)]);
    assert_eq!(p.gauges(&h), gauges(0, 2, 0, 1));
    // A broken connection frees a slot for the queued request.
    assert_eq!(
        evict(&mut p, 1, EvictCause::Error),
        vec![close(1, EvictCause::Error), connect(&h)]
    );
    assert_eq!(p.gauges(&h), gauges(0, 1, 1, 1));
}

#[test]
fn connects_are_not_asked_twice_for_the_same_waiter() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    // One connect covers one waiter, even before the reactor opens it.
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![connect(&h)]);
    // A release serves that waiter; the connect still on its way covers the next.
    assert_eq!(
        release(&mut p, 1, true, t0),
        vec![assign(2, 1, true, false)]
    );
    assert_eq!(checkout(&mut p, &h, 3, t0), vec![]);
    p.connecting(&h, 4, t0);
    assert_eq!(connected(&mut p, 4, t0), vec![assign(3, 4, false, false)]);
    assert_eq!(p.metrics().misses, 3);
}

#[test]
fn streams_are_counted_apart_from_the_cap() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 1,
        ..PoolConfig::default()
    });
    let h = host();
    for _ in 0..3 {
        p.stream_opened(&h);
    }
    assert_eq!(checkout(&mut p, &h, 1, t0), vec![connect(&h)]);
    assert_eq!(p.gauges(&h).streams, 3);
    p.stream_closed(&h);
    assert_eq!(p.gauges(&h).streams, 2);
    p.stream_closed(&other_host());
    assert!(p.summary().contains("streams=2"));
    // A host with only streams survives expiry.
    p.cancel_waiter(1);
    let mut out = Vec::new();
    p.open_failed(&h, &mut out);
    assert_eq!(expire(&mut p, t0), vec![]);
    assert_eq!(p.host_gauges().len(), 1);
    p.stream_closed(&h);
    p.stream_closed(&h);
    p.stream_closed(&h);
    assert_eq!(p.gauges(&h).streams, 0);
}

#[test]
fn a_retry_gets_a_new_connection_even_with_idle_ones() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1], t0);
    let mut out = Vec::new();
    p.checkout_fresh(&h, 9, t0, &mut out);
    assert_eq!(out, vec![connect(&h)]);
    // A plain request still takes the idle one, and its release does not
    // serve the retry.
    assert_eq!(checkout(&mut p, &h, 8, t0), vec![assign(8, 1, true, false)]);
    assert_eq!(release(&mut p, 1, true, t0), vec![]);
    p.connecting(&h, 3, t0);
    assert_eq!(connected(&mut p, 3, t0), vec![assign(9, 3, false, false)]);
    assert_eq!(p.gauges(&h), gauges(1, 1, 0, 0));
}

#[test]
fn a_retry_at_the_cap_makes_room_by_closing_an_idle_connection() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 2,
        ..PoolConfig::default()
    });
    let h = host();
    open_idle(&mut p, &h, &[1, 2], t0);
    let mut out = Vec::new();
    p.checkout_fresh(&h, 9, t0, &mut out);
    assert_eq!(out, vec![close(1, EvictCause::Surplus), connect(&h)]);
    assert_eq!(p.gauges(&h), gauges(1, 0, 1, 1));
}

#[test]
fn a_retry_at_the_cap_waits_for_a_slot() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 1,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    let mut out = Vec::new();
    p.checkout_fresh(&h, 9, t0, &mut out);
    assert_eq!(out, vec![]);
    // The release would leave it idle; the retry needs the slot more.
    assert_eq!(
        release(&mut p, 1, true, t0),
        vec![close(1, EvictCause::Surplus), connect(&h)]
    );
    // A fresh retry also times out in the queue.
    assert_eq!(
        expire(&mut p, t0 + DEFAULT_QUEUE_TIMEOUT),
        vec![PoolAction::WaiterTimedOut { waiter: 9 }]
    );
}

#[test]
fn evicting_a_busy_connection_connects_for_waiters() {
    let t0 = Instant::now();
    let mut p = pool_with(PoolConfig {
        max_per_host: 1,
        ..PoolConfig::default()
    });
    let h = host();
    open(&mut p, &h, 1, 1, t0);
    assert_eq!(checkout(&mut p, &h, 2, t0), vec![]);
    assert_eq!(
        evict(&mut p, 1, EvictCause::Error),
        vec![close(1, EvictCause::Error), connect(&h)]
    );
    assert_eq!(p.metrics().evictions(EvictCause::Error), 1);
}

#[test]
fn stale_reports_are_ignored() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    assert_eq!(release(&mut p, 42, true, t0), vec![]);
    assert_eq!(connected(&mut p, 42, t0), vec![]);
    assert_eq!(evict(&mut p, 42, EvictCause::Error), vec![]);
    let mut out = Vec::new();
    p.connect_failed(42, &mut out);
    p.open_failed(&h, &mut out);
    assert_eq!(out, vec![]);
    // Releasing an idle connection again changes nothing.
    open_idle(&mut p, &h, &[1], t0);
    assert_eq!(release(&mut p, 1, true, t0), vec![]);
    assert_eq!(connected(&mut p, 1, t0), vec![]);
    assert_eq!(p.gauges(&h), gauges(1, 0, 0, 0));
    assert_eq!(p.metrics().connect_failures, 0);
}

#[test]
fn a_reused_slab_key_replaces_the_stale_record() {
    let t0 = Instant::now();
    let mut p = pool();
    let h = host();
    open_idle(&mut p, &h, &[1], t0);
    checkout(&mut p, &h, 2, t0);
    checkout(&mut p, &h, 3, t0);
    // The reactor reuses key 1 without having told the pool: the old
    // record goes, and the in-use count with it.
    p.connecting(&h, 1, t0);
    assert_eq!(p.gauges(&h), gauges(0, 0, 1, 1));
}

#[test]
fn next_deadline_is_the_earliest_of_all_timers() {
    let t0 = Instant::now();
    let mut p = pool();
    let (a, b) = (host(), other_host());
    assert_eq!(p.next_deadline(), None);
    open_idle(&mut p, &a, &[1], t0);
    checkout(&mut p, &b, 5, t0 + ms(500));
    p.connecting(&b, 2, t0 + ms(500));
    // Connect timeout (3.5 s) before idle timeout (4 s) and queue timeout (5.5 s).
    assert_eq!(p.next_deadline(), Some(t0 + ms(3500)));
    p.connecting(&b, 2, t0 + ms(500));
    let mut out = Vec::new();
    p.connect_failed(2, &mut out);
    assert_eq!(p.next_deadline(), Some(t0 + ms(4000)));
}
