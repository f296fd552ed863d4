//! The checks the `cairn-check` binary (and the jepsen harness) run over a
//! parsed JSON-lines history (`jsonl::History`), each with one verdict.
//!
//! - `linearizable`: the `op` lines, against the etcd model. They must be
//!   every write the store saw: the model counts revisions.
//! - `serializable`: each `Ok` get against the committed history (`change`
//!   lines) at the revision it reports.
//! - `durability`: every acknowledged write of the `op` lines is in the
//!   committed history at its revision; on the keys the ops touch, every
//!   committed value was possibly written by one of them.
//! - `watch`: the `watch` lines against the committed history.
//! - `fencing`: the `hold` lines against the committed history.
//! - `lease`: the `lease_op` lines (and `clock` faults), `lease.rs`.
//! A check whose lines are absent is `Skipped`.
//!
//! Tests: `tests` below; the binary's in `tests/cli.rs`.

use std::collections::BTreeSet;
use std::fmt;

use super::durability::{acknowledged_writes, check_durability, possibly_written_values};
use super::fencing::check_fencing;
use super::history::{Request, TxnOp};
use super::jsonl::History;
use super::lease;
use super::linearizability::{check_linearizable_with, CheckOptions, CheckResult};
use super::serializable::check_serializable_reads;
use super::watch::check_watches;

/// Every check's name, in the order `all` runs them.
pub const CHECKS: [&str; 6] = [
    "linearizable",
    "serializable",
    "durability",
    "watch",
    "fencing",
    "lease",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Violation,
    /// The linearizability search ran out of budget.
    Inconclusive,
    /// The history lacks what the check reads.
    Skipped,
    /// The history breaks the format's invariants.
    Malformed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub check: &'static str,
    pub status: Status,
    /// What was found (violations first), or why it was skipped.
    pub details: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Violation => "VIOLATION",
            Status::Inconclusive => "inconclusive",
            Status::Skipped => "skipped",
            Status::Malformed => "MALFORMED",
        };
        write!(f, "{}: {status}", self.check)?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

fn verdict(check: &'static str, status: Status, details: Vec<String>) -> Verdict {
    Verdict {
        check,
        status,
        details,
    }
}

fn from_list(check: &'static str, failures: Vec<String>) -> Verdict {
    let status = if failures.is_empty() {
        Status::Ok
    } else {
        Status::Violation
    };
    verdict(check, status, failures)
}

/// Runs one check by name; `None` for an unknown name.
pub fn run(check: &str, h: &History, options: &CheckOptions) -> Option<Verdict> {
    let name = CHECKS.into_iter().find(|c| *c == check)?;
    let committed = h.committed();
    let skip = |why: &str| Some(verdict(name, Status::Skipped, vec![why.to_owned()]));
    Some(match name {
        "linearizable" => {
            if h.ops.is_empty() {
                return skip("no op lines");
            }
            match check_linearizable_with(&h.ops, options) {
                CheckResult::Ok => verdict(name, Status::Ok, vec![format!("{} ops", h.ops.len())]),
                CheckResult::Violation { explanation } => {
                    verdict(name, Status::Violation, vec![explanation])
                }
                CheckResult::Inconclusive { reason } => {
                    verdict(name, Status::Inconclusive, vec![reason])
                }
                CheckResult::Malformed { reason } => verdict(name, Status::Malformed, vec![reason]),
            }
        }
        "serializable" => {
            let Some(c) = committed else {
                return skip("no change lines");
            };
            match check_serializable_reads(&h.ops, &c) {
                Ok(v) => from_list(name, v.iter().map(ToString::to_string).collect()),
                Err(e) => verdict(name, Status::Malformed, vec![e.to_string()]),
            }
        }
        "durability" => {
            let Some(c) = committed else {
                return skip("no change lines");
            };
            if h.ops.is_empty() {
                return skip("no op lines");
            }
            let touched = touched_keys(h);
            let mut possible = possibly_written_values(&h.ops);
            possible.extend(
                c.changes
                    .iter()
                    .filter(|ch| !touched.contains(ch.key.as_str()))
                    .filter_map(|ch| ch.value.clone()),
            );
            match check_durability(&acknowledged_writes(&h.ops), &possible, &c) {
                Ok(v) => from_list(name, v.iter().map(ToString::to_string).collect()),
                Err(e) => verdict(name, Status::Malformed, vec![e.to_string()]),
            }
        }
        "watch" => {
            let Some(c) = committed else {
                return skip("no change lines");
            };
            if h.watches.is_empty() {
                return skip("no watch lines");
            }
            match check_watches(&h.watches, &c) {
                Ok(v) => from_list(name, v),
                Err(e) => verdict(name, Status::Malformed, vec![e.to_string()]),
            }
        }
        "lease" => {
            let (ops, jumps) = match lease::from_records(&h.other) {
                Ok(x) => x,
                Err(e) => return Some(verdict(name, Status::Malformed, vec![e])),
            };
            if ops.is_empty() {
                return skip("no lease_op lines");
            }
            let r = lease::check_leases(
                &ops,
                &jumps,
                committed.as_ref(),
                &lease::LeaseOptions::default(),
            );
            if r.violations.is_empty() {
                verdict(name, Status::Ok, vec![r.summary])
            } else {
                verdict(name, Status::Violation, r.violations)
            }
        }
        _ => {
            let Some(c) = committed else {
                return skip("no change lines");
            };
            if h.holds.is_empty() {
                return skip("no hold lines");
            }
            from_list(name, check_fencing(&h.fencing_holds(), &c))
        }
    })
}

/// Every applicable check, in `CHECKS` order.
pub fn run_all(h: &History, options: &CheckOptions) -> Vec<Verdict> {
    CHECKS.iter().filter_map(|c| run(c, h, options)).collect()
}

fn touched_keys(h: &History) -> BTreeSet<&str> {
    let mut keys = BTreeSet::new();
    for op in &h.ops {
        match &op.input {
            Request::Get { key, .. } | Request::Put { key, .. } | Request::Delete { key } => {
                keys.insert(key.as_str());
            }
            Request::Txn(t) => {
                for c in &t.compares {
                    keys.insert(c.key.as_str());
                }
                for o in t.success.iter().chain(&t.failure) {
                    match o {
                        TxnOp::Get { key } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                            keys.insert(key.as_str());
                        }
                    }
                }
            }
            Request::Compact { .. } => {}
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committed::CommittedChange;
    use crate::history::{KeyValue, Operation, Response, Revision};
    use crate::jsonl::Record;

    fn history(lines: &[String]) -> History {
        History::parse(&lines.join("\n")).expect("parses")
    }

    fn put(client: u64, call: u64, ret: u64, value: &str, rev: u64) -> Operation {
        Operation::ok(
            client,
            call,
            ret,
            Request::put("k", value),
            Response::Put {
                header_revision: Revision(rev),
            },
        )
    }

    fn get(call: u64, ret: u64, kv: Option<KeyValue>, rev: u64) -> Operation {
        Operation::ok(
            9,
            call,
            ret,
            Request::get("k"),
            Response::Get {
                header_revision: Revision(rev),
                kv,
            },
        )
    }

    #[test]
    fn a_legal_history_passes_and_a_stale_read_and_a_lost_write_do_not() {
        let ops = [
            put(1, 1, 2, "a", 2),
            put(2, 3, 4, "b", 3),
            get(5, 6, Some(KeyValue::new("b", 2, 3, 2)), 3),
        ];
        let changes = [
            CommittedChange::new(2, "k", Some("a")),
            CommittedChange::new(3, "k", Some("b")),
            CommittedChange::new(4, "other", Some("x")),
        ];
        let mut lines: Vec<String> = ops.iter().map(|o| Record::Op(o).line()).collect();
        lines.extend(changes.iter().map(|c| Record::Change(c).line()));
        let ok = run_all(&history(&lines), &CheckOptions::default());
        let statuses: Vec<_> = ok.iter().map(|v| (v.check, v.status)).collect();
        assert_eq!(
            statuses,
            vec![
                ("linearizable", Status::Ok),
                ("serializable", Status::Ok),
                ("durability", Status::Ok),
                ("watch", Status::Skipped),
                ("fencing", Status::Skipped),
                ("lease", Status::Skipped),
            ]
        );

        // A read after b was acknowledged that still sees a.
        let stale = get(5, 6, Some(KeyValue::new("a", 2, 2, 1)), 3);
        lines[2] = Record::Op(&stale).line();
        let v =
            run("linearizable", &history(&lines), &CheckOptions::default()).expect("known check");
        assert_eq!(v.status, Status::Violation, "{v}");
        let v =
            run("serializable", &history(&lines), &CheckOptions::default()).expect("known check");
        assert_eq!(v.status, Status::Violation, "{v}");

        // The committed history lost the acknowledged b.
        lines[4] = Record::Change(&CommittedChange::new(3, "k", Some("z"))).line();
        let v = run("durability", &history(&lines), &CheckOptions::default()).expect("known check");
        assert_eq!(v.status, Status::Violation, "{v}");
        assert!(run("nonsense", &history(&lines), &CheckOptions::default()).is_none());
    }
}
