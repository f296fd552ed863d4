//! Scenario tests of the watch hub against etcd 3.5's behaviour, each named
//! after what it checks. `Rig` (a store plus a hub, driven like the server
//! drives them) is shared with `model_tests.rs`.

use std::sync::Arc;

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, WatchCreateRequest, WatchResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use cairn_runtime::{SimDisk, SimStorage, WriteBatch};

use super::*;
use crate::mvcc::{MvccStore, COLUMN_FAMILIES};

// ---- the rig ----

/// A store and a hub, written and notified as the node loop does.
pub(super) struct Rig {
    pub store: MvccStore,
    pub hub: WatchHub,
}

impl Rig {
    pub fn new(config: HubConfig) -> Rig {
        let storage = SimStorage::open(&SimDisk::new(), COLUMN_FAMILIES).expect("sim storage");
        let store = MvccStore::open(Arc::new(storage)).expect("mvcc store");
        let hub = WatchHub::new(config, store.current_revision().0);
        Rig { store, hub }
    }

    fn notify(&mut self, revision: i64, events: &[Event], prev_kv: bool) {
        self.hub.notify(revision, events, prev_kv);
        self.hub.check_invariants();
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> i64 {
        let prev_kv = self.hub.wants_prev_kv();
        self.store.set_events_prev_kv(prev_kv);
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        let out = self
            .store
            .put(&req, &|_| true, WriteBatch::new())
            .expect("put");
        self.notify(out.revision.0, &out.events, prev_kv);
        out.revision.0
    }

    pub fn delete(&mut self, key: &[u8], range_end: &[u8]) -> i64 {
        let prev_kv = self.hub.wants_prev_kv();
        self.store.set_events_prev_kv(prev_kv);
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            prev_kv: false,
        };
        let out = self
            .store
            .delete_range(&req, WriteBatch::new())
            .expect("delete");
        if !out.events.is_empty() {
            self.notify(out.revision.0, &out.events, prev_kv);
        }
        out.revision.0
    }

    pub fn txn_puts(&mut self, kvs: &[(&[u8], &[u8])]) -> i64 {
        use cairn_proto::etcdserverpb::{request_op::Request, RequestOp, TxnRequest};
        let prev_kv = self.hub.wants_prev_kv();
        self.store.set_events_prev_kv(prev_kv);
        let req = TxnRequest {
            success: kvs
                .iter()
                .map(|(k, v)| RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: k.to_vec(),
                        value: v.to_vec(),
                        ..Default::default()
                    })),
                })
                .collect(),
            ..Default::default()
        };
        let out = self
            .store
            .txn(&req, &|_| true, WriteBatch::new())
            .expect("txn");
        self.notify(out.revision.0, &out.events, prev_kv);
        out.revision.0
    }

    pub fn compact(&mut self, revision: i64) {
        self.store
            .compact(
                &CompactionRequest {
                    revision,
                    physical: true,
                },
                WriteBatch::new(),
            )
            .expect("compact");
    }

    /// One catch-up step of `stream`, if it has one to do.
    pub fn catch_up_step(&mut self, stream: StreamId) -> bool {
        let Some(plan) = self.hub.catch_up_plan(stream) else {
            self.hub.check_invariants();
            return false;
        };
        let read = read_history(&self.store, &plan).expect("history read");
        let changed = self.hub.finish_catch_up(&plan, read);
        self.hub.check_invariants();
        changed
    }

    /// Drains `stream` as a consumer that keeps up: takes everything queued
    /// and runs catch-up steps until neither has anything left.
    pub fn pump(&mut self, stream: StreamId) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        loop {
            out.extend(self.hub.take(stream, usize::MAX));
            let stepped = self.catch_up_step(stream);
            if !stepped && !self.hub.has_output(stream) {
                return out;
            }
        }
    }
}

pub(super) fn create(key: &[u8], range_end: &[u8], start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        start_revision: start,
        ..Default::default()
    }
}

/// `(type, key, mod_revision)` of each event of the responses for `id`.
fn events_of(responses: &[WatchResponse], id: WatchId) -> Vec<(EventType, String, i64)> {
    responses
        .iter()
        .filter(|r| r.watch_id == id.0)
        .flat_map(|r| r.events.iter())
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            (
                if e.r#type == EventType::Delete as i32 {
                    EventType::Delete
                } else {
                    EventType::Put
                },
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect()
}

fn small_config() -> HubConfig {
    HubConfig {
        max_queued_responses: 4,
        max_queued_bytes: 1 << 20,
        catch_up_revisions: 3,
        max_response_bytes: 1536 * 1024,
    }
}

use EventType::{Delete as D, Put as P};

fn ev(t: EventType, k: &str, rev: i64) -> (EventType, String, i64) {
    (t, k.to_owned(), rev)
}

// ---- create / cancel ----

#[test]
fn created_response_comes_first_and_ids_are_assigned_from_zero_skipping_client_ids() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    rig.put(b"a", b"1"); // revision 2
    let s = rig.hub.open_stream();
    let chosen = WatchCreateRequest {
        watch_id: 1,
        ..create(b"a", b"", 0)
    };
    assert_eq!(rig.hub.create(s, &chosen), Ok(WatchId(1)));
    assert_eq!(rig.hub.create(s, &create(b"a", b"", 0)), Ok(WatchId(0)));
    assert_eq!(rig.hub.create(s, &create(b"a", b"", 0)), Ok(WatchId(2)));
    assert_eq!(
        rig.hub.create(s, &chosen),
        Err(WatchError::DuplicateId),
        "a client-chosen id in use is refused"
    );
    let out = rig.pump(s);
    let created: Vec<(i64, bool, bool, i64)> = out
        .iter()
        .map(|r| {
            (
                r.watch_id,
                r.created,
                r.canceled,
                r.header.as_ref().map_or(-1, |h| h.revision),
            )
        })
        .collect();
    assert_eq!(
        created,
        vec![
            (1, true, false, 2),
            (0, true, false, 2),
            (2, true, false, 2),
            (-1, true, true, 2)
        ]
    );
    assert_eq!(
        out[3].cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
}

#[test]
fn empty_range_is_refused_with_etcds_reason_but_from_key_and_all_keys_are_not() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    assert_eq!(
        rig.hub.create(s, &create(b"b", b"a", 0)),
        Err(WatchError::EmptyRange)
    );
    assert_eq!(
        rig.hub.create(s, &create(b"b", b"b", 0)),
        Err(WatchError::EmptyRange)
    );
    let out = rig.pump(s);
    assert!(out.iter().all(|r| r.watch_id == -1
        && r.created
        && r.canceled
        && r.cancel_reason == "mvcc: watcher range is empty"));
    let from_b = rig
        .hub
        .create(s, &create(b"b", b"\0", 0))
        .expect("from key");
    let all = rig.hub.create(s, &create(b"", b"\0", 0)).expect("all keys");
    let empty_key = rig.hub.create(s, &create(b"", b"", 0)).expect("key \\0");
    rig.put(b"a", b"1");
    rig.put(b"c", b"1");
    rig.put(b"\0", b"1");
    let out = rig.pump(s);
    assert_eq!(events_of(&out, from_b), vec![ev(P, "c", 3)]);
    assert_eq!(
        events_of(&out, all),
        vec![ev(P, "a", 2), ev(P, "c", 3), ev(P, "\0", 4)]
    );
    assert_eq!(events_of(&out, empty_key), vec![ev(P, "\0", 4)]);
}

#[test]
fn cancel_answers_once_and_stops_events_unknown_ids_are_ignored() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"a", b"", 0)).expect("create");
    rig.put(b"a", b"1");
    assert!(rig.hub.cancel(s, w));
    assert!(!rig.hub.cancel(s, w), "second cancel: unknown id");
    assert!(!rig.hub.cancel(s, WatchId(42)));
    rig.put(b"a", b"2");
    let out = rig.pump(s);
    assert_eq!(out.len(), 3, "created, one event, canceled: {out:?}");
    assert!(out[2].canceled && out[2].watch_id == w.0 && out[2].compact_revision == 0);
    assert_eq!(rig.hub.watcher_count(), 0);
}

// ---- live delivery ----

#[test]
fn synced_watchers_get_each_revision_whole_filtered_and_with_prev_kv_only_if_asked() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let prefix = rig.hub.create(s, &create(b"k", b"l", 0)).expect("prefix");
    let no_put = rig
        .hub
        .create(
            s,
            &WatchCreateRequest {
                filters: vec![FilterType::Noput as i32],
                ..create(b"k", b"l", 0)
            },
        )
        .expect("noput");
    let with_prev = rig
        .hub
        .create(
            s,
            &WatchCreateRequest {
                prev_kv: true,
                filters: vec![FilterType::Nodelete as i32],
                ..create(b"k1", b"", 0)
            },
        )
        .expect("prev_kv");
    // A consumer that keeps up (takes after each revision; one that falls
    // behind gets them merged: `a_watchers_events_queued_over_several_...`).
    let mut out = rig.pump(s);
    rig.txn_puts(&[(b"k1", b"a"), (b"k2", b"b"), (b"x", b"c")]); // 2
    out.extend(rig.pump(s));
    rig.put(b"k1", b"b"); // 3
    out.extend(rig.pump(s));
    rig.delete(b"k", b"l"); // 4: two deletes
    out.extend(rig.pump(s));
    let txn_resp: Vec<&WatchResponse> = out
        .iter()
        .filter(|r| r.watch_id == prefix.0 && !r.created)
        .collect();
    assert_eq!(txn_resp.len(), 3, "one response per revision");
    assert_eq!(txn_resp[0].events.len(), 2, "the txn's events together");
    assert_eq!(txn_resp[0].header.as_ref().map(|h| h.revision), Some(2));
    assert_eq!(
        events_of(&out, prefix),
        vec![
            ev(P, "k1", 2),
            ev(P, "k2", 2),
            ev(P, "k1", 3),
            ev(D, "k1", 4),
            ev(D, "k2", 4)
        ]
    );
    assert_eq!(
        events_of(&out, no_put),
        vec![ev(D, "k1", 4), ev(D, "k2", 4)]
    );
    assert_eq!(
        events_of(&out, with_prev),
        vec![ev(P, "k1", 2), ev(P, "k1", 3)]
    );
    let prevs: Vec<Option<Vec<u8>>> = out
        .iter()
        .filter(|r| r.watch_id == with_prev.0)
        .flat_map(|r| &r.events)
        .map(|e| e.prev_kv.as_ref().map(|p| p.value.clone()))
        .collect();
    assert_eq!(prevs, vec![None, Some(b"a".to_vec())]);
    assert!(
        out.iter()
            .filter(|r| r.watch_id != with_prev.0)
            .flat_map(|r| &r.events)
            .all(|e| e.prev_kv.is_none()),
        "watchers that did not ask get no prev_kv"
    );
}

#[test]
fn watcher_with_prev_kv_is_caught_up_when_the_store_did_not_compute_it() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    rig.put(b"a", b"1"); // 2
    let s = rig.hub.open_stream();
    let w = rig
        .hub
        .create(
            s,
            &WatchCreateRequest {
                prev_kv: true,
                ..create(b"a", b"", 0)
            },
        )
        .expect("create");
    // The store applied revision 3 before it learnt that a watcher wants prev_kv.
    rig.store.set_events_prev_kv(false);
    let out = rig
        .store
        .put(
            &PutRequest {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                ..Default::default()
            },
            &|_| true,
            WriteBatch::new(),
        )
        .expect("put");
    rig.notify(3, &out.events, false);
    assert_eq!(rig.hub.unsynced_count(), 1);
    let out = rig.pump(s);
    let ev = out
        .iter()
        .find(|r| r.watch_id == w.0 && !r.events.is_empty())
        .expect("the event");
    assert_eq!(
        ev.events[0].prev_kv.as_ref().map(|p| p.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(rig.hub.unsynced_count(), 0);
}

// ---- history ----

#[test]
fn watcher_behind_catches_up_in_bounded_steps_then_goes_live_without_gap_or_duplicate() {
    let mut rig = Rig::new(HubConfig {
        catch_up_revisions: 2,
        ..HubConfig::new(1 << 20)
    });
    for i in 0..6 {
        rig.put(format!("k{i}").as_bytes(), b"v"); // 2..=7
    }
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"k", b"l", 3)).expect("create");
    // A read planned now, a write applied before it finishes (the race
    // between the catch-up reader and the node loop).
    let plan = rig.hub.catch_up_plan(s).expect("plan");
    assert_eq!((plan.from, plan.to), (3, 4));
    rig.put(b"k9", b"v"); // 8
    let read = read_history(&rig.store, &plan).expect("read");
    rig.hub.finish_catch_up(&plan, read);
    rig.hub.check_invariants();
    let out = rig.pump(s);
    assert_eq!(
        events_of(&out, w),
        (3..=7)
            .map(|r| ev(P, &format!("k{}", r - 2), r))
            .chain([ev(P, "k9", 8)])
            .collect::<Vec<_>>()
    );
    assert_eq!(rig.hub.unsynced_count(), 0);
    rig.put(b"k1", b"again"); // 9: live
    let out = rig.pump(s);
    assert_eq!(events_of(&out, w), vec![ev(P, "k1", 9)]);
}

#[test]
fn future_start_revision_skips_earlier_events() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"a", b"", 4)).expect("create");
    for v in [b"1", b"2", b"3", b"4"] {
        rig.put(b"a", v); // 2..=5
    }
    let out = rig.pump(s);
    assert_eq!(events_of(&out, w), vec![ev(P, "a", 4), ev(P, "a", 5)]);
}

#[test]
fn start_below_compact_revision_is_canceled_and_start_at_it_gets_what_compaction_kept() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    rig.put(b"a", b"1"); // 2
    rig.put(b"b", b"2"); // 3
    rig.delete(b"a", b""); // 4
    rig.put(b"c", b"3"); // 5
    rig.compact(4);
    let s = rig.hub.open_stream();
    let below = rig.hub.create(s, &create(b"", b"\0", 3)).expect("create");
    let at = rig.hub.create(s, &create(b"", b"\0", 4)).expect("create");
    let out = rig.pump(s);
    let cancel = out
        .iter()
        .find(|r| r.watch_id == below.0 && r.canceled)
        .expect("canceled");
    assert_eq!(cancel.compact_revision, 4);
    assert_eq!(cancel.header.as_ref().map(|h| h.revision), Some(0));
    assert!(events_of(&out, below).is_empty());
    // As etcd 3.4 answers `watch --rev=4` after `compact 4`: the delete at 4 is gone.
    assert_eq!(events_of(&out, at), vec![ev(P, "c", 5)]);
    assert_eq!(rig.hub.watcher_count(), 1);
}

// ---- slow consumers ----

#[test]
fn slow_consumer_is_set_aside_and_caught_up_from_history_without_loss() {
    let mut rig = Rig::new(small_config());
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"k", b"l", 0)).expect("create");
    for i in 0..10 {
        rig.put(format!("k{i}").as_bytes(), b"v"); // 2..=11
    }
    assert_eq!(rig.hub.unsynced_count(), 1, "the queue filled up");
    let out = rig.pump(s);
    assert_eq!(
        events_of(&out, w),
        (0..10)
            .map(|i| ev(P, &format!("k{i}"), i + 2))
            .collect::<Vec<_>>()
    );
    assert_eq!(rig.hub.unsynced_count(), 0);
}

#[test]
fn slow_consumer_whose_history_is_compacted_is_canceled_not_silently_skipped() {
    let mut rig = Rig::new(small_config());
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"k", b"l", 0)).expect("create");
    for i in 0..10 {
        rig.put(format!("k{i}").as_bytes(), b"v"); // 2..=11
    }
    rig.compact(9);
    let out = rig.pump(s);
    let got = events_of(&out, w);
    // What was queued before the watcher fell behind, then the cancel.
    assert_eq!(
        got,
        (0..3)
            .map(|i| ev(P, &format!("k{i}"), i + 2))
            .collect::<Vec<_>>()
    );
    let last = out.last().expect("responses");
    assert!(last.canceled && last.compact_revision == 9 && last.watch_id == w.0);
    assert_eq!(rig.hub.watcher_count(), 0);
}

#[test]
fn set_aside_watcher_at_exactly_the_compact_revision_is_canceled() {
    // A fresh watcher may start at the compact revision; one that already
    // received events must not resume there (its deletes there are gone).
    let mut rig = Rig::new(small_config());
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"k", b"l", 0)).expect("create");
    for i in 0..3 {
        rig.put(format!("k{i}").as_bytes(), b"v"); // 2..=4 fit
    }
    rig.delete(b"k0", b""); // 5: set aside here
    rig.compact(5);
    let out = rig.pump(s);
    assert_eq!(events_of(&out, w).len(), 3);
    assert!(out
        .last()
        .is_some_and(|r| r.canceled && r.compact_revision == 5));
}

// ---- progress ----

#[test]
fn progress_request_is_answered_once_every_watcher_is_synced() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    rig.hub.request_progress(s);
    assert!(rig.pump(s).is_empty(), "no watchers: no answer, as etcd");
    rig.put(b"a", b"1"); // 2
    rig.put(b"a", b"2"); // 3
    rig.hub.create(s, &create(b"a", b"", 2)).expect("behind");
    rig.hub.take(s, usize::MAX);
    rig.hub.request_progress(s);
    assert!(
        !rig.hub.has_output(s),
        "deferred while a watcher catches up"
    );
    let out = rig.pump(s);
    let progress: Vec<&WatchResponse> = out.iter().filter(|r| r.watch_id == -1).collect();
    assert_eq!(progress.len(), 1);
    assert!(progress[0].events.is_empty() && !progress[0].created && !progress[0].canceled);
    assert_eq!(progress[0].header.as_ref().map(|h| h.revision), Some(3));
    let last_event_pos = out.iter().rposition(|r| !r.events.is_empty());
    let progress_pos = out.iter().position(|r| r.watch_id == -1);
    assert!(
        last_event_pos < progress_pos,
        "progress after the events it covers"
    );
}

#[test]
fn progress_tick_notifies_only_idle_synced_progress_notify_watchers() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let notify = |key: &[u8]| WatchCreateRequest {
        progress_notify: true,
        ..create(key, b"", 0)
    };
    let idle = rig.hub.create(s, &notify(b"a")).expect("create");
    let busy = rig.hub.create(s, &notify(b"b")).expect("create");
    let _silent = rig.hub.create(s, &create(b"c", b"", 0)).expect("create");
    rig.hub.take(s, usize::MAX);
    rig.hub.progress_tick(s);
    let ids: Vec<i64> = rig
        .hub
        .take(s, usize::MAX)
        .iter()
        .map(|r| r.watch_id)
        .collect();
    assert_eq!(
        ids,
        vec![idle.0, busy.0],
        "first tick: both progress watchers"
    );
    rig.put(b"b", b"1"); // 2
    rig.hub.take(s, usize::MAX);
    rig.hub.progress_tick(s);
    let out = rig.hub.take(s, usize::MAX);
    assert_eq!(
        out.len(),
        1,
        "the busy watcher got events since the last tick"
    );
    assert_eq!(out[0].watch_id, idle.0);
    assert_eq!(out[0].header.as_ref().map(|h| h.revision), Some(2));
    assert!(out[0].events.is_empty());
}

// ---- merged responses ----

/// `(watch_id, header revision, event revisions)` of each response.
fn shapes(out: &[WatchResponse]) -> Vec<(i64, i64, Vec<i64>)> {
    out.iter()
        .map(|r| {
            (
                r.watch_id,
                r.header.as_ref().map_or(-1, |h| h.revision),
                r.events
                    .iter()
                    .map(|e| e.kv.as_ref().map_or(-1, |kv| kv.mod_revision))
                    .collect(),
            )
        })
        .collect()
}

/// A stream with watchers on `a` and `b`, their created responses taken.
fn two_watchers_created_and_answered() -> (Rig, StreamId, WatchId, WatchId) {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let a = rig.hub.create(s, &create(b"a", b"", 0)).expect("create");
    let b = rig.hub.create(s, &create(b"b", b"", 0)).expect("create");
    rig.hub.take(s, usize::MAX);
    (rig, s, a, b)
}

#[test]
fn a_watchers_events_queued_over_several_revisions_go_out_as_one_response_at_the_newest() {
    let (mut rig, s, a, b) = two_watchers_created_and_answered();
    rig.put(b"a", b"1"); // 2
    rig.put(b"b", b"1"); // 3
    rig.put(b"a", b"2"); // 4
    rig.txn_puts(&[(b"a", b"3"), (b"b", b"2")]); // 5
    let out = rig.hub.take(s, usize::MAX);
    assert_eq!(
        shapes(&out),
        vec![(a.0, 5, vec![2, 4, 5]), (b.0, 5, vec![3, 5])],
        "one response per watcher, in the order each first had events"
    );
    assert!(!rig.hub.has_output(s));
    rig.hub.check_invariants();
    // A consumer that keeps up gets a response per revision, as before.
    rig.put(b"a", b"4"); // 6
    assert_eq!(
        shapes(&rig.hub.take(s, usize::MAX)),
        vec![(a.0, 6, vec![6])]
    );
    rig.put(b"a", b"5"); // 7
    assert_eq!(
        shapes(&rig.hub.take(s, usize::MAX)),
        vec![(a.0, 7, vec![7])]
    );
}

#[test]
fn events_are_not_merged_across_a_progress_notification_or_a_cancel() {
    let (mut rig, s, a, b) = two_watchers_created_and_answered();
    rig.put(b"a", b"1"); // 2
    rig.hub.request_progress(s); // answered at 2, after a's event
    rig.put(b"a", b"2"); // 3
    rig.put(b"b", b"1"); // 4
    assert!(rig.hub.cancel(s, b));
    rig.put(b"a", b"3"); // 5
    let out = rig.hub.take(s, usize::MAX);
    let shaped = shapes(&out);
    assert_eq!(
        shaped,
        vec![
            (a.0, 2, vec![2]),
            (-1, 2, vec![]),
            (a.0, 5, vec![3, 5]),
            (b.0, 4, vec![4]),
            (b.0, 4, vec![]),
        ],
        "a progress response still follows exactly the events it covers; \
         a cancelled watcher's events stay before its cancel"
    );
    assert!(out[4].canceled);
}

#[test]
fn merging_stops_at_the_size_limit_and_take_counts_the_responses_it_returns() {
    let (mut rig, s, a, b) = two_watchers_created_and_answered();
    let big = vec![b'x'; 20 * 1024];
    for _ in 0..4 {
        rig.put(b"a", &big); // 2..=5
    }
    rig.put(b"b", b"1"); // 6
    let out = rig.hub.take(s, 1);
    assert_eq!(
        shapes(&out),
        vec![(a.0, 4, vec![2, 3, 4])],
        "three 20 KiB events fit in one merged response, the fourth does not"
    );
    let rest = rig.hub.take(s, usize::MAX);
    assert_eq!(shapes(&rest), vec![(a.0, 5, vec![5]), (b.0, 6, vec![6])]);
    rig.hub.check_invariants();
}

// ---- snapshot install ----

#[test]
fn store_replaced_by_snapshot_resyncs_every_watcher_from_its_next_revision() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let w = rig.hub.create(s, &create(b"k", b"l", 0)).expect("create");
    rig.put(b"k1", b"v"); // 2, notified
    let out = rig.pump(s);
    assert_eq!(events_of(&out, w), vec![ev(P, "k1", 2)]);
    // Revisions 3..=5 arrive inside a snapshot: the hub is not notified of them.
    for k in [b"k2", b"x1", b"k3"] {
        let req = PutRequest {
            key: k.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        rig.store
            .put(&req, &|_| true, WriteBatch::new())
            .expect("put");
    }
    rig.hub.reset(5);
    rig.hub.check_invariants();
    rig.put(b"k4", b"v"); // 6, live while the watcher catches up
    let out = rig.pump(s);
    assert_eq!(
        events_of(&out, w),
        vec![ev(P, "k2", 3), ev(P, "k3", 5), ev(P, "k4", 6)]
    );
}

// ---- fragments ----

fn big_event(key: &str, len: usize) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            value: vec![7; len],
            mod_revision: 2,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

#[test]
fn fragment_splits_only_above_the_limit_keeping_every_event_once_in_order() {
    let resp = WatchResponse {
        watch_id: 3,
        events: (0..10).map(|i| big_event(&format!("k{i}"), 100)).collect(),
        ..Default::default()
    };
    assert_eq!(fragment(resp.clone(), 1 << 20), vec![resp.clone()]);
    let parts = fragment(resp.clone(), 400);
    assert!(parts.len() > 1);
    assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
    assert!(!parts[parts.len() - 1].fragment);
    assert!(parts
        .iter()
        .all(|p| !p.events.is_empty() && p.watch_id == 3));
    assert!(parts
        .iter()
        .all(|p| p.events.len() == 1 || prost::Message::encoded_len(p) + HEADER_ALLOWANCE < 400));
    let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(joined, resp.events);
    // One event larger than the limit still goes out, alone and whole.
    let huge = WatchResponse {
        events: vec![big_event("a", 1000), big_event("b", 10)],
        ..Default::default()
    };
    let parts = fragment(huge, 400);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].events.len(), 1);
}

#[test]
fn hub_fragments_only_for_watchers_that_ask() {
    let mut rig = Rig::new(HubConfig {
        max_response_bytes: 300,
        ..HubConfig::new(1 << 20)
    });
    let s = rig.hub.open_stream();
    let whole = rig.hub.create(s, &create(b"k", b"l", 0)).expect("create");
    let split = rig
        .hub
        .create(
            s,
            &WatchCreateRequest {
                fragment: true,
                ..create(b"k", b"l", 0)
            },
        )
        .expect("create");
    let value = vec![b'v'; 100];
    rig.txn_puts(&[(b"k1", &value), (b"k2", &value), (b"k3", &value)]);
    let out = rig.pump(s);
    assert_eq!(
        out.iter()
            .filter(|r| r.watch_id == whole.0 && !r.created)
            .count(),
        1
    );
    let parts: Vec<&WatchResponse> = out
        .iter()
        .filter(|r| r.watch_id == split.0 && !r.created)
        .collect();
    assert!(parts.len() > 1, "{parts:?}");
    assert_eq!(events_of(&out, split), events_of(&out, whole));
}

// ---- streams ----

#[test]
fn closing_a_stream_drops_its_watchers_and_queue() {
    let mut rig = Rig::new(HubConfig::new(1 << 20));
    let s = rig.hub.open_stream();
    let other = rig.hub.open_stream();
    rig.hub
        .create(
            s,
            &WatchCreateRequest {
                prev_kv: true,
                ..create(b"a", b"", 0)
            },
        )
        .expect("create");
    rig.hub.create(s, &create(b"a", b"b", 1)).expect("create");
    rig.hub
        .create(other, &create(b"a", b"", 0))
        .expect("create");
    rig.put(b"a", b"1");
    rig.hub.close_stream(s);
    rig.hub.check_invariants();
    assert_eq!(rig.hub.watcher_count(), 1);
    assert!(!rig.hub.wants_prev_kv());
    assert!(rig.hub.take(s, usize::MAX).is_empty());
    assert_eq!(
        rig.hub.create(s, &create(b"a", b"", 0)),
        Err(WatchError::StreamClosed)
    );
    assert_eq!(rig.hub.stream_count(), 1);
}
