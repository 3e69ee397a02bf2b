//! The pool's tests, on a virtual clock: every `now` is an offset from one
//! `Instant`, so timeouts are exact and instant. The helpers here run one
//! pool call and return the actions it appended.

use super::*;

mod reuse;
mod waiting;

type Act = PoolAction<u32>;

fn host() -> HostKey {
    HostKey::new(Scheme::Http, "127.0.0.1", 8000)
}

fn other_host() -> HostKey {
    HostKey::new(Scheme::Https, "example.test", 443)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pool_with(config: PoolConfig) -> Pool<u32> {
    Pool::new(config)
}

fn pool() -> Pool<u32> {
    pool_with(PoolConfig::default())
}

fn assign(waiter: u32, conn: ConnId, reused: bool, peek: bool) -> Act {
    PoolAction::Assign {
        waiter,
        conn,
        reused,
        peek,
    }
}

fn connect(host: &HostKey) -> Act {
    PoolAction::Connect { host: host.clone() }
}

fn close(conn: ConnId, cause: EvictCause) -> Act {
    PoolAction::Close { conn, cause }
}

fn checkout(pool: &mut Pool<u32>, h: &HostKey, waiter: u32, now: Instant) -> Vec<Act> {
    let mut out = Vec::new();
    pool.checkout(h, waiter, now, &mut out);
    out
}

fn release(pool: &mut Pool<u32>, conn: ConnId, reusable: bool, now: Instant) -> Vec<Act> {
    let mut out = Vec::new();
    pool.release(conn, reusable, now, &mut out);
    out
}

fn expire(pool: &mut Pool<u32>, now: Instant) -> Vec<Act> {
    let mut out = Vec::new();
    pool.expire(now, &mut out);
    out
}

fn connected(pool: &mut Pool<u32>, conn: ConnId, now: Instant) -> Vec<Act> {
    let mut out = Vec::new();
    pool.connected(conn, now, &mut out);
    out
}

fn evict(pool: &mut Pool<u32>, conn: ConnId, cause: EvictCause) -> Vec<Act> {
    let mut out = Vec::new();
    pool.evict(conn, cause, &mut out);
    out
}

/// A checkout that has to connect, carried through to its `Assign`.
fn open(pool: &mut Pool<u32>, h: &HostKey, waiter: u32, conn: ConnId, now: Instant) {
    assert_eq!(checkout(pool, h, waiter, now), vec![connect(h)]);
    pool.connecting(h, conn, now);
    assert_eq!(
        connected(pool, conn, now),
        vec![assign(waiter, conn, false, false)]
    );
}

/// Opens `conns` at once and releases them in order, so the last is on
/// top of the idle stack.
fn open_idle(pool: &mut Pool<u32>, h: &HostKey, conns: &[ConnId], now: Instant) {
    for &c in conns {
        open(pool, h, c as u32 + 100, c, now);
    }
    for &c in conns {
        assert_eq!(release(pool, c, true, now), vec![]);
    }
}

fn gauges(idle: usize, in_use: usize, connecting: usize, waiting: usize) -> HostGauges {
    HostGauges {
        idle,
        in_use,
        connecting,
        waiting,
        streams: 0,
    }
}
