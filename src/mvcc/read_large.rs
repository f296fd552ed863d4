//! Ranges whose response may be large (issue 24 item 5): `range_read`
//! answers small ones whole, as `range` does, and plans the others as the
//! revisions of their kvs only, to be read one by one afterwards — without
//! the store's lock — from a storage snapshot taken under it
//! (`RangePieces`). Memory while planning and reading: 32 bytes per kv
//! considered (its `LiveRev`: every kv of the range when sorting or
//! filtering, else at most `limit + 1`) plus the kv being read; no key or
//! value is kept. Counting (`count`, `count_only`) walks the index without
//! keeping anything.
//!
//! The plan follows `View::range` exactly (etcd's rules): every key in the
//! range is counted; with sorting or revision filters every kv is
//! considered, otherwise one more than the limit; filters, sort and limit
//! use only what the index holds (mod and create revisions, versions),
//! so no value is read to plan. Sorting by value needs the values: such a
//! Range is answered whole by `range` (unbounded, as before).
//!
//! The snapshot keeps every revision of the plan readable even when a
//! compaction deletes them meanwhile; the revisions at or below the read
//! revision never change otherwise.
//!
//! Tests: `tests.rs` (`range_read_*`: pieces and whole answers equal to
//! `range` for random stores and requests).

use std::cmp::Ordering;
use std::sync::Arc;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;
use cairn_runtime::StorageSnapshot;

use super::index::{KeyRange, LiveRev};
use super::kv::Kv;
use super::read::to_pb;
use super::store::{MvccStore, CF_KV};
use super::MvccError;

/// The answer of `MvccStore::range_read`.
pub enum RangeRead {
    /// The whole response (its header left `None`).
    Whole(RangeResponse),
    /// A large response, to be read kv by kv.
    Pieces(RangePieces),
}

/// The kvs of a large Range, in response order, read on demand from a
/// snapshot of the storage; with the response's `count` and `more`.
pub struct RangePieces {
    pub count: i64,
    pub more: bool,
    keys_only: bool,
    revs: Vec<LiveRev>,
    snapshot: Arc<dyn StorageSnapshot>,
}

impl RangePieces {
    /// How many kvs the response has.
    pub fn len(&self) -> usize {
        self.revs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// The `i`-th kv of the response, read from the snapshot.
    pub fn kv(&self, i: usize) -> Result<KeyValue, MvccError> {
        let rev = self.revs[i].rev;
        let bytes = self
            .snapshot
            .get(CF_KV, &rev.to_key(false))?
            .ok_or_else(|| {
                MvccError::Corrupt(format!("indexed revision {rev:?} is missing from storage"))
            })?;
        Ok(to_pb(Kv::decode(&bytes)?, self.keys_only))
    }
}

impl MvccStore {
    /// A Range as `range` computes it, answered whole when its kvs encode
    /// to at most `whole_up_to` bytes (or when it sorts by value), else
    /// planned as `RangePieces`.
    pub fn range_read(
        &self,
        req: &RangeRequest,
        whole_up_to: usize,
    ) -> Result<RangeRead, MvccError> {
        let order = sort_order(req);
        if order.is_some() && req.sort_target() == SortTarget::Value {
            return self.range(req).map(RangeRead::Whole);
        }
        let at = self.view().resolve(req.revision)?;
        let range = &KeyRange::new(&req.key, &req.range_end);
        let at = at.min(self.current);
        let found = move || self.index.range(range, at).map(|(_, live)| live);
        let count = found().count();
        let mut resp = RangeResponse {
            count: count as i64,
            ..Default::default()
        };
        if req.count_only {
            return Ok(RangeRead::Whole(resp));
        }
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let take = if req.sort_order() != SortOrder::None || filtered || req.limit <= 0 {
            count
        } else {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
                .min(count)
        };
        // Reserved at once: growing by doubling would hold 1.5 times as much.
        let mut revs: Vec<LiveRev> = Vec::with_capacity(take);
        revs.extend(found().take(take).filter(|l| passes_filters(req, l)));
        if let Some(order) = order {
            sort_revs(req.sort_target(), order, &mut revs);
        }
        if req.limit > 0 && revs.len() as i64 > req.limit {
            revs.truncate(req.limit as usize);
            resp.more = true;
        }
        let mut size = 0;
        for live in &revs {
            let kv = to_pb(self.load(live.rev)?, req.keys_only);
            size += prost::encoding::message::encoded_len(2, &kv);
            if size > whole_up_to {
                return Ok(RangeRead::Pieces(RangePieces {
                    count: resp.count,
                    more: resp.more,
                    keys_only: req.keys_only,
                    revs,
                    snapshot: self.storage.snapshot(),
                }));
            }
            resp.kvs.push(kv);
        }
        Ok(RangeRead::Whole(resp))
    }
}

/// The order `View::range` sorts in (`sort_kvs`): none for NONE by KEY,
/// ascending for NONE by anything else.
fn sort_order(req: &RangeRequest) -> Option<SortOrder> {
    match (req.sort_order(), req.sort_target()) {
        (SortOrder::None, SortTarget::Key) => None,
        (SortOrder::None, _) => Some(SortOrder::Ascend),
        (order, _) => Some(order),
    }
}

/// `read.rs`'s `passes_filters` on what the index knows of a kv.
fn passes_filters(req: &RangeRequest, live: &LiveRev) -> bool {
    let (modified, created) = (live.rev.main.0, live.created.0);
    (req.max_mod_revision == 0 || modified <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || modified >= req.min_mod_revision)
        && (req.max_create_revision == 0 || created <= req.max_create_revision)
        && (req.min_create_revision == 0 || created >= req.min_create_revision)
}

/// `read.rs`'s `sort_kvs` on revisions in key order: a stable sort, so
/// ties keep key order; by key, the order is already ascending (keys are
/// unique) or its reverse. Not for VALUE (the index has no values).
fn sort_revs(target: SortTarget, order: SortOrder, revs: &mut [LiveRev]) {
    let by: fn(&LiveRev, &LiveRev) -> Ordering = match target {
        SortTarget::Key => {
            if order == SortOrder::Descend {
                revs.reverse();
            }
            return;
        }
        SortTarget::Version => |a, b| a.version.cmp(&b.version),
        SortTarget::Create => |a, b| a.created.cmp(&b.created),
        SortTarget::Mod => |a, b| a.rev.main.cmp(&b.rev.main),
        SortTarget::Value => unreachable!("sorting by value is answered whole"),
    };
    match order {
        SortOrder::Descend => revs.sort_by(|a, b| by(b, a)),
        _ => revs.sort_by(by),
    }
}
