//! What etcdctl 3.4 prints, format by format (`-w simple|json|fields|table|
//! protobuf`): Go's quoting (`%q`), Go's `encoding/json` of the Go structs
//! etcdctl prints (field names, `omitempty`, bytes as base64, HTML-safe
//! escapes), the tables of `tablewriter`, and prost's encoding for
//! `protobuf` (the same bytes as gogo-protobuf's for proto3 messages).

use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_proto::mvccpb::KeyValue;

use super::{Failure, EXIT_BAD_FEATURE};

/// An output format (`-w`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
    Protobuf,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, Failure> {
        Ok(match s {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "table" => Format::Table,
            "protobuf" => Format::Protobuf,
            _ => {
                return Err(Failure(
                    EXIT_BAD_FEATURE,
                    "unsupported output format".into(),
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
            Format::Protobuf => "protobuf",
        }
    }

    /// etcdctl's answer to a format a command does not print in.
    pub fn unsupported(self) -> Failure {
        Failure(
            EXIT_BAD_FEATURE,
            format!("{} not supported as output format", self.name()),
        )
    }
}

/// Go's `strconv.Quote` of `b` (as `%q` of a string holding those bytes).
pub fn go_quote_bytes(b: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut rest = b;
    while !rest.is_empty() {
        let (c, len) = match std::str::from_utf8(rest) {
            Ok(s) => (s.chars().next(), s.chars().next().map_or(1, char::len_utf8)),
            Err(e) if e.valid_up_to() > 0 => {
                let s = std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default();
                (s.chars().next(), s.chars().next().map_or(1, char::len_utf8))
            }
            Err(_) => (None, 1),
        };
        match c {
            None => out.push_str(&format!("\\x{:02x}", rest[0])),
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some('\x07') => out.push_str("\\a"),
            Some('\x08') => out.push_str("\\b"),
            Some('\x0c') => out.push_str("\\f"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some('\t') => out.push_str("\\t"),
            Some('\x0b') => out.push_str("\\v"),
            Some(c) if (c as u32) < 0x20 || c == '\x7f' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            Some(c) if !is_go_printable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            Some(c) => out.push(c),
        }
        rest = &rest[len..];
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` good for what keys hold:
/// control and format characters and unassigned planes are not printable.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || (0x80..0xa0).contains(&u)
        || u == 0xad
        || (0x200b..=0x200f).contains(&u)
        || (0x2028..=0x202e).contains(&u)
        || (0x2060..=0x206f).contains(&u)
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xe000..=0xf8ff).contains(&u)
        || u >= 0xf0000)
}

pub fn go_quote(s: &str) -> String {
    go_quote_bytes(s.as_bytes())
}

/// A JSON string as Go's `encoding/json` writes it.
pub use crate::gofmt::json_quote as jstr;

/// A `[]byte` as Go's `encoding/json` writes it: base64, padded.
pub fn jbytes(b: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len() * 4 / 3 + 4);
    out.push('"');
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(ABC[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push('"');
    out
}

/// A JSON object of the fields given (`None`: left out, as `omitempty`).
pub fn obj(fields: &[(&str, Option<String>)]) -> String {
    let inner: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{}:{v}", jstr(k))))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A JSON array (`null` when empty and `nil_when_empty`, as a nil slice).
pub fn arr(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

pub fn nz_u(v: u64) -> Option<String> {
    (v != 0).then(|| v.to_string())
}
pub fn nz_i(v: i64) -> Option<String> {
    (v != 0).then(|| v.to_string())
}
pub fn nz_b(v: bool) -> Option<String> {
    v.then(|| "true".to_owned())
}
pub fn nz_bytes(v: &[u8]) -> Option<String> {
    (!v.is_empty()).then(|| jbytes(v))
}
pub fn nz_str(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| jstr(v))
}
pub fn nz_arr(v: Vec<String>) -> Option<String> {
    (!v.is_empty()).then(|| arr(v))
}

/// `pb.ResponseHeader` in JSON (a nil header is left out by its holder).
pub fn header_json(h: &ResponseHeader) -> String {
    obj(&header_fields(h))
}

/// The header's fields, for the structs that embed it.
pub fn header_fields(h: &ResponseHeader) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("cluster_id", nz_u(h.cluster_id)),
        ("member_id", nz_u(h.member_id)),
        ("revision", nz_i(h.revision)),
        ("raft_term", nz_u(h.raft_term)),
    ]
}

pub fn opt_header(h: &Option<ResponseHeader>) -> Option<String> {
    h.as_ref().map(header_json)
}

pub fn kv_json(kv: &KeyValue) -> String {
    obj(&[
        ("key", nz_bytes(&kv.key)),
        ("create_revision", nz_i(kv.create_revision)),
        ("mod_revision", nz_i(kv.mod_revision)),
        ("version", nz_i(kv.version)),
        ("value", nz_bytes(&kv.value)),
        ("lease", nz_i(kv.lease)),
    ])
}

pub fn kvs_json(kvs: &[KeyValue]) -> Option<String> {
    nz_arr(kvs.iter().map(kv_json).collect())
}

/// The lines of `-w fields` for a header.
pub fn header_fields_text(h: &Option<ResponseHeader>) -> String {
    let h = h.clone().unwrap_or_default();
    format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    )
}

/// The lines of `-w fields` for a key-value (`pfx` "Prev" for previous ones).
pub fn kv_fields_text(pfx: &str, kv: &KeyValue) -> String {
    format!(
        "\"{pfx}Key\" : {}\n\"{pfx}CreateRevision\" : {}\n\"{pfx}ModRevision\" : {}\n\"{pfx}Version\" : {}\n\"{pfx}Value\" : {}\n\"{pfx}Lease\" : {}\n",
        go_quote_bytes(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        go_quote_bytes(&kv.value),
        kv.lease
    )
}

/// `\x66\x6f\x6f` for `foo` (`--hex`).
pub fn hex_escaped(b: &[u8]) -> String {
    b.iter().map(|c| format!("\\x{c:02x}")).collect()
}

/// A key-value as the simple format prints it: the key on its own line
/// (unless only values are asked for), then the value.
pub fn kv_simple(hex: bool, value_only: bool, kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::new();
    let show = |b: &[u8], out: &mut Vec<u8>| {
        if hex {
            out.extend_from_slice(hex_escaped(b).as_bytes());
        } else {
            out.extend_from_slice(b);
        }
        out.push(b'\n');
    };
    if !value_only {
        show(&kv.key, &mut out);
    }
    show(&kv.value, &mut out);
    out
}

/// A table as etcdctl's `tablewriter` draws it: upper-case headers centred,
/// cells aligned right, `+---+` rules.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let headers: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| width(c))
                .chain(std::iter::once(width(h)))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w - width(h);
        let left = gap / 2;
        out += &format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(gap - left));
    }
    out += "|\n";
    out += &rule;
    for row in rows {
        for (i, w) in widths.iter().enumerate() {
            let c = row.get(i).map(String::as_str).unwrap_or("");
            out += &format!("| {}{} ", " ".repeat(w - width(c)), c);
        }
        out += "|\n";
    }
    out += &rule;
    out
}

/// Go's `time.Duration.String()`.
pub fn go_duration_string(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim(format!("{}.{:03}", ns / 1_000, ns % 1_000)));
    }
    if ns < 1_000_000_000 {
        return format!(
            "{}ms",
            trim(format!("{}.{:06}", ns / 1_000_000, ns % 1_000_000))
        );
    }
    let total_s = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (total_s / 3600, (total_s / 60) % 60, total_s % 60);
    let secs = trim(format!("{s}.{frac:09}"));
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quoting_and_json_follow_go() {
        assert_eq!(go_quote_bytes(b"a\"b\n\xff\x01"), "\"a\\\"b\\n\\xff\\x01\"");
        assert_eq!(go_quote("é"), "\"é\"");
        assert_eq!(jstr("<a&b>\u{1}"), "\"\\u003ca\\u0026b\\u003e\\u0001\"");
        assert_eq!(jbytes(b"foo"), "\"Zm9v\"");
        assert_eq!(jbytes(b"ba"), "\"YmE=\"");
        assert_eq!(jbytes(b"b"), "\"Yg==\"");
        assert_eq!(jbytes(b""), "\"\"");
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration_string(Duration::from_nanos(639_400)), "639.4µs");
        assert_eq!(go_duration_string(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration_string(Duration::from_millis(2)), "2ms");
        assert_eq!(go_duration_string(Duration::from_secs(61)), "1m1s");
    }

    #[test]
    fn tables_pad_to_the_widest_cell() {
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(
            t,
            "+-----+----+\n|  A  | BB |\n+-----+----+\n| xyz |  1 |\n+-----+----+\n"
        );
    }
}
