//! The v2 API's JSON, byte for byte as etcd's Go encoder writes it: fields
//! in etcd's order, empty ones left out, strings escaped as Go escapes them
//! (`<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes), times in RFC 3339
//! with nanoseconds and trailing zeros dropped.

use std::fmt::Write as _;

use super::{Event, NodeView};

/// A JSON string as Go's `encoding/json` writes it.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Unix nanoseconds as Go's `time.Time` JSON in UTC:
/// `2006-01-02T15:04:05.999999999Z`, trailing zeros of the fraction dropped.
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The calendar date of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn node(out: &mut String, n: &NodeView) {
    let mut sep = "";
    out.push('{');
    let mut field = |out: &mut String, name: &str, value: &str| {
        let _ = write!(out, "{sep}\"{name}\":{value}");
        sep = ",";
    };
    if !n.key.is_empty() {
        field(out, "key", &go_quote(&n.key));
    }
    if let Some(v) = &n.value {
        field(out, "value", &go_quote(v));
    }
    if n.dir {
        field(out, "dir", "true");
    }
    if let Some(t) = n.expiration {
        field(out, "expiration", &go_quote(&rfc3339_nanos(t)));
    }
    if n.ttl != 0 {
        field(out, "ttl", &n.ttl.to_string());
    }
    if !n.nodes.is_empty() {
        let mut list = String::from("[");
        for (i, c) in n.nodes.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            node(&mut list, c);
        }
        list.push(']');
        field(out, "nodes", &list);
    }
    if n.modified_index != 0 {
        field(out, "modifiedIndex", &n.modified_index.to_string());
    }
    if n.created_index != 0 {
        field(out, "createdIndex", &n.created_index.to_string());
    }
    out.push('}');
}

/// An event as etcd's handler encodes it (with the encoder's newline).
pub(super) fn event(e: &Event) -> String {
    let mut out = format!("{{\"action\":{}", go_quote(e.action));
    out.push_str(",\"node\":");
    node(&mut out, &e.node);
    if let Some(p) = &e.prev_node {
        out.push_str(",\"prevNode\":");
        node(&mut out, p);
    }
    // etcd's answers never show `refresh`: its handler answers a copy of
    // the event, and the copy leaves the flag out.
    out.push_str("}\n");
    out
}

/// An event with its nodes left out (`noValueOnSuccess=true`).
pub fn event_without_nodes(e: &Event) -> String {
    let mut out = format!("{{\"action\":{}", go_quote(e.action));
    out.push_str("}\n");
    out
}
