//! The server's log lines. By default JSON, one object a line, with the
//! field names etcd's zap logger writes — `level`, `ts` (RFC 3339, UTC,
//! microseconds), `caller` (`file:line`), `msg` — followed by the event's
//! own fields (numbers and booleans as JSON values, everything else as
//! strings), so log shippers that parse etcd's logs parse cairn's.
//! `--log-format text` gives lines for people instead (colours only on a
//! terminal). `--log-outputs` (`Outputs`) sends every line to stderr,
//! stdout and files.
//! Tests: the unit tests below; `tests/probes.rs` parses a member's log.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where the log goes (`--log-outputs`): every line to each of them.
#[derive(Clone)]
pub struct Outputs(std::sync::Arc<Vec<std::sync::Mutex<Box<dyn std::io::Write + Send>>>>);

impl Outputs {
    /// Opens `stderr`, `stdout` and files (appended to, created if
    /// missing); `Err` names a file that cannot be opened.
    pub fn open(names: &[String]) -> Result<Outputs, String> {
        let mut sinks: Vec<std::sync::Mutex<Box<dyn std::io::Write + Send>>> = Vec::new();
        for name in names {
            let sink: Box<dyn std::io::Write + Send> = match name.as_str() {
                "stderr" | "default" => Box::new(std::io::stderr()),
                "stdout" => Box::new(std::io::stdout()),
                path => Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("cannot open log output {path}: {e}"))?,
                ),
            };
            sinks.push(std::sync::Mutex::new(sink));
        }
        Ok(Outputs(std::sync::Arc::new(sinks)))
    }

    /// Whether every output is a terminal (then colours are welcome).
    pub fn all_terminals(names: &[String]) -> bool {
        use std::io::IsTerminal as _;
        names.iter().all(|n| match n.as_str() {
            "stderr" | "default" => std::io::stderr().is_terminal(),
            "stdout" => std::io::stdout().is_terminal(),
            _ => false,
        })
    }
}

impl std::io::Write for Outputs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for sink in self.0.iter() {
            if let Ok(mut s) = sink.lock() {
                s.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for sink in self.0.iter() {
            if let Ok(mut s) = sink.lock() {
                s.flush()?;
            }
        }
        Ok(())
    }
}

/// zap's level names.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// `s` as a JSON string (quotes included).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Unix time as RFC 3339 in UTC with microseconds.
pub fn rfc3339(unix_micros: u128) -> String {
    let secs = (unix_micros / 1_000_000) as i64;
    let micros = (unix_micros % 1_000_000) as u32;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::gofmt::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The event's message and its other fields, as JSON members.
#[derive(Default)]
struct Fields {
    msg: String,
    rest: String,
}

impl Fields {
    fn push(&mut self, name: &str, json_value: String) {
        let _ = write!(self.rest, ",{}:{json_value}", json_string(name));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.msg = text;
        } else {
            self.push(field.name(), json_string(&text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_owned();
        } else {
            self.push(field.name(), json_string(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), value.to_string());
    }
}

/// One log line as etcd's zap logger writes it.
pub fn json_line(
    level: &Level,
    unix_micros: u128,
    caller: &str,
    msg: &str,
    fields: &str,
) -> String {
    format!(
        "{{\"level\":{},\"ts\":{},\"caller\":{},\"msg\":{}{fields}}}",
        json_string(level_name(level)),
        json_string(&rfc3339(unix_micros)),
        json_string(caller),
        json_string(msg)
    )
}

/// The `tracing-subscriber` format of `--log-format json`.
pub struct EtcdJson;

impl<S, N> FormatEvent<S, N> for EtcdJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let caller = match (meta.file(), meta.line()) {
            (Some(f), Some(l)) => format!("{}:{l}", f.trim_start_matches("src/")),
            _ => meta.target().to_owned(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        writeln!(
            writer,
            "{}",
            json_line(meta.level(), now, &caller, &fields.msg, &fields.rest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_etcds_fields_first() {
        let line = json_line(
            &Level::WARN,
            1_765_000_000_123_456,
            "server/node.rs:12",
            "a \"quoted\"\nmessage",
            ",\"member\":\"a1\",\"index\":7",
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["ts"], "2025-12-06T05:46:40.123456Z");
        assert_eq!(v["caller"], "server/node.rs:12");
        assert_eq!(v["msg"], "a \"quoted\"\nmessage");
        assert_eq!(v["member"], "a1");
        assert_eq!(v["index"], 7);
        assert!(line.starts_with("{\"level\":\"warn\",\"ts\":"));
    }

    #[test]
    fn rfc3339_dates_are_civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(
            rfc3339(4_102_444_799_999_999),
            "2099-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(json_string("a\u{1}b\\"), "\"a\\u0001b\\\\\"");
    }
}
