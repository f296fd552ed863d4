//! What a leader knows about each follower's log, and how fast it may send.
//!
//! A follower's progress is in one of three states:
//! - **Probe**: the leader does not know where the logs match; it sends one
//!   append at a time (`probe_sent` pauses it) and backs off on rejection.
//! - **Replicate**: the logs match up to `matched`; the leader pipelines
//!   appends, advancing `next` optimistically, bounded by `Inflights`.
//! - **Snapshot**: the follower needs entries the leader compacted; the leader
//!   sent a snapshot and sends nothing else until it is acknowledged or reported.
//!
//! Invariant: `matched < next`. Tests: `raft::golden` (flow_control_*, fast_backoff_*).

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// The appends in flight to one follower in Replicate state: at most
/// `max_count` messages and (if non-zero) `max_bytes` bytes of entries.
#[derive(Debug, Clone)]
pub struct Inflights {
    /// (last index of the message, bytes of its entries), oldest first.
    queue: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    /// 0 means unlimited.
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        assert!(max_count > 0, "max_inflight_msgs must be positive");
        Inflights {
            queue: VecDeque::with_capacity(max_count.min(64)),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_count || (self.max_bytes > 0 && self.bytes >= self.max_bytes)
    }

    pub fn count(&self) -> usize {
        self.queue.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(
            self.queue.len() < self.max_count,
            "inflights overflow at {last_index}"
        );
        if let Some(&(prev, _)) = self.queue.back() {
            assert!(last_index > prev, "inflight {last_index} not after {prev}");
        }
        self.queue.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is `<= index` (acknowledged).
    pub fn free_le(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.queue.front() {
            if last > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message: a heartbeat response proves the follower is
    /// alive, so a lost ack must not stall replication forever.
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.queue.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known replicated on the follower (durably: it acked).
    pub matched: u64,
    /// Next index to send. Invariant: `matched < next`.
    pub next: u64,
    pub state: ProgressState,
    /// In Snapshot state: the index of the snapshot sent.
    pub pending_snapshot: u64,
    /// In Probe state: an append was sent and not yet answered.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(
        next: u64,
        max_inflight_msgs: usize,
        max_inflight_bytes: u64,
        is_learner: bool,
    ) -> Self {
        Progress {
            matched: 0,
            next: next.max(1),
            state: ProgressState::Probe,
            pending_snapshot: 0,
            probe_sent: false,
            recent_active: false,
            inflights: Inflights::new(max_inflight_msgs, max_inflight_bytes),
            is_learner,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// An acknowledgement up to `index`. Returns whether `matched` grew.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// A rejection of the append at `rejected`; `hint` is the highest index
    /// where the logs may match. Returns false if the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Records an append carrying entries up to `last_index` (`bytes` of them).
    pub fn sent_append(&mut self, last_index: Option<u64>, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("no appends are sent in snapshot state"),
        }
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}
