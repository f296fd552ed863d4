//! The in-memory key index: key → generations of revisions.
//!
//! A generation is one life of a key: it starts with the put that creates the
//! key and ends with the tombstone that deletes it. Versions count puts within
//! a generation (1 on create), so they reset after a delete. The index holds
//! only revisions; values live in Storage under the revision (see `store.rs`).
//! It is rebuilt from Storage on open (`restore`), and compaction drops the
//! revisions no read at or after the compact revision can see.
//!
//! Tests: unit tests at the bottom; the store-level properties in `tests.rs`
//! and `model_tests.rs` exercise it through the public API.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::kv::Kv;
use super::revision::{KeyRevision, Revision};

/// Which keys a request addresses, decoded from etcd's `key` / `range_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `[start, end)`; `end = None` when `range_end` is `"\0"` (all keys ≥ start).
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// etcd's rules: empty `range_end` = one key, `"\0"` = every key ≥ `key`,
    /// otherwise the half-open interval (empty when `range_end <= key`).
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_slice() == key,
            KeyRange::Span { start, end } => {
                start.as_slice() <= key && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }

    /// Bounds for `BTreeMap::range`; `None` when the range is empty (a
    /// reversed span would make `BTreeMap::range` panic).
    fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeyRange::Single(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeyRange::Span { start, end: None } => Some((Bound::Included(start), Bound::Unbounded)),
            KeyRange::Span {
                start,
                end: Some(end),
            } if start < end => Some((Bound::Included(start), Bound::Excluded(end))),
            KeyRange::Span { .. } => None,
        }
    }
}

type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The put that is visible for a key at some revision, with the key's
/// `create_revision` and `version` at that put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRev {
    pub rev: KeyRevision,
    pub created: Revision,
    pub version: i64,
}

/// One life of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    /// Main revision of the creating put; kept when compaction drops that put.
    created: Revision,
    /// Version of the newest put in `puts`; kept when compaction drops puts.
    version: i64,
    /// Puts still present, ascending. Never empty: compaction removes a
    /// generation whole rather than leaving only its tombstone.
    puts: Vec<KeyRevision>,
    /// The deletion ending this generation; `None` only for the last one.
    tombstone: Option<KeyRevision>,
}

impl Generation {
    fn new(created: Revision, version: i64, first: KeyRevision) -> Self {
        Generation {
            created,
            version,
            puts: vec![first],
            tombstone: None,
        }
    }

    fn version_of(&self, put_index: usize) -> i64 {
        self.version - (self.puts.len() - 1 - put_index) as i64
    }
}

/// All lives of one key. Invariants: `generations` is non-empty, only the last
/// may be open (no tombstone), and revisions strictly increase through it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyHistory {
    generations: Vec<Generation>,
}

impl KeyHistory {
    fn last_open(&self) -> Option<&Generation> {
        self.generations.last().filter(|g| g.tombstone.is_none())
    }

    /// The put visible at `at`, if the key is alive then.
    fn get(&self, at: Revision) -> Option<LiveRev> {
        for g in self.generations.iter().rev() {
            if g.tombstone.is_some_and(|t| t.main <= at) {
                return None;
            }
            if let Some(i) = g.puts.iter().rposition(|p| p.main <= at) {
                return Some(LiveRev {
                    rev: g.puts[i],
                    created: g.created,
                    version: g.version_of(i),
                });
            }
        }
        None
    }

    /// Every stored change, oldest first, with whether it is a tombstone.
    fn changes(&self) -> impl Iterator<Item = (KeyRevision, bool)> + '_ {
        self.generations.iter().flat_map(|g| {
            g.puts
                .iter()
                .map(|p| (*p, false))
                .chain(g.tombstone.map(|t| (t, true)))
        })
    }

    /// The newest change at or before `at`, if any.
    fn latest_at(&self, at: Revision) -> Option<(KeyRevision, bool)> {
        self.changes().take_while(|(r, _)| r.main <= at).last()
    }

    /// The history after compacting at `at`, and the changes it drops. `None`
    /// history when nothing of the key survives.
    fn compacted(&self, at: Revision) -> (Option<KeyHistory>, Vec<(KeyRevision, bool)>) {
        let Some((latest, tomb)) = self.latest_at(at) else {
            return (Some(self.clone()), Vec::new());
        };
        // Keep the latest change ≤ at unless it is a tombstone, and all later ones.
        let dropped: Vec<_> = self
            .changes()
            .filter(|(r, _)| *r < latest || (*r == latest && tomb))
            .collect();
        let survives = |r: &KeyRevision| *r > latest || (*r == latest && !tomb);
        let mut generations = Vec::new();
        for g in &self.generations {
            let puts: Vec<_> = g.puts.iter().copied().filter(survives).collect();
            let tombstone = g.tombstone.filter(survives);
            if puts.is_empty() {
                assert!(
                    tombstone.is_none(),
                    "compaction at {at} left a tombstone without its puts"
                );
                continue;
            }
            generations.push(Generation {
                created: g.created,
                version: g.version,
                puts,
                tombstone,
            });
        }
        let history = (!generations.is_empty()).then_some(KeyHistory { generations });
        (history, dropped)
    }
}

/// What a compaction changes in the index, computed before anything is
/// written so the index is only touched after Storage accepted the batch.
#[derive(Debug, Default)]
pub struct CompactionPlan {
    /// New histories of the keys that lose revisions (`None`: key removed).
    updates: Vec<(Vec<u8>, Option<KeyHistory>)>,
    /// The changes to delete from Storage, with whether each is a tombstone.
    pub dropped: Vec<(KeyRevision, bool)>,
}

/// The key index. Invariants: every key maps to a valid `KeyHistory`;
/// `live` is the number of keys whose last generation is open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
    live: usize,
}

impl KeyIndex {
    /// Keys alive after every change so far (etcd's `keys_total` gauge).
    pub fn live_keys(&self) -> usize {
        self.live
    }

    pub fn get(&self, key: &[u8], at: Revision) -> Option<LiveRev> {
        self.keys.get(key)?.get(at)
    }

    /// The live state of `key` after every change so far (for new writes).
    pub fn current(&self, key: &[u8]) -> Option<LiveRev> {
        let g = self.keys.get(key)?.last_open()?;
        let rev = *g.puts.last().expect("a generation always has a put");
        Some(LiveRev {
            rev,
            created: g.created,
            version: g.version,
        })
    }

    /// Keys in `range` alive at `at`, in key order, with their visible put.
    pub fn range<'a>(
        &'a self,
        range: &'a KeyRange,
        at: Revision,
    ) -> impl Iterator<Item = (&'a [u8], LiveRev)> + 'a {
        range
            .bounds()
            .map(|bounds| self.keys.range::<[u8], _>(bounds))
            .into_iter()
            .flatten()
            .filter_map(move |(k, h)| h.get(at).map(|live| (k.as_slice(), live)))
    }

    /// Records a put at `rev`, which must be newer than every change of the key.
    pub fn put(&mut self, key: &[u8], rev: KeyRevision) {
        let Some(h) = self.keys.get_mut(key) else {
            self.live += 1;
            self.keys.insert(
                key.to_vec(),
                KeyHistory {
                    generations: vec![Generation::new(rev.main, 1, rev)],
                },
            );
            return;
        };
        let last = h
            .generations
            .last_mut()
            .expect("a key history is never empty");
        assert!(
            last.puts.last().is_some_and(|p| *p < rev),
            "put at {rev:?} is not newer than the key's history"
        );
        match last.tombstone {
            None => {
                last.puts.push(rev);
                last.version += 1;
            }
            Some(t) => {
                assert!(t < rev, "put at {rev:?} is not newer than tombstone {t:?}");
                h.generations.push(Generation::new(rev.main, 1, rev));
                self.live += 1;
            }
        }
    }

    /// Records the deletion of a live key at `rev`.
    pub fn tombstone(&mut self, key: &[u8], rev: KeyRevision) {
        let g = self
            .keys
            .get_mut(key)
            .and_then(|h| h.generations.last_mut())
            .filter(|g| g.tombstone.is_none())
            .unwrap_or_else(|| panic!("tombstone at {rev:?} for a key that is not alive"));
        assert!(
            g.puts.last().is_some_and(|p| *p < rev),
            "tombstone at {rev:?} is not newer than the key's puts"
        );
        g.tombstone = Some(rev);
        self.live -= 1;
    }

    /// Replays one stored change while rebuilding from Storage (changes come
    /// in revision order). A put starting a generation takes `create_revision`
    /// and `version` from the record, since compaction may have removed the
    /// earlier puts of that generation.
    pub fn restore(&mut self, rev: KeyRevision, tombstone: bool, kv: &Kv) {
        if tombstone {
            // A tombstone whose puts were compacted away is never stored
            // (compaction drops such tombstones), so the key must be alive.
            self.tombstone(&kv.key, rev);
            return;
        }
        let fresh = Generation::new(Revision(kv.create_revision), kv.version, rev);
        match self.keys.get_mut(kv.key.as_slice()) {
            None => {
                self.live += 1;
                self.keys.insert(
                    kv.key.clone(),
                    KeyHistory {
                        generations: vec![fresh],
                    },
                );
            }
            Some(h) if h.last_open().is_none() => {
                h.generations.push(fresh);
                self.live += 1;
            }
            Some(h) => {
                let g = h
                    .generations
                    .last_mut()
                    .expect("a key history is never empty");
                g.puts.push(rev);
                g.version = kv.version;
            }
        }
    }

    /// Plans a compaction at `at` without changing the index.
    pub fn plan_compaction(&self, at: Revision) -> CompactionPlan {
        let mut plan = CompactionPlan::default();
        for (key, h) in &self.keys {
            let (history, dropped) = h.compacted(at);
            if dropped.is_empty() {
                continue;
            }
            plan.dropped.extend(dropped);
            plan.updates.push((key.clone(), history));
        }
        plan.dropped.sort();
        plan
    }

    pub fn apply_compaction(&mut self, plan: CompactionPlan) {
        for (key, history) in plan.updates {
            match history {
                Some(h) => self.keys.insert(key, h),
                None => self.keys.remove(&key),
            };
        }
    }

    /// The revisions at or before `at` that a compaction at `at` would keep:
    /// per key, the newest change ≤ `at` when it is a put.
    pub fn keep(&self, at: Revision) -> std::collections::BTreeSet<KeyRevision> {
        self.keys
            .values()
            .filter_map(|h| h.latest_at(at))
            .filter(|(_, tomb)| !tomb)
            .map(|(r, _)| r)
            .collect()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64, sub: i64) -> KeyRevision {
        KeyRevision::new(Revision(main), sub)
    }

    fn live(rev: KeyRevision, created: i64, version: i64) -> Option<LiveRev> {
        Some(LiveRev {
            rev,
            created: Revision(created),
            version,
        })
    }

    /// put@2, put@3, del@4, put@5, put@6 on key "a".
    fn sample() -> KeyIndex {
        let mut ix = KeyIndex::default();
        ix.put(b"a", r(2, 0));
        ix.put(b"a", r(3, 0));
        ix.tombstone(b"a", r(4, 0));
        ix.put(b"a", r(5, 0));
        ix.put(b"a", r(6, 0));
        ix
    }

    #[test]
    fn live_keys_counts_keys_whose_last_generation_is_open() {
        let mut ix = sample();
        ix.put(b"b", r(7, 0));
        assert_eq!(ix.live_keys(), 2);
        ix.tombstone(b"a", r(8, 0));
        assert_eq!(ix.live_keys(), 1);
        let plan = ix.plan_compaction(Revision(8));
        ix.apply_compaction(plan);
        assert_eq!(ix.live_keys(), 1);
    }

    #[test]
    fn get_sees_generations_and_version_resets_after_delete() {
        let ix = sample();
        assert_eq!(ix.get(b"a", Revision(1)), None);
        assert_eq!(ix.get(b"a", Revision(2)), live(r(2, 0), 2, 1));
        assert_eq!(ix.get(b"a", Revision(3)), live(r(3, 0), 2, 2));
        assert_eq!(ix.get(b"a", Revision(4)), None);
        assert_eq!(ix.get(b"a", Revision(5)), live(r(5, 0), 5, 1));
        assert_eq!(ix.get(b"a", Revision(9)), live(r(6, 0), 5, 2));
        assert_eq!(ix.current(b"a"), live(r(6, 0), 5, 2));
    }

    #[test]
    fn compaction_keeps_latest_put_and_drops_tombstoned_generations() {
        let mut ix = sample();
        let plan = ix.plan_compaction(Revision(4));
        assert_eq!(
            plan.dropped,
            vec![(r(2, 0), false), (r(3, 0), false), (r(4, 0), true)]
        );
        ix.apply_compaction(plan);
        assert_eq!(ix.get(b"a", Revision(5)), live(r(5, 0), 5, 1));

        let mut ix = sample();
        let plan = ix.plan_compaction(Revision(3));
        assert_eq!(plan.dropped, vec![(r(2, 0), false)]);
        ix.apply_compaction(plan);
        // create_revision and version survive the loss of the creating put.
        assert_eq!(ix.get(b"a", Revision(3)), live(r(3, 0), 2, 2));
        assert_eq!(ix.get(b"a", Revision(4)), None);
    }

    #[test]
    fn compaction_removes_a_key_whose_last_change_is_a_compacted_tombstone() {
        let mut ix = KeyIndex::default();
        ix.put(b"a", r(2, 0));
        ix.tombstone(b"a", r(3, 0));
        let plan = ix.plan_compaction(Revision(3));
        ix.apply_compaction(plan);
        assert!(ix.is_empty());
    }

    #[test]
    fn key_range_rules_follow_etcd() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        assert!(KeyRange::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeyRange::new(b"b", b"\0").contains(b"a"));
        assert!(KeyRange::new(b"\0", b"\0").contains(b"\0"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        let ix = sample();
        assert_eq!(ix.range(&KeyRange::new(b"b", b"a"), Revision(9)).count(), 0);
    }
}
