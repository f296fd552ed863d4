//! The raft oracle: a `Probe` on every member of a simulated cluster.
//!
//! It checks, as the members run:
//! - election safety: at most one member leads any term;
//! - committed entries never change: every member applies the same payload
//!   and term at each index (also a member re-applying entries after a crash
//!   lost its unsynced applied index);
//! - applied state equal at equal indexes: applying index `i` makes the same
//!   changes and leaves the same revision on every member.
//! and collects the committed history (every change at every revision, from
//! the events of applied entries), which the durability and serializable-read
//! checkers and the end-of-run comparison use.
//!
//! It also answers the server's buggify points, from its own seeded RNG.
//! Tests: exercised by every simulation run (`tests/sim.rs`).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use cairn::server::{AppliedEntry, Probe};
use cairn_proto::mvccpb::{event::EventType, Event};
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
    applies: u64,
    snapshot_installs: u64,
    buggify_fired: u64,
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

fn effects_hash(events: &[Event], revision: i64) -> u64 {
    let mut h = DefaultHasher::new();
    revision.hash(&mut h);
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

    pub fn stats(&self) -> String {
        let st = self.lock();
        format!(
            "terms with a leader: {}, highest applied index: {}, applies: {}, snapshot installs: {}, buggify fired: {}, revision: {}",
            st.leaders.len(),
            st.applied.keys().next_back().copied().unwrap_or(0),
            st.applies,
            st.snapshot_installs,
            st.buggify_fired,
            st.max_revision
        )
    }

    /// The committed history as the members applied it. Keys and values are
    /// the workload's UTF-8 strings.
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
            effects_hash: effects_hash(e.events, e.revision),
            revision: e.revision,
            first_member: e.member,
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
                }
            }
            None => {
                st.applied.insert(e.index, record);
            }
        }
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

    fn on_snapshot_installed(&self, _member: u64, _index: u64) {
        self.lock().snapshot_installs += 1;
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
}
