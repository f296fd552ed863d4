//! Reads: `View`, the committed state seen through an optional `Pending`
//! overlay of an in-progress write, and what is computed from it — Range
//! (etcd's revision rules, filters, sort and limit), txn compares (etcd's
//! compareKV), the branches a txn takes, and etcd's per-op checks of a txn;
//! also `is_read_only_txn` (etcd's isTxnReadonly).
//!
//! A view only reads. A read at or above the pending write's revision sees
//! the overlay over the committed state (a pending delete hides the key); an
//! older one sees the committed state alone.
//!
//! Tests: `tests.rs` (`range_*`, `txn_compare_*`, `nested_txn_*`,
//! `read_only_txn_*`), `model_tests.rs` (quickcheck vs a model).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, RangeRequest, RangeResponse, RequestOp, TxnRequest};
use cairn_proto::mvccpb::KeyValue;

use super::index::{KeyRange, LiveRev};
use super::kv::Kv;
use super::revision::Revision;
use super::store::MvccStore;
use super::write::Pending;
use super::MvccError;

/// Where a visible kv comes from: Storage (via the index) or the overlay.
#[derive(Debug, Clone)]
pub(super) enum Found {
    Stored(LiveRev),
    Pending(Kv),
}

impl Found {
    pub(super) fn created_and_version(&self) -> (i64, i64) {
        match self {
            Found::Stored(l) => (l.created.0, l.version),
            Found::Pending(kv) => (kv.create_revision, kv.version),
        }
    }
}

/// A read view: the committed state, optionally with a write's overlay.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) store: &'a MvccStore,
    pub(super) pending: Option<&'a Pending>,
}

impl View<'_> {
    /// The revision reads at "revision 0" see: the txn's own if it wrote.
    pub(super) fn head(&self) -> Revision {
        match self.pending {
            Some(p) if !p.changes.is_empty() => p.rev,
            _ => self.store.current,
        }
    }

    /// etcd's rules: future → error, ≤ 0 → head, older than compaction → error.
    pub(super) fn resolve(&self, requested: i64) -> Result<Revision, MvccError> {
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
    pub(super) fn collect(&self, range: &KeyRange, at: Revision) -> Vec<(Vec<u8>, Found)> {
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
    pub(super) fn latest(&self, key: &[u8]) -> Option<Found> {
        if let Some(state) = self.pending.and_then(|p| p.overlay.get(key)) {
            return state.clone().map(Found::Pending);
        }
        self.store.index.current(key).map(Found::Stored)
    }

    pub(super) fn load(&self, found: &Found) -> Result<Kv, MvccError> {
        match found {
            Found::Stored(l) => self.store.load(l.rev),
            Found::Pending(kv) => Ok(kv.clone()),
        }
    }

    pub(super) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
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
    pub(super) fn txn_path(&self, req: &TxnRequest) -> Result<Vec<bool>, MvccError> {
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
    pub(super) fn check_put_op(
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
    pub(super) fn check_range_op(&self, op: &RequestOp) -> Result<(), MvccError> {
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

pub(super) fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
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

pub(super) fn to_pb(kv: Kv, keys_only: bool) -> KeyValue {
    KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: if keys_only { Vec::new() } else { kv.value },
        lease: kv.lease,
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
