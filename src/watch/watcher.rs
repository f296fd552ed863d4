//! `Watcher`: one watcher's request (key range, filters, `prev_kv`,
//! `progress_notify`, `fragment`, start revision) and how far its delivery
//! has come (`next_rev`, `synced`, `fresh`, the progress flag).
//!
//! Invariants (the hub's, see `hub.rs`): `next_rev >= start_rev`; a `fresh`
//! watcher is not synced; every matching event from `start_rev` to below
//! `next_rev` has been queued for it, none at or above `next_rev`.
//!
//! Tests: `tests.rs` (create / cancel, filters, `prev_kv`, compaction
//! cancels), `model_tests.rs` (quickcheck against a model).

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::WatchCreateRequest;
use cairn_proto::mvccpb::{event::EventType, Event};

use super::WatchError;
use crate::mvcc::KeyRange;

#[derive(Debug, Clone)]
pub(super) struct Watcher {
    pub(super) range: KeyRange,
    no_put: bool,
    no_delete: bool,
    pub(super) prev_kv: bool,
    pub(super) progress_notify: bool,
    pub(super) fragment: bool,
    /// The first revision the watcher asked for (≥ 1).
    pub(super) start_rev: i64,
    /// Every matching event below it is queued; the next one queued is at or above it.
    pub(super) next_rev: i64,
    pub(super) synced: bool,
    /// Created behind the hub's revision and not yet advanced or set aside:
    /// its first read may start exactly at the compact revision (etcd then
    /// serves what compaction kept there). A watcher that already received
    /// history is cancelled instead, so it never silently misses events.
    pub(super) fresh: bool,
    /// etcd's progress flag: no events queued since the last progress tick.
    pub(super) progress_due: bool,
}

impl Watcher {
    pub(super) fn from_request(
        req: &WatchCreateRequest,
        revision: i64,
    ) -> Result<Watcher, WatchError> {
        // etcd: an empty key is "\0", the smallest key.
        let key = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        let range = match req.range_end.as_slice() {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Span {
                start: key,
                end: None,
            },
            end if key.as_slice() >= end => return Err(WatchError::EmptyRange),
            end => KeyRange::Span {
                start: key,
                end: Some(end.to_vec()),
            },
        };
        let start_rev = match req.start_revision {
            0 => revision + 1,
            r => r.max(1),
        };
        let synced = start_rev > revision;
        Ok(Watcher {
            range,
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            start_rev,
            next_rev: start_rev,
            synced,
            fresh: !synced,
            progress_due: true,
        })
    }

    /// Whether the watcher receives `ev` (its key is in range; not filtered).
    pub(super) fn wants(&self, ev: &Event) -> bool {
        let filtered = if ev.r#type == EventType::Delete as i32 {
            self.no_delete
        } else {
            self.no_put
        };
        !filtered && self.range.contains(event_key(ev))
    }

    /// `ev` as this watcher receives it.
    pub(super) fn shape(&self, ev: &Event) -> Event {
        let mut ev = ev.clone();
        if !self.prev_kv {
            ev.prev_kv = None;
        }
        ev
    }

    /// Cancelled rather than served when the store is compacted at `compact`.
    pub(super) fn compacted_away(&self, compact: i64) -> bool {
        compact > 0 && (self.next_rev < compact || (self.next_rev == compact && !self.fresh))
    }
}

pub(super) fn event_key(ev: &Event) -> &[u8] {
    ev.kv.as_ref().map_or(&[], |kv| kv.key.as_slice())
}
