//! The server side of the v2 keys API (`--enable-v2`): writes proposed
//! through Raft and applied by `apply::apply_v2`, reads from this member's
//! applied store (or after a ReadIndex barrier with `quorum=true`), watches
//! (`wait=true`) served from the store's history or from this member's
//! watcher hub, which the node loop feeds after each apply, and the
//! leader's expiry sweep: every 500 ms the leader proposes a SYNC with its
//! wall clock when a node's expiry has passed, and every member deletes what
//! expired by that time (etcd 3.4's scheme).
//!
//! Tests: `tests/v2_api.rs` (against etcd 3.4) and the `v2` simulation
//! scenario (`sim-tests/src/sim/v2.rs`).

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use cairn_proto::cairnpb::{internal_request::Request, V2Request};
use tokio::sync::mpsc;

use super::apply::Applied;
use super::{Server, ServerError};
use crate::v2store::{self, Event};

/// How often the leader looks for expired v2 nodes (etcd's 500 ms).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Events a watcher may have unread before it is dropped (etcd's 100).
const WATCHER_QUEUE: usize = 100;

struct Waiter {
    key: String,
    recursive: bool,
    since: u64,
    stream: bool,
    tx: mpsc::Sender<Event>,
}

/// This member's v2 watchers.
pub struct Hub {
    waiters: Mutex<Vec<Waiter>>,
    /// When this member started (Unix nanoseconds; `/v2/stats/self`).
    started: i64,
}

impl Hub {
    pub fn new(started: i64) -> Hub {
        Hub {
            waiters: Mutex::new(Vec::new()),
            started,
        }
    }

    fn add(&self, key: String, recursive: bool, since: u64, stream: bool) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        if let Ok(mut w) = self.waiters.lock() {
            w.push(Waiter {
                key,
                recursive,
                since,
                stream,
                tx,
            });
        }
        rx
    }

    /// Hands applied events to the watchers they concern; a watcher that
    /// got its one event (not streaming), went away or fell 100 events
    /// behind is dropped (its stream ends).
    pub fn notify(&self, events: &[Event]) {
        let Ok(mut waiters) = self.waiters.lock() else {
            return;
        };
        for e in events {
            waiters.retain(|w| {
                if w.tx.is_closed() {
                    return false;
                }
                if e.index() < w.since || !e.concerns(&w.key, w.recursive) {
                    return true;
                }
                w.tx.try_send(e.clone()).is_ok() && w.stream
            });
        }
    }

    /// How many watchers wait (for `/v2/stats/store`).
    pub fn len(&self) -> usize {
        self.waiters.lock().map_or(0, |mut w| {
            w.retain(|w| !w.tx.is_closed());
            w.len()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A v2 answer: the event with the Raft term and index it was answered at.
pub struct V2Answer {
    pub event: Event,
    pub raft_index: u64,
    pub raft_term: u64,
}

/// A watch: the events (one unless streaming) and the headers' indexes.
pub struct V2Watch {
    pub events: mpsc::Receiver<Event>,
    pub etcd_index: u64,
    pub raft_index: u64,
    pub raft_term: u64,
}

/// A member failure as a v2 error (etcd answers them as `300 Raft Internal
/// Error` with the error's text as the cause).
fn internal(e: &ServerError) -> v2store::Error {
    v2store::Error::new(v2store::ECODE_RAFT_INTERNAL, e.to_string(), 0)
}

impl Server {
    /// Whether `--enable-v2` is on.
    pub fn v2_enabled(&self) -> bool {
        self.shared.config.enable_v2
    }

    /// The Raft term and commit index (the `X-Raft-*` headers).
    pub fn raft_term_index(&self) -> (u64, u64) {
        let r = &self.shared.raft;
        (
            r.term.load(Ordering::SeqCst),
            r.commit_index.load(Ordering::SeqCst),
        )
    }

    fn unix_nanos(&self) -> i64 {
        i64::try_from(self.shared.clock.unix_now().as_nanos()).unwrap_or(i64::MAX)
    }

    /// When this member started (Unix nanoseconds).
    pub fn started_unix_nanos(&self) -> i64 {
        self.shared.v2_watchers.started
    }

    /// Per peer: round trips measured (successes), their mean in
    /// milliseconds, and messages that failed to send (`/v2/stats/leader`).
    pub fn peer_latency(&self) -> Vec<(u64, u64, f64, u64)> {
        self.shared
            .config
            .peer_stats
            .snapshot()
            .into_iter()
            .map(|(id, c)| {
                let n = c.round_trip.count();
                let mean_ms = if n == 0 {
                    0.0
                } else {
                    c.round_trip.sum_secs() * 1000.0 / n as f64
                };
                (id, n, mean_ms, c.sent_failures.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// The members as applied here.
    pub fn member_records(&self) -> Vec<cairn_proto::cairnpb::MemberRecord> {
        self.shared.members().values().cloned().collect()
    }

    /// This member's wall clock (expiries are computed from it).
    pub fn v2_now(&self) -> i64 {
        self.unix_nanos()
    }

    /// A v2 GET: from this member's applied store, after a ReadIndex
    /// barrier when `quorum`.
    pub async fn v2_get(
        &self,
        path: &str,
        recursive: bool,
        quorum: bool,
    ) -> Result<V2Answer, v2store::Error> {
        if quorum {
            self.linearizable_barrier()
                .await
                .map_err(|e| internal(&e))?;
        }
        let now = self.unix_nanos();
        let event = self.shared.v2().get(path, recursive, now)?;
        let (raft_term, raft_index) = self.raft_term_index();
        Ok(V2Answer {
            event,
            raft_index,
            raft_term,
        })
    }

    /// A v2 write, proposed through Raft; the answer once applied here.
    pub async fn v2_write(&self, req: V2Request) -> Result<V2Answer, v2store::Error> {
        let applied = self
            .propose(Request::V2(req))
            .await
            .map_err(|e| internal(&e))?;
        let (raft_term, raft_index) = self.raft_term_index();
        match applied.0 {
            Applied::V2(Ok(event)) => Ok(V2Answer {
                event: *event,
                raft_index,
                raft_term,
            }),
            Applied::V2(Err(e)) => Err(e),
            other => panic!("a v2 write was applied as {other:?}"),
        }
    }

    /// A v2 watch from `since` (0: the next change): an event already in
    /// the history is answered at once, otherwise the watch waits here.
    pub fn v2_watch(
        &self,
        path: &str,
        recursive: bool,
        stream: bool,
        since: u64,
    ) -> Result<V2Watch, v2store::Error> {
        let key = v2store::clean(path);
        // The store stays read-locked while the watcher registers, so no
        // apply slips between the history scan and the registration.
        let store = self.shared.v2();
        let etcd_index = store.index();
        let since = if since == 0 { etcd_index + 1 } else { since };
        let found = store.watch_scan(&key, recursive, since)?;
        let events = match found {
            // As etcd: a change found in the history is the watch's only
            // answer, even when streaming.
            Some(e) => {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(e);
                // The sender stays alive for a stream (the answer stays open
                // until the client goes, as etcd's).
                if stream {
                    tokio::spawn(async move { tx.closed().await });
                }
                rx
            }
            None => self.shared.v2_watchers.add(key, recursive, since, stream),
        };
        drop(store);
        let (raft_term, raft_index) = self.raft_term_index();
        Ok(V2Watch {
            events,
            etcd_index,
            raft_index,
            raft_term,
        })
    }

    /// `/v2/stats/store`: etcd's counters, with the watchers waiting here.
    pub fn v2_store_stats(&self) -> String {
        let store = self.shared.v2();
        let s = &store.stats;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{{\"getsSuccess\":{},\"getsFail\":{},\"setsSuccess\":{},\"setsFail\":{},\
             \"deleteSuccess\":{},\"deleteFail\":{},\"updateSuccess\":{},\"updateFail\":{},\
             \"createSuccess\":{},\"createFail\":{},\"compareAndSwapSuccess\":{},\
             \"compareAndSwapFail\":{},\"compareAndDeleteSuccess\":{},\
             \"compareAndDeleteFail\":{},\"expireCount\":{},\"watchers\":{}}}",
            n(&s.gets_success),
            n(&s.gets_fail),
            n(&s.sets_success),
            n(&s.sets_fail),
            n(&s.delete_success),
            n(&s.delete_fail),
            n(&s.update_success),
            n(&s.update_fail),
            n(&s.create_success),
            n(&s.create_fail),
            n(&s.compare_and_swap_success),
            n(&s.compare_and_swap_fail),
            n(&s.compare_and_delete_success),
            n(&s.compare_and_delete_fail),
            n(&s.expire_count),
            self.shared.v2_watchers.len()
        )
    }

    /// The leader's expiry sweep (runs while the member runs, with
    /// `--enable-v2`).
    pub(super) fn spawn_v2_sweeper(&self) {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                server.shared.clock.sleep(SWEEP_INTERVAL).await;
                if server.is_stopped() {
                    return;
                }
                if server.leader() != Some(server.member_id()) {
                    continue;
                }
                let now = server.unix_nanos();
                let due = server.shared.v2().next_expiry().is_some_and(|t| t <= now);
                if due {
                    let sync = V2Request {
                        method: "SYNC".into(),
                        time: now,
                        ..Default::default()
                    };
                    if let Err(e) = server.propose(Request::V2(sync)).await {
                        tracing::debug!(error = %e, "v2 expiry sweep not applied");
                    }
                }
            }
        });
    }
}
