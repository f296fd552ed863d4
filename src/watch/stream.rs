//! `Stream`: one gRPC Watch stream's watchers, the set of those not synced,
//! its bounded queue of outgoing responses (`Queued`) and its deferred
//! progress request; and the builders of the responses the hub queues
//! (`header`, `events_response`).
//!
//! Invariants (checked by `WatchHub::check_invariants`): `queued_bytes` is the
//! sum of the queue's sizes; `unsynced` holds exactly the stream's watchers
//! that are not synced. Events are queued only while the queue is within its
//! limits (or empty), control responses always.
//!
//! Tests: `tests.rs` (slow consumers, progress, streams), `model_tests.rs`
//! (streams drained at random speeds).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cairn_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use cairn_proto::mvccpb::Event;
use prost::Message as _;

use super::config::HubConfig;
use super::ids::WatchId;
use super::watcher::Watcher;
use super::WatchError;

#[derive(Debug)]
pub(super) struct Queued {
    pub(super) response: WatchResponse,
    pub(super) bytes: usize,
    pub(super) fragment: bool,
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) watchers: BTreeMap<WatchId, Watcher>,
    /// The next id to try for a watcher created without one (etcd starts at 0).
    next_auto_id: i64,
    /// The watchers that are not synced.
    pub(super) unsynced: BTreeSet<WatchId>,
    pub(super) queue: VecDeque<Queued>,
    /// Sum of `queue[..].bytes`.
    pub(super) queued_bytes: usize,
    /// A progress request waits for every watcher of the stream to be synced.
    pub(super) progress_deferred: bool,
}

impl Stream {
    pub(super) fn push(&mut self, response: WatchResponse, fragment: bool) {
        let bytes = response.encoded_len();
        self.queued_bytes += bytes;
        self.queue.push_back(Queued {
            response,
            bytes,
            fragment,
        });
    }

    /// Whether `bytes` more of events may be queued now.
    pub(super) fn has_room(&self, config: &HubConfig, bytes: usize) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < config.max_queued_responses
                && self.queued_bytes + bytes <= config.max_queued_bytes)
    }

    pub(super) fn is_full(&self, config: &HubConfig) -> bool {
        self.queue.len() >= config.max_queued_responses
            || self.queued_bytes >= config.max_queued_bytes
    }

    /// Catch-up reads only while the queue is at most half full, so what
    /// they produce fits and the consumer has something to drain meanwhile.
    pub(super) fn can_catch_up(&self, config: &HubConfig) -> bool {
        self.queue.len() <= config.max_queued_responses / 2
            && self.queued_bytes <= config.max_queued_bytes / 2
    }

    pub(super) fn assign_id(&mut self, requested: i64) -> Result<WatchId, WatchError> {
        if requested != 0 {
            return match self.watchers.contains_key(&WatchId(requested)) {
                true => Err(WatchError::DuplicateId),
                false => Ok(WatchId(requested)),
            };
        }
        while self.watchers.contains_key(&WatchId(self.next_auto_id)) {
            self.next_auto_id += 1;
        }
        let id = WatchId(self.next_auto_id);
        self.next_auto_id += 1;
        Ok(id)
    }

    pub(super) fn all_synced(&self) -> bool {
        self.unsynced.is_empty()
    }
}

pub(super) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

pub(super) fn events_response(id: WatchId, revision: i64, events: Vec<Event>) -> WatchResponse {
    WatchResponse {
        header: header(revision),
        watch_id: id.0,
        events,
        ..Default::default()
    }
}
