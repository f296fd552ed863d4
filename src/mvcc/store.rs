//! `MvccStore`: the revisioned key-value store over the Storage seam.
//!
//! Reads (`range`, `read_txn`, `hash_kv`, `events_between`) take `&self` and
//! touch Storage only through point gets and scans. Writes (`put`,
//! `delete_range`, `txn`, `compact`) take `&mut self` and run in two steps:
//! 1. execute against the current state plus a `Pending` overlay of the
//!    request's own earlier changes (so reads inside a txn see its writes),
//!    without touching the index or Storage;
//! 2. `commit`: one atomic `Storage::write` of the changes plus the server's
//!    `extra` batch, and only then publish the changes to the in-memory index.
//!
//! A request that fails with an expected error changes nothing but still
//! writes `extra` (the server's applied index must advance past it). A failed
//! `Storage::write` leaves the index untouched and is returned as
//! `MvccError::Storage` (fatal for the node).
//!
//! Invariants: see `mod.rs`; `check_invariants` verifies them.
//! Tests: `tests.rs` (semantics), `model_tests.rs` (quickcheck vs a model).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest,
    TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use cairn_runtime::{Direction, Storage, StorageError, WriteBatch};

use super::index::{KeyIndex, KeyRange, LiveRev};
use super::kv::Kv;
use super::revision::{start_key, KeyRevision, Revision};
use super::MvccError;

/// Family holding every change: `KeyRevision` key → encoded `Kv`.
pub const CF_KV: &str = "kv";
/// Family holding MVCC's bookkeeping (keys prefixed `mvcc/`).
pub const CF_META: &str = "meta";
/// The column families the storage must be opened with for MVCC.
pub const COLUMN_FAMILIES: &[&str] = &[CF_KV, CF_META];

const COMPACT_REVISION_KEY: &[u8] = b"mvcc/compact_revision";

/// The result of a write: the response (header left `None` for the API layer),
/// the revision for its header, and the events for the watch hub.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome<R> {
    pub response: R,
    /// The store's revision after the write (unchanged if nothing changed).
    pub revision: Revision,
    /// One event per change, in (main, sub) order; empty if nothing changed.
    pub events: Vec<Event>,
}

/// The result of `hash_kv`, as etcd 3.5's HashKV reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    /// The compact revision when hashed; -1 if never compacted (as etcd).
    pub compact_revision: i64,
    /// The revision the hash covers (`hash_revision` in etcd 3.5.5+).
    pub hash_revision: Revision,
    /// The store's current revision (for the response header).
    pub revision: Revision,
}

/// The revisioned store. Wrap it in a `RwLock`: reads take `&self`.
pub struct MvccStore {
    storage: Arc<dyn Storage>,
    /// Mirrors the `kv` family: every stored change is in it and vice versa.
    index: KeyIndex,
    /// The newest main revision; ≥ every revision in `index` and ≥ `compacted`.
    current: Revision,
    /// The last compact revision; `None` before the first compaction.
    compacted: Option<Revision>,
    /// Whether events carry `prev_kv` (costs a point get per change).
    events_prev_kv: bool,
}

/// A change of an in-progress write, not yet in Storage or the index.
#[derive(Debug, Clone)]
struct Change {
    /// For a tombstone only `key` and `mod_revision` are set.
    kv: Kv,
    tombstone: bool,
    /// The key's previous kv, kept only when events carry `prev_kv`.
    prev: Option<Kv>,
}

/// The in-progress write of one request.
#[derive(Debug)]
struct Pending {
    /// The main revision the changes get: current + 1.
    rev: Revision,
    /// Changes in sub order (sub = position).
    changes: Vec<Change>,
    /// Each touched key's state after the changes so far (`None`: deleted).
    overlay: BTreeMap<Vec<u8>, Option<Kv>>,
    /// Whether later operations of the same request read the overlay (a
    /// txn's); a lone Put or DeleteRange keeps none, so deleting a large
    /// range does not hold one more copy of every key.
    track: bool,
}

impl Pending {
    fn new(rev: Revision) -> Self {
        Pending {
            rev,
            changes: Vec::new(),
            overlay: BTreeMap::new(),
            track: true,
        }
    }

    fn record(&mut self, kv: Kv, tombstone: bool, prev: Option<Kv>) {
        if self.track {
            self.overlay
                .insert(kv.key.clone(), (!tombstone).then(|| kv.clone()));
        }
        self.changes.push(Change {
            kv,
            tombstone,
            prev,
        });
    }
}

/// Where a visible kv comes from: Storage (via the index) or the overlay.
#[derive(Debug, Clone)]
enum Found {
    Stored(LiveRev),
    Pending(Kv),
}

impl Found {
    fn created_and_version(&self) -> (i64, i64) {
        match self {
            Found::Stored(l) => (l.created.0, l.version),
            Found::Pending(kv) => (kv.create_revision, kv.version),
        }
    }
}

/// A read view: the committed state, optionally with a write's overlay.
#[derive(Clone, Copy)]
struct View<'a> {
    store: &'a MvccStore,
    pending: Option<&'a Pending>,
}

impl View<'_> {
    /// The revision reads at "revision 0" see: the txn's own if it wrote.
    fn head(&self) -> Revision {
        match self.pending {
            Some(p) if !p.changes.is_empty() => p.rev,
            _ => self.store.current,
        }
    }

    /// etcd's rules: future → error, ≤ 0 → head, older than compaction → error.
    fn resolve(&self, requested: i64) -> Result<Revision, MvccError> {
        if requested > self.head().0 {
            return Err(MvccError::FutureRevision);
        }
        let at = if requested <= 0 {
            self.head()
        } else {
            Revision(requested)
        };
        if self.store.compacted.is_some_and(|c| at < c) {
            return Err(MvccError::Compacted);
        }
        Ok(at)
    }

    /// Keys of `range` alive at `at`, in key order.
    fn collect(&self, range: &KeyRange, at: Revision) -> Vec<(Vec<u8>, Found)> {
        let base = self.store.index.range(range, at.min(self.store.current));
        let base = base.map(|(k, l)| (k.to_vec(), Found::Stored(l)));
        let Some(p) = self.pending.filter(|p| at >= p.rev) else {
            return base.collect();
        };
        let mut merged: BTreeMap<Vec<u8>, Found> = base.collect();
        for (k, state) in p.overlay.iter().filter(|(k, _)| range.contains(k)) {
            match state {
                Some(kv) => merged.insert(k.clone(), Found::Pending(kv.clone())),
                None => merged.remove(k),
            };
        }
        merged.into_iter().collect()
    }

    /// The key's latest state including the overlay.
    fn latest(&self, key: &[u8]) -> Option<Found> {
        if let Some(state) = self.pending.and_then(|p| p.overlay.get(key)) {
            return state.clone().map(Found::Pending);
        }
        self.store.index.current(key).map(Found::Stored)
    }

    fn load(&self, found: &Found) -> Result<Kv, MvccError> {
        match found {
            Found::Stored(l) => self.store.load(l.rev),
            Found::Pending(kv) => Ok(kv.clone()),
        }
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let at = self.resolve(req.revision)?;
        let found = self.collect(&KeyRange::new(&req.key, &req.range_end), at);
        let mut resp = RangeResponse {
            count: found.len() as i64,
            ..Default::default()
        };
        if req.count_only {
            return Ok(resp);
        }
        // As etcd: with sorting or filters every kv is read, otherwise one more
        // than the limit (to learn `more`).
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let take = if req.sort_order() != SortOrder::None || filtered || req.limit <= 0 {
            found.len()
        } else {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
                .min(found.len())
        };
        let mut kvs = found[..take]
            .iter()
            .map(|(_, f)| self.load(f))
            .collect::<Result<Vec<_>, _>>()?;
        kvs.retain(|kv| passes_filters(req, kv));
        sort_kvs(req, &mut kvs);
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            resp.more = true;
        }
        resp.kvs = kvs.into_iter().map(|kv| to_pb(kv, req.keys_only)).collect();
        Ok(resp)
    }

    /// etcd's applyCompare: every key in the compare's range must satisfy it;
    /// on no key, a VALUE compare fails and the others compare a zero kv.
    fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        let found = self.collect(&KeyRange::new(&c.key, &c.range_end), self.head());
        if found.is_empty() {
            return Ok(c.target() != CompareTarget::Value && compare_kv(c, &Kv::default()));
        }
        for (_, f) in &found {
            if !compare_kv(c, &self.load(f)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The branch taken by `req` and, depth-first, by every nested txn on the
    /// taken branches: all evaluated before the txn writes anything, as etcd.
    fn txn_path(&self, req: &TxnRequest) -> Result<Vec<bool>, MvccError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        let mut path = vec![ok];
        for op in branch(req, ok) {
            if let Some(Request::RequestTxn(t)) = &op.request {
                path.extend(self.txn_path(t)?);
            }
        }
        Ok(path)
    }

    /// etcd's checkRequestPut for one op: ignore_* need the key; leases must exist.
    fn check_put_op(
        &self,
        op: &RequestOp,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<(), MvccError> {
        let Some(Request::RequestPut(p)) = &op.request else {
            return Ok(());
        };
        if (p.ignore_value || p.ignore_lease) && self.latest(&p.key).is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if p.lease != 0 && !lease_exists(p.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    /// etcd's checkRequestRange for one op (note: `revision < 0` counts as
    /// compacted here, unlike a top-level range — as in etcd).
    fn check_range_op(&self, op: &RequestOp) -> Result<(), MvccError> {
        let Some(Request::RequestRange(r)) = &op.request else {
            return Ok(());
        };
        let first = self.store.compacted.map_or(-1, |c| c.0);
        match r.revision {
            0 => Ok(()),
            rev if rev > self.head().0 => Err(MvccError::FutureRevision),
            rev if rev < first => Err(MvccError::Compacted),
            _ => Ok(()),
        }
    }
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// Calls `f` on every non-txn op of the taken branches, in order.
fn walk_path(
    req: &TxnRequest,
    path: &[bool],
    pos: &mut usize,
    f: &mut dyn FnMut(&RequestOp) -> Result<(), MvccError>,
) -> Result<(), MvccError> {
    let succeeded = path[*pos];
    *pos += 1;
    for op in branch(req, succeeded) {
        match &op.request {
            Some(Request::RequestTxn(t)) => walk_path(t, path, pos, f)?,
            _ => f(op)?,
        }
    }
    Ok(())
}

fn passes_filters(req: &RangeRequest, kv: &Kv) -> bool {
    (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
}

/// etcd's sort rules: NONE with target KEY keeps key order; NONE with any
/// other target sorts ascending. Ties keep key order (stable sort; etcd's
/// sort is unstable, so any tie order is compatible).
fn sort_kvs(req: &RangeRequest, kvs: &mut [Kv]) {
    let order = match (req.sort_order(), req.sort_target()) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let by: fn(&Kv, &Kv) -> Ordering = match req.sort_target() {
        SortTarget::Key => |a, b| a.key.cmp(&b.key),
        SortTarget::Version => |a, b| a.version.cmp(&b.version),
        SortTarget::Create => |a, b| a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => |a, b| a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => |a, b| a.value.cmp(&b.value),
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
        _ => kvs.sort_by(by),
    }
}

/// etcd's compareKV: a missing or mismatched target union compares against
/// zero / the empty value.
fn compare_kv(c: &Compare, kv: &Kv) -> bool {
    let int =
        |want: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let ord = match c.target() {
        CompareTarget::Value => {
            let v = match &c.target_union {
                Some(TargetUnion::Value(v)) => v.as_slice(),
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        CompareTarget::Version => kv.version.cmp(&int(|t| {
            if let TargetUnion::Version(v) = t {
                Some(*v)
            } else {
                None
            }
        })),
        CompareTarget::Create => kv.create_revision.cmp(&int(|t| {
            if let TargetUnion::CreateRevision(v) = t {
                Some(*v)
            } else {
                None
            }
        })),
        CompareTarget::Mod => kv.mod_revision.cmp(&int(|t| {
            if let TargetUnion::ModRevision(v) = t {
                Some(*v)
            } else {
                None
            }
        })),
        CompareTarget::Lease => kv.lease.cmp(&int(|t| {
            if let TargetUnion::Lease(v) = t {
                Some(*v)
            } else {
                None
            }
        })),
    };
    match c.result() {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

fn to_pb(kv: Kv, keys_only: bool) -> KeyValue {
    KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: if keys_only { Vec::new() } else { kv.value },
        lease: kv.lease,
    }
}

fn to_event(c: Change) -> Event {
    let kind = if c.tombstone {
        EventType::Delete
    } else {
        EventType::Put
    };
    Event {
        r#type: kind as i32,
        kv: Some(to_pb(c.kv, false)),
        prev_kv: c.prev.map(|p| to_pb(p, false)),
    }
}

/// Whether a txn only reads, on both branches, recursively (etcd's isTxnReadonly).
pub fn is_read_only_txn(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => is_read_only_txn(t),
            Some(_) => false,
        })
}

/// Executes one write request against a `Pending` overlay.
struct Exec<'a> {
    store: &'a MvccStore,
    p: Pending,
}

impl<'a> Exec<'a> {
    fn new(store: &'a MvccStore) -> Self {
        Exec {
            store,
            p: Pending::new(store.current.next()),
        }
    }

    /// For a request of one operation: nothing reads its overlay.
    fn single(store: &'a MvccStore) -> Self {
        let mut exec = Exec::new(store);
        exec.p.track = false;
        exec
    }

    fn view(&self) -> View<'_> {
        View {
            store: self.store,
            pending: Some(&self.p),
        }
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        let view = self.view();
        let latest = view.latest(&req.key);
        let ignore = req.ignore_value || req.ignore_lease;
        if ignore && latest.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let need_prev = req.prev_kv || ignore || self.store.events_prev_kv;
        let prev = match (&latest, need_prev) {
            (Some(f), true) => Some(view.load(f)?),
            _ => None,
        };
        let rev = self.p.rev.0;
        let (create_revision, version) = latest.map_or((rev, 1), |f| {
            let (created, version) = f.created_and_version();
            (created, version + 1)
        });
        let (mut value, mut lease) = (req.value.clone(), req.lease);
        if let Some(prev) = prev.as_ref().filter(|_| ignore) {
            if req.ignore_value {
                value = prev.value.clone();
            }
            if req.ignore_lease {
                lease = prev.lease;
            }
        }
        let kv = Kv {
            key: req.key.clone(),
            value,
            create_revision,
            mod_revision: rev,
            version,
            lease,
        };
        let resp = PutResponse {
            header: None,
            prev_kv: prev
                .clone()
                .filter(|_| req.prev_kv)
                .map(|p| to_pb(p, false)),
        };
        self.p
            .record(kv, false, prev.filter(|_| self.store.events_prev_kv));
        Ok(resp)
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        let view = self.view();
        let found = view.collect(&KeyRange::new(&req.key, &req.range_end), view.head());
        let need_prev = req.prev_kv || self.store.events_prev_kv;
        let mut deleted = Vec::with_capacity(found.len());
        for (key, f) in found {
            let prev = if need_prev {
                Some(view.load(&f)?)
            } else {
                None
            };
            deleted.push((key, prev));
        }
        let mut resp = DeleteRangeResponse {
            deleted: deleted.len() as i64,
            ..Default::default()
        };
        for (key, prev) in deleted {
            if req.prev_kv {
                resp.prev_kvs.push(to_pb(
                    prev.clone().expect("loaded because prev_kv was asked"),
                    false,
                ));
            }
            let tomb = Kv {
                key,
                mod_revision: self.p.rev.0,
                ..Default::default()
            };
            self.p
                .record(tomb, true, prev.filter(|_| self.store.events_prev_kv));
        }
        Ok(resp)
    }

    /// A whole txn: branches and request checks against the state before it,
    /// then the ops in order, each seeing the earlier ones.
    fn txn(
        &mut self,
        req: &TxnRequest,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<TxnResponse, MvccError> {
        let before = View {
            store: self.store,
            pending: None,
        };
        let path = before.txn_path(req)?;
        walk_path(req, &path, &mut 0, &mut |op| {
            before.check_put_op(op, lease_exists)
        })?;
        walk_path(req, &path, &mut 0, &mut |op| before.check_range_op(op))?;
        self.apply_txn(req, &path, &mut 0)
    }

    fn apply_txn(
        &mut self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path[*pos];
        *pos += 1;
        let ops = branch(req, succeeded);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    Some(Response::ResponseRange(self.view().range(r)?))
                }
                Some(Request::RequestPut(r)) => Some(Response::ResponsePut(self.put(r)?)),
                Some(Request::RequestDeleteRange(r)) => {
                    Some(Response::ResponseDeleteRange(self.delete_range(r)?))
                }
                Some(Request::RequestTxn(t)) => {
                    Some(Response::ResponseTxn(self.apply_txn(t, path, pos)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
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

    fn view(&self) -> View<'_> {
        View {
            store: self,
            pending: None,
        }
    }

    fn load(&self, rev: KeyRevision) -> Result<Kv, MvccError> {
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
                prev,
            }));
        }
        Ok(events)
    }

    /// etcd 3.5's HashKV: a crc32c over the stored changes with revision ≤
    /// `revision` (0 = current), skipping those at or below the compact
    /// revision that a compaction at `revision` would remove — so members
    /// agree whether or not they have physically compacted.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let compact = self.compacted.map_or(-1, |c| c.0);
        if revision > 0 && revision <= compact {
            return Err(MvccError::Compacted);
        }
        if revision > self.current.0 {
            return Err(MvccError::FutureRevision);
        }
        let at = if revision <= 0 {
            self.current
        } else {
            Revision(revision)
        };
        let keep = self.index.keep(at);
        let mut h = Crc32c::new();
        h.update(CF_KV.as_bytes());
        for item in
            self.storage
                .scan(CF_KV, &[], Some(&start_key(at.next())), Direction::Forward)?
        {
            let (k, v) = item?;
            let (rev, _) = decode_key(&k)?;
            if rev.main.0 <= compact && !keep.is_empty() && !keep.contains(&rev) {
                continue;
            }
            h.update(&k);
            h.update(&v);
        }
        Ok(HashKv {
            hash: h.finish(),
            compact_revision: compact,
            hash_revision: at,
            revision: self.current,
        })
    }

    /// etcd's Hash: a crc32c over everything MVCC stores.
    pub fn hash(&self) -> Result<u32, MvccError> {
        let mut h = Crc32c::new();
        h.update(CF_KV.as_bytes());
        for item in self.storage.scan(CF_KV, &[], None, Direction::Forward)? {
            let (k, v) = item?;
            h.update(&k);
            h.update(&v);
        }
        h.update(CF_META.as_bytes());
        if let Some(v) = self.storage.get(CF_META, COMPACT_REVISION_KEY)? {
            h.update(COMPACT_REVISION_KEY);
            h.update(&v);
        }
        Ok(h.finish())
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

    /// Commits a successful execution, or writes only `extra` after an
    /// expected error (and returns that error).
    fn finish<R>(
        &mut self,
        result: Result<(R, Pending), MvccError>,
        extra: WriteBatch,
    ) -> Result<WriteOutcome<R>, MvccError> {
        match result {
            Ok((response, pending)) => {
                let (revision, events) = self.commit(pending, extra)?;
                Ok(WriteOutcome {
                    response,
                    revision,
                    events,
                })
            }
            Err(e) => {
                if !extra.is_empty() {
                    self.storage.write(extra)?;
                }
                Err(e)
            }
        }
    }

    fn commit(
        &mut self,
        pending: Pending,
        extra: WriteBatch,
    ) -> Result<(Revision, Vec<Event>), MvccError> {
        let rev = pending.rev;
        let mut batch = WriteBatch::new();
        for (sub, c) in pending.changes.iter().enumerate() {
            batch.put(
                CF_KV,
                KeyRevision::new(rev, sub as i64).to_key(c.tombstone),
                c.kv.encode(),
            );
        }
        batch.extend(extra);
        if !batch.is_empty() {
            self.storage.write(batch)?;
        }
        if pending.changes.is_empty() {
            return Ok((self.current, Vec::new()));
        }
        for (sub, c) in pending.changes.iter().enumerate() {
            let kr = KeyRevision::new(rev, sub as i64);
            if c.tombstone {
                self.index.tombstone(&c.kv.key, kr);
            } else {
                self.index.put(&c.kv.key, kr);
            }
        }
        self.current = rev;
        Ok((rev, pending.changes.into_iter().map(to_event).collect()))
    }

    /// Verifies the invariants against Storage (expensive: tests and
    /// simulation only). Panics with context when one is broken.
    pub fn check_invariants(&self) {
        let (rebuilt, last) = rebuild_index(self.storage.as_ref())
            .expect("storage readable while checking invariants");
        assert!(
            rebuilt == self.index,
            "key index diverged from the kv family"
        );
        assert!(
            last <= self.current,
            "stored revision {last} is newer than current {}",
            self.current
        );
        let stored = read_compact_revision(self.storage.as_ref())
            .expect("meta readable while checking invariants");
        assert_eq!(
            stored, self.compacted,
            "compact revision differs from storage"
        );
        assert!(
            self.compacted.is_none_or(|c| c <= self.current),
            "compact revision is newer than current"
        );
    }
}

fn decode_key(k: &[u8]) -> Result<(KeyRevision, bool), MvccError> {
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

/// CRC-32C (Castagnoli), the checksum etcd's hashes use.
struct Crc32c(u32);

const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

impl Crc32c {
    fn new() -> Self {
        Crc32c(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = CRC32C_TABLE[((self.0 ^ *b as u32) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod crc_tests {
    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut h = super::Crc32c::new();
        h.update(b"123456789");
        assert_eq!(h.finish(), 0xE306_9283);
    }
}
