//! A sequential model of etcd's KV API, for the linearizability checker.
//!
//! `EtcdState::apply(request) -> (next state, response)` is deterministic and
//! follows etcd v3.5's mvcc:
//! - the empty store is at revision 1; a Put, an effective Delete, or a Txn
//!   whose executed branch changes something bumps the revision by exactly one
//!   (all writes of one txn share that revision); a Delete of a missing key
//!   and a Txn without effective writes do not bump it;
//! - a key's version is 1 on creation, +1 per Put, and starts again at 1 after
//!   a Delete (with a new create_revision);
//! - `Get` at revision r: r > current is "future revision", r < compact
//!   revision is "compacted" (r = compact revision is still readable);
//! - `Compact(r)`: r <= compact revision is "compacted", r > current is
//!   "future revision"; it does not change the revision. The initial compact
//!   revision is 0 (etcd's is -1, so etcd accepts `Compact(0)`; the harness
//!   never sends it);
//! - Txn compares: a `Value` compare on a missing key is false whatever the
//!   op; other targets compare against zero for a missing key.
//!
//! Invariants: `current` is the replay of `log`; `log` entries have strictly
//! decreasing revisions from the head, the head's is `revision` (or no entry).
//! States share their history through `Rc`, so cloning is cheap; equality and
//! hashing (for the checker's memo) look at revision, compact revision and the
//! log, through a fingerprint of the log for hashing.
//!
//! `matches(expected, observed)` is exact equality: every header revision,
//! create / mod revision and version the client saw must be the model's.
//!
//! Tests: `tests` below.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use super::committed::CommittedChange;
use super::history::{
    Compare, CompareOp, CompareTarget, EtcdError, Key, KeyValue, Request, Response, Revision, Txn,
    TxnOp, TxnOpResult,
};

/// The store: revision, compact revision, live keys and the full change log.
#[derive(Debug, Clone)]
pub struct EtcdState {
    revision: Revision,
    /// Reads below this revision fail with "compacted". Invariant: <= `revision`.
    compact_revision: Revision,
    /// Live keys at `revision`. Invariant: the replay of `log`.
    current: Rc<BTreeMap<Key, KeyValue>>,
    /// Newest first; the head's revision is `revision`.
    log: Option<Rc<LogEntry>>,
}

/// The changes made at one revision (`None` = the key was deleted).
#[derive(Debug)]
struct LogEntry {
    revision: Revision,
    changes: Vec<(Key, Option<KeyValue>)>,
    /// Hash of this entry and all older ones.
    fingerprint: u64,
    prev: Option<Rc<LogEntry>>,
}

impl Drop for LogEntry {
    // Iterative, so dropping a long history cannot overflow the stack.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(entry) = next {
            next = match Rc::try_unwrap(entry) {
                Ok(mut owned) => owned.prev.take(),
                Err(_) => None,
            };
        }
    }
}

impl Default for EtcdState {
    fn default() -> Self {
        EtcdState::new()
    }
}

impl EtcdState {
    /// An empty store at revision 1, nothing compacted.
    pub fn new() -> EtcdState {
        EtcdState {
            revision: Revision(1),
            compact_revision: Revision(0),
            current: Rc::default(),
            log: None,
        }
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// The key's state at the current revision.
    pub fn kv(&self, key: &str) -> Option<&KeyValue> {
        self.current.get(key)
    }

    /// Applies one request; the state is unchanged when the response is an error.
    pub fn apply(&self, request: &Request) -> (EtcdState, Response) {
        match request {
            Request::Get { key, revision } => (self.clone(), self.range(key, *revision)),
            Request::Put { key, value } => self.apply_put(key, value),
            Request::Delete { key } => self.apply_delete(key),
            Request::Txn(txn) => self.apply_txn(txn),
            Request::Compact { revision } => self.apply_compact(*revision),
        }
    }

    /// Every change in revision order, as the cluster's final history would list it.
    pub fn committed_changes(&self) -> Vec<CommittedChange> {
        let mut changes = Vec::new();
        for entry in self.entries() {
            for (key, kv) in entry.changes.iter().rev() {
                let value = kv.as_ref().map(|kv| kv.value.clone());
                changes.push(CommittedChange {
                    revision: entry.revision,
                    key: key.clone(),
                    value,
                });
            }
        }
        changes.reverse();
        changes
    }

    fn range(&self, key: &str, revision: Revision) -> Response {
        match self.check_read_revision(revision) {
            Ok(at) => Response::Get {
                header_revision: self.revision,
                kv: self.kv_at(key, at),
            },
            Err(error) => Response::Error(error),
        }
    }

    fn check_read_revision(&self, revision: Revision) -> Result<Revision, EtcdError> {
        if revision == Revision::LATEST {
            Ok(self.revision)
        } else if revision > self.revision {
            Err(EtcdError::FutureRevision)
        } else if revision < self.compact_revision {
            Err(EtcdError::Compacted)
        } else {
            Ok(revision)
        }
    }

    /// The key's state at `at` (<= `revision`): the newest change at or before it.
    fn kv_at(&self, key: &str, at: Revision) -> Option<KeyValue> {
        if let Some(kv) = self.current.get(key) {
            if kv.mod_revision <= at {
                return Some(kv.clone());
            }
        }
        self.entries()
            .filter(|entry| entry.revision <= at)
            .find_map(|entry| entry.changes.iter().find(|(k, _)| k == key))
            .and_then(|(_, kv)| kv.clone())
    }

    fn entries(&self) -> impl Iterator<Item = &LogEntry> {
        std::iter::successors(self.log.as_deref(), |entry| entry.prev.as_deref())
    }

    fn apply_put(&self, key: &str, value: &str) -> (EtcdState, Response) {
        let mut writer = Writer::new(self);
        writer.put(key, value);
        let next = writer.commit();
        let header_revision = next.revision;
        (next, Response::Put { header_revision })
    }

    fn apply_delete(&self, key: &str) -> (EtcdState, Response) {
        let mut writer = Writer::new(self);
        let deleted = writer.delete(key);
        let next = writer.commit();
        let header_revision = next.revision;
        (
            next,
            Response::Delete {
                header_revision,
                deleted,
            },
        )
    }

    fn apply_txn(&self, txn: &Txn) -> (EtcdState, Response) {
        let succeeded = txn.compares.iter().all(|compare| self.holds(compare));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut writer = Writer::new(self);
        let results = branch.iter().map(|op| writer.run(op)).collect();
        let next = writer.commit();
        let header_revision = next.revision;
        (
            next,
            Response::Txn {
                header_revision,
                succeeded,
                results,
            },
        )
    }

    fn apply_compact(&self, revision: Revision) -> (EtcdState, Response) {
        if revision <= self.compact_revision {
            return (self.clone(), Response::Error(EtcdError::Compacted));
        }
        if revision > self.revision {
            return (self.clone(), Response::Error(EtcdError::FutureRevision));
        }
        let next = EtcdState {
            compact_revision: revision,
            ..self.clone()
        };
        (
            next,
            Response::Compact {
                header_revision: self.revision,
            },
        )
    }

    fn holds(&self, compare: &Compare) -> bool {
        let kv = self.current.get(&compare.key);
        let ordering = match (&compare.target, kv) {
            // etcd: comparing the value of a missing key always fails.
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(operand), Some(kv)) => {
                kv.value.as_bytes().cmp(operand.as_bytes())
            }
            (CompareTarget::Version(operand), kv) => kv.map_or(0, |kv| kv.version).cmp(operand),
            (CompareTarget::ModRevision(operand), kv) => {
                kv.map_or(Revision(0), |kv| kv.mod_revision).cmp(operand)
            }
            (CompareTarget::CreateRevision(operand), kv) => {
                kv.map_or(Revision(0), |kv| kv.create_revision).cmp(operand)
            }
        };
        compare_holds(compare.op, ordering)
    }
}

fn compare_holds(op: CompareOp, ordering: Ordering) -> bool {
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}

/// The writes of one request, all at revision `base.revision + 1`; reads in
/// the same txn see them. Nothing is committed if nothing changed.
struct Writer<'a> {
    base: &'a EtcdState,
    pending: Revision,
    working: Option<BTreeMap<Key, KeyValue>>,
    changes: Vec<(Key, Option<KeyValue>)>,
}

impl<'a> Writer<'a> {
    fn new(base: &'a EtcdState) -> Writer<'a> {
        Writer {
            base,
            pending: base.revision.next(),
            working: None,
            changes: Vec::new(),
        }
    }

    fn live(&self) -> &BTreeMap<Key, KeyValue> {
        self.working.as_ref().unwrap_or(&self.base.current)
    }

    fn working(&mut self) -> &mut BTreeMap<Key, KeyValue> {
        let base = &self.base.current;
        self.working.get_or_insert_with(|| (**base).clone())
    }

    fn run(&mut self, op: &TxnOp) -> TxnOpResult {
        match op {
            TxnOp::Get { key } => TxnOpResult::Get(self.live().get(key).cloned()),
            TxnOp::Put { key, value } => {
                self.put(key, value);
                TxnOpResult::Put
            }
            TxnOp::Delete { key } => TxnOpResult::Delete {
                deleted: self.delete(key),
            },
        }
    }

    fn put(&mut self, key: &str, value: &str) {
        let pending = self.pending;
        let kv = match self.live().get(key) {
            Some(old) => KeyValue {
                value: value.to_owned(),
                create_revision: old.create_revision,
                mod_revision: pending,
                version: old.version + 1,
            },
            None => KeyValue {
                value: value.to_owned(),
                create_revision: pending,
                mod_revision: pending,
                version: 1,
            },
        };
        self.working().insert(key.to_owned(), kv.clone());
        self.changes.push((key.to_owned(), Some(kv)));
    }

    /// Returns the number of keys deleted (0 or 1).
    fn delete(&mut self, key: &str) -> u64 {
        if !self.live().contains_key(key) {
            return 0;
        }
        self.working().remove(key);
        self.changes.push((key.to_owned(), None));
        1
    }

    fn commit(self) -> EtcdState {
        let Some(working) = self.working.filter(|_| !self.changes.is_empty()) else {
            return self.base.clone();
        };
        let prev = self.base.log.clone();
        let fingerprint = fingerprint(
            prev.as_deref().map_or(0, |e| e.fingerprint),
            self.pending,
            &self.changes,
        );
        let entry = LogEntry {
            revision: self.pending,
            changes: self.changes,
            fingerprint,
            prev,
        };
        EtcdState {
            revision: self.pending,
            compact_revision: self.base.compact_revision,
            current: Rc::new(working),
            log: Some(Rc::new(entry)),
        }
    }
}

fn fingerprint(prev: u64, revision: Revision, changes: &[(Key, Option<KeyValue>)]) -> u64 {
    // DefaultHasher::new() uses fixed keys: deterministic across runs.
    let mut hasher = DefaultHasher::new();
    (prev, revision, changes).hash(&mut hasher);
    hasher.finish()
}

impl PartialEq for EtcdState {
    fn eq(&self, other: &Self) -> bool {
        // `current` is a function of `log`, so it need not be compared.
        self.revision == other.revision
            && self.compact_revision == other.compact_revision
            && logs_equal(self.log.as_ref(), other.log.as_ref())
    }
}

impl Eq for EtcdState {}

fn logs_equal(mut a: Option<&Rc<LogEntry>>, mut b: Option<&Rc<LogEntry>>) -> bool {
    loop {
        match (a, b) {
            (None, None) => return true,
            (Some(x), Some(y)) if Rc::ptr_eq(x, y) => return true,
            (Some(x), Some(y)) => {
                if x.fingerprint != y.fingerprint
                    || x.revision != y.revision
                    || x.changes != y.changes
                {
                    return false;
                }
                (a, b) = (x.prev.as_ref(), y.prev.as_ref());
            }
            _ => return false,
        }
    }
}

impl Hash for EtcdState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.revision.hash(state);
        self.compact_revision.hash(state);
        self.log
            .as_ref()
            .map_or(0, |entry| entry.fingerprint)
            .hash(state);
    }
}

/// Does what the client observed equal what the model predicts? Exact
/// equality: header revisions, kv metadata, txn results, errors.
pub fn matches(expected: &Response, observed: &Response) -> bool {
    expected == observed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Revision as R;

    fn step(state: &mut EtcdState, request: Request) -> Response {
        let (next, response) = state.apply(&request);
        *state = next;
        response
    }

    fn get(state: &EtcdState, key: &str) -> Response {
        state.apply(&Request::get(key)).1
    }

    fn cas(key: &str, version: u64, value: &str) -> Request {
        Request::Txn(Txn {
            compares: vec![Compare::new(
                key,
                CompareTarget::Version(version),
                CompareOp::Equal,
            )],
            success: vec![TxnOp::Put {
                key: key.into(),
                value: value.into(),
            }],
            failure: vec![TxnOp::Get { key: key.into() }],
        })
    }

    #[test]
    fn empty_store_is_at_revision_one() {
        let state = EtcdState::new();
        assert_eq!(
            get(&state, "a"),
            Response::Get {
                header_revision: R(1),
                kv: None
            }
        );
    }

    #[test]
    fn put_bumps_revision_and_version() {
        let mut s = EtcdState::new();
        assert_eq!(
            step(&mut s, Request::put("a", "1")),
            Response::Put {
                header_revision: R(2)
            }
        );
        assert_eq!(
            step(&mut s, Request::put("b", "2")),
            Response::Put {
                header_revision: R(3)
            }
        );
        assert_eq!(
            step(&mut s, Request::put("a", "3")),
            Response::Put {
                header_revision: R(4)
            }
        );
        let kv = Some(KeyValue::new("3", 2, 4, 2));
        assert_eq!(
            get(&s, "a"),
            Response::Get {
                header_revision: R(4),
                kv
            }
        );
    }

    #[test]
    fn delete_of_missing_key_does_not_bump_revision() {
        let mut s = EtcdState::new();
        assert_eq!(
            step(&mut s, Request::delete("a")),
            Response::Delete {
                header_revision: R(1),
                deleted: 0
            }
        );
        step(&mut s, Request::put("a", "1"));
        assert_eq!(
            step(&mut s, Request::delete("a")),
            Response::Delete {
                header_revision: R(3),
                deleted: 1
            }
        );
        assert_eq!(s.revision(), R(3));
    }

    #[test]
    fn version_and_create_revision_restart_after_delete() {
        let mut s = EtcdState::new();
        step(&mut s, Request::put("a", "1"));
        step(&mut s, Request::put("a", "2"));
        step(&mut s, Request::delete("a"));
        step(&mut s, Request::put("a", "3"));
        assert_eq!(s.kv("a"), Some(&KeyValue::new("3", 5, 5, 1)));
    }

    #[test]
    fn get_at_past_revision_returns_old_state() {
        let mut s = EtcdState::new();
        step(&mut s, Request::put("a", "1")); // 2
        step(&mut s, Request::put("b", "x")); // 3
        step(&mut s, Request::put("a", "2")); // 4
        step(&mut s, Request::delete("a")); // 5
        let at = |rev| s.apply(&Request::get_at("a", rev)).1;
        assert_eq!(
            at(1),
            Response::Get {
                header_revision: R(5),
                kv: None
            }
        );
        assert_eq!(
            at(3),
            Response::Get {
                header_revision: R(5),
                kv: Some(KeyValue::new("1", 2, 2, 1))
            }
        );
        assert_eq!(
            at(4),
            Response::Get {
                header_revision: R(5),
                kv: Some(KeyValue::new("2", 2, 4, 2))
            }
        );
        assert_eq!(
            at(5),
            Response::Get {
                header_revision: R(5),
                kv: None
            }
        );
        assert_eq!(at(6), Response::Error(EtcdError::FutureRevision));
    }

    #[test]
    fn compaction_rules_follow_etcd() {
        let mut s = EtcdState::new();
        step(&mut s, Request::put("a", "1")); // 2
        step(&mut s, Request::put("a", "2")); // 3
        assert_eq!(
            step(&mut s, Request::compact(4)),
            Response::Error(EtcdError::FutureRevision)
        );
        assert_eq!(
            step(&mut s, Request::compact(2)),
            Response::Compact {
                header_revision: R(3)
            }
        );
        assert_eq!(s.compact_revision(), R(2));
        assert_eq!(
            step(&mut s, Request::compact(2)),
            Response::Error(EtcdError::Compacted)
        );
        assert_eq!(
            s.apply(&Request::get_at("a", 1)).1,
            Response::Error(EtcdError::Compacted)
        );
        let at_compact = Response::Get {
            header_revision: R(3),
            kv: Some(KeyValue::new("1", 2, 2, 1)),
        };
        assert_eq!(s.apply(&Request::get_at("a", 2)).1, at_compact);
        assert_eq!(s.revision(), R(3), "compaction does not bump the revision");
    }

    #[test]
    fn txn_cas_succeeds_once() {
        let mut s = EtcdState::new();
        step(&mut s, Request::put("a", "1")); // 2, version 1
        let first = step(&mut s, cas("a", 1, "x"));
        assert_eq!(
            first,
            Response::Txn {
                header_revision: R(3),
                succeeded: true,
                results: vec![TxnOpResult::Put]
            }
        );
        let second = step(&mut s, cas("a", 1, "y"));
        let seen = TxnOpResult::Get(Some(KeyValue::new("x", 2, 3, 2)));
        assert_eq!(
            second,
            Response::Txn {
                header_revision: R(3),
                succeeded: false,
                results: vec![seen]
            }
        );
    }

    #[test]
    fn txn_writes_share_one_revision_and_reads_see_them() {
        let mut s = EtcdState::new();
        let txn = Txn {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: "a".into(),
                    value: "1".into(),
                },
                TxnOp::Put {
                    key: "b".into(),
                    value: "2".into(),
                },
                TxnOp::Get { key: "a".into() },
                TxnOp::Delete { key: "c".into() },
            ],
            failure: vec![],
        };
        let results = vec![
            TxnOpResult::Put,
            TxnOpResult::Put,
            TxnOpResult::Get(Some(KeyValue::new("1", 2, 2, 1))),
            TxnOpResult::Delete { deleted: 0 },
        ];
        let expected = Response::Txn {
            header_revision: R(2),
            succeeded: true,
            results,
        };
        assert_eq!(step(&mut s, Request::Txn(txn)), expected);
        assert_eq!(s.kv("b"), Some(&KeyValue::new("2", 2, 2, 1)));
    }

    #[test]
    fn txn_without_effective_writes_does_not_bump() {
        let mut s = EtcdState::new();
        let txn = Txn {
            success: vec![TxnOp::Delete { key: "a".into() }],
            ..Txn::default()
        };
        let expected = Response::Txn {
            header_revision: R(1),
            succeeded: true,
            results: vec![TxnOpResult::Delete { deleted: 0 }],
        };
        assert_eq!(step(&mut s, Request::Txn(txn)), expected);
    }

    #[test]
    fn value_compare_on_missing_key_is_always_false() {
        let s = EtcdState::new();
        for op in [
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Less,
            CompareOp::Greater,
        ] {
            assert!(!s.holds(&Compare::new("a", CompareTarget::Value("x".into()), op)));
        }
        assert!(s.holds(&Compare::new(
            "a",
            CompareTarget::ModRevision(R(0)),
            CompareOp::Equal
        )));
        assert!(s.holds(&Compare::new(
            "a",
            CompareTarget::CreateRevision(R(1)),
            CompareOp::Less
        )));
    }

    #[test]
    fn equal_histories_give_equal_states_and_hashes() {
        let build = |order: &[&str]| {
            let mut s = EtcdState::new();
            for key in order {
                step(&mut s, Request::put(key, "v"));
            }
            s
        };
        let (a, b, c) = (build(&["a", "b"]), build(&["a", "b"]), build(&["b", "a"]));
        assert_eq!(a, b);
        let hash = |s: &EtcdState| {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, c, "same revision, different history");
        assert_eq!(
            a.apply(&Request::get("x")).0,
            a,
            "reads do not change the state"
        );
    }

    #[test]
    fn committed_changes_list_every_write_in_order() {
        let mut s = EtcdState::new();
        step(&mut s, Request::put("a", "1"));
        step(&mut s, Request::delete("a"));
        let changes: Vec<_> = s
            .committed_changes()
            .into_iter()
            .map(|c| (c.revision.0, c.key, c.value))
            .collect();
        assert_eq!(
            changes,
            vec![
                (2, "a".to_owned(), Some("1".to_owned())),
                (3, "a".to_owned(), None)
            ]
        );
    }

    #[test]
    fn dropping_a_long_history_does_not_overflow_the_stack() {
        let mut s = EtcdState::new();
        for i in 0..200_000 {
            s = s.apply(&Request::put("a", &i.to_string())).0;
        }
        drop(s);
    }
}
