//! The Raft log as the core sees it: the latest snapshot (compaction boundary)
//! followed by a contiguous run of entries, of which a prefix is *stable*
//! (persisted by the application) and the rest *unstable* (handed out in the
//! next `Ready` to be persisted).
//!
//! The core never reads storage: the whole retained log lives here, and the
//! persistence adapter (`raft::storage`) rebuilds it on restart.
//!
//! Invariants (checked by `check_invariants`):
//! - `entries[k].index == snapshot.index + 1 + k` (contiguous, no holes);
//! - entry terms never decrease along the log;
//! - `snapshot.index <= applied <= committed <= last_index()` — except that
//!   while a received snapshot is pending install, `applied < snapshot.index`;
//! - `snapshot.index <= stabled <= last_index()`.
//!
//! Tests: through `raft::golden` and `raft::properties`.

use cairn_proto::raftpb::{ConfState, Entry, Snapshot, SnapshotMetadata};
use prost::Message as _;

/// Index and term of a snapshot, defaulting to 0/0 for "no snapshot".
pub(crate) fn snapshot_index_term(s: &Snapshot) -> (u64, u64) {
    s.metadata.as_ref().map_or((0, 0), |m| (m.index, m.term))
}

/// The conf state stored in a snapshot (empty when there is none).
pub(crate) fn snapshot_conf_state(s: &Snapshot) -> ConfState {
    s.metadata
        .as_ref()
        .and_then(|m| m.conf_state.clone())
        .unwrap_or_default()
}

/// Bytes an entry costs on the wire; used for message and Ready size limits.
pub(crate) fn entry_size(e: &Entry) -> u64 {
    e.encoded_len() as u64
}

#[derive(Debug, Clone)]
pub struct RaftLog {
    /// The latest snapshot: everything at or below its index is compacted.
    /// For a leader this is what a lagging follower is sent.
    snapshot: Snapshot,
    /// Whether `snapshot` was received from a leader and not yet installed
    /// and persisted by the application (it is then in `Ready::snapshot`).
    snapshot_pending: bool,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
    /// Highest index the application has persisted. Invariant:
    /// `snapshot.index <= stabled <= last_index()`.
    stabled: u64,
    /// Highest index known committed by a quorum. Never decreases.
    pub(crate) committed: u64,
    /// Highest index the application has applied. Invariant: `applied <= committed`.
    pub(crate) applied: u64,
}

impl RaftLog {
    /// A log recovered from storage: everything given is stable.
    pub fn new(snapshot: Snapshot, entries: Vec<Entry>, committed: u64, applied: u64) -> Self {
        let (snap_index, _) = snapshot_index_term(&snapshot);
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > snap_index)
            .collect();
        let mut log = RaftLog {
            snapshot,
            snapshot_pending: false,
            entries,
            stabled: 0,
            committed,
            applied,
        };
        log.stabled = log.last_index();
        // Applied entries were committed, even if the commit-only hard state
        // update that said so was not synced before a crash.
        log.applied = applied.max(snap_index);
        log.committed = committed.max(log.applied);
        assert!(
            log.committed <= log.last_index(),
            "recovered commit {} beyond last index {}",
            log.committed,
            log.last_index()
        );
        log
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn snapshot_index(&self) -> u64 {
        snapshot_index_term(&self.snapshot).0
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .expect("the last index always has a known term")
    }

    pub fn stabled(&self) -> u64 {
        self.stabled
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The term of the entry at `index`, if it is known (not compacted away
    /// and not beyond the end; the snapshot's own index is known).
    pub fn term(&self, index: u64) -> Option<u64> {
        let (snap_index, snap_term) = snapshot_index_term(&self.snapshot);
        if index == snap_index {
            return Some(snap_term);
        }
        if index < snap_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - snap_index - 1) as usize].term)
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.first_index()) as usize])
    }

    /// Entries in `[lo, hi]`, at most `max_bytes` of them but always at least
    /// one if the range is non-empty. `None` if `lo` is compacted.
    pub fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        if lo < self.first_index() {
            return None;
        }
        let hi = hi.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0;
        for i in lo..=hi {
            let e = self.entry(i).expect("index within [first, last]");
            bytes += entry_size(e);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }

    /// Entries from `lo` to the end, bounded as in `slice`.
    pub fn entries_from(&self, lo: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        self.slice(lo, self.last_index(), max_bytes)
    }

    /// All entries in the retained log (for tests and checks).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries not yet persisted: `(stabled, last_index]`.
    pub fn unstable_entries(&self) -> &[Entry] {
        let start = (self.stabled - self.snapshot_index()) as usize;
        &self.entries[start..]
    }

    pub fn pending_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot_pending.then_some(&self.snapshot)
    }

    /// First index of `ents` whose term differs from ours (or that we lack);
    /// 0 if every entry is already in the log.
    fn find_conflict(&self, ents: &[Entry]) -> u64 {
        ents.iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map_or(0, |e| e.index)
    }

    /// Fast back-off: the largest index `<= index` whose term is `<= term`,
    /// with its term (0 if compacted). Used by both sides of a rejection.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term && i > self.snapshot_index() => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Follower side of MsgApp: appends `ents` after `(index, log_term)` if
    /// that entry matches, truncating a conflicting suffix. Returns the last
    /// index the message vouches for, or `None` on a mismatch.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        commit: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "conflict at {conflict} within committed {}",
                self.committed
            );
            let start = (conflict - index - 1) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries, truncating anything at or after the first one.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index > self.committed,
            "append at {} overwrites committed {}",
            first.index,
            self.committed
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a hole after {}",
            first.index,
            self.last_index()
        );
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.stabled = self.stabled.min(first.index - 1);
        self.entries.extend_from_slice(ents);
    }

    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// The application persisted entries up to `(index, term)`. Ignored if
    /// the log changed under it (then a later Ready carries the new suffix).
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index > self.stabled && self.match_term(index, term) {
            self.stabled = index;
        }
    }

    /// The application installed and persisted the pending snapshot.
    pub fn snapshot_installed(&mut self) {
        self.snapshot_pending = false;
        self.applied = self.applied.max(self.snapshot_index());
    }

    pub fn applied_to(&mut self, index: u64) {
        assert!(
            index <= self.committed,
            "applied {index} beyond committed {}",
            self.committed
        );
        self.applied = self.applied.max(index);
    }

    /// Committed entries not yet applied, bounded by `max_bytes` (at least one).
    /// None while a snapshot is pending: it must be installed first.
    pub fn next_committed_entries(&self, max_bytes: u64) -> Vec<Entry> {
        if self.snapshot_pending || self.applied >= self.committed {
            return Vec::new();
        }
        self.slice(self.applied + 1, self.committed, max_bytes)
            .expect("unapplied entries are never compacted")
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let (index, _) = snapshot_index_term(&snapshot);
        self.entries.clear();
        self.snapshot = snapshot;
        self.snapshot_pending = true;
        self.committed = index;
        self.stabled = index;
    }

    /// The application took a snapshot at `index`: forget entries up to it.
    pub fn compact(&mut self, index: u64, conf_state: ConfState, data: Vec<u8>) -> Snapshot {
        assert!(
            index <= self.applied,
            "compact at {index} beyond applied {}",
            self.applied
        );
        assert!(
            index <= self.stabled,
            "compact at {index} beyond stabled {}",
            self.stabled
        );
        assert!(
            index > self.snapshot_index(),
            "compact at {index} not after snapshot {}",
            self.snapshot_index()
        );
        let term = self.term(index).expect("index within the log");
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            metadata: Some(SnapshotMetadata {
                conf_state: Some(conf_state),
                index,
                term,
            }),
            data,
        };
        self.snapshot.clone()
    }

    /// Panics with context if a structural invariant is broken.
    pub fn check_invariants(&self, current_term: u64) {
        let snap = self.snapshot_index();
        let mut prev_term = snapshot_index_term(&self.snapshot).1;
        for (k, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index, snap + 1 + k as u64, "log hole at position {k}");
            assert!(e.term >= prev_term, "term decreases at index {}", e.index);
            assert!(
                e.term <= current_term,
                "entry {} has term {} > current {current_term}",
                e.index,
                e.term
            );
            prev_term = e.term;
        }
        assert!(
            self.committed <= self.last_index(),
            "commit {} > last {}",
            self.committed,
            self.last_index()
        );
        assert!(
            self.applied <= self.committed,
            "applied {} > commit {}",
            self.applied,
            self.committed
        );
        assert!(
            self.committed >= snap,
            "commit {} below snapshot {snap}",
            self.committed
        );
        assert!(
            self.stabled >= snap && self.stabled <= self.last_index(),
            "stabled {} out of range",
            self.stabled
        );
        if !self.snapshot_pending {
            assert!(
                self.applied >= snap,
                "applied {} below installed snapshot {snap}",
                self.applied
            );
        }
    }
}
