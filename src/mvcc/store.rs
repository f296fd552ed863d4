//! `MvccStore`: the revisioned key-value store over the Storage seam — its
//! state, `open` (rebuilding the key index from the `kv` family), the public
//! entry points, compaction and the invariant check.
//!
//! Reads (`range`, `read_txn`, `events_between`, and `hash_kv` / `hash` in
//! `hash.rs`) take `&self` and touch Storage only through point gets and
//! scans. Writes (`put`, `delete_range`, `txn`, `compact`) take `&mut self`
//! and run in two steps:
//! 1. execute (`Exec` in `write.rs`) against the current state plus a
//!    `Pending` overlay of the request's own earlier changes (so reads inside
//!    a txn see its writes), without touching the index or Storage;
//! 2. `commit` (`write.rs`): one atomic `Storage::write` of the changes plus the server's
//!    `extra` batch, and only then publish the changes to the in-memory index.
//!
//! A request that fails with an expected error changes nothing but still
//! writes `extra` (the server's applied index must advance past it). A failed
//! `Storage::write` leaves the index untouched and is returned as
//! `MvccError::Storage` (fatal for the node).
//!
//! The other files of the store: `read.rs` (`View`: ranges, compares, txn
//! branches), `write.rs` (`Exec`, `Pending`, `commit`), `hash.rs` (Hash,
//! HashKV, CRC-32C). They see `MvccStore`'s fields through `pub(super)`; only
//! this file and `write.rs`'s `commit` change them.
//!
//! Invariants: see `mod.rs`; `check_invariants` verifies them.
//! Tests: `tests.rs` (semantics), `model_tests.rs` (quickcheck vs a model).

use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::Event;
use cairn_runtime::{Direction, Storage, StorageError, WriteBatch};

use super::index::KeyIndex;
use super::kv::Kv;
use super::read::{is_read_only_txn, View};
use super::revision::{start_key, KeyRevision, Revision};
use super::write::{to_event, Change, Exec, WriteOutcome};
use super::MvccError;

/// Family holding every change: `KeyRevision` key → encoded `Kv`.
pub const CF_KV: &str = "kv";
/// Family holding MVCC's bookkeeping (keys prefixed `mvcc/`).
pub const CF_META: &str = "meta";
/// The column families the storage must be opened with for MVCC.
pub const COLUMN_FAMILIES: &[&str] = &[CF_KV, CF_META];

pub const COMPACT_REVISION_KEY: &[u8] = b"mvcc/compact_revision";

/// The revisioned store. Wrap it in a `RwLock`: reads take `&self`.
pub struct MvccStore {
    pub(super) storage: Arc<dyn Storage>,
    /// Mirrors the `kv` family: every stored change is in it and vice versa.
    pub(super) index: KeyIndex,
    /// The newest main revision; ≥ every revision in `index` and ≥ `compacted`.
    pub(super) current: Revision,
    /// The last compact revision; `None` before the first compaction.
    pub(super) compacted: Option<Revision>,
    /// Whether events carry `prev_kv` (costs a point get per change).
    pub(super) events_prev_kv: bool,
}

impl MvccStore {
    /// Opens the store on `storage` (which must have `COLUMN_FAMILIES`) and
    /// rebuilds the key index from the `kv` family.
    pub fn open(storage: Arc<dyn Storage>) -> Result<MvccStore, MvccError> {
        let families = storage.column_families();
        if let Some(missing) = COLUMN_FAMILIES
            .iter()
            .find(|cf| !families.iter().any(|f| f == *cf))
        {
            return Err(StorageError::UnknownColumnFamily((*missing).to_owned()).into());
        }
        let compacted = read_compact_revision(storage.as_ref())?;
        let (index, last) = rebuild_index(storage.as_ref())?;
        // A fully compacted history leaves no record of the newest revision
        // but the compact revision itself, which is then the newest (as etcd).
        let current = Revision::INITIAL
            .max(last)
            .max(compacted.unwrap_or_default());
        Ok(MvccStore {
            storage,
            index,
            current,
            compacted,
            events_prev_kv: false,
        })
    }

    pub fn current_revision(&self) -> Revision {
        self.current
    }

    /// Keys alive at the current revision.
    pub fn live_keys(&self) -> usize {
        self.index.live_keys()
    }

    /// The last compact revision; `None` before any compaction.
    pub fn compact_revision(&self) -> Option<Revision> {
        self.compacted
    }

    /// Makes write events carry `prev_kv` (the watch hub asks for it when a
    /// watcher wants previous values).
    pub fn set_events_prev_kv(&mut self, enabled: bool) {
        self.events_prev_kv = enabled;
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(super) fn view(&self) -> View<'_> {
        View {
            store: self,
            pending: None,
        }
    }

    pub(super) fn load(&self, rev: KeyRevision) -> Result<Kv, MvccError> {
        let bytes = self
            .storage
            .get(CF_KV, &rev.to_key(false))?
            .ok_or_else(|| {
                MvccError::Corrupt(format!("indexed revision {rev:?} is missing from storage"))
            })?;
        Kv::decode(&bytes)
    }

    // ---- reads ----

    /// A Range as etcd's applier computes it (header left `None`; its
    /// revision is `current_revision()`).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.view().range(req)
    }

    /// A txn that only reads (see `is_read_only_txn`), served without Raft
    /// writes. Errors with `NotReadOnly` for a txn that writes.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        if !is_read_only_txn(req) {
            return Err(MvccError::NotReadOnly);
        }
        Exec::new(self).txn(req, &|_| true)
    }

    /// Every change with main revision in `[from, to]`, as watch events in
    /// revision order (for watchers catching up). `prev_kv` is filled where
    /// the previous revision is still stored.
    ///
    /// Refuses `from` below the compact revision. At exactly the compact
    /// revision it returns what compaction kept there (its puts; its
    /// tombstones are gone), as etcd serves a watch starting at the compact
    /// revision; the watch hub decides when that is acceptable.
    pub fn events_between(
        &self,
        from: Revision,
        to: Revision,
        prev_kv: bool,
    ) -> Result<Vec<Event>, MvccError> {
        if self.compacted.is_some_and(|c| from < c) && from <= to {
            return Err(MvccError::Compacted);
        }
        let to = to.min(self.current);
        let mut events = Vec::new();
        if from > to {
            return Ok(events);
        }
        for item in self.storage.scan(
            CF_KV,
            &start_key(from),
            Some(&start_key(to.next())),
            Direction::Forward,
        )? {
            let (k, v) = item?;
            let (rev, tombstone) = decode_key(&k)?;
            let kv = Kv::decode(&v)?;
            let prev = match prev_kv {
                true => self
                    .index
                    .get(&kv.key, Revision(rev.main.0 - 1))
                    .map(|l| self.load(l.rev))
                    .transpose()?,
                false => None,
            };
            events.push(to_event(Change {
                kv,
                tombstone,
                prev: prev.map(Box::new),
            }));
        }
        Ok(events)
    }

    // ---- writes ----

    /// Put. `lease_exists` asks the lessor whether a non-zero lease exists.
    pub fn put(
        &mut self,
        req: &PutRequest,
        lease_exists: &dyn Fn(i64) -> bool,
        extra: WriteBatch,
    ) -> Result<WriteOutcome<PutResponse>, MvccError> {
        let result = if req.lease != 0 && !lease_exists(req.lease) {
            Err(MvccError::LeaseNotFound)
        } else {
            let mut exec = Exec::single(self);
            exec.put(req).map(|resp| (resp, exec.p))
        };
        self.finish(result, extra)
    }

    /// DeleteRange. Deleting nothing does not take a revision.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
        extra: WriteBatch,
    ) -> Result<WriteOutcome<DeleteRangeResponse>, MvccError> {
        let mut exec = Exec::single(self);
        let result = exec.delete_range(req).map(|resp| (resp, exec.p));
        self.finish(result, extra)
    }

    /// Txn: one revision for all its changes (none if it changes nothing).
    /// Validate it first with `check_txn_request` (duplicate keys, max ops).
    pub fn txn(
        &mut self,
        req: &TxnRequest,
        lease_exists: &dyn Fn(i64) -> bool,
        extra: WriteBatch,
    ) -> Result<WriteOutcome<TxnResponse>, MvccError> {
        let mut exec = Exec::new(self);
        let result = exec.txn(req, lease_exists).map(|resp| (resp, exec.p));
        self.finish(result, extra)
    }

    /// Compaction to `req.revision`: per key, keeps the newest change ≤ the
    /// revision unless it is a tombstone, and deletes the rest from Storage in
    /// the same batch as the new compact revision and `extra`. The deletion is
    /// visible on return; for `physical`, the server waits for
    /// `storage().sync()` before answering.
    pub fn compact(
        &mut self,
        req: &CompactionRequest,
        extra: WriteBatch,
    ) -> Result<WriteOutcome<CompactionResponse>, MvccError> {
        let rev = Revision(req.revision);
        let outcome = |revision| WriteOutcome {
            response: CompactionResponse::default(),
            revision,
            events: Vec::new(),
        };
        if rev.0 <= self.compacted.map_or(-1, |c| c.0) {
            return self
                .finish::<()>(Err(MvccError::Compacted), extra)
                .map(|_| outcome(self.current));
        }
        if rev > self.current {
            return self
                .finish::<()>(Err(MvccError::FutureRevision), extra)
                .map(|_| outcome(self.current));
        }
        let plan = self.index.plan_compaction(rev);
        let mut batch = WriteBatch::new();
        batch.put(CF_META, COMPACT_REVISION_KEY, rev.0.to_be_bytes().to_vec());
        for (r, tombstone) in &plan.dropped {
            batch.delete(CF_KV, r.to_key(*tombstone));
        }
        batch.extend(extra);
        self.storage.write(batch)?;
        self.index.apply_compaction(plan);
        self.compacted = Some(rev);
        Ok(outcome(self.current))
    }

    /// Verifies the invariants against Storage (expensive: tests and
    /// simulation only). Panics with context when one is broken.
    pub fn check_invariants(&self) {
        self.check_invariants_if_readable()
            .expect("storage readable while checking invariants");
    }

    /// `check_invariants` on storage that may fail to read (a simulated
    /// disk with a flipped record, which the member finds when it reads it
    /// itself): an unreadable record is `Err`, not a broken invariant.
    pub fn check_invariants_if_readable(&self) -> Result<(), MvccError> {
        let (rebuilt, last) = rebuild_index(self.storage.as_ref())?;
        assert!(
            rebuilt == self.index,
            "key index diverged from the kv family"
        );
        assert!(
            last <= self.current,
            "stored revision {last} is newer than current {}",
            self.current
        );
        let stored = read_compact_revision(self.storage.as_ref())?;
        assert_eq!(
            stored, self.compacted,
            "compact revision differs from storage"
        );
        assert!(
            self.compacted.is_none_or(|c| c <= self.current),
            "compact revision is newer than current"
        );
        Ok(())
    }
}

pub(super) fn decode_key(k: &[u8]) -> Result<(KeyRevision, bool), MvccError> {
    KeyRevision::from_key(k)
        .ok_or_else(|| MvccError::Corrupt(format!("undecodable revision key {k:?}")))
}

fn read_compact_revision(storage: &dyn Storage) -> Result<Option<Revision>, MvccError> {
    let Some(bytes) = storage.get(CF_META, COMPACT_REVISION_KEY)? else {
        return Ok(None);
    };
    let raw: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| MvccError::Corrupt(format!("compact revision of {} bytes", bytes.len())))?;
    Ok(Some(Revision(i64::from_be_bytes(raw))))
}

/// Replays the `kv` family in revision order; returns the index and the
/// newest stored main revision (0 if none).
fn rebuild_index(storage: &dyn Storage) -> Result<(KeyIndex, Revision), MvccError> {
    let mut index = KeyIndex::default();
    let mut last = Revision(0);
    for item in storage.scan(CF_KV, &[], None, Direction::Forward)? {
        let (k, v) = item?;
        let (rev, tombstone) = decode_key(&k)?;
        index.restore(rev, tombstone, &Kv::decode(&v)?);
        last = rev.main;
    }
    Ok((index, last))
}
