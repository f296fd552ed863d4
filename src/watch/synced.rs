//! `SyncedIndex`: the synced watchers of every stream, indexed for
//! `WatchHub::notify` — single-key watchers by key, range watchers in a map
//! scanned per event.
//!
//! Invariant (checked by `WatchHub::check_invariants`): it holds exactly the
//! watchers whose `synced` flag is set, each under its range.
//!
//! Tests: `tests.rs` (live delivery), `model_tests.rs` (quickcheck against a
//! model).

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::mvccpb::Event;

use super::ids::{StreamId, WatchId};
use super::watcher::event_key;
use crate::mvcc::KeyRange;

type WatcherKey = (StreamId, WatchId);

/// The synced watchers, indexed for `notify`.
#[derive(Debug, Default)]
pub(super) struct SyncedIndex {
    /// Single-key watchers by key.
    keys: BTreeMap<Vec<u8>, BTreeSet<WatcherKey>>,
    /// Range watchers (scanned per event).
    ranges: BTreeMap<WatcherKey, KeyRange>,
}

impl SyncedIndex {
    pub(super) fn insert(&mut self, w: WatcherKey, range: &KeyRange) {
        match range {
            KeyRange::Single(k) => {
                self.keys.entry(k.clone()).or_default().insert(w);
            }
            span => {
                self.ranges.insert(w, span.clone());
            }
        }
    }

    pub(super) fn remove(&mut self, w: WatcherKey, range: &KeyRange) {
        match range {
            KeyRange::Single(k) => {
                if let Some(set) = self.keys.get_mut(k) {
                    set.remove(&w);
                    if set.is_empty() {
                        self.keys.remove(k);
                    }
                }
            }
            _ => {
                self.ranges.remove(&w);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.ranges.is_empty()
    }

    pub(super) fn contains(&self, w: WatcherKey, range: &KeyRange) -> bool {
        match range {
            KeyRange::Single(k) => self.keys.get(k).is_some_and(|s| s.contains(&w)),
            _ => self.ranges.get(&w) == Some(range),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.keys.values().map(BTreeSet::len).sum::<usize>() + self.ranges.len()
    }

    /// For each synced watcher whose range holds a key of `events`: the
    /// indices of those events, ascending.
    pub(super) fn matches(&self, events: &[Event]) -> BTreeMap<WatcherKey, Vec<usize>> {
        let mut out: BTreeMap<WatcherKey, Vec<usize>> = BTreeMap::new();
        for (i, ev) in events.iter().enumerate() {
            let key = event_key(ev);
            if let Some(ws) = self.keys.get(key) {
                for w in ws {
                    out.entry(*w).or_default().push(i);
                }
            }
            for (w, range) in &self.ranges {
                if range.contains(key) {
                    out.entry(*w).or_default().push(i);
                }
            }
        }
        out
    }
}
