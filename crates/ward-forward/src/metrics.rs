//! Per-sink forwarding metrics, rendered in the Prometheus text exposition format.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `ward_forward_events_total{sink}` | counter | events delivered |
//! | `ward_forward_failures_total{sink}` | counter | failed delivery attempts |
//! | `ward_forward_queue_depth{sink}` | gauge | log events after the cursor (not yet delivered) |
//! | `ward_forward_lag_seconds{sink}` | gauge | age of the oldest undelivered event; 0 when caught up |
//! | `ward_forward_cursor{sink}` | gauge | id of the last delivered log event |
//! | `ward_forward_last_success_timestamp_seconds{sink}` | gauge | last delivery (Unix time; 0 = never) |
//! | `ward_forward_last_error_timestamp_seconds{sink}` | gauge | last failed attempt (Unix time; 0 = never) |

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One sink's counters and gauges; written by its forwarder, read by the API.
#[derive(Debug)]
pub struct SinkMetrics {
    pub name: String,
    delivered: AtomicU64,
    failures: AtomicU64,
    queue_depth: AtomicU64,
    /// Microseconds.
    lag: AtomicI64,
    cursor: AtomicI64,
    /// Unix micros; 0 = never.
    last_success: AtomicI64,
    last_error: AtomicI64,
}

/// A point-in-time copy of one sink's metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub delivered: u64,
    pub failures: u64,
    pub queue_depth: u64,
    pub lag_micros: i64,
    pub cursor: i64,
    pub last_success_micros: i64,
    pub last_error_micros: i64,
}

impl SinkMetrics {
    fn new(name: String) -> SinkMetrics {
        SinkMetrics {
            name,
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            lag: AtomicI64::new(0),
            cursor: AtomicI64::new(0),
            last_success: AtomicI64::new(0),
            last_error: AtomicI64::new(0),
        }
    }

    pub(crate) fn delivered(&self, events: u64) {
        self.delivered.fetch_add(events, Ordering::Relaxed);
        self.last_success
            .store(ward_core::time::now_micros(), Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_error
            .store(ward_core::time::now_micros(), Ordering::Relaxed);
    }

    /// Updates the gauges from the cursor, the newest log id and the time of the oldest
    /// event after the cursor.
    pub(crate) fn observe(&self, cursor: i64, newest: i64, oldest_pending_at: Option<i64>) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.queue_depth.store(
            newest.saturating_sub(cursor).max(0) as u64,
            Ordering::Relaxed,
        );
        let lag = oldest_pending_at
            .map(|at| ward_core::time::now_micros().saturating_sub(at).max(0))
            .unwrap_or(0);
        self.lag.store(lag, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            name: self.name.clone(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            lag_micros: self.lag.load(Ordering::Relaxed),
            cursor: self.cursor.load(Ordering::Relaxed),
            last_success_micros: self.last_success.load(Ordering::Relaxed),
            last_error_micros: self.last_error.load(Ordering::Relaxed),
        }
    }
}

/// The metrics of every configured sink.
#[derive(Debug, Default)]
pub struct Metrics {
    sinks: Vec<Arc<SinkMetrics>>,
}

impl Metrics {
    pub fn new(names: impl IntoIterator<Item = String>) -> Metrics {
        Metrics {
            sinks: names
                .into_iter()
                .map(|n| Arc::new(SinkMetrics::new(n)))
                .collect(),
        }
    }

    pub(crate) fn sink(&self, i: usize) -> Arc<SinkMetrics> {
        self.sinks[i].clone()
    }

    /// The metrics of the sink named `name`.
    pub fn get(&self, name: &str) -> Option<Snapshot> {
        self.sinks
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.snapshot())
    }

    /// Every sink's metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let snaps: Vec<Snapshot> = self.sinks.iter().map(|s| s.snapshot()).collect();
        let mut out = String::new();
        let secs = |micros: i64| micros as f64 / 1e6;
        let families: [Family<'_>; 7] = [
            (
                "ward_forward_events_total",
                "counter",
                "Events delivered to the sink.",
                &|s| s.delivered.to_string(),
            ),
            (
                "ward_forward_failures_total",
                "counter",
                "Failed delivery attempts (each is retried).",
                &|s| s.failures.to_string(),
            ),
            (
                "ward_forward_queue_depth",
                "gauge",
                "Session log events after the sink's cursor, not yet delivered.",
                &|s| s.queue_depth.to_string(),
            ),
            (
                "ward_forward_lag_seconds",
                "gauge",
                "Age of the oldest event not yet delivered; 0 when caught up.",
                &|s| secs(s.lag_micros).to_string(),
            ),
            (
                "ward_forward_cursor",
                "gauge",
                "Id of the last session log event delivered.",
                &|s| s.cursor.to_string(),
            ),
            (
                "ward_forward_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful delivery (0: none since start).",
                &|s| secs(s.last_success_micros).to_string(),
            ),
            (
                "ward_forward_last_error_timestamp_seconds",
                "gauge",
                "Unix time of the last failed delivery attempt (0: none since start).",
                &|s| secs(s.last_error_micros).to_string(),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in &snaps {
                let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", escape(&s.name), value(s));
            }
        }
        out
    }
}

/// One metric family: name, type, help and how to read the value from a snapshot.
type Family<'a> = (&'a str, &'a str, &'a str, &'a dyn Fn(&Snapshot) -> String);

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new(["siem".to_string(), "a\"b".to_string()]);
        m.sink(0).delivered(3);
        m.sink(0).failed();
        m.sink(0)
            .observe(5, 12, Some(ward_core::time::now_micros() - 2_000_000));
        m.sink(1).observe(9, 9, None);
        let text = m.render();
        assert!(
            text.contains("# TYPE ward_forward_events_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("ward_forward_events_total{sink=\"siem\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("ward_forward_failures_total{sink=\"siem\"} 1\n"));
        assert!(text.contains("ward_forward_queue_depth{sink=\"siem\"} 7\n"));
        assert!(text.contains("ward_forward_queue_depth{sink=\"a\\\"b\"} 0\n"));
        assert!(text.contains("ward_forward_lag_seconds{sink=\"a\\\"b\"} 0\n"));
        let lag: f64 = text
            .lines()
            .find(|l| l.starts_with("ward_forward_lag_seconds{sink=\"siem\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((2.0..60.0).contains(&lag), "{lag}");
        let s = m.get("siem").unwrap();
        assert_eq!(
            (s.delivered, s.failures, s.queue_depth, s.cursor),
            (3, 1, 7, 5)
        );
        assert!(s.last_success_micros > 0 && s.last_error_micros > 0);
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
