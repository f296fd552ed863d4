//! Serializable reads checker: a serializable `Get` (served from one member's
//! local store, possibly stale) must return exactly a state the cluster
//! committed.
//!
//! Precisely, for every operation whose request is a `Get` and whose outcome
//! is `Ok(Response::Get { header_revision: h, kv })`, with the committed
//! history replayed into per-key states (`committed::Timelines`):
//! 1. `1 <= h <= current_revision`: a member only serves revisions it has
//!    applied, and only committed entries are applied;
//! 2. the read revision is `r = h` for a latest read (revision 0), or the
//!    requested revision otherwise, in which case `r <= h` must hold;
//! 3. `kv` equals the key's state as of `r` exactly — value, create_revision,
//!    mod_revision and version — or is absent if the key did not exist then.
//!
//! Not checked: freshness. etcd does not promise a serializable read sees
//! anything newer than what its member has applied, not even the reader's own
//! acknowledged writes, so no lower bound on `h` is imposed (linearizable
//! reads are `check_linearizable`'s job). Gets answered with an error, Txn
//! reads and non-`Ok` outcomes are skipped.
//!
//! The committed history must be complete (nothing missing from revision 2),
//! or the versions could not be derived: run the check before compacting, or
//! collect the history with a watch from revision 1.
//!
//! Tests: `tests` below; whole histories in `tests/checker_histories.rs`.

use std::fmt;

use super::committed::{CommittedHistory, HistoryError, Timelines};
use super::history::{Key, KeyValue, Operation, Outcome, Request, Response, Revision};

/// A read that returned something the cluster never had at that revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadViolation {
    /// Index of the read in the checked slice.
    pub op: usize,
    pub explanation: String,
}

impl fmt::Display for ReadViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read #{}: {}", self.op, self.explanation)
    }
}

/// Checks every `Ok` `Get` in `ops` against the complete committed history;
/// an empty list means every read was a committed state.
pub fn check_serializable_reads(
    ops: &[Operation],
    history: &CommittedHistory,
) -> Result<Vec<ReadViolation>, HistoryError> {
    let timelines = Timelines::replay(history)?;
    let violations = ops
        .iter()
        .enumerate()
        .filter_map(|(index, op)| {
            check_read(op, &timelines).map(|why| ReadViolation {
                op: index,
                explanation: format!("{op}: {why}"),
            })
        })
        .collect();
    Ok(violations)
}

/// Why this read is wrong, if it is.
fn check_read(op: &Operation, timelines: &Timelines) -> Option<String> {
    let (
        Request::Get { key, revision },
        Outcome::Ok(Response::Get {
            header_revision,
            kv,
        }),
    ) = (&op.input, &op.output)
    else {
        return None;
    };
    let header = *header_revision;
    if header < Revision(1) || header > timelines.current_revision {
        return Some(format!(
            "header revision {header} was never committed (current is {})",
            timelines.current_revision
        ));
    }
    let at = if *revision == Revision::LATEST {
        header
    } else {
        *revision
    };
    if at > header {
        return Some(format!(
            "served revision {at} from a store at revision {header}"
        ));
    }
    let expected = timelines.state_at(key, at);
    (expected != kv.as_ref()).then(|| mismatch(timelines, key, at, expected, kv.as_ref()))
}

fn mismatch(
    timelines: &Timelines,
    key: &Key,
    at: Revision,
    expected: Option<&KeyValue>,
    seen: Option<&KeyValue>,
) -> String {
    let expected = expected.map_or_else(|| "<none>".to_owned(), ToString::to_string);
    let Some(seen) = seen else {
        return format!("{key} at revision {at} was {expected}, the read saw none");
    };
    let held = match timelines.when_held(key, &seen.value) {
        Some((from, Some(until))) => format!(
            "{key} held {} during revisions [{from}, {until})",
            seen.value
        ),
        Some((from, None)) => format!("{key} holds {} since revision {from}", seen.value),
        None => format!("{} was never committed to {key}", seen.value),
    };
    format!("{key} at revision {at} was {expected}, the read saw {seen}; {held}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committed::CommittedChange;

    fn history() -> CommittedHistory {
        CommittedHistory::complete(vec![
            CommittedChange::new(2, "a", Some("1")),
            CommittedChange::new(3, "a", Some("2")),
            CommittedChange::new(4, "b", Some("x")),
        ])
    }

    fn read(header: u64, kv: Option<KeyValue>) -> Operation {
        Operation::ok(
            1,
            1,
            2,
            Request::get("a"),
            Response::Get {
                header_revision: Revision(header),
                kv,
            },
        )
    }

    fn check(ops: &[Operation]) -> Vec<ReadViolation> {
        check_serializable_reads(ops, &history()).expect("complete history")
    }

    #[test]
    fn stale_but_consistent_reads_pass() {
        let ops = [
            read(1, None),
            read(2, Some(KeyValue::new("1", 2, 2, 1))),
            read(3, Some(KeyValue::new("2", 2, 3, 2))),
            read(4, Some(KeyValue::new("2", 2, 3, 2))),
        ];
        assert_eq!(check(&ops), vec![]);
    }

    #[test]
    fn value_inconsistent_with_header_revision_is_flagged() {
        let violations = check(&[read(4, Some(KeyValue::new("1", 2, 2, 1)))]);
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0]
                .explanation
                .contains("held 1 during revisions [2, 3)"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn header_beyond_committed_is_flagged() {
        assert_eq!(
            check(&[read(5, Some(KeyValue::new("2", 2, 3, 2)))]).len(),
            1
        );
    }

    #[test]
    fn never_committed_value_is_flagged() {
        let violations = check(&[read(3, Some(KeyValue::new("9", 2, 3, 2)))]);
        assert!(
            violations[0].explanation.contains("9 was never committed"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn wrong_version_is_flagged() {
        assert_eq!(
            check(&[read(3, Some(KeyValue::new("2", 2, 3, 1)))]).len(),
            1
        );
    }

    #[test]
    fn read_at_past_revision_is_checked_at_that_revision() {
        let at = |rev, kv| {
            Operation::ok(
                1,
                1,
                2,
                Request::get_at("a", rev),
                Response::Get {
                    header_revision: Revision(4),
                    kv,
                },
            )
        };
        assert_eq!(check(&[at(2, Some(KeyValue::new("1", 2, 2, 1)))]), vec![]);
        assert_eq!(check(&[at(3, Some(KeyValue::new("1", 2, 2, 1)))]).len(), 1);
        let future = Operation::ok(
            1,
            1,
            2,
            Request::get_at("a", 4),
            Response::Get {
                header_revision: Revision(3),
                kv: None,
            },
        );
        assert_eq!(check(&[future]).len(), 1);
    }

    #[test]
    fn other_operations_are_skipped() {
        let ops = [
            Operation::unknown(1, 1, Request::get("a")),
            Operation::failed(1, 1, 2, Request::get("a")),
        ];
        assert_eq!(check(&ops), vec![]);
    }

    #[test]
    fn incomplete_history_is_an_error() {
        let mut compacted = history();
        compacted.compact_revision = Revision(2);
        compacted.changes.remove(0);
        assert!(check_serializable_reads(&[], &compacted).is_err());
    }
}
