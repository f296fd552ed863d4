//! The outcome of one `cairn-bench` run, printed as text or as one JSON
//! object (hand-written: the fields are few and flat, no serde needed).
//!
//! Latencies are recorded in nanoseconds and reported in milliseconds.
//! Tests: below (`json_*`, `text_*`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::histogram::Histogram;
use crate::options::Options;

/// At most this many distinct error messages are kept (with counts).
pub const MAX_ERROR_KINDS: usize = 16;

/// Failed requests by message, bounded to `MAX_ERROR_KINDS` kinds.
#[derive(Clone, Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub by_message: BTreeMap<String, u64>,
}

impl Errors {
    pub fn record(&mut self, message: String) {
        self.count += 1;
        if self.by_message.len() < MAX_ERROR_KINDS || self.by_message.contains_key(&message) {
            *self.by_message.entry(message).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for (m, n) in other.by_message {
            if self.by_message.len() < MAX_ERROR_KINDS || self.by_message.contains_key(&m) {
                *self.by_message.entry(m).or_default() += n;
            }
        }
    }
}

/// Watch-specific results: events delivered to the watchers.
#[derive(Clone, Debug, Default)]
pub struct EventStats {
    pub received: u64,
    pub expected: u64,
    /// From the first put to the last event received.
    pub elapsed_secs: f64,
    /// Put sent → event received, per event.
    pub latency: Histogram,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub workload: &'static str,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    pub total: u64,
    pub ok: u64,
    pub errors: Errors,
    pub elapsed_secs: f64,
    /// Per successful request.
    pub latency: Histogram,
    /// Set when the server answered Unimplemented (the run stopped there).
    pub unimplemented: Option<String>,
    pub events: Option<EventStats>,
}

impl Report {
    pub fn new(o: &Options) -> Report {
        Report {
            workload: o.workload.name(),
            endpoints: o.endpoints.clone(),
            clients: o.clients,
            conns: o.conns,
            total: o.total,
            ok: 0,
            errors: Errors::default(),
            elapsed_secs: 0.0,
            latency: Histogram::new(),
            unimplemented: None,
            events: None,
        }
    }

    pub fn requests_per_sec(&self) -> f64 {
        rate(self.ok, self.elapsed_secs)
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cairn-bench {}: {} requests, {} clients, {} conns, endpoints {}",
            self.workload,
            self.total,
            self.clients,
            self.conns,
            self.endpoints.join(",")
        );
        if let Some(why) = &self.unimplemented {
            let _ = writeln!(s, "  UNIMPLEMENTED by the server: {why}");
            return s;
        }
        let _ = writeln!(s, "  elapsed    {:.3} s", self.elapsed_secs);
        let _ = writeln!(s, "  ok         {}", self.ok);
        let _ = writeln!(s, "  errors     {}", self.errors.count);
        for (m, n) in &self.errors.by_message {
            let _ = writeln!(s, "    {n} x {m}");
        }
        let _ = writeln!(s, "  req/s      {:.1}", self.requests_per_sec());
        let _ = writeln!(s, "  latency ms {}", latency_text(&self.latency));
        if let Some(e) = &self.events {
            let _ = writeln!(
                s,
                "  events     {} of {} expected in {:.3} s",
                e.received, e.expected, e.elapsed_secs
            );
            let _ = writeln!(s, "  events/s   {:.1}", rate(e.received, e.elapsed_secs));
            let _ = writeln!(s, "  put→event  ms {}", latency_text(&e.latency));
        }
        s
    }

    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(s, "\"workload\":{}", json_str(self.workload));
        let eps: Vec<String> = self.endpoints.iter().map(|e| json_str(e)).collect();
        let _ = write!(s, ",\"endpoints\":[{}]", eps.join(","));
        let _ = write!(
            s,
            ",\"clients\":{},\"conns\":{},\"total\":{},\"ok\":{},\"errors\":{}",
            self.clients, self.conns, self.total, self.ok, self.errors.count
        );
        let msgs: Vec<String> = self
            .errors
            .by_message
            .iter()
            .map(|(m, n)| format!("{}:{n}", json_str(m)))
            .collect();
        let _ = write!(s, ",\"error_messages\":{{{}}}", msgs.join(","));
        let _ = write!(
            s,
            ",\"elapsed_secs\":{},\"requests_per_sec\":{}",
            json_f64(self.elapsed_secs),
            json_f64(self.requests_per_sec())
        );
        let _ = write!(s, ",\"latency_ms\":{}", latency_json(&self.latency));
        let _ = write!(
            s,
            ",\"unimplemented\":{}",
            self.unimplemented
                .as_deref()
                .map_or("null".into(), json_str)
        );
        match &self.events {
            None => s.push_str(",\"events\":null"),
            Some(e) => {
                let _ = write!(
                    s,
                    ",\"events\":{{\"received\":{},\"expected\":{},\"elapsed_secs\":{},\"events_per_sec\":{},\"latency_ms\":{}}}",
                    e.received,
                    e.expected,
                    json_f64(e.elapsed_secs),
                    json_f64(rate(e.received, e.elapsed_secs)),
                    latency_json(&e.latency)
                );
            }
        }
        s.push('}');
        s
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The reported points: (name, quantile); max is exact.
const POINTS: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)];

fn latency_text(h: &Histogram) -> String {
    let mut s = format!("min {:.3} mean {:.3}", ms(h.min()), h.mean() / 1e6);
    for (name, q) in POINTS {
        let _ = write!(s, " {} {:.3}", name.replace('_', "."), ms(h.quantile(q)));
    }
    let _ = write!(s, " max {:.3}", ms(h.max()));
    s
}

fn latency_json(h: &Histogram) -> String {
    let mut s = format!(
        "{{\"count\":{},\"min\":{},\"mean\":{}",
        h.count(),
        json_f64(ms(h.min())),
        json_f64(h.mean() / 1e6)
    );
    for (name, q) in POINTS {
        let _ = write!(s, ",\"{name}\":{}", json_f64(ms(h.quantile(q))));
    }
    let _ = write!(s, ",\"max\":{}}}", json_f64(ms(h.max())));
    s
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{:.4}", v)
    } else {
        "null".into()
    }
}

fn json_str(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse;

    fn report() -> Report {
        let o = parse(&["put".to_string(), "--clients=4".into()]).expect("valid");
        let mut r = Report::new(&o);
        for v in 1..=1000u64 {
            r.latency.record(v * 1_000_000);
        }
        r.ok = 1000;
        r.elapsed_secs = 2.0;
        r.errors.record("boom \"quoted\"\n".into());
        r
    }

    #[test]
    fn json_carries_rate_quantiles_and_escaped_errors() {
        let r = report();
        let j = r.to_json();
        assert!(j.starts_with("{\"workload\":\"put\""), "{j}");
        assert!(j.contains("\"requests_per_sec\":500.0000"), "{j}");
        let p50 = ms(r.latency.quantile(0.5));
        assert!((p50 - 500.0).abs() <= 500.0 / 128.0, "p50 {p50}");
        assert!(j.contains(&format!("\"p50\":{p50:.4}")), "{j}");
        assert!(j.contains("\"max\":1000.0000"), "{j}");
        assert!(j.contains("\"boom \\\"quoted\\\"\\n\":1"), "{j}");
        assert!(j.contains("\"unimplemented\":null"), "{j}");
        assert!(j.contains("\"events\":null"), "{j}");
        assert!(j.ends_with('}'));
    }

    #[test]
    fn text_of_an_unimplemented_run_says_so_and_nothing_else() {
        let mut r = report();
        r.unimplemented = Some("unknown service etcdserverpb.Watch".into());
        let t = r.to_text();
        assert!(
            t.contains("UNIMPLEMENTED by the server: unknown service"),
            "{t}"
        );
        assert!(!t.contains("req/s"), "{t}");
        assert!(r.to_json().contains("\"unimplemented\":\"unknown service"));
    }

    #[test]
    fn error_kinds_are_bounded_but_all_errors_counted() {
        let mut e = Errors::default();
        for i in 0..100 {
            e.record(format!("error {i}"));
        }
        e.record("error 0".into());
        assert_eq!(e.count, 101);
        assert_eq!(e.by_message.len(), MAX_ERROR_KINDS);
        assert_eq!(e.by_message["error 0"], 2);
    }
}
