//! Writes: `Exec` executes one Put, DeleteRange or Txn into a `Pending` list
//! of `Change`s, each operation of a txn reading the earlier ones through a
//! `View`; `MvccStore::finish` then commits them, or writes only the server's
//! `extra` batch after an expected error.
//!
//! Invariants: every change of a `Pending` gets its main revision `rev`
//! (current + 1) and its position as sub revision; the overlay, when kept,
//! holds each touched key's state after the changes so far. Execution only
//! reads (through a `View`); `commit` writes the changes and `extra` in one
//! `Storage::write` and only then updates the key index and the current
//! revision.
//!
//! Tests: `tests.rs` (`put_*`, `delete_*`, `txn_*`, `writes_return_events_*`,
//! `extra_batch_*`), `model_tests.rs` (quickcheck vs a model, with crashes).

use std::collections::BTreeMap;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RequestOp, ResponseOp,
    TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event};
use cairn_runtime::WriteBatch;

use super::index::KeyRange;
use super::kv::Kv;
use super::read::{branch, to_pb, View};
use super::revision::{KeyRevision, Revision};
use super::store::{MvccStore, CF_KV};
use super::MvccError;

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

/// A change of an in-progress write, not yet in Storage or the index.
#[derive(Debug, Clone)]
pub(super) struct Change {
    /// For a tombstone only `key` and `mod_revision` are set.
    pub(super) kv: Kv,
    pub(super) tombstone: bool,
    /// The key's previous kv, kept only when events carry `prev_kv` (boxed:
    /// a DeleteRange of many keys holds one `Change` per key, most without it).
    pub(super) prev: Option<Box<Kv>>,
}

/// The in-progress write of one request.
#[derive(Debug)]
pub(super) struct Pending {
    /// The main revision the changes get: current + 1.
    pub(super) rev: Revision,
    /// Changes in sub order (sub = position).
    pub(super) changes: Vec<Change>,
    /// Each touched key's state after the changes so far (`None`: deleted).
    pub(super) overlay: BTreeMap<Vec<u8>, Option<Kv>>,
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

    /// Records the deletion of `key`: a tombstone has only the key and
    /// this write's revision.
    fn record_tombstone(&mut self, key: Vec<u8>, prev: Option<Kv>) {
        let tomb = Kv {
            key,
            mod_revision: self.rev.0,
            ..Default::default()
        };
        self.record(tomb, true, prev);
    }

    fn record(&mut self, kv: Kv, tombstone: bool, prev: Option<Kv>) {
        if self.track {
            self.overlay
                .insert(kv.key.clone(), (!tombstone).then(|| kv.clone()));
        }
        self.changes.push(Change {
            kv,
            tombstone,
            prev: prev.map(Box::new),
        });
    }
}

/// Executes one write request against a `Pending` overlay.
pub(super) struct Exec<'a> {
    store: &'a MvccStore,
    pub(super) p: Pending,
}

impl<'a> Exec<'a> {
    pub(super) fn new(store: &'a MvccStore) -> Self {
        Exec {
            store,
            p: Pending::new(store.current.next()),
        }
    }

    /// For a request of one operation: nothing reads its overlay.
    pub(super) fn single(store: &'a MvccStore) -> Self {
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

    pub(super) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
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

    pub(super) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let need_prev = req.prev_kv || self.store.events_prev_kv;
        if !need_prev && self.p.changes.is_empty() {
            // The common case, and the one that deletes the most keys: nothing
            // changed yet by this request, so the keys to delete are the
            // index's at the current revision. One tombstone per key straight
            // from the index, in a list sized by counting first — no list of
            // the index's answers beside it, no slack from growing
            // (docs/benchmarks.md, "Memory and disk").
            let (store, at) = (self.store, self.store.current);
            let deleted = store.index.range(&range, at).count();
            self.p.changes.reserve_exact(deleted);
            for (key, _) in store.index.range(&range, at) {
                self.p.record_tombstone(key.to_vec(), None);
            }
            return Ok(DeleteRangeResponse {
                deleted: deleted as i64,
                ..Default::default()
            });
        }
        let view = self.view();
        let found = view.collect(&range, view.head());
        let mut resp = DeleteRangeResponse {
            deleted: found.len() as i64,
            ..Default::default()
        };
        if !need_prev {
            for (key, _) in found {
                self.p.record_tombstone(key, None);
            }
            return Ok(resp);
        }
        let mut deleted = Vec::with_capacity(found.len());
        for (key, f) in found {
            deleted.push((key, Some(view.load(&f)?)));
        }
        for (key, prev) in deleted {
            if req.prev_kv {
                resp.prev_kvs.push(to_pb(
                    prev.clone().expect("loaded because prev_kv was asked"),
                    false,
                ));
            }
            self.p
                .record_tombstone(key, prev.filter(|_| self.store.events_prev_kv));
        }
        Ok(resp)
    }

    /// A whole txn: branches and request checks against the state before it,
    /// then the ops in order, each seeing the earlier ones.
    pub(super) fn txn(
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

pub(super) fn to_event(c: Change) -> Event {
    let kind = if c.tombstone {
        EventType::Delete
    } else {
        EventType::Put
    };
    Event {
        r#type: kind as i32,
        kv: Some(to_pb(c.kv, false)),
        prev_kv: c.prev.map(|p| to_pb(*p, false)),
    }
}

impl MvccStore {
    /// Commits a successful execution, or writes only `extra` after an
    /// expected error (and returns that error); after a storage failure or
    /// corrupt data it writes nothing.
    pub(super) fn finish<R>(
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
            // A failing or corrupt storage is not the request's error: write
            // nothing, not even `extra` (the server's applied index), so the
            // entry is applied again once the member restarts on good data.
            Err(e @ (MvccError::Storage(_) | MvccError::Corrupt(_))) => Err(e),
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
        let mut batch = WriteBatch::with_capacity(pending.changes.len() + extra.len());
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
}
