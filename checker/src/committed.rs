//! The final committed history, as read back from the cluster at the end of a
//! run (e.g. from a watch started at revision 1, or from a member's mvcc
//! store), and its per-key replay.
//!
//! Invariants (checked by `CommittedHistory::validate`): no change is above
//! `current_revision`; no key changes twice at one revision; every revision in
//! `(max(compact_revision, 1), current_revision]` has at least one change
//! (etcd only bumps the revision when something changes). Changes at or below
//! `compact_revision` may be missing (compaction removed them).
//!
//! `Timelines` replays a *complete* history (no revision missing from 2 on)
//! into each key's states by revision, deriving create_revision and version
//! the way etcd does.
//!
//! `resolve` places a client history's writes in a complete committed
//! history (as etcd's robustness suite patches its histories before checking
//! them). Every write carries unique values, so a put's value names the
//! revision it committed at:
//! - an indeterminate (`Unknown`) put or txn none of whose put values
//!   committed had no effect (`NoEffect`): a txn's executed branch always
//!   shows, since every writing branch the workloads send holds a put; one
//!   whose values committed at revision r took effect exactly there
//!   (`CommittedAt(r)`); values at two revisions are a violation (a txn
//!   applied in halves, or a write applied twice);
//! - an indeterminate write with no put (a plain delete, a lease's revoke)
//!   cannot be placed by value (`Unattributed`): whatever it changed is a
//!   committed revision that no operation claims, which the linearizability
//!   check replays as a change from outside the history (as it does for the
//!   lease expiries and the lock service's keys);
//! - a write reported `Failed` whose value committed, or an acknowledged one
//!   whose value is not at its header revision, is a violation;
//! - indeterminate compactions stay as they are (`AsObserved`): they change
//!   no revision, so the committed history cannot place them.
//!
//! Tests: `tests` below.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::history::{
    Key, KeyValue, Operation, Outcome, Request, Response, Revision, TxnOp, Value,
};

/// One key's change at one revision: `Some(value)` for a put, `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommittedChange {
    pub revision: Revision,
    pub key: Key,
    pub value: Option<Value>,
}

/// A change, for checker tests (here and in sim-tests): `value` None is a delete.
pub fn change(rev: u64, key: &str, value: Option<&str>) -> CommittedChange {
    CommittedChange {
        revision: Revision(rev),
        key: key.to_owned(),
        value: value.map(str::to_owned),
    }
}

/// Every change the cluster committed, as it stands at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommittedHistory {
    /// Changes at or below this revision may have been compacted away.
    pub compact_revision: Revision,
    /// The cluster's current (highest committed) revision.
    pub current_revision: Revision,
    /// In any order; see the module header for what must be present.
    pub changes: Vec<CommittedChange>,
}

/// The committed history itself is malformed (a harness bug, not a cluster bug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError(pub String);

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed history: {}", self.0)
    }
}

impl std::error::Error for HistoryError {}

impl CommittedChange {
    pub fn new(revision: u64, key: &str, value: Option<&str>) -> CommittedChange {
        CommittedChange {
            revision: Revision(revision),
            key: key.to_owned(),
            value: value.map(str::to_owned),
        }
    }
}

impl fmt::Display for CommittedChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "rev {}: put {}={value}", self.revision, self.key),
            None => write!(f, "rev {}: delete {}", self.revision, self.key),
        }
    }
}

impl CommittedHistory {
    /// A history with nothing compacted, current revision = the newest change (or 1).
    pub fn complete(changes: Vec<CommittedChange>) -> CommittedHistory {
        let current_revision = changes
            .iter()
            .map(|c| c.revision)
            .max()
            .unwrap_or(Revision(1))
            .max(Revision(1));
        CommittedHistory {
            compact_revision: Revision(0),
            current_revision,
            changes,
        }
    }

    /// Changes keyed by (revision, key), after checking the module invariants.
    pub fn validate(&self) -> Result<BTreeMap<(Revision, Key), Option<Value>>, HistoryError> {
        let mut by_revision = BTreeMap::new();
        for change in &self.changes {
            if change.revision > self.current_revision || change.revision < Revision(2) {
                return Err(HistoryError(format!(
                    "{change} is outside [2, {}]",
                    self.current_revision
                )));
            }
            let previous =
                by_revision.insert((change.revision, change.key.clone()), change.value.clone());
            if previous.is_some() {
                return Err(HistoryError(format!(
                    "key {} changes twice at revision {}",
                    change.key, change.revision
                )));
            }
        }
        self.check_no_gap(&by_revision, self.compact_revision.max(Revision(1)))?;
        Ok(by_revision)
    }

    /// Every revision in (`after`, current] must have a change.
    fn check_no_gap(
        &self,
        by_revision: &BTreeMap<(Revision, Key), Option<Value>>,
        after: Revision,
    ) -> Result<(), HistoryError> {
        let mut expected = after.next();
        for (revision, _) in by_revision.keys().filter(|(revision, _)| *revision > after) {
            if *revision > expected {
                return Err(HistoryError(format!("no change at revision {expected}")));
            }
            expected = revision.next();
        }
        if expected <= self.current_revision {
            return Err(HistoryError(format!("no change at revision {expected}")));
        }
        Ok(())
    }
}

/// Each key's states by revision, replayed from a complete history.
#[derive(Debug, Clone, Default)]
pub struct Timelines {
    /// Per key, (revision of the change, state from then on), ascending.
    keys: BTreeMap<Key, Vec<(Revision, Option<KeyValue>)>>,
    pub current_revision: Revision,
}

impl Timelines {
    /// Fails unless the history is valid and complete (nothing missing from revision 2 on).
    pub fn replay(history: &CommittedHistory) -> Result<Timelines, HistoryError> {
        let by_revision = history.validate()?;
        history.check_no_gap(&by_revision, Revision(1))?;
        let mut timelines = Timelines {
            keys: BTreeMap::new(),
            current_revision: history.current_revision,
        };
        for ((revision, key), value) in by_revision {
            timelines.record(revision, key, value);
        }
        Ok(timelines)
    }

    fn record(&mut self, revision: Revision, key: Key, value: Option<Value>) {
        let states = self.keys.entry(key).or_default();
        let previous = states.last().and_then(|(_, kv)| kv.as_ref());
        let kv = value.map(|value| match previous {
            Some(old) => KeyValue {
                value,
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
            },
            None => KeyValue {
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        });
        states.push((revision, kv));
    }

    /// The key's state as of `revision` (which must be <= current).
    pub fn state_at(&self, key: &str, revision: Revision) -> Option<&KeyValue> {
        let states = self.keys.get(key)?;
        let newer = states.partition_point(|(changed, _)| *changed <= revision);
        newer
            .checked_sub(1)
            .and_then(|index| states[index].1.as_ref())
    }

    /// The revisions [from, until) during which the key held `value`, if ever.
    pub fn when_held(&self, key: &str, value: &str) -> Option<(Revision, Option<Revision>)> {
        let states = self.keys.get(key)?;
        let index = states
            .iter()
            .position(|(_, kv)| kv.as_ref().is_some_and(|kv| kv.value == value))?;
        Some((
            states[index].0,
            states.get(index + 1).map(|(revision, _)| *revision),
        ))
    }
}

/// What the committed history says about one operation of a client history
/// (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Checked as observed: an `Ok` operation, or an indeterminate compaction.
    AsObserved,
    /// Certainly had no effect: a failed operation, an indeterminate read, an
    /// indeterminate write none of whose values committed.
    NoEffect,
    /// An indeterminate write without a put: its effect, if any, is a
    /// revision no operation claims.
    Unattributed,
    /// An indeterminate write whose values committed at this revision.
    CommittedAt(Revision),
}

/// The committed changes by revision: per revision, (key, value or `None`
/// for a delete).
pub type ChangesByRevision = BTreeMap<Revision, Vec<(Key, Option<Value>)>>;

/// A client history placed in a complete committed history.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Per operation of the history, in its order.
    pub ops: Vec<Resolved>,
    /// The committed changes by revision, every revision from 2 to current.
    pub changes: ChangesByRevision,
    pub current_revision: Revision,
    /// Contradictions between the history and the committed history.
    pub violations: Vec<String>,
}

impl Resolution {
    pub fn count(&self, kind: fn(&Resolved) -> bool) -> usize {
        self.ops.iter().filter(|r| kind(r)).count()
    }
}

/// Places `history`'s writes in `committed`, which must be complete (no
/// revision from 2 on missing). See the module header.
pub fn resolve(
    history: &[Operation],
    committed: &CommittedHistory,
) -> Result<Resolution, HistoryError> {
    let by_revision = committed.validate()?;
    committed.check_no_gap(&by_revision, Revision(1))?;
    let mut changes = ChangesByRevision::new();
    let mut put_at: HashMap<(&str, &str), Vec<Revision>> = HashMap::new();
    for ((revision, key), value) in &by_revision {
        changes
            .entry(*revision)
            .or_default()
            .push((key.clone(), value.clone()));
    }
    for change in &committed.changes {
        if let Some(value) = &change.value {
            put_at
                .entry((change.key.as_str(), value.as_str()))
                .or_default()
                .push(change.revision);
        }
    }
    let mut violations = Vec::new();
    let ops = history
        .iter()
        .enumerate()
        .map(|(index, op)| {
            let (resolved, violation) = resolve_one(op, &put_at);
            if let Some(why) = violation {
                violations.push(format!("#{index} {op}: {why}"));
            }
            resolved
        })
        .collect();
    Ok(Resolution {
        ops,
        changes,
        current_revision: committed.current_revision,
        violations,
    })
}

/// Every put of a request (both branches of a txn).
fn all_puts(request: &Request) -> Vec<(&str, &str)> {
    match request {
        Request::Put { key, value } => vec![(key.as_str(), value.as_str())],
        Request::Txn(txn) => {
            let mut puts = branch_puts(&txn.success);
            puts.extend(branch_puts(&txn.failure));
            puts
        }
        _ => Vec::new(),
    }
}

/// The puts of a txn branch.
fn branch_puts(branch: &[TxnOp]) -> Vec<(&str, &str)> {
    branch
        .iter()
        .filter_map(|op| match op {
            TxnOp::Put { key, value } => Some((key.as_str(), value.as_str())),
            _ => None,
        })
        .collect()
}

fn resolve_one(
    op: &Operation,
    put_at: &HashMap<(&str, &str), Vec<Revision>>,
) -> (Resolved, Option<String>) {
    let revisions_of = |puts: &[(&str, &str)]| -> Vec<Revision> {
        let mut revisions: Vec<Revision> = puts
            .iter()
            .flat_map(|put| put_at.get(put).into_iter().flatten().copied())
            .collect();
        revisions.sort_unstable();
        revisions.dedup();
        revisions
    };
    let show = |revisions: &[Revision]| {
        revisions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &op.output {
        Outcome::Failed => {
            let revisions = revisions_of(&all_puts(&op.input));
            let violation = (!revisions.is_empty()).then(|| {
                format!(
                    "reported failed, but its value committed at revision {}",
                    show(&revisions)
                )
            });
            (Resolved::NoEffect, violation)
        }
        Outcome::Ok(response) => {
            let (puts, header) = match (&op.input, response) {
                (Request::Put { key, value }, Response::Put { header_revision }) => {
                    (vec![(key.as_str(), value.as_str())], *header_revision)
                }
                (
                    Request::Txn(txn),
                    Response::Txn {
                        header_revision,
                        succeeded,
                        ..
                    },
                ) => {
                    let branch = if *succeeded {
                        &txn.success
                    } else {
                        &txn.failure
                    };
                    (branch_puts(branch), *header_revision)
                }
                _ => return (Resolved::AsObserved, None),
            };
            let violation = puts.iter().find_map(|put| {
                let at = put_at.get(put).map(Vec::as_slice).unwrap_or(&[]);
                (at != [header]).then(|| {
                    format!(
                        "acknowledged at revision {header}, but {}={} committed at [{}]",
                        put.0,
                        put.1,
                        show(at)
                    )
                })
            });
            (Resolved::AsObserved, violation)
        }
        Outcome::Unknown => {
            if op.input.is_read_only() {
                return (Resolved::NoEffect, None);
            }
            let puts = all_puts(&op.input);
            let revisions = revisions_of(&puts);
            let writing_branch_without_put = match &op.input {
                Request::Txn(txn) => [&txn.success, &txn.failure].iter().any(|branch| {
                    branch_puts(branch).is_empty()
                        && branch.iter().any(|o| matches!(o, TxnOp::Delete { .. }))
                }),
                Request::Delete { .. } => true,
                _ => false,
            };
            match (&op.input, revisions.as_slice()) {
                (Request::Compact { .. }, _) => (Resolved::AsObserved, None),
                (_, [revision]) => (Resolved::CommittedAt(*revision), None),
                (_, []) if writing_branch_without_put => (Resolved::Unattributed, None),
                (_, []) => (Resolved::NoEffect, None),
                (_, several) => (
                    Resolved::NoEffect,
                    Some(format!(
                        "its values committed at several revisions: {}",
                        show(several)
                    )),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> CommittedHistory {
        CommittedHistory::complete(vec![
            CommittedChange::new(2, "a", Some("1")),
            CommittedChange::new(3, "b", Some("x")),
            CommittedChange::new(4, "a", Some("2")),
            CommittedChange::new(5, "a", None),
            CommittedChange::new(6, "a", Some("3")),
        ])
    }

    #[test]
    fn replay_derives_versions_and_create_revisions() {
        let timelines = Timelines::replay(&history()).expect("valid history");
        assert_eq!(timelines.state_at("a", Revision(1)), None);
        assert_eq!(
            timelines.state_at("a", Revision(3)),
            Some(&KeyValue::new("1", 2, 2, 1))
        );
        assert_eq!(
            timelines.state_at("a", Revision(4)),
            Some(&KeyValue::new("2", 2, 4, 2))
        );
        assert_eq!(timelines.state_at("a", Revision(5)), None);
        assert_eq!(
            timelines.state_at("a", Revision(6)),
            Some(&KeyValue::new("3", 6, 6, 1))
        );
        assert_eq!(
            timelines.when_held("a", "2"),
            Some((Revision(4), Some(Revision(5))))
        );
        assert_eq!(timelines.when_held("a", "3"), Some((Revision(6), None)));
    }

    #[test]
    fn validate_rejects_gaps_duplicates_and_changes_beyond_current() {
        let mut gap = history();
        gap.changes.remove(1);
        assert!(gap.validate().is_err());
        let mut duplicate = history();
        duplicate
            .changes
            .push(CommittedChange::new(4, "a", Some("9")));
        assert!(duplicate.validate().is_err());
        let mut beyond = history();
        beyond.current_revision = Revision(5);
        assert!(beyond.validate().is_err());
        let mut missing_tail = history();
        missing_tail.current_revision = Revision(7);
        assert!(missing_tail.validate().is_err());
    }

    #[test]
    fn compacted_prefix_may_be_missing_but_replay_needs_it() {
        let mut compacted = history();
        compacted.compact_revision = Revision(3);
        compacted.changes.retain(|c| c.revision > Revision(3));
        assert!(compacted.validate().is_ok());
        assert!(Timelines::replay(&compacted).is_err());
    }
}
