//! The JSON-lines history format (README.md of this crate): one JSON object
//! per line, each with a single key naming its kind:
//! - `{"op": …}`: one client call (`history::Operation`);
//! - `{"change": …}`: one change of the final committed history;
//! - `{"revisions": {"compact": C, "current": R}}`: that history's bounds;
//! - `{"hold": …}`: one lock acquisition and its fenced writes;
//! - `{"watch": …}`: one watch stream and its events (`watch::WatchStream`);
//! - any other kind (`fault`, `note`, …) is kept for reports and ignored by
//!   the checks. Blank lines are skipped.
//!
//! Tests: `tests` below.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::committed::{CommittedChange, CommittedHistory};
use super::fencing::{FencedWrite, Hold};
use super::history::{Operation, Revision};
use super::watch::WatchStream;

/// `{"revisions": …}`: the committed history's compact and current revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revisions {
    pub compact: Revision,
    pub current: Revision,
}

/// `{"hold": …}`: `fencing::Hold` with an owned release reason and the
/// acquisition time in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub client: u64,
    pub key: String,
    pub token: i64,
    pub acquired_at_ms: u64,
    pub writes: Vec<FencedWrite>,
    #[serde(default)]
    pub release: String,
}

/// Everything a history file holds that the checks read.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Operation>,
    pub changes: Vec<CommittedChange>,
    pub revisions: Option<Revisions>,
    pub holds: Vec<HoldRecord>,
    pub watches: Vec<WatchStream>,
    /// Lines of other kinds, as read.
    pub other: Vec<Json>,
}

/// One line to write.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Record<'a> {
    Op(&'a Operation),
    Change(&'a CommittedChange),
    Revisions(Revisions),
    Hold(&'a HoldRecord),
    Watch(&'a WatchStream),
}

impl Record<'_> {
    /// The record as one line (no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"note\":\"{e}\"}}"))
    }
}

impl History {
    /// Parses a whole file; the error names the line.
    pub fn parse(text: &str) -> Result<History, String> {
        let mut h = History::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            h.push_line(line)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(h)
    }

    fn push_line(&mut self, line: &str) -> Result<(), String> {
        let json: Json = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let Json::Object(map) = &json else {
            return Err("not a JSON object".into());
        };
        let mut entries = map.iter();
        let (Some((kind, body)), None) = (entries.next(), entries.next()) else {
            return Err("an object with exactly one key (the record's kind) expected".into());
        };
        let body = body.clone();
        let err = |e: serde_json::Error| format!("{kind}: {e}");
        match kind.as_str() {
            "op" => self.ops.push(serde_json::from_value(body).map_err(err)?),
            "change" => self
                .changes
                .push(serde_json::from_value(body).map_err(err)?),
            "revisions" => self.revisions = Some(serde_json::from_value(body).map_err(err)?),
            "hold" => self.holds.push(serde_json::from_value(body).map_err(err)?),
            "watch" => self
                .watches
                .push(serde_json::from_value(body).map_err(err)?),
            _ => self.other.push(json),
        }
        Ok(())
    }

    /// The committed history, sorted by revision; `None` if the file has no
    /// `change` and no `revisions` line. Without a `revisions` line the
    /// history counts as complete (nothing compacted) up to its last change.
    pub fn committed(&self) -> Option<CommittedHistory> {
        if self.changes.is_empty() && self.revisions.is_none() {
            return None;
        }
        let mut changes = self.changes.clone();
        changes.sort();
        let mut c = CommittedHistory::complete(changes);
        if let Some(r) = self.revisions {
            c.compact_revision = r.compact;
            c.current_revision = r.current;
        }
        Some(c)
    }

    /// The holds as the fencing checker takes them.
    pub fn fencing_holds(&self) -> Vec<Hold> {
        self.holds
            .iter()
            .map(|h| Hold {
                client: h.client,
                key: h.key.clone(),
                token: h.token,
                acquired_at: std::time::Duration::from_millis(h.acquired_at_ms),
                writes: h.writes.clone(),
                release: release_name(&h.release),
            })
            .collect()
    }
}

/// `Hold::release` is a static name; unknown reasons read as "other".
fn release_name(reason: &str) -> &'static str {
    match reason {
        "unlock" => "unlock",
        "revoke" => "revoke",
        "expire" => "expire",
        "" => "",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{KeyValue, Outcome, Request, Response};

    #[test]
    fn records_round_trip_and_unknown_kinds_are_kept_aside() {
        let get = Operation::ok(
            3,
            10,
            12,
            Request::get("k"),
            Response::Get {
                header_revision: Revision(4),
                kv: Some(KeyValue::new("v1", 2, 4, 2)),
            },
        );
        let put = Operation::unknown(4, 11, Request::put("k", "v2"));
        let change = CommittedChange::new(4, "k", Some("v1"));
        let text = [
            Record::Op(&get).line(),
            Record::Op(&put).line(),
            Record::Change(&change).line(),
            "{\"fault\":{\"kind\":\"kill\"}}".to_owned(),
            String::new(),
        ]
        .join("\n");
        let h = History::parse(&text).expect("parses");
        assert_eq!(h.ops, vec![get, put]);
        assert_eq!(h.changes, vec![change]);
        assert_eq!(h.other.len(), 1);
        let c = h.committed().expect("has changes");
        assert_eq!(c.current_revision, Revision(4));
    }

    #[test]
    fn the_documented_spelling_parses() {
        let text = r#"{"op":{"client":1,"call":5,"ret":9,"input":{"put":{"key":"x","value":"a"}},"output":{"ok":{"put":{"header_revision":2}}}}}
{"op":{"client":2,"call":6,"input":{"txn":{"compares":[{"key":"x","target":{"value":"a"},"op":"equal"}],"success":[{"put":{"key":"x","value":"b"}}],"failure":[{"get":{"key":"x"}}]}},"output":"unknown"}}
{"op":{"client":1,"call":10,"ret":11,"input":{"get":{"key":"x"}},"output":{"ok":{"txn":{"header_revision":3,"succeeded":false,"results":[{"get":null},"put",{"delete":{"deleted":1}}]}}}}}
{"op":{"client":1,"call":12,"ret":13,"input":{"get":{"key":"x","revision":1}},"output":{"ok":{"error":"compacted"}}}}
{"revisions":{"compact":0,"current":3}}"#;
        let h = History::parse(text).expect("parses");
        assert_eq!(h.ops.len(), 4);
        assert_eq!(h.ops[1].output, Outcome::Unknown);
        assert_eq!(h.ops[0].ret, Some(9));
        let bad = History::parse("{\"op\":{\"client\":1}}").expect_err("missing fields");
        assert!(bad.starts_with("line 1: op:"), "{bad}");
    }
}
