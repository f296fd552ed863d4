//! Durability checker: every acknowledged write is in the final committed
//! history, whatever crashes and restarts happened, and nothing is in it that
//! no client wrote.
//!
//! Checked, against a valid `CommittedHistory` (see `committed`):
//! - an acknowledged write at revision r must have r <= current_revision
//!   (the cluster did not roll back past it);
//! - if r > compact_revision, the history holds exactly that change (key and
//!   value, or key deleted) at r; if r <= compact_revision the write may have
//!   been compacted away, but a change to its key that survives at r must
//!   still be the acknowledged one;
//! - two acknowledgements never claim the same (revision, key) with different
//!   changes;
//! - every value in the history was possibly written (by an operation that
//!   was acknowledged or whose outcome is unknown; a definitely failed write
//!   must never show up), and, values being unique per write, appears at one
//!   revision only.
//!
//! `acknowledged_writes` and `possibly_written_values` derive both inputs from
//! a client history.
//!
//! Tests: `tests` below; whole histories in `tests/checker_histories.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::committed::{CommittedChange, CommittedHistory, HistoryError};
use super::history::{
    Key, Operation, Outcome, Request, Response, Revision, TxnOp, TxnOpResult, Value,
};

/// A write some client saw succeed: `value` None for a delete of a live key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AckedWrite {
    pub key: Key,
    pub value: Option<Value>,
    pub revision: Revision,
}

impl fmt::Display for AckedWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = CommittedChange {
            revision: self.revision,
            key: self.key.clone(),
            value: self.value.clone(),
        };
        write!(f, "acknowledged {change}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurabilityViolation {
    /// Acknowledged at a revision the cluster no longer reaches.
    BeyondCurrentRevision {
        write: AckedWrite,
        current: Revision,
    },
    /// The history has something else (or nothing) for the key at that revision.
    Lost {
        write: AckedWrite,
        found: Option<Option<Value>>,
    },
    /// Two acknowledgements of different changes at one (revision, key).
    ConflictingAcks {
        first: AckedWrite,
        second: AckedWrite,
    },
    /// A value no client possibly wrote.
    UnwrittenValue { change: CommittedChange },
    /// A value written once appears at several revisions.
    DuplicateValue {
        key: Key,
        value: Value,
        revisions: Vec<Revision>,
    },
}

impl fmt::Display for DurabilityViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurabilityViolation::BeyondCurrentRevision { write, current } => {
                write!(f, "{write}, but the cluster is only at revision {current}")
            }
            DurabilityViolation::Lost { write, found: None } => {
                write!(f, "{write}, but the key has no change there")
            }
            DurabilityViolation::Lost {
                write,
                found: Some(found),
            } => {
                let found = CommittedChange {
                    revision: write.revision,
                    key: write.key.clone(),
                    value: found.clone(),
                };
                write!(f, "{write}, but the history has {found}")
            }
            DurabilityViolation::ConflictingAcks { first, second } => {
                write!(f, "{first} and {second}")
            }
            DurabilityViolation::UnwrittenValue { change } => {
                write!(f, "{change} but no client wrote that value")
            }
            DurabilityViolation::DuplicateValue {
                key,
                value,
                revisions,
            } => {
                write!(
                    f,
                    "{key}={value} was written once but appears at revisions {revisions:?}"
                )
            }
        }
    }
}

/// Checks the final history; an empty list means every acknowledged write survived.
pub fn check_durability(
    acked: &[AckedWrite],
    possibly_written: &BTreeSet<Value>,
    history: &CommittedHistory,
) -> Result<Vec<DurabilityViolation>, HistoryError> {
    let by_revision = history.validate()?;
    let mut violations = conflicting_acks(acked);
    violations.extend(
        acked
            .iter()
            .filter_map(|write| check_acked(write, history, &by_revision)),
    );
    violations.extend(unwritten_values(&by_revision, possibly_written));
    violations.extend(duplicate_values(&by_revision));
    Ok(violations)
}

fn check_acked(
    write: &AckedWrite,
    history: &CommittedHistory,
    by_revision: &BTreeMap<(Revision, Key), Option<Value>>,
) -> Option<DurabilityViolation> {
    if write.revision > history.current_revision {
        return Some(DurabilityViolation::BeyondCurrentRevision {
            write: write.clone(),
            current: history.current_revision,
        });
    }
    let found = by_revision.get(&(write.revision, write.key.clone()));
    let compacted = write.revision <= history.compact_revision;
    match found {
        Some(value) if *value == write.value => None,
        None if compacted => None,
        _ => Some(DurabilityViolation::Lost {
            write: write.clone(),
            found: found.cloned(),
        }),
    }
}

fn conflicting_acks(acked: &[AckedWrite]) -> Vec<DurabilityViolation> {
    let mut seen: BTreeMap<(Revision, &Key), &AckedWrite> = BTreeMap::new();
    let mut violations = Vec::new();
    for write in acked {
        match seen.insert((write.revision, &write.key), write) {
            Some(first) if first.value != write.value => {
                violations.push(DurabilityViolation::ConflictingAcks {
                    first: first.clone(),
                    second: write.clone(),
                });
            }
            _ => {}
        }
    }
    violations
}

fn unwritten_values<'a>(
    by_revision: &'a BTreeMap<(Revision, Key), Option<Value>>,
    possibly_written: &'a BTreeSet<Value>,
) -> impl Iterator<Item = DurabilityViolation> + 'a {
    by_revision
        .iter()
        .filter_map(move |((revision, key), value)| {
            let value = value
                .as_ref()
                .filter(|value| !possibly_written.contains(*value))?;
            let change = CommittedChange {
                revision: *revision,
                key: key.clone(),
                value: Some(value.clone()),
            };
            Some(DurabilityViolation::UnwrittenValue { change })
        })
}

fn duplicate_values(
    by_revision: &BTreeMap<(Revision, Key), Option<Value>>,
) -> Vec<DurabilityViolation> {
    let mut revisions: BTreeMap<(&Key, &Value), Vec<Revision>> = BTreeMap::new();
    for ((revision, key), value) in by_revision {
        if let Some(value) = value {
            revisions.entry((key, value)).or_default().push(*revision);
        }
    }
    revisions
        .into_iter()
        .filter(|(_, revisions)| revisions.len() > 1)
        .map(
            |((key, value), revisions)| DurabilityViolation::DuplicateValue {
                key: key.clone(),
                value: value.clone(),
                revisions,
            },
        )
        .collect()
}

/// The writes clients saw succeed: Puts, Deletes that deleted, and the
/// effective writes of the executed branch of acknowledged Txns, each at its
/// response's header revision.
pub fn acknowledged_writes(ops: &[Operation]) -> Vec<AckedWrite> {
    let mut acked = Vec::new();
    for op in ops {
        let Outcome::Ok(response) = &op.output else {
            continue;
        };
        match (&op.input, response) {
            (Request::Put { key, value }, Response::Put { header_revision }) => {
                acked.push(AckedWrite {
                    key: key.clone(),
                    value: Some(value.clone()),
                    revision: *header_revision,
                });
            }
            (
                Request::Delete { key },
                Response::Delete {
                    header_revision,
                    deleted,
                },
            ) if *deleted > 0 => {
                acked.push(AckedWrite {
                    key: key.clone(),
                    value: None,
                    revision: *header_revision,
                });
            }
            (
                Request::Txn(txn),
                Response::Txn {
                    header_revision,
                    succeeded,
                    results,
                },
            ) => {
                let branch = if *succeeded {
                    &txn.success
                } else {
                    &txn.failure
                };
                acked.extend(txn_writes(branch, results, *header_revision));
            }
            _ => {}
        }
    }
    acked
}

fn txn_writes<'a>(
    branch: &'a [TxnOp],
    results: &'a [TxnOpResult],
    revision: Revision,
) -> impl Iterator<Item = AckedWrite> + 'a {
    branch
        .iter()
        .zip(results)
        .filter_map(move |(op, result)| match (op, result) {
            (TxnOp::Put { key, value }, TxnOpResult::Put) => Some(AckedWrite {
                key: key.clone(),
                value: Some(value.clone()),
                revision,
            }),
            (TxnOp::Delete { key }, TxnOpResult::Delete { deleted }) if *deleted > 0 => {
                Some(AckedWrite {
                    key: key.clone(),
                    value: None,
                    revision,
                })
            }
            _ => None,
        })
}

/// Values that may legitimately be in the store: written by an operation that
/// was acknowledged (the executed txn branch only) or whose outcome is unknown.
pub fn possibly_written_values(ops: &[Operation]) -> BTreeSet<Value> {
    let mut values = BTreeSet::new();
    for op in ops {
        let branches: Vec<&[TxnOp]> = match (&op.input, &op.output) {
            (_, Outcome::Failed) => continue,
            (Request::Put { value, .. }, Outcome::Ok(Response::Put { .. }) | Outcome::Unknown) => {
                values.insert(value.clone());
                continue;
            }
            (
                Request::Txn(txn),
                Outcome::Ok(Response::Txn {
                    succeeded: true, ..
                }),
            ) => vec![&txn.success],
            (
                Request::Txn(txn),
                Outcome::Ok(Response::Txn {
                    succeeded: false, ..
                }),
            ) => vec![&txn.failure],
            (Request::Txn(txn), Outcome::Unknown) => vec![&txn.success, &txn.failure],
            _ => continue,
        };
        values.extend(branches.into_iter().flatten().filter_map(|op| match op {
            TxnOp::Put { value, .. } => Some(value.clone()),
            _ => None,
        }));
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Compare, CompareOp, CompareTarget, Txn};

    fn ack(key: &str, value: Option<&str>, revision: u64) -> AckedWrite {
        AckedWrite {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            revision: Revision(revision),
        }
    }

    fn history() -> CommittedHistory {
        CommittedHistory::complete(vec![
            CommittedChange::new(2, "a", Some("1")),
            CommittedChange::new(3, "b", Some("2")),
            CommittedChange::new(4, "a", None),
        ])
    }

    fn written() -> BTreeSet<Value> {
        ["1", "2", "3"].into_iter().map(str::to_owned).collect()
    }

    fn check(acked: &[AckedWrite], history: &CommittedHistory) -> Vec<DurabilityViolation> {
        check_durability(acked, &written(), history).expect("valid history")
    }

    #[test]
    fn surviving_writes_pass() {
        let acked = [
            ack("a", Some("1"), 2),
            ack("b", Some("2"), 3),
            ack("a", None, 4),
        ];
        assert_eq!(check(&acked, &history()), vec![]);
    }

    #[test]
    fn write_beyond_current_revision_is_lost() {
        let violations = check(&[ack("a", Some("3"), 5)], &history());
        assert!(
            matches!(
                violations[..],
                [DurabilityViolation::BeyondCurrentRevision { .. }]
            ),
            "{violations:?}"
        );
    }

    #[test]
    fn replaced_write_is_lost() {
        let mut replaced = history();
        replaced.changes[1] = CommittedChange::new(3, "b", Some("3"));
        let violations = check(&[ack("b", Some("2"), 3)], &replaced);
        assert!(
            matches!(violations[..], [DurabilityViolation::Lost { .. }]),
            "{violations:?}"
        );
        assert!(
            violations[0]
                .to_string()
                .contains("but the history has rev 3: put b=3"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn compacted_write_may_be_gone_but_not_changed() {
        let mut compacted = history();
        compacted.compact_revision = Revision(3);
        compacted.changes.retain(|c| c.revision != Revision(2));
        assert_eq!(check(&[ack("a", Some("1"), 2)], &compacted), vec![]);
        assert_eq!(check(&[ack("b", Some("3"), 3)], &compacted).len(), 1);
    }

    #[test]
    fn unwritten_and_duplicate_values_are_flagged() {
        let history = CommittedHistory::complete(vec![
            CommittedChange::new(2, "a", Some("1")),
            CommittedChange::new(3, "a", Some("1")),
            CommittedChange::new(4, "b", Some("zz")),
        ]);
        let violations = check(&[], &history);
        assert!(
            violations
                .iter()
                .any(|v| matches!(v, DurabilityViolation::UnwrittenValue { .. })),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| matches!(v, DurabilityViolation::DuplicateValue { .. })),
            "{violations:?}"
        );
    }

    #[test]
    fn conflicting_acknowledgements_are_flagged() {
        let violations = check(
            &[ack("a", Some("1"), 2), ack("a", Some("3"), 2)],
            &history(),
        );
        assert!(
            violations
                .iter()
                .any(|v| matches!(v, DurabilityViolation::ConflictingAcks { .. })),
            "{violations:?}"
        );
    }

    #[test]
    fn acknowledged_writes_come_from_ok_outcomes_only() {
        let txn = Txn {
            compares: vec![Compare::new(
                "a",
                CompareTarget::Version(0),
                CompareOp::Equal,
            )],
            success: vec![
                TxnOp::Put {
                    key: "a".into(),
                    value: "t".into(),
                },
                TxnOp::Delete { key: "b".into() },
            ],
            failure: vec![TxnOp::Put {
                key: "a".into(),
                value: "f".into(),
            }],
        };
        let results = vec![TxnOpResult::Put, TxnOpResult::Delete { deleted: 0 }];
        let ops = [
            Operation::ok(
                1,
                1,
                2,
                Request::put("a", "1"),
                Response::Put {
                    header_revision: Revision(2),
                },
            ),
            Operation::ok(
                1,
                3,
                4,
                Request::delete("a"),
                Response::Delete {
                    header_revision: Revision(3),
                    deleted: 1,
                },
            ),
            Operation::ok(
                1,
                5,
                6,
                Request::delete("a"),
                Response::Delete {
                    header_revision: Revision(3),
                    deleted: 0,
                },
            ),
            Operation::failed(1, 7, 8, Request::put("a", "2")),
            Operation::unknown(1, 9, Request::put("a", "3")),
            Operation::ok(
                1,
                10,
                11,
                Request::Txn(txn),
                Response::Txn {
                    header_revision: Revision(4),
                    succeeded: true,
                    results,
                },
            ),
        ];
        assert_eq!(
            acknowledged_writes(&ops),
            vec![
                ack("a", Some("1"), 2),
                ack("a", None, 3),
                ack("a", Some("t"), 4)
            ]
        );
        let expected: BTreeSet<Value> = ["1", "3", "t"].into_iter().map(str::to_owned).collect();
        assert_eq!(possibly_written_values(&ops), expected);
    }
}
