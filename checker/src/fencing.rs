//! The fencing checker for the lock workload (`sim::locks`): holders of
//! etcd's Lock service write a shared key with a Txn guarded by their lock
//! key's create revision (the fencing token). Over the committed history:
//! - owner at every write: when a write to the fenced key commits, the lock
//!   key with its token exists and no key under the lock's prefix was
//!   created before it;
//! - no interleaving: the tokens of committed writes never decrease (a
//!   holder's writes all come before the next holder's);
//! - durable and exact: each acknowledged successful write is in the
//!   history; a write answered "guard failed" is not.
//! Tests: the unit tests below; the simulation's `lock3` scenario.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CommittedHistory;

/// The lock's name: holders' keys are `mutex/m/<lease hex>`.
pub const LOCK_NAME: &str = "mutex/m";
/// The resource the holders write, fenced by their token.
pub const FENCED_KEY: &str = "fenced/m";

/// What a guarded write was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The guard held and the put was applied.
    Written,
    /// The guard failed: the lock key is gone (or was never this one).
    GuardFailed,
    /// No answer: it may or may not have been applied.
    Unknown,
}

/// One guarded write, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FencedWrite {
    pub value: String,
    pub outcome: WriteOutcome,
}

/// One acquisition of the lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hold {
    pub client: u64,
    pub key: String,
    /// The key's create revision (the fencing token); 0 when it could not be
    /// read (the hold then makes no writes).
    pub token: i64,
    /// Simulated time the Lock call returned.
    pub acquired_at: Duration,
    pub writes: Vec<FencedWrite>,
    pub release: &'static str,
}

/// The fencing checks (module header).
pub fn check_fencing(holds: &[Hold], committed: &CommittedHistory) -> Vec<String> {
    let mut failures = Vec::new();
    let prefix = format!("{LOCK_NAME}/");
    // Lock key → create revision, of the keys that exist.
    let mut queue: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_token: Option<(i64, u64)> = None;
    let mut written: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &committed.changes {
        if c.key.starts_with(&prefix) {
            match &c.value {
                Some(_) => {
                    queue.entry(c.key.clone()).or_insert(c.revision.0);
                }
                None => {
                    queue.remove(&c.key);
                }
            }
        } else if c.key == FENCED_KEY {
            let Some(value) = &c.value else { continue };
            let Some(token) = token_of(value) else {
                failures.push(format!(
                    "fencing: unexpected value {value:?} in {FENCED_KEY}"
                ));
                continue;
            };
            let owner = queue.iter().min_by_key(|(_, rev)| **rev);
            match owner {
                Some((_, rev)) if *rev as i64 == token => {}
                _ => failures.push(format!(
                    "fencing: write {value:?} committed at revision {} while its lock key (token {token}) was not the owner; lock queue then: {queue:?}",
                    c.revision.0
                )),
            }
            if let Some((prev, at)) = last_token {
                if token < prev {
                    failures.push(format!(
                        "fencing: write {value:?} (token {token}) at revision {} after a write with token {prev} at revision {at}: holders interleaved",
                        c.revision.0
                    ));
                }
            }
            last_token = Some((token, c.revision.0));
            written.insert(value.as_str(), c.revision.0);
        }
        if failures.len() >= 10 {
            break;
        }
    }
    for h in holds {
        for w in &h.writes {
            let present = written.contains_key(w.value.as_str());
            match w.outcome {
                WriteOutcome::Written if !present => failures.push(format!(
                    "fencing: acknowledged write {:?} of client {} is not in the committed history",
                    w.value, h.client
                )),
                WriteOutcome::GuardFailed if present => failures.push(format!(
                    "fencing: write {:?} of client {} was answered 'guard failed' but was applied",
                    w.value, h.client
                )),
                _ => {}
            }
        }
    }
    failures.truncate(10);
    failures
}

/// The token in a fenced value `c<client>-t<token>-<n>`.
fn token_of(value: &str) -> Option<i64> {
    value.split('-').nth(1)?.strip_prefix('t')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committed::change;
    use crate::{CommittedChange, Revision};

    fn history(changes: Vec<CommittedChange>) -> CommittedHistory {
        CommittedHistory {
            compact_revision: Revision(0),
            current_revision: Revision(changes.last().map_or(1, |c| c.revision.0)),
            changes,
        }
    }

    #[test]
    fn one_holder_after_another_passes() {
        let h = history(vec![
            change(2, "mutex/m/a", Some("")),
            change(3, "mutex/m/b", Some("")),
            change(4, FENCED_KEY, Some("c1-t2-0")),
            change(5, "mutex/m/a", None),
            change(6, FENCED_KEY, Some("c2-t3-0")),
        ]);
        assert_eq!(check_fencing(&[], &h), Vec::<String>::new());
    }

    #[test]
    fn a_write_by_a_waiter_while_another_holds_is_caught() {
        let h = history(vec![
            change(2, "mutex/m/a", Some("")),
            change(3, "mutex/m/b", Some("")),
            change(4, FENCED_KEY, Some("c2-t3-0")),
        ]);
        let f = check_fencing(&[], &h);
        assert!(f.iter().any(|f| f.contains("was not the owner")), "{f:?}");
    }

    #[test]
    fn interleaved_holders_are_caught() {
        let h = history(vec![
            change(2, "mutex/m/a", Some("")),
            change(3, FENCED_KEY, Some("c1-t2-0")),
            change(4, "mutex/m/a", None),
            change(5, "mutex/m/b", Some("")),
            change(6, FENCED_KEY, Some("c2-t5-0")),
            change(7, FENCED_KEY, Some("c1-t2-1")),
        ]);
        let f = check_fencing(&[], &h);
        assert!(f.iter().any(|f| f.contains("interleaved")), "{f:?}");
    }

    #[test]
    fn lost_and_phantom_writes_are_caught() {
        let h = history(vec![
            change(2, "mutex/m/a", Some("")),
            change(3, FENCED_KEY, Some("c1-t2-0")),
        ]);
        let hold = Hold {
            client: 1,
            key: "mutex/m/a".into(),
            token: 2,
            acquired_at: Duration::ZERO,
            writes: vec![
                FencedWrite {
                    value: "c1-t2-0".into(),
                    outcome: WriteOutcome::GuardFailed,
                },
                FencedWrite {
                    value: "c1-t2-1".into(),
                    outcome: WriteOutcome::Written,
                },
            ],
            release: "unlock",
        };
        let f = check_fencing(&[hold], &h);
        assert!(f.iter().any(|f| f.contains("guard failed")), "{f:?}");
        assert!(
            f.iter().any(|f| f.contains("not in the committed")),
            "{f:?}"
        );
    }
}
