//! The v2 API's JSON, byte for byte as etcd's Go encoder writes it: fields
//! in etcd's order, empty ones left out, strings escaped as Go escapes them
//! (`<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes), times in RFC 3339
//! with nanoseconds and trailing zeros dropped.

use std::fmt::Write as _;

use super::{Event, NodeView};

pub use crate::gofmt::json_quote as go_quote;

/// Unix nanoseconds as Go's `time.Time` JSON in UTC:
/// `2006-01-02T15:04:05.999999999Z`, trailing zeros of the fraction dropped.
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::gofmt::civil_from_days(days);
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
