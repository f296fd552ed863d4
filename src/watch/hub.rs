//! `WatchHub`: every watcher of a member, grouped by stream, and what each
//! stream has to send.
//!
//! A watcher is *synced* when every matching event up to the hub's revision
//! is queued for it: it sits in the synced index and `notify` hands it each
//! new revision's events. Otherwise it is *unsynced* — created at an older
//! start revision, set aside because its stream's queue was full (etcd's
//! victim), because it wants `prev_kv` and the store did not compute it, or
//! because the store was replaced by a snapshot — and catches up from MVCC
//! history one bounded step at a time until it reaches the hub's revision.
//!
//! Invariants (`check_invariants`):
//! - a watcher is in the synced index iff it is synced, and in its stream's
//!   `unsynced` set iff it is not;
//! - every matching event with revision < `next_rev` has been queued for the
//!   watcher (or it was created later than that revision), none with a
//!   higher revision: delivery is in order, without gaps or duplicates;
//! - a stream's `queued_bytes` is the sum of its queue's sizes; events are
//!   queued only while the queue is within its limits (or empty), control
//!   responses always (the API stops reading requests while it is full).
//!
//! The caller must call `notify` for every revision in order, after the
//! store applied it, and `reset` when the store is replaced.
//!
//! Its parts live beside it: `ids.rs`, `config.rs`, `watcher.rs` (one
//! watcher), `stream.rs` (a stream's watchers and queue), `synced.rs` (the
//! synced index) and `catch_up.rs` (history reads and their delivery).
//!
//! Tests: `tests.rs` (scenarios), `model_tests.rs` (quickcheck against a
//! model).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use cairn_proto::mvccpb::Event;
use prost::Message as _;

use super::catch_up::{deliver_history, group_by_revision, CatchUp, HistoryRead};
use super::config::HubConfig;
use super::ids::{StreamId, WatchId, PROGRESS_WATCH_ID};
use super::stream::{events_response, header, Queued, Stream};
use super::synced::SyncedIndex;
use super::watcher::Watcher;
use super::{fragment, WatchError};

/// Above this size a response takes no more merged events (`WatchHub::take`):
/// well below the 4 MiB a gRPC client receives by default.
const MERGED_RESPONSE_BYTES: usize = 64 * 1024;

/// Whether a queued response is a watcher's events and nothing else, so that
/// the same watcher's next events may join it (`WatchHub::take`).
fn is_plain_events(q: &Queued) -> bool {
    let r = &q.response;
    !q.fragment
        && !r.events.is_empty()
        && r.watch_id != PROGRESS_WATCH_ID.0
        && !r.created
        && !r.canceled
        && !r.fragment
        && r.compact_revision == 0
        && r.cancel_reason.is_empty()
}

/// Every watcher of a member (module docs).
#[derive(Debug)]
pub struct WatchHub {
    config: HubConfig,
    /// The newest revision `notify` (or `reset`) reported.
    revision: i64,
    streams: BTreeMap<StreamId, Stream>,
    next_stream_id: u64,
    synced: SyncedIndex,
    /// Watchers that want `prev_kv` (the store computes it only when > 0).
    prev_kv_watchers: usize,
}

/// Moves a watcher to the unsynced set; it needs history from `next_rev` on.
fn set_aside(
    synced: &mut SyncedIndex,
    stream_id: StreamId,
    stream: &mut Stream,
    id: WatchId,
    next_rev: i64,
) {
    let w = stream
        .watchers
        .get_mut(&id)
        .expect("a watcher set aside exists");
    if w.synced {
        synced.remove((stream_id, id), &w.range);
        w.synced = false;
    }
    w.next_rev = w.next_rev.max(next_rev);
    w.fresh = false;
    stream.unsynced.insert(id);
}

fn promote(synced: &mut SyncedIndex, stream_id: StreamId, stream: &mut Stream, id: WatchId) {
    let w = stream
        .watchers
        .get_mut(&id)
        .expect("a watcher promoted exists");
    w.synced = true;
    stream.unsynced.remove(&id);
    synced.insert((stream_id, id), &w.range);
}

/// etcd's answer to a stream's progress request, once every watcher of the
/// stream is synced (a progress response at revision R promises that every
/// event up to R was sent before it). Returns whether it was answered.
fn answer_deferred_progress(config: &HubConfig, stream: &mut Stream, revision: i64) -> bool {
    if !stream.progress_deferred || !stream.all_synced() || stream.is_full(config) {
        return false;
    }
    stream.progress_deferred = false;
    // As etcd: a stream without watchers gets no answer.
    if !stream.watchers.is_empty() {
        stream.push(
            WatchResponse {
                header: header(revision),
                watch_id: PROGRESS_WATCH_ID.0,
                ..Default::default()
            },
            false,
        );
        return true;
    }
    false
}

impl WatchHub {
    /// A hub for a store at `revision`.
    pub fn new(config: HubConfig, revision: i64) -> WatchHub {
        WatchHub {
            config,
            revision,
            streams: BTreeMap::new(),
            next_stream_id: 1,
            synced: SyncedIndex::default(),
            prev_kv_watchers: 0,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The newest revision the hub knows of.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Whether any watcher wants `prev_kv` (then the store should compute it).
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    pub fn watcher_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Watchers currently catching up (created behind or set aside).
    pub fn unsynced_count(&self) -> usize {
        self.streams.values().map(|s| s.unsynced.len()).sum()
    }

    pub fn open_stream(&mut self) -> StreamId {
        let id = StreamId(self.next_stream_id);
        self.next_stream_id += 1;
        self.streams.insert(id, Stream::default());
        id
    }

    /// Drops a stream with its watchers and queue (the client went away).
    pub fn close_stream(&mut self, stream_id: StreamId) {
        let Some(stream) = self.streams.remove(&stream_id) else {
            return;
        };
        for (id, w) in stream.watchers {
            if w.synced {
                self.synced.remove((stream_id, id), &w.range);
            }
            if w.prev_kv {
                self.prev_kv_watchers -= 1;
            }
        }
    }

    /// etcd's create: queues the `created` response (with the new watch id),
    /// or a `created` + `canceled` one with the reason and watch id -1.
    pub fn create(
        &mut self,
        stream_id: StreamId,
        req: &WatchCreateRequest,
    ) -> Result<WatchId, WatchError> {
        let revision = self.revision;
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(WatchError::StreamClosed)?;
        let made = Watcher::from_request(req, revision)
            .and_then(|w| stream.assign_id(req.watch_id).map(|id| (id, w)));
        let (id, w) = match made {
            Ok(made) => made,
            Err(e) => {
                stream.push(
                    WatchResponse {
                        header: header(revision),
                        watch_id: PROGRESS_WATCH_ID.0,
                        created: true,
                        canceled: true,
                        cancel_reason: e.to_string(),
                        ..Default::default()
                    },
                    false,
                );
                return Err(e);
            }
        };
        stream.push(
            WatchResponse {
                header: header(revision),
                watch_id: id.0,
                created: true,
                ..Default::default()
            },
            false,
        );
        if w.prev_kv {
            self.prev_kv_watchers += 1;
        }
        if w.synced {
            self.synced.insert((stream_id, id), &w.range);
        } else {
            stream.unsynced.insert(id);
        }
        stream.watchers.insert(id, w);
        Ok(id)
    }

    /// etcd's cancel: removes the watcher and queues a `canceled` response;
    /// an unknown id is ignored (no response), as etcd does.
    pub fn cancel(&mut self, stream_id: StreamId, id: WatchId) -> bool {
        let revision = self.revision;
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return false;
        };
        let Some(w) = stream.watchers.remove(&id) else {
            return false;
        };
        if w.synced {
            self.synced.remove((stream_id, id), &w.range);
        }
        stream.unsynced.remove(&id);
        if w.prev_kv {
            self.prev_kv_watchers -= 1;
        }
        stream.push(
            WatchResponse {
                header: header(revision),
                watch_id: id.0,
                canceled: true,
                ..Default::default()
            },
            false,
        );
        answer_deferred_progress(&self.config, stream, revision);
        true
    }

    /// A client's progress request: answered (watch id -1, the hub's
    /// revision, no events) as soon as all the stream's watchers are synced.
    pub fn request_progress(&mut self, stream_id: StreamId) {
        let revision = self.revision;
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            stream.progress_deferred = true;
            answer_deferred_progress(&self.config, stream, revision);
        }
    }

    /// The periodic progress notification (etcd's progress ticker): each
    /// synced `progress_notify` watcher that got no events since the last
    /// tick gets an empty response at the hub's revision. Skipped while the
    /// queue is full (the watcher is then receiving events anyway).
    pub fn progress_tick(&mut self, stream_id: StreamId) {
        let revision = self.revision;
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        let mut due = Vec::new();
        for (id, w) in stream
            .watchers
            .iter_mut()
            .filter(|(_, w)| w.progress_notify)
        {
            if w.progress_due && w.synced {
                due.push(*id);
            }
            w.progress_due = true;
        }
        for id in due {
            if stream.is_full(&self.config) {
                break;
            }
            stream.push(events_response(id, revision, Vec::new()), false);
        }
    }

    /// The events of a newly applied `revision` (all of them, in order).
    /// `prev_kv_filled` says whether the store computed `prev_kv` for them.
    /// Returns the streams that have something new to do.
    pub fn notify(
        &mut self,
        revision: i64,
        events: &[Event],
        prev_kv_filled: bool,
    ) -> Vec<StreamId> {
        self.revision = self.revision.max(revision);
        let mut woken = BTreeSet::new();
        if self.synced.is_empty() || events.is_empty() {
            return Vec::new();
        }
        for ((stream_id, id), idxs) in self.synced.matches(events) {
            let Some(stream) = self.streams.get_mut(&stream_id) else {
                continue;
            };
            let Some(w) = stream.watchers.get_mut(&id) else {
                continue;
            };
            if revision < w.next_rev {
                continue; // delivered from history already, or starts later
            }
            let evs: Vec<Event> = idxs
                .iter()
                .map(|i| &events[*i])
                .filter(|e| w.wants(e))
                .map(|e| w.shape(e))
                .collect();
            if evs.is_empty() {
                w.next_rev = revision + 1;
                continue;
            }
            woken.insert(stream_id);
            if w.prev_kv && !prev_kv_filled {
                set_aside(&mut self.synced, stream_id, stream, id, revision);
                continue;
            }
            let fragment = w.fragment;
            let resp = events_response(id, revision, evs);
            if stream.has_room(&self.config, resp.encoded_len()) {
                let w = stream
                    .watchers
                    .get_mut(&id)
                    .expect("matched watcher exists");
                w.next_rev = revision + 1;
                w.progress_due = false;
                stream.push(resp, fragment);
            } else {
                set_aside(&mut self.synced, stream_id, stream, id, revision);
            }
        }
        woken.into_iter().collect()
    }

    /// The store was replaced (snapshot install) and is now at `revision`:
    /// every synced watcher catches up from history from its next revision.
    /// Returns the streams with watchers.
    pub fn reset(&mut self, revision: i64) -> Vec<StreamId> {
        let before = self.revision;
        self.revision = revision;
        let mut woken = Vec::new();
        for (stream_id, stream) in &mut self.streams {
            let synced: Vec<WatchId> = stream
                .watchers
                .iter()
                .filter(|(_, w)| w.synced)
                .map(|(id, _)| *id)
                .collect();
            for id in synced {
                set_aside(&mut self.synced, *stream_id, stream, id, before + 1);
            }
            if !stream.watchers.is_empty() {
                woken.push(*stream_id);
            }
        }
        woken
    }

    /// The next history read `stream` needs, if any and if its queue has
    /// room. Watchers already caught up are moved to synced first.
    pub fn catch_up_plan(&mut self, stream_id: StreamId) -> Option<CatchUp> {
        let revision = self.revision;
        let stream = self.streams.get_mut(&stream_id)?;
        let ready: Vec<WatchId> = stream
            .unsynced
            .iter()
            .filter(|id| stream.watchers[*id].next_rev > revision)
            .copied()
            .collect();
        for id in ready {
            promote(&mut self.synced, stream_id, stream, id);
        }
        answer_deferred_progress(&self.config, stream, revision);
        if !stream.can_catch_up(&self.config) {
            return None;
        }
        let from = stream
            .unsynced
            .iter()
            .map(|id| stream.watchers[id].next_rev)
            .min()?;
        let to = revision.min(from.saturating_add(self.config.catch_up_revisions - 1));
        let prev_kv = stream.unsynced.iter().any(|id| {
            let w = &stream.watchers[id];
            w.prev_kv && w.next_rev <= to
        });
        Some(CatchUp {
            stream: stream_id,
            from,
            to,
            prev_kv,
            max_bytes: self.config.max_queued_bytes / 2,
        })
    }

    /// Applies what was read for `plan`: cancels the watchers whose history
    /// is compacted (with etcd's `compact_revision`), queues the rest their
    /// events of whole revisions as far as the queue allows, and moves the
    /// caught-up ones to synced. Returns whether anything changed.
    pub fn finish_catch_up(&mut self, plan: &CatchUp, read: HistoryRead) -> bool {
        let revision = self.revision;
        let config = &self.config;
        let Some(stream) = self.streams.get_mut(&plan.stream) else {
            return false;
        };
        let (to, events, compact) = match read {
            HistoryRead::Compacted { compact_revision } => {
                (plan.from - 1, Vec::new(), compact_revision)
            }
            HistoryRead::Events {
                to,
                events,
                compact_revision,
            } => (to.min(plan.to), events, compact_revision),
        };
        let mut changed = false;
        let ids: Vec<WatchId> = stream.unsynced.iter().copied().collect();
        for id in &ids {
            if stream.watchers[id].compacted_away(compact) {
                let w = stream.watchers.remove(id).expect("unsynced watcher exists");
                stream.unsynced.remove(id);
                if w.prev_kv {
                    self.prev_kv_watchers -= 1;
                }
                // As etcd: no revision in the header, canceled, compact_revision.
                stream.push(
                    WatchResponse {
                        header: header(0),
                        watch_id: id.0,
                        canceled: true,
                        compact_revision: compact,
                        ..Default::default()
                    },
                    false,
                );
                changed = true;
            }
        }
        if to >= plan.from {
            let by_revision = group_by_revision(&events);
            for id in &ids {
                let Some(w) = stream.watchers.get(id) else {
                    continue;
                };
                if w.synced
                    || w.next_rev < plan.from
                    || w.next_rev > to
                    || (w.prev_kv && !plan.prev_kv)
                {
                    continue;
                }
                changed |=
                    deliver_history(config, stream, *id, &events, &by_revision, to, revision);
            }
        }
        for id in ids {
            if stream
                .watchers
                .get(&id)
                .is_some_and(|w| w.next_rev > revision)
            {
                promote(&mut self.synced, plan.stream, stream, id);
                changed = true;
            }
        }
        answer_deferred_progress(config, stream, revision);
        changed
    }

    /// Whether `stream` has responses queued.
    pub fn has_output(&self, stream_id: StreamId) -> bool {
        self.streams
            .get(&stream_id)
            .is_some_and(|s| !s.queue.is_empty())
    }

    /// Whether the API should read more requests of `stream` (its queue is
    /// not full: every request queues at most one response).
    pub fn accepts_requests(&self, stream_id: StreamId) -> bool {
        self.streams
            .get(&stream_id)
            .is_some_and(|s| !s.is_full(&self.config))
    }

    /// Removes queued responses of `stream`, up to `max` of them as they go
    /// out (fragmented where the watcher asked for it; fragments of one
    /// response are never separated).
    ///
    /// A watcher's events from several revisions queued meanwhile go out as
    /// one response (as etcd sends a catching-up watcher's history), up to
    /// `MERGED_RESPONSE_BYTES`, its header at the newest revision: fewer,
    /// larger messages for a stream that is behind. Only events move, never
    /// across a response that is not events (a progress notification, a
    /// create or cancel answer), so what such a response promises still
    /// holds; a watcher's own events stay in order.
    pub fn take(&mut self, stream_id: StreamId, max: usize) -> Vec<WatchResponse> {
        let mut out: Vec<WatchResponse> = Vec::new();
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return out;
        };
        // Per watcher, the response in `out` its next events may join, and its size.
        let mut open: HashMap<WatchId, (usize, usize)> = HashMap::new();
        while let Some(q) = stream.queue.pop_front() {
            let id = WatchId(q.response.watch_id);
            if is_plain_events(&q) {
                if let Some((at, size)) = open.get_mut(&id) {
                    if *size + q.bytes <= MERGED_RESPONSE_BYTES {
                        stream.queued_bytes -= q.bytes;
                        *size += q.bytes;
                        let merged = &mut out[*at];
                        merged.header = q.response.header;
                        merged.events.extend(q.response.events);
                        continue;
                    }
                }
            }
            if out.len() >= max {
                stream.queue.push_front(q);
                break;
            }
            stream.queued_bytes -= q.bytes;
            if is_plain_events(&q) {
                open.insert(id, (out.len(), q.bytes));
            } else if id == PROGRESS_WATCH_ID {
                open.clear();
            } else {
                open.remove(&id);
            }
            if q.fragment {
                out.extend(fragment(q.response, self.config.max_response_bytes));
            } else {
                out.push(q.response);
            }
        }
        out
    }

    /// Verifies the invariants (module docs); panics with context.
    pub fn check_invariants(&self) {
        let mut synced_count = 0;
        let mut prev_kv = 0;
        for (stream_id, stream) in &self.streams {
            let bytes: usize = stream.queue.iter().map(|q| q.bytes).sum();
            assert_eq!(
                bytes, stream.queued_bytes,
                "stream {stream_id:?} byte count"
            );
            for (id, w) in &stream.watchers {
                let key = (*stream_id, *id);
                assert_eq!(
                    self.synced.contains(key, &w.range),
                    w.synced,
                    "watcher {key:?} synced flag vs index"
                );
                assert_eq!(
                    stream.unsynced.contains(id),
                    !w.synced,
                    "watcher {key:?} synced flag vs unsynced set"
                );
                assert!(
                    w.next_rev >= w.start_rev,
                    "watcher {key:?} before its start"
                );
                assert!(!(w.fresh && w.synced), "watcher {key:?} fresh but synced");
                synced_count += usize::from(w.synced);
                prev_kv += usize::from(w.prev_kv);
            }
            assert!(
                stream
                    .unsynced
                    .iter()
                    .all(|id| stream.watchers.contains_key(id)),
                "stream {stream_id:?} lists an unknown unsynced watcher"
            );
        }
        assert_eq!(synced_count, self.synced.len(), "synced index size");
        assert_eq!(prev_kv, self.prev_kv_watchers, "prev_kv watcher count");
    }
}
