//! Catch-up of unsynced watchers from MVCC history, one bounded step at a
//! time: `WatchHub::catch_up_plan` names a `CatchUp` (a revision window of one
//! stream), the caller runs `read_history` under the store's read lock, and
//! `WatchHub::finish_catch_up` hands the `HistoryRead` to `deliver_history`
//! for each watcher it serves.
//!
//! Invariants: `read_history` stops early only at a revision boundary;
//! `deliver_history` queues whole revisions (`group_by_revision`) and moves a
//! watcher's `next_rev` only past revisions whose matching events it queued,
//! so history arrives in order, without gaps or duplicates.
//!
//! Tests: `tests.rs` (history, slow consumers, snapshot install),
//! `model_tests.rs` (quickcheck against a model).

use cairn_proto::mvccpb::Event;
use prost::Message as _;

use super::config::HubConfig;
use super::ids::{StreamId, WatchId};
use super::stream::{events_response, Stream};
use crate::mvcc::{MvccError, MvccStore, Revision};

/// One catch-up step of a stream: read the history of `[from, to]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    pub stream: StreamId,
    pub from: i64,
    pub to: i64,
    /// Whether some watcher to be served wants `prev_kv`.
    pub prev_kv: bool,
    /// The reader may stop early (at a revision boundary) past this many event bytes.
    pub max_bytes: usize,
}

/// What the caller read from the store for a `CatchUp`.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryRead {
    /// Every event with revision in `[plan.from, to]`, in order; `to` ≤ `plan.to`.
    Events {
        to: i64,
        events: Vec<Event>,
        /// The store's compact revision at the read (0: never compacted).
        compact_revision: i64,
    },
    /// The history at `plan.from` is compacted.
    Compacted { compact_revision: i64 },
}

/// Revisions read per `events_between` call by `read_history`, so a read
/// can stop soon after `max_bytes` without loading a whole window.
const READ_WINDOW: i64 = 16;

/// Performs `plan`'s read on `store` (hold the store's read lock around it).
pub fn read_history(store: &MvccStore, plan: &CatchUp) -> Result<HistoryRead, MvccError> {
    let compact_revision = store.compact_revision().map_or(0, |c| c.0);
    let last = plan.to.min(store.current_revision().0);
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut read_to = plan.from - 1;
    let mut from = plan.from;
    while from <= last {
        let to = last.min(from.saturating_add(READ_WINDOW - 1));
        match store.events_between(Revision(from), Revision(to), plan.prev_kv) {
            Ok(evs) => {
                bytes += evs.iter().map(prost::Message::encoded_len).sum::<usize>();
                events.extend(evs);
                read_to = to;
            }
            Err(MvccError::Compacted) => return Ok(HistoryRead::Compacted { compact_revision }),
            Err(e) => return Err(e),
        }
        if bytes >= plan.max_bytes {
            break;
        }
        from = to + 1;
    }
    Ok(HistoryRead::Events {
        to: read_to,
        events,
        compact_revision,
    })
}

/// `(revision, index range)` of each revision's events in `events`.
pub(super) fn group_by_revision(events: &[Event]) -> Vec<(i64, std::ops::Range<usize>)> {
    let mut out: Vec<(i64, std::ops::Range<usize>)> = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let rev = event_revision(ev);
        match out.last_mut() {
            Some((r, range)) if *r == rev => range.end = i + 1,
            _ => out.push((rev, i..i + 1)),
        }
    }
    out
}

/// Queues for unsynced watcher `id` its events from `next_rev` through `to`,
/// whole revisions only, as far as the queue has room. Returns whether the
/// watcher advanced.
pub(super) fn deliver_history(
    config: &HubConfig,
    stream: &mut Stream,
    id: WatchId,
    events: &[Event],
    by_revision: &[(i64, std::ops::Range<usize>)],
    to: i64,
    revision: i64,
) -> bool {
    let w = stream.watchers.get(&id).expect("watcher exists");
    let mut batch: Vec<Event> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut next = to + 1;
    for (rev, range) in by_revision {
        if *rev < w.next_rev {
            continue;
        }
        let add: Vec<Event> = events[range.clone()]
            .iter()
            .filter(|e| w.wants(e))
            .map(|e| w.shape(e))
            .collect();
        if add.is_empty() {
            continue;
        }
        let add_bytes: usize = add.iter().map(|e| e.encoded_len() + 4).sum();
        // The first revision goes whenever events may be queued at all (an
        // empty queue takes any size); later ones only within the limits.
        let fits = match batch.is_empty() {
            true => stream.has_room(config, add_bytes),
            false => {
                stream.queue.len() < config.max_queued_responses
                    && stream.queued_bytes + batch_bytes + add_bytes <= config.max_queued_bytes
            }
        };
        if !fits {
            next = *rev;
            break;
        }
        batch.extend(add);
        batch_bytes += add_bytes;
    }
    let advanced = next > w.next_rev;
    let fragment = w.fragment;
    let w = stream.watchers.get_mut(&id).expect("watcher exists");
    if advanced {
        w.next_rev = next;
        w.fresh = false;
    }
    if !batch.is_empty() {
        w.progress_due = false;
        // As etcd: a catch-up response carries the current revision.
        stream.push(events_response(id, revision, batch), fragment);
    }
    advanced
}

fn event_revision(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
