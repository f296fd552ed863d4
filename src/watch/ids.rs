//! The hub's identifiers: `StreamId` (one gRPC Watch stream, assigned by
//! `WatchHub::open_stream`), `WatchId` (a watcher within its stream, etcd's
//! `watch_id`, assigned by `Stream::assign_id` in `stream.rs`) and
//! `PROGRESS_WATCH_ID`, the id of responses that belong to no watcher.
//!
//! Tests: `tests.rs`
//! (`created_response_comes_first_and_ids_are_assigned_from_zero_skipping_client_ids`).

/// One gRPC Watch stream of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// A watcher's id, unique within its stream (etcd's int64 `watch_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub i64);

/// The watch id of responses that belong to no watcher: failed creates and
/// answers to a stream's progress request (etcd's `InvalidWatchID`).
pub const PROGRESS_WATCH_ID: WatchId = WatchId(-1);
