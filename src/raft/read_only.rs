//! The leader's queue of ReadIndex requests waiting for a heartbeat round to
//! confirm it is still the leader (Raft thesis §6.4).
//!
//! Each request records the commit index when it arrived; once a quorum of
//! voters acknowledged a heartbeat carrying its context, that request and
//! every earlier one may be answered with their recorded index.
//! Bounded: at most `max_pending` requests. Tests: `raft::golden` (read_index_*).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Clone)]
pub struct ReadIndexStatus {
    /// Commit index when the request arrived.
    pub index: u64,
    /// Who asked: the leader itself or a follower that forwarded it.
    pub from: u64,
    pub context: Vec<u8>,
    pub acks: BTreeSet<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ReadOnly {
    pending: BTreeMap<Vec<u8>, ReadIndexStatus>,
    /// Contexts in arrival order.
    queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues a request; a context already pending is ignored (returns false).
    pub fn add_request(&mut self, index: u64, from: u64, context: Vec<u8>) -> bool {
        if self.pending.contains_key(&context) {
            return false;
        }
        self.queue.push_back(context.clone());
        self.pending.insert(
            context.clone(),
            ReadIndexStatus {
                index,
                from,
                context,
                acks: BTreeSet::new(),
            },
        );
        true
    }

    /// Records `id`'s acknowledgement; returns who has acknowledged so far.
    pub fn recv_ack(&mut self, id: u64, context: &[u8]) -> Option<&BTreeSet<u64>> {
        let status = self.pending.get_mut(context)?;
        status.acks.insert(id);
        Some(&status.acks)
    }

    /// Removes and returns the request with `context` and every earlier one.
    pub fn advance(&mut self, context: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == context) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .map(|c| {
                self.pending
                    .remove(&c)
                    .expect("queue and pending map hold the same contexts")
            })
            .collect()
    }

    /// The newest pending context, re-sent with every heartbeat.
    pub fn last_pending(&self) -> Option<&[u8]> {
        self.queue.back().map(Vec::as_slice)
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.pending.clear();
    }
}
