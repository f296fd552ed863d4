//! What a member measures about itself for `/metrics`, and the Prometheus
//! text format it is written in.
//!
//! The counters live where the work happens and are read when scraped:
//! `Histogram` (atomic buckets, etcd's bucket layouts below), `grpc`
//! (every client RPC by service, method, type and status code, counted by a
//! tower layer around the client port's gRPC router, as go-grpc-prometheus
//! counts etcd's), `peer` (bytes, failures and round trips of the Raft
//! transport per peer) and `process` (the process's memory, CPU and file
//! descriptors, read from `/proc`). `Exposition` writes the text format
//! (version 0.0.4) that Prometheus scrapes.
//! The families and their names are chosen in `src/api/metrics.rs`;
//! `tests/metrics.rs` checks them against etcd's and with a real Prometheus.

pub mod grpc;
pub mod peer;
pub mod process;

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's disk histograms (WAL fsync, backend commit): 1 ms doubling to 8.192 s.
pub const DISK_BUCKETS_SECS: [f64; 14] = exponential(0.001);
/// etcd's peer round-trip histogram: 100 µs doubling to 3.2768 s.
pub const PEER_RTT_BUCKETS_SECS: [f64; 16] = exponential(0.0001);
/// go-grpc-prometheus's handling-time buckets (Prometheus's defaults).
pub const GRPC_HANDLING_BUCKETS_SECS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const fn exponential<const N: usize>(start: f64) -> [f64; N] {
    let mut out = [0.0; N];
    let mut i = 0;
    let mut v = start;
    while i < N {
        out[i] = v;
        v *= 2.0;
        i += 1;
    }
    out
}

/// A histogram of durations with fixed upper bounds, updated without locks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the last is above every bound).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Cumulative counts per upper bound, then the total (`+Inf`).
    pub fn cumulative(&self) -> Vec<(Option<f64>, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied(), total));
        }
        out
    }

    pub fn sum_secs(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Prometheus's text exposition format, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let cumulative = h.cumulative();
        for (bound, count) in &cumulative {
            let le = bound.map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            self.out.push_str(name);
            self.out.push_str("_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        let total = cumulative.last().map_or(0, |(_, c)| *c);
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", h.sum_secs());
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {total}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels
        .iter()
        .copied()
        .chain(le.map(|le| ("le", le)).into_iter())
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(&DISK_BUCKETS_SECS);
        h.observe(Duration::from_micros(500)); // ≤ 1 ms
        h.observe(Duration::from_millis(3)); // ≤ 4 ms
        h.observe(Duration::from_secs(20)); // above every bound
        let mut e = Exposition::new();
        e.family("x_seconds", Kind::Histogram, "a test");
        e.histogram("x_seconds", &[("To", "a\"b")], &h);
        let text = e.finish();
        assert!(
            text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"0.002\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"0.004\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"8.192\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_sum{To=\"a\\\"b\"} 20.0035\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_count{To=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(text.starts_with("# HELP x_seconds a test\n# TYPE x_seconds histogram\n"));
    }

    #[test]
    fn bucket_layouts_are_etcds() {
        assert_eq!(DISK_BUCKETS_SECS[0], 0.001);
        assert_eq!(DISK_BUCKETS_SECS[13], 8.192);
        assert_eq!(PEER_RTT_BUCKETS_SECS[0], 0.0001);
        assert_eq!(PEER_RTT_BUCKETS_SECS[15], 3.2768);
        assert_eq!(
            PEER_RTT_BUCKETS_SECS.map(|b| b.to_string())[1..4],
            ["0.0002", "0.0004", "0.0008"]
        );
    }
}
