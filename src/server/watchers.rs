//! The member's watch hub (`crate::watch::WatchHub`) behind a lock, fed by
//! the node loop, and `WatchSession`: one gRPC Watch stream's handle on it.
//!
//! The node loop calls `WatchShared::notify` after every apply that changed
//! the revision (the events are only ever delivered once applied, hence
//! committed) and `reset` after installing a snapshot. Before each apply it
//! reads `wants_prev_kv` to decide whether the store computes `prev_kv` for
//! the events (a point read per change, paid only while some watcher asks).
//!
//! Lock order: the MVCC lock is never held while taking the hub's lock; a
//! catch-up reads history under the MVCC read lock, releases it, then hands
//! the result to the hub (the hub tolerates revisions applied in between).
//! Each session has a `Notify` the hub's changes wake.
//! Tests: `src/server/tests.rs` (watch across a leader change and a snapshot
//! install), `tests/watch_interop.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use cairn_proto::mvccpb::Event;
use tokio::sync::Notify;

use super::{Server, ServerError};
use crate::watch::{read_history, HubConfig, StreamId, WatchHub, WatchId};

/// The hub and the wakers of its streams.
struct HubState {
    hub: WatchHub,
    wakers: BTreeMap<StreamId, Arc<Notify>>,
}

impl HubState {
    fn wake(&self, streams: &[StreamId]) {
        for s in streams {
            if let Some(w) = self.wakers.get(s) {
                w.notify_one();
            }
        }
    }
}

/// The member's watchers, shared by the node loop and the Watch sessions.
pub(crate) struct WatchShared {
    state: Mutex<HubState>,
    /// Mirrors `hub.wants_prev_kv()` so the apply path reads it without the lock.
    wants_prev_kv: AtomicBool,
}

impl WatchShared {
    pub fn new(config: HubConfig, revision: i64) -> WatchShared {
        WatchShared {
            state: Mutex::new(HubState {
                hub: WatchHub::new(config, revision),
                wakers: BTreeMap::new(),
            }),
            wants_prev_kv: AtomicBool::new(false),
        }
    }

    /// Runs the hub's invariant checks under its lock, catching a failed
    /// one (so the lock is not poisoned): the check's message.
    pub fn check_invariants(&self) -> Result<(), String> {
        let st = self.lock();
        super::node::caught(|| st.hub.check_invariants())
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().expect("watch hub lock poisoned")
    }

    /// Whether the store should compute `prev_kv` for the next apply's events.
    pub fn wants_prev_kv(&self) -> bool {
        self.wants_prev_kv.load(Ordering::SeqCst)
    }

    fn sync_prev_kv(&self, st: &HubState) {
        self.wants_prev_kv
            .store(st.hub.wants_prev_kv(), Ordering::SeqCst);
    }

    /// The events of an applied revision (`prev_kv_filled`: the store computed
    /// `prev_kv` for them). Cheap when nobody watches.
    pub fn notify(&self, revision: i64, events: &[Event], prev_kv_filled: bool) {
        let mut st = self.lock();
        let woken = st.hub.notify(revision, events, prev_kv_filled);
        st.wake(&woken);
    }

    /// The store was replaced by a snapshot and is now at `revision`.
    pub fn reset(&self, revision: i64) {
        let mut st = self.lock();
        let woken = st.hub.reset(revision);
        st.wake(&woken);
    }
}

/// Most responses handed out per `WatchSession::take`.
const TAKE_BATCH: usize = 64;

/// One Watch stream's handle on the hub; closing it (drop) removes the
/// stream and its watchers.
pub struct WatchSession {
    server: Server,
    id: StreamId,
    wake: Arc<Notify>,
}

impl Server {
    /// Opens a Watch stream on this member's hub.
    pub fn watch_session(&self) -> WatchSession {
        let wake = Arc::new(Notify::new());
        let id = {
            let mut st = self.shared.watch.lock();
            let id = st.hub.open_stream();
            st.wakers.insert(id, wake.clone());
            id
        };
        WatchSession {
            server: self.clone(),
            id,
            wake,
        }
    }
}

/// How many watch streams, watchers and unsynced ("slow") watchers a member has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCounts {
    pub streams: usize,
    pub watchers: usize,
    pub unsynced: usize,
}

impl Server {
    /// For `/metrics` (etcd's `etcd_debugging_mvcc_watch*` gauges).
    pub fn watch_counts(&self) -> WatchCounts {
        let st = self.shared.watch.lock();
        WatchCounts {
            streams: st.hub.stream_count(),
            watchers: st.hub.watcher_count(),
            unsynced: st.hub.unsynced_count(),
        }
    }
}

impl WatchSession {
    fn with_hub<T>(&self, f: impl FnOnce(&mut WatchHub, StreamId) -> T) -> T {
        let watch = &self.server.shared.watch;
        let mut st = watch.lock();
        let out = f(&mut st.hub, self.id);
        watch.sync_prev_kv(&st);
        out
    }

    /// A create request (etcd answers in-band, so nothing is returned).
    pub fn create(&self, req: &WatchCreateRequest) {
        self.with_hub(|hub, id| {
            let _ = hub.create(id, req);
        });
    }

    pub fn cancel(&self, watch_id: i64) {
        self.with_hub(|hub, id| hub.cancel(id, WatchId(watch_id)));
    }

    pub fn request_progress(&self) {
        self.with_hub(|hub, id| hub.request_progress(id));
    }

    /// One tick of the progress-notify timer.
    pub fn progress_tick(&self) {
        self.with_hub(|hub, id| hub.progress_tick(id));
    }

    /// Whether more requests may be read (the queue is not full).
    pub fn accepts_requests(&self) -> bool {
        self.with_hub(|hub, id| hub.accepts_requests(id))
    }

    pub fn has_output(&self) -> bool {
        self.with_hub(|hub, id| hub.has_output(id))
    }

    /// The next queued responses, with complete headers.
    pub fn take(&self) -> Vec<WatchResponse> {
        let mut out = self.with_hub(|hub, id| hub.take(id, TAKE_BATCH));
        for r in &mut out {
            let revision = r.header.as_ref().map_or(0, |h| h.revision);
            r.header = Some(self.server.header(revision));
        }
        out
    }

    /// One catch-up step from history; whether it changed anything.
    pub fn catch_up(&self) -> Result<bool, ServerError> {
        let Some(plan) = self.with_hub(|hub, id| hub.catch_up_plan(id)) else {
            return Ok(false);
        };
        let read = {
            let store = self.server.shared.mvcc();
            read_history(&store, &plan)?
        };
        Ok(self.with_hub(|hub, _| hub.finish_catch_up(&plan, read)))
    }

    /// Resolves when the hub has news for this stream.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Resolves when the member stops.
    pub async fn stopped(&self) {
        let mut rx = self.server.shared.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn progress_notify_interval(&self) -> Duration {
        self.server.shared.config.watch_progress_notify_interval
    }

    /// How often a stream that requires a leader checks for one (etcd checks
    /// every election timeout and gives up after three misses).
    pub fn leader_check_interval(&self) -> Duration {
        let cfg = &self.server.shared.config;
        cfg.heartbeat_interval * cfg.election_ticks as u32
    }

    pub fn has_leader(&self) -> bool {
        self.server.leader().is_some()
    }
}

impl Drop for WatchSession {
    fn drop(&mut self) {
        let watch = &self.server.shared.watch;
        let mut st = watch.lock();
        st.hub.close_stream(self.id);
        st.wakers.remove(&self.id);
        watch.sync_prev_kv(&st);
    }
}
