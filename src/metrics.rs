//! The operator's figures, sans-IO: counters the reactor bumps as things
//! happen (sessions, requests by method and outcome with a latency
//! histogram, bytes), and the Prometheus text format (version 0.0.4) of
//! those plus a snapshot of gauges the reactor reads when `/metrics` is
//! asked for (sessions, children, the pool, health, RSS, descriptors).
//! Names follow Prometheus conventions: `mcphop_` prefix, `_total` for
//! counters, `_seconds` and `_bytes` units.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use crate::health::Health;
use crate::mcp::router::{Completion, Outcome};
use crate::pool::{HostGauges, PoolMetrics};

/// Upper bounds (seconds) of the request latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];
/// Distinct method labels kept; beyond them, methods count as `other` (a
/// client chooses method names, and label sets must stay bounded).
pub const MAX_METHOD_LABELS: usize = 64;

/// Why a session ended, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndReason {
    /// The client sent DELETE, or closed its legacy stream.
    Client,
    IdleTimeout,
    /// The upstream (child or server) went away or refused it.
    Upstream,
    Shutdown,
    Other,
}

impl EndReason {
    /// The label for a session's end reason as the core words it.
    pub fn of(reason: &str) -> EndReason {
        let reason = reason.to_ascii_lowercase();
        if reason.contains("client") {
            EndReason::Client
        } else if reason.contains("idle") {
            EndReason::IdleTimeout
        } else if reason.contains("shut") {
            EndReason::Shutdown
        } else if reason.contains("upstream") || reason.contains("child") {
            EndReason::Upstream
        } else {
            EndReason::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            EndReason::Client => "client",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Upstream => "upstream",
            EndReason::Shutdown => "shutdown",
            EndReason::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative), the last one past every bound.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_created: u64,
    sessions_ended: BTreeMap<EndReason, u64>,
    /// By method, one histogram per outcome (`Outcome::ALL` order).
    requests: BTreeMap<String, Vec<Histogram>>,
    /// Requests refused by inbound authentication: 401 (no or a bad
    /// token), 503 (the issuer's keys could not be had).
    auth_refusals: (u64, u64),
}

/// What the reactor reads for one scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions_active: usize,
    pub children_live: usize,
    pub children_spawned: u64,
    pub children_exited: u64,
    pub children_killed: u64,
    /// Per upstream host: its gauges, and its health.
    pub hosts: Vec<(String, HostGauges, Health)>,
    /// Each HTTP server's pool counters, by server name.
    pub pools: Vec<(String, PoolMetrics)>,
    /// Each stdio server's health, by server name.
    pub commands: Vec<(String, Health)>,
    /// Sessions refused by the limits per client: over the session
    /// limit, over the rate.
    pub limit_refusals: (u64, u64),
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl Metrics {
    /// A request was refused by authentication with `status`.
    pub fn auth_refused(&mut self, status: u16) {
        if status == 401 {
            self.auth_refusals.0 += 1;
        } else {
            self.auth_refusals.1 += 1;
        }
    }

    pub fn session_created(&mut self) {
        self.sessions_created += 1;
    }

    pub fn session_ended(&mut self, reason: &str) {
        *self
            .sessions_ended
            .entry(EndReason::of(reason))
            .or_default() += 1;
    }

    /// A client request ended at `now`.
    pub fn request_done(&mut self, completion: &Completion, now: Instant) {
        let seconds = now
            .saturating_duration_since(completion.started)
            .as_secs_f64();
        let known = self.requests.contains_key(&completion.method);
        let method = if known || self.requests.len() < MAX_METHOD_LABELS {
            completion.method.as_str()
        } else {
            "other"
        };
        let slot = Outcome::ALL
            .iter()
            .position(|outcome| *outcome == completion.outcome)
            .unwrap_or(0);
        let histograms = match self.requests.get_mut(method) {
            Some(histograms) => histograms,
            None => self
                .requests
                .entry(method.to_string())
                .or_insert_with(|| vec![Histogram::default(); Outcome::ALL.len()]),
        };
        histograms[slot].observe(seconds);
    }

    /// The Prometheus text format of everything (`bytes_in`, `bytes_out`:
    /// what clients sent and were sent).
    pub fn render(&self, snapshot: &Snapshot, bytes_in: u64, bytes_out: u64) -> String {
        let mut out = String::with_capacity(4096);
        gauge(
            &mut out,
            "mcphop_sessions_active",
            "Sessions open now.",
            snapshot.sessions_active as u64,
        );
        counter(
            &mut out,
            "mcphop_sessions_created_total",
            "Sessions created.",
            self.sessions_created,
        );
        header(
            &mut out,
            "mcphop_sessions_ended_total",
            "counter",
            "Sessions ended, by reason.",
        );
        for reason in [
            EndReason::Client,
            EndReason::IdleTimeout,
            EndReason::Upstream,
            EndReason::Shutdown,
            EndReason::Other,
        ] {
            let count = self.sessions_ended.get(&reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mcphop_sessions_ended_total{{reason=\"{}\"}} {count}",
                reason.name()
            );
        }
        gauge(
            &mut out,
            "mcphop_children_live",
            "stdio children alive now.",
            snapshot.children_live as u64,
        );
        counter(
            &mut out,
            "mcphop_children_spawned_total",
            "stdio children spawned.",
            snapshot.children_spawned,
        );
        counter(
            &mut out,
            "mcphop_children_exited_total",
            "stdio children reaped.",
            snapshot.children_exited,
        );
        counter(
            &mut out,
            "mcphop_children_killed_total",
            "stdio children sent SIGKILL.",
            snapshot.children_killed,
        );
        self.render_requests(&mut out);
        counter(
            &mut out,
            "mcphop_client_received_bytes_total",
            "Bytes read from clients.",
            bytes_in,
        );
        counter(
            &mut out,
            "mcphop_client_sent_bytes_total",
            "Bytes written to clients.",
            bytes_out,
        );
        render_upstreams(&mut out, snapshot);
        header(
            &mut out,
            "mcphop_client_limit_refusals_total",
            "counter",
            "Sessions refused by the limits per client, by limit.",
        );
        let (sessions, rate) = snapshot.limit_refusals;
        let _ = writeln!(
            out,
            "mcphop_client_limit_refusals_total{{limit=\"sessions\"}} {sessions}"
        );
        let _ = writeln!(
            out,
            "mcphop_client_limit_refusals_total{{limit=\"rate\"}} {rate}"
        );
        header(
            &mut out,
            "mcphop_auth_refusals_total",
            "counter",
            "Requests refused by authentication: 401 for no or a bad token, 503 when the issuer's keys cannot be had.",
        );
        let (unauthorized, unavailable) = self.auth_refusals;
        let _ = writeln!(
            out,
            "mcphop_auth_refusals_total{{status=\"401\"}} {unauthorized}"
        );
        let _ = writeln!(
            out,
            "mcphop_auth_refusals_total{{status=\"503\"}} {unavailable}"
        );
        if let Some(rss) = snapshot.rss_bytes {
            gauge(
                &mut out,
                "mcphop_process_resident_memory_bytes",
                "Resident set size.",
                rss,
            );
        }
        if let Some(fds) = snapshot.open_fds {
            gauge(
                &mut out,
                "mcphop_process_open_fds",
                "Open file descriptors.",
                fds,
            );
        }
        out
    }

    fn render_requests(&self, out: &mut String) {
        let name = "mcphop_requests_total";
        header(
            out,
            name,
            "counter",
            "Client requests ended, by method and outcome.",
        );
        for (method, histograms) in &self.requests {
            for (outcome, histogram) in Outcome::ALL.iter().zip(histograms) {
                if histogram.count > 0 {
                    let labels = labels(method, *outcome);
                    let _ = writeln!(out, "{name}{{{labels}}} {}", histogram.count);
                }
            }
        }
        let name = "mcphop_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Client request latency, by method and outcome.",
        );
        for (method, histograms) in &self.requests {
            for (outcome, histogram) in Outcome::ALL.iter().zip(histograms) {
                if histogram.count == 0 {
                    continue;
                }
                let labels = labels(method, *outcome);
                let mut cumulative = 0;
                for (bound, count) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
                    cumulative += count;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.count);
            }
        }
    }
}

fn render_upstreams(out: &mut String, snapshot: &Snapshot) {
    header(
        out,
        "mcphop_upstream_healthy",
        "gauge",
        "1 when the upstream is healthy, 0 when not, -1 while unknown.",
    );
    let value = |health: Health| match health {
        Health::Healthy => 1,
        Health::Unhealthy => 0,
        Health::Unknown => -1,
    };
    let healths = snapshot
        .hosts
        .iter()
        .map(|(host, _, health)| (host, health))
        .chain(
            snapshot
                .commands
                .iter()
                .map(|(server, health)| (server, health)),
        );
    for (upstream, health) in healths {
        let _ = writeln!(
            out,
            "mcphop_upstream_healthy{{upstream=\"{}\"}} {}",
            escape(upstream),
            value(*health)
        );
    }
    let gauges: [(&str, &str, ReadGauge); 5] = [
        (
            "mcphop_pool_idle_connections",
            "Idle pooled connections.",
            |g| g.idle,
        ),
        (
            "mcphop_pool_busy_connections",
            "Pooled connections carrying a request.",
            |g| g.in_use,
        ),
        (
            "mcphop_pool_connecting_connections",
            "Pooled connections being opened.",
            |g| g.connecting,
        ),
        (
            "mcphop_pool_waiting_requests",
            "Requests waiting for a pooled connection.",
            |g| g.waiting,
        ),
        (
            "mcphop_upstream_streams",
            "Dedicated upstream stream connections.",
            |g| g.streams,
        ),
    ];
    for (name, help, read) in gauges {
        if snapshot.hosts.is_empty() {
            continue;
        }
        header(out, name, "gauge", help);
        for (host, host_gauges, _) in &snapshot.hosts {
            let _ = writeln!(
                out,
                "{name}{{host=\"{}\"}} {}",
                escape(host),
                read(host_gauges)
            );
        }
    }
    if snapshot.pools.is_empty() {
        return;
    }
    let counters: [(&str, &str, ReadCounter); 7] = [
        (
            "mcphop_pool_hits_total",
            "Checkouts served by an idle connection.",
            |p| p.hits,
        ),
        ("mcphop_pool_misses_total", "Checkouts that queued.", |p| {
            p.misses
        }),
        (
            "mcphop_pool_connects_total",
            "Upstream connects completed.",
            |p| p.connects,
        ),
        (
            "mcphop_pool_connect_failures_total",
            "Upstream connects failed.",
            |p| p.connect_failures,
        ),
        (
            "mcphop_pool_reuses_total",
            "Requests on a reused connection.",
            |p| p.reuses,
        ),
        (
            "mcphop_pool_retries_total",
            "Requests sent again after a failure.",
            |p| p.retries,
        ),
        (
            "mcphop_pool_waiter_timeouts_total",
            "Requests that waited too long for a connection.",
            |p| p.waiter_timeouts,
        ),
    ];
    for (name, help, read) in counters {
        header(out, name, "counter", help);
        for (server, pool) in &snapshot.pools {
            let _ = writeln!(
                out,
                "{name}{{server=\"{}\"}} {}",
                escape(server),
                read(pool)
            );
        }
    }
    header(
        out,
        "mcphop_pool_evictions_total",
        "counter",
        "Pooled connections closed, by cause.",
    );
    for (server, pool) in &snapshot.pools {
        for cause in crate::pool::EvictCause::ALL {
            let _ = writeln!(
                out,
                "mcphop_pool_evictions_total{{server=\"{}\",cause=\"{}\"}} {}",
                escape(server),
                cause.name(),
                pool.evictions(cause)
            );
        }
    }
}

/// Reads one counter of a pool's.
type ReadCounter = fn(&PoolMetrics) -> u64;

/// Reads one figure of a host's gauges.
type ReadGauge = fn(&HostGauges) -> usize;

fn labels(method: &str, outcome: Outcome) -> String {
    format!(
        "method=\"{}\",outcome=\"{}\"",
        escape(method),
        outcome.name()
    )
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requests_are_counted_by_method_and_outcome_with_latency() {
        let mut metrics = Metrics::default();
        let start = Instant::now();
        for outcome in [Outcome::Ok, Outcome::Ok, Outcome::Error] {
            metrics.request_done(
                &Completion {
                    method: "tools/call".into(),
                    outcome,
                    started: start,
                },
                start + Duration::from_millis(3),
            );
        }
        let text = metrics.render(&Snapshot::default(), 0, 0);
        assert!(text.contains("mcphop_requests_total{method=\"tools/call\",outcome=\"ok\"} 2"));
        assert!(text.contains("mcphop_requests_total{method=\"tools/call\",outcome=\"error\"} 1"));
        assert!(text.contains(
            "mcphop_request_duration_seconds_bucket{method=\"tools/call\",outcome=\"ok\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "mcphop_request_duration_seconds_bucket{method=\"tools/call\",outcome=\"ok\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "mcphop_request_duration_seconds_count{method=\"tools/call\",outcome=\"ok\"} 2"
        ));
    }

    #[test]
    fn method_labels_are_bounded_and_escaped() {
        let mut metrics = Metrics::default();
        let now = Instant::now();
        for n in 0..MAX_METHOD_LABELS + 10 {
            metrics.request_done(
                &Completion {
                    method: format!("m{n}\"\n"),
                    outcome: Outcome::Ok,
                    started: now,
                },
                now,
            );
        }
        assert_eq!(metrics.requests.len(), MAX_METHOD_LABELS + 1);
        let text = metrics.render(&Snapshot::default(), 0, 0);
        assert!(text.contains("method=\"other\",outcome=\"ok\"} 10"));
        assert!(text.contains("method=\"m0\\\"\\n\""));
    }

    #[test]
    fn end_reasons_become_labels() {
        assert_eq!(EndReason::of("client sent DELETE"), EndReason::Client);
        assert_eq!(EndReason::of("idle for 30m"), EndReason::IdleTimeout);
        assert_eq!(
            EndReason::of("mcphop is shutting down"),
            EndReason::Shutdown
        );
        assert_eq!(EndReason::of("child pid 3 exited"), EndReason::Upstream);
    }
}
