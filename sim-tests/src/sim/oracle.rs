//! The raft oracle: a `Probe` on every member of a simulated cluster.
//!
//! It checks, as the members run:
//! - election safety: at most one member leads any term;
//! - committed entries never change: every member applies the same payload
//!   and term at each index (also a member re-applying entries after a crash
//!   lost its unsynced applied index);
//! - applied state equal at equal indexes: applying index `i` makes the same
//!   changes and leaves the same revision on every member;
//! - configurations equal at equal indexes: every member that applies a
//!   conf-change entry reports the same Raft configuration after it
//!   (`AppliedEntry::conf`: voters and learners);
//! - at most one configuration change pending at a time
//!   (`conf_change_violations`, checked at the end of a run): for every two
//!   consecutive conf-change entries `i < j` of the committed log, the leader
//!   of `j`'s term (the member that appended `j`) had applied `i` — or
//!   installed a snapshot at or beyond `i` — before any member applied `j`.
//!   Every committed conf-change entry that some member's applied index
//!   passed is seen by the oracle: a snapshot is only ever of state some
//!   member reached by applying entries one by one, so the first member past
//!   an index applied it (and reported it) itself. So `i` really is the
//!   previous conf change, not merely an earlier one.
//! and collects the committed history (every change at every revision, from
//! the events of applied entries), which the durability and serializable-read
//! checkers and the end-of-run comparison use; and, for the backup check
//! (`expected_image`), every change as etcd's `key` bucket stores it, each
//! entry's resulting revision and each compaction that took effect.
//!
//! It also answers the server's buggify points, from its own seeded RNG.
//! Tests: exercised by every simulation run (`tests/sim.rs`).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use cairn::mvcc::{KeyRevision, Revision as MvccRevision};
use cairn::server::{AppliedEntry, ConfAfter, Probe};
use cairn_proto::cairnpb::{internal_request, InternalRequest};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{CommittedChange, CommittedHistory, Revision};

/// How often the buggify points fire (0 disables them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Buggify {
    /// Probability that a member delays applying a batch of committed entries.
    pub delay_apply: f64,
    /// Probability, per Ready, that a member compacts its Raft log early.
    pub compact_early: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AppliedRecord {
    term: u64,
    payload_hash: u64,
    effects_hash: u64,
    revision: i64,
    first_member: u64,
    conf: Option<ConfAfter>,
}

/// A conf-change entry as first applied.
#[derive(Debug, Clone)]
struct ConfRecord {
    term: u64,
    conf: ConfAfter,
    /// Every member's highest applied (or snapshot-installed) index just
    /// before the first member applied this entry.
    applied_before: BTreeMap<u64, u64>,
}

#[derive(Default)]
struct State {
    leaders: BTreeMap<u64, u64>,
    applied: BTreeMap<u64, AppliedRecord>,
    /// (revision, key) → value (`None`: deleted), from applied events.
    changes: BTreeMap<(i64, Vec<u8>), Option<Vec<u8>>>,
    max_revision: i64,
    /// Simulated time of the latest leadership claim.
    last_leader_change: Duration,
    /// key → (revision, simulated time of the first apply) of each deletion.
    deleted_at: BTreeMap<String, Vec<(i64, Duration)>>,
    violations: Vec<String>,
    /// A member's invariant check failed: checks stop (the first failure
    /// is the one that matters, and each would repeat at every step).
    invariant_broken: bool,
    applies: u64,
    snapshot_installs: u64,
    /// member → the highest index it ever applied or installed a snapshot
    /// at (never lowered by a restart that lost its unsynced applied index).
    max_applied: BTreeMap<u64, u64>,
    /// Conf-change entries by index.
    conf_changes: BTreeMap<u64, ConfRecord>,
    buggify_fired: u64,
    /// Every change as etcd's `key` bucket holds it, by (main, sub)
    /// revision: the key, whether it is a tombstone, and the record's value
    /// (an `mvccpb.KeyValue`; a tombstone's holds only the key). From the
    /// first apply of each entry (sub = the change's position in it).
    records: BTreeMap<(i64, i64), StoredChange>,
    /// Index of each compaction entry that took effect → its revision (a
    /// compaction takes effect when its revision is above the previous one
    /// and not above the store's revision, as `MvccStore::compact` says).
    compactions: BTreeMap<u64, i64>,
    /// Client writes and auth changes, as first applied: index → (request,
    /// why it was refused), for the auth checker (`checker::auth`).
    auth_log: BTreeMap<u64, (InternalRequest, Option<String>)>,
}

/// One change as the `key` bucket of a snapshot holds it.
#[derive(Debug, Clone)]
struct StoredChange {
    key: Vec<u8>,
    tombstone: bool,
    value: Vec<u8>,
}

/// What a snapshot database at one applied index must hold.
#[derive(Debug, Clone)]
pub struct ExpectedImage {
    /// The store's revision after that index.
    pub revision: i64,
    /// The compact revision in effect at that index.
    pub compacted: Option<i64>,
    /// The `key` bucket, in key order: revision key (with `t` for a
    /// tombstone) → `mvccpb.KeyValue`.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct Oracle {
    start: tokio::time::Instant,
    state: Mutex<State>,
    buggify: Mutex<(Buggify, StdRng)>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn effects_hash(events: &[Event], revision: i64, refused: Option<&str>, v2: Option<&str>) -> u64 {
    let mut h = DefaultHasher::new();
    revision.hash(&mut h);
    // A v2 write's effect on the v2 store (its events or its error).
    v2.hash(&mut h);
    // Whether (and why) the request was refused is part of its effect: the
    // members must agree on every auth decision.
    refused.hash(&mut h);
    // prev_kv is left out: members fill it only when a watcher wants it.
    for e in events {
        e.r#type.hash(&mut h);
        e.kv.as_ref().map(|kv| kv.encode_to_vec()).hash(&mut h);
    }
    h.finish()
}

impl Oracle {
    pub fn new(seed: u64) -> Oracle {
        Oracle {
            start: tokio::time::Instant::now(),
            state: Mutex::new(State::default()),
            buggify: Mutex::new((Buggify::default(), StdRng::seed_from_u64(seed))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("oracle lock poisoned")
    }

    pub fn set_buggify(&self, b: Buggify) {
        self.buggify.lock().expect("buggify lock poisoned").0 = b;
    }

    fn roll(&self, pick: impl Fn(&Buggify) -> f64) -> bool {
        let mut g = self.buggify.lock().expect("buggify lock poisoned");
        let p = pick(&g.0);
        let fire = p > 0.0 && g.1.random_bool(p.min(1.0));
        drop(g);
        if fire {
            self.lock().buggify_fired += 1;
        }
        fire
    }

    /// When the latest leader took over (simulated time since the start).
    pub fn last_leader_change(&self) -> Duration {
        self.lock().last_leader_change
    }

    /// Every deletion: key → (revision, simulated time it was first applied).
    pub fn deletions(&self) -> BTreeMap<String, Vec<(i64, Duration)>> {
        self.lock().deleted_at.clone()
    }

    /// Every broken invariant seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// The leader of the highest term seen, if any.
    pub fn latest_leader(&self) -> Option<(u64, u64)> {
        self.lock()
            .leaders
            .iter()
            .next_back()
            .map(|(t, m)| (*t, *m))
    }

    /// The configuration-change check (see the module header): one failure
    /// per offending pair of consecutive conf-change entries.
    pub fn conf_change_violations(&self) -> Vec<String> {
        let st = self.lock();
        one_pending_conf_change(&st.conf_changes, &st.leaders)
    }

    /// The configuration after the last conf-change entry applied, with its
    /// index.
    pub fn last_conf(&self) -> Option<(u64, ConfAfter)> {
        self.lock()
            .conf_changes
            .iter()
            .next_back()
            .map(|(i, r)| (*i, r.conf.clone()))
    }

    /// Whether `member` ever applied an entry or installed a snapshot.
    pub fn has_applied(&self, member: u64) -> bool {
        self.lock().max_applied.contains_key(&member)
    }

    /// How many conf-change entries were committed (and applied somewhere).
    pub fn conf_change_count(&self) -> usize {
        self.lock().conf_changes.len()
    }

    pub fn stats(&self) -> String {
        let st = self.lock();
        format!(
            "terms with a leader: {}, highest applied index: {}, applies: {}, snapshot installs: {}, buggify fired: {}, revision: {}, conf changes: {}",
            st.leaders.len(),
            st.applied.keys().next_back().copied().unwrap_or(0),
            st.applies,
            st.snapshot_installs,
            st.buggify_fired,
            st.max_revision,
            st.conf_changes.len()
        )
    }

    /// The revision of every compaction that took effect, in order.
    pub fn compaction_revisions(&self) -> Vec<i64> {
        self.lock().compactions.values().copied().collect()
    }

    /// What a snapshot database whose `consistent_index` is `index` must
    /// hold; an error when no member ever applied that index.
    pub fn expected_image(&self, index: u64) -> Result<ExpectedImage, String> {
        let st = self.lock();
        // Index 0: a member that applied nothing yet holds the empty store.
        let revision = match st.applied.get(&index) {
            Some(applied) => applied.revision,
            None if index == 0 => MvccRevision::INITIAL.0,
            None => {
                return Err(format!(
                    "no member applied index {index} (the highest applied is {})",
                    st.applied.keys().next_back().copied().unwrap_or(0)
                ))
            }
        };
        let compacted = st.compactions.range(..=index).next_back().map(|(_, c)| *c);
        Ok(ExpectedImage {
            revision,
            compacted,
            records: key_bucket_at(&st.records, revision, compacted),
        })
    }

    /// The committed history as the members applied it. Keys and values are
    /// the workload's UTF-8 strings.
    /// Every applied entry the auth rules decide (client writes, auth
    /// changes), in index order, with why it was refused.
    pub fn auth_log(&self) -> Vec<(u64, InternalRequest, Option<String>)> {
        self.lock()
            .auth_log
            .iter()
            .map(|(i, (r, why))| (*i, r.clone(), why.clone()))
            .collect()
    }

    pub fn committed_history(&self) -> CommittedHistory {
        let st = self.lock();
        let changes = st
            .changes
            .iter()
            .map(|((rev, key), value)| CommittedChange {
                revision: Revision(*rev as u64),
                key: String::from_utf8_lossy(key).into_owned(),
                value: value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            })
            .collect();
        CommittedHistory {
            compact_revision: Revision(0),
            current_revision: Revision(st.max_revision.max(1) as u64),
            changes,
        }
    }
}

/// Records what the first apply of `e` adds to the `key` bucket, and a
/// compaction that takes effect.
fn record_first_apply(st: &mut State, e: &AppliedEntry<'_>) {
    if let Ok(req) = InternalRequest::decode(e.data) {
        if crate::checker::auth::is_decided(&req) {
            st.auth_log.insert(e.index, (req, e.refused.clone()));
        }
    }
    for (sub, ev) in e.events.iter().enumerate() {
        let Some(kv) = &ev.kv else { continue };
        let tombstone = ev.r#type() == EventType::Delete;
        let value = if tombstone {
            KeyValue {
                key: kv.key.clone(),
                ..KeyValue::default()
            }
        } else {
            KeyValue {
                key: kv.key.clone(),
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                value: kv.value.clone(),
                lease: kv.lease,
            }
        };
        let change = StoredChange {
            key: kv.key.clone(),
            tombstone,
            value: value.encode_to_vec(),
        };
        st.records.insert((kv.mod_revision, sub as i64), change);
    }
    if e.conf.is_some() || e.data.is_empty() {
        return;
    }
    let Ok(req) = InternalRequest::decode(e.data) else {
        return;
    };
    if let Some(internal_request::Request::Compaction(c)) = req.request {
        let previous = st.compactions.values().next_back().copied().unwrap_or(-1);
        if c.revision > previous && c.revision <= e.revision {
            st.compactions.insert(e.index, c.revision);
        }
    }
}

/// The `key` bucket at store revision `revision` after compacting at
/// `compacted`: per key, the newest change at or below the compact revision
/// if it is a put, and every later change up to `revision`.
fn key_bucket_at(
    records: &BTreeMap<(i64, i64), StoredChange>,
    revision: i64,
    compacted: Option<i64>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = compacted.unwrap_or(0);
    let mut newest: BTreeMap<&[u8], (i64, i64)> = BTreeMap::new();
    for (rev, ch) in records.range(..=(c, i64::MAX)) {
        newest.insert(&ch.key, *rev);
    }
    records
        .range(..=(revision, i64::MAX))
        .filter(|(rev, ch)| {
            rev.0 > c || (!ch.tombstone && newest.get(ch.key.as_slice()) == Some(*rev))
        })
        .map(|((main, sub), ch)| {
            let key = KeyRevision::new(MvccRevision(*main), *sub).to_key(ch.tombstone);
            (key, ch.value.clone())
        })
        .collect()
}

/// At most one configuration change pending at a time: for consecutive
/// conf-change entries `i < j`, the leader of `j`'s term had applied `i` (or
/// installed a snapshot at or beyond it) before any member applied `j`.
/// `leaders`: term → the member that led it.
fn one_pending_conf_change(
    conf_changes: &BTreeMap<u64, ConfRecord>,
    leaders: &BTreeMap<u64, u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    let entries: Vec<(&u64, &ConfRecord)> = conf_changes.iter().collect();
    for w in entries.windows(2) {
        let ((i, _), (j, rj)) = (w[0], w[1]);
        let Some(leader) = leaders.get(&rj.term) else {
            out.push(format!(
                "the conf change at index {j} has term {}, which no member led",
                rj.term
            ));
            continue;
        };
        let applied = rj.applied_before.get(leader).copied().unwrap_or(0);
        if applied < *i {
            out.push(format!(
                "two configuration changes pending at once: {leader:x}, leader of term {}, had applied only up to index {applied} when the conf change it appended at index {j} was first applied, so the conf change at index {i} was still pending",
                rj.term
            ));
        }
    }
    out
}

impl Probe for Oracle {
    fn on_leader(&self, member: u64, term: u64) {
        let mut st = self.lock();
        match st.leaders.get(&term) {
            Some(other) if *other != member => {
                let v = format!(
                    "election safety: members {other:x} and {member:x} both led term {term}"
                );
                st.violations.push(v);
            }
            _ => {
                st.leaders.insert(term, member);
                st.last_leader_change = self.start.elapsed();
            }
        }
    }

    fn on_apply(&self, e: &AppliedEntry<'_>) {
        let record = AppliedRecord {
            term: e.term,
            payload_hash: hash_of(e.data),
            effects_hash: effects_hash(e.events, e.revision, e.refused.as_deref(), e.v2.as_deref()),
            revision: e.revision,
            first_member: e.member,
            conf: e.conf.clone(),
        };
        let mut st = self.lock();
        st.applies += 1;
        match st.applied.get(&e.index).cloned() {
            Some(seen) => {
                if seen.term != record.term || seen.payload_hash != record.payload_hash {
                    let v = format!(
                        "committed entry changed: index {} was term {} on member {:x} but term {} (different payload: {}) on member {:x}",
                        e.index, seen.term, seen.first_member, record.term,
                        seen.payload_hash != record.payload_hash, e.member
                    );
                    st.violations.push(v);
                } else if seen.effects_hash != record.effects_hash {
                    let v = format!(
                        "applied state diverged: applying index {} left revision {} on member {:x} but revision {} (or different changes) on member {:x}",
                        e.index, seen.revision, seen.first_member, record.revision, e.member
                    );
                    st.violations.push(v);
                } else if seen.conf != record.conf {
                    let v = format!(
                        "configurations diverged: after the conf change at index {} member {:x} has {:?} but member {:x} has {:?}",
                        e.index, seen.first_member, seen.conf, e.member, record.conf
                    );
                    st.violations.push(v);
                }
            }
            None => {
                record_first_apply(&mut st, e);
                if let Some(conf) = &record.conf {
                    let r = ConfRecord {
                        term: e.term,
                        conf: conf.clone(),
                        applied_before: st.max_applied.clone(),
                    };
                    st.conf_changes.insert(e.index, r);
                }
                st.applied.insert(e.index, record);
            }
        }
        let m = st.max_applied.entry(e.member).or_insert(0);
        *m = (*m).max(e.index);
        for ev in e.events {
            let Some(kv) = &ev.kv else { continue };
            let value = match ev.r#type() {
                EventType::Put => Some(kv.value.clone()),
                EventType::Delete => None,
            };
            if value.is_none() {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                let at = self.start.elapsed();
                let seen = st.deleted_at.entry(key).or_default();
                if !seen.iter().any(|(rev, _)| *rev == kv.mod_revision) {
                    seen.push((kv.mod_revision, at));
                }
            }
            st.changes.insert((kv.mod_revision, kv.key.clone()), value);
        }
        st.max_revision = st.max_revision.max(e.revision);
    }

    fn on_snapshot_installed(&self, member: u64, index: u64) {
        let mut st = self.lock();
        st.snapshot_installs += 1;
        let m = st.max_applied.entry(member).or_insert(0);
        *m = (*m).max(index);
    }

    fn delay_apply(&self, _member: u64) -> Option<Duration> {
        if self.roll(|b| b.delay_apply) {
            let ms = self
                .buggify
                .lock()
                .expect("buggify lock poisoned")
                .1
                .random_range(1..300);
            Some(Duration::from_millis(ms))
        } else {
            None
        }
    }

    fn compact_log_early(&self, _member: u64) -> bool {
        self.roll(|b| b.compact_early)
    }

    fn check_invariants(&self, _member: u64) -> bool {
        !self.lock().invariant_broken
    }

    fn on_invariant_broken(&self, member: u64, what: &str, message: &str) {
        let mut st = self.lock();
        st.invariant_broken = true;
        let at = self.start.elapsed();
        st.violations.push(format!(
            "invariant broken: member {member:x}'s {what} at {:.3}s: {message}",
            at.as_secs_f64()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64]) -> ConfAfter {
        ConfAfter {
            voters: voters.to_vec(),
            learners: Vec::new(),
        }
    }

    fn record(term: u64, applied_before: &[(u64, u64)]) -> ConfRecord {
        ConfRecord {
            term,
            conf: conf(&[1, 2, 3]),
            applied_before: applied_before.iter().copied().collect(),
        }
    }

    #[test]
    fn a_conf_change_appended_before_the_leader_applied_the_previous_one_is_reported() {
        let leaders = BTreeMap::from([(2, 1), (3, 2)]);
        // Leader 1 of term 2 had applied index 10 when the entry at 12 was
        // first applied: the conf change at 10 was no longer pending.
        let fine = BTreeMap::from([(10, record(2, &[])), (12, record(2, &[(1, 10), (2, 4)]))]);
        assert_eq!(
            one_pending_conf_change(&fine, &leaders),
            Vec::<String>::new()
        );
        // Leader 2 of term 3 had applied only up to 9: two pending at once.
        let bad = BTreeMap::from([(10, record(2, &[])), (12, record(3, &[(1, 11), (2, 9)]))]);
        let found = one_pending_conf_change(&bad, &leaders);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("index 12") && found[0].contains("index 10"));
        // A member that never applied anything counts as having applied 0.
        let unknown = BTreeMap::from([(10, record(2, &[])), (12, record(3, &[(1, 11)]))]);
        assert_eq!(one_pending_conf_change(&unknown, &leaders).len(), 1);
    }

    #[test]
    fn a_conf_change_whose_term_no_member_led_is_reported() {
        let changes = BTreeMap::from([(10, record(2, &[])), (12, record(7, &[(1, 11)]))]);
        let found = one_pending_conf_change(&changes, &BTreeMap::from([(2, 1)]));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("term 7"), "{found:?}");
    }

    fn apply(oracle: &Oracle, member: u64, index: u64, term: u64, conf: Option<ConfAfter>) {
        oracle.on_apply(&AppliedEntry {
            member,
            index,
            term,
            data: b"cc",
            events: &[],
            revision: 1,
            conf,
            refused: None,
            v2: None,
        });
    }

    #[test]
    fn members_reporting_different_configurations_after_one_entry_are_reported() {
        madsim::runtime::Runtime::new().block_on(async {
            let oracle = Oracle::new(1);
            oracle.on_leader(1, 2);
            apply(&oracle, 1, 10, 2, Some(conf(&[1, 2, 3])));
            apply(&oracle, 2, 10, 2, Some(conf(&[1, 2, 3])));
            assert_eq!(oracle.violations(), Vec::<String>::new());
            apply(&oracle, 3, 10, 2, Some(conf(&[1, 2])));
            let v = oracle.violations();
            assert_eq!(v.len(), 1, "{v:?}");
            assert!(v[0].contains("configurations diverged"), "{v:?}");
        });
    }

    #[test]
    fn the_oracle_records_what_the_leader_had_applied_when_a_conf_change_is_first_applied() {
        madsim::runtime::Runtime::new().block_on(async {
            let oracle = Oracle::new(1);
            oracle.on_leader(1, 2);
            apply(&oracle, 1, 10, 2, Some(conf(&[1, 2, 3])));
            // Member 2 catches up by snapshot past 10; then leads term 3.
            oracle.on_snapshot_installed(2, 11);
            oracle.on_leader(2, 3);
            apply(&oracle, 2, 12, 3, Some(conf(&[1, 2])));
            apply(&oracle, 1, 12, 3, Some(conf(&[1, 2])));
            assert_eq!(oracle.conf_change_violations(), Vec::<String>::new());
            assert_eq!(oracle.last_conf(), Some((12, conf(&[1, 2]))));
            // A third conf change appended by member 3, which led term 4
            // without having applied anything, breaks the rule.
            oracle.on_leader(3, 4);
            apply(&oracle, 1, 13, 4, Some(conf(&[1])));
            let v = oracle.conf_change_violations();
            assert_eq!(v.len(), 1, "{v:?}");
            assert!(v[0].contains("index 12"), "{v:?}");
        });
    }
}
