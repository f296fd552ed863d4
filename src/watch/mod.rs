//! The watcher hub (DESIGN §5): which watcher gets which event, in what
//! response, and when — as a pure, deterministic state machine.
//!
//! - `hub`: `WatchHub` — streams (one per gRPC Watch call), their watchers,
//!   each stream's bounded queue of outgoing `WatchResponse`s; `notify` with
//!   the events of each applied revision; catch-up of watchers behind the
//!   current revision from MVCC history (`catch_up_plan` → the caller reads
//!   `read_history` → `finish_catch_up`); progress notifications.
//! - `ids`: `StreamId`, `WatchId`, `PROGRESS_WATCH_ID`.
//! - `config`: `HubConfig`, the hub's limits.
//! - `watcher`: `Watcher` — one watcher's request and delivery state.
//! - `stream`: `Stream` — a stream's watchers and its bounded response queue.
//! - `synced`: `SyncedIndex` — the synced watchers, by key or range.
//! - `catch_up`: `CatchUp`, `read_history`, `HistoryRead` — the bounded
//!   history reads, and their delivery to the watchers behind.
//! - `fragment`: etcd's splitting of one large response into fragments.
//!
//! The hub has no clock, no locks and no I/O: the server wraps it in a mutex
//! (`server/watchers.rs`), calls `notify` after every apply that changed the
//! revision and `reset` after a snapshot install; the gRPC service
//! (`api/watch.rs`) turns requests into hub calls, drains the queue and runs
//! the catch-up reads and progress ticks.
//!
//! Guarantees (checked by the property test in `model_tests.rs`): every
//! watcher's events come in revision order, each once, all events of one
//! revision in one response (unless the watcher asked for `fragment` and the
//! response is too large), starting with the first matching event at or after
//! its start revision and without gaps — or the watcher is cancelled with
//! etcd's `compact_revision` when the history it still needs was compacted.
//! Memory is bounded: a stream's queue has a response and a byte limit; a
//! watcher whose events do not fit is set aside ("unsynced", etcd's victim)
//! and later caught up from history.
//!
//! Errors: a create that etcd refuses gets a `created` + `canceled` response
//! whose `cancel_reason` is `WatchError`'s text (etcd answers in-band, not
//! with a gRPC status).
//! Tests: `tests.rs` (scenarios), `model_tests.rs` (quickcheck against a
//! model), the server tests and `tests/watch_interop.rs`.

mod catch_up;
mod config;
mod fragment;
mod hub;
mod ids;
mod stream;
mod synced;
mod watcher;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use catch_up::{read_history, CatchUp, HistoryRead};
pub use config::HubConfig;
pub use fragment::{fragment, HEADER_ALLOWANCE};
pub use hub::WatchHub;
pub use ids::{StreamId, WatchId, PROGRESS_WATCH_ID};

/// Why etcd refuses to create a watcher. The text is etcd's `cancel_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// `range_end` given and not after `key`.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// The client chose a `watch_id` already in use on its stream.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    /// The stream was closed (a caller bug or a race with the client leaving).
    #[error("mvcc: watch stream is closed")]
    StreamClosed,
}
