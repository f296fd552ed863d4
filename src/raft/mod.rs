//! Raft consensus core: a pure state machine in the style of etcd-io/raft's
//! `RawNode` (DESIGN §3).
//!
//! Inputs: `tick()`, `step(msg)`, `propose(data)`, `propose_conf_change(cc)`,
//! `read_index(ctx)`, `transfer_leader(to)`, `compact(index, data)`,
//! `report_snapshot` / `report_unreachable`. Output: a `Ready` (see
//! `raw_node.rs` for the ordering duty of each field), acknowledged with
//! `advance(ready)`. No async, no clock, no channels, no I/O; election jitter
//! comes from the `StdRng` the caller passes in.
//!
//! Implemented: pre-vote, check-quorum, pipelined replication with flow
//! control (probe / replicate / snapshot, bounded inflights and message
//! bytes, fast back-off from conflict hints), commit of current-term entries
//! only, snapshots and log compaction, ReadIndex, leader transfer
//! (TimeoutNow), single-step membership changes with learners (effective on
//! apply, one at a time; a removed leader steps down).
//!
//! Layout:
//! - `log.rs` — RaftLog (snapshot + entries, stable/unstable, commit/applied).
//! - `progress.rs` — per-follower Progress and Inflights (flow control).
//! - `tracker.rs` — voters/learners, quorum commit index, vote tallies.
//! - `read_only.rs` — ReadIndex queue.
//! - `raft.rs` — the state machine, `step` split by role.
//! - `raw_node.rs` — RawNode, Ready, advance.
//! - `storage.rs` — persistence adapter over the `Storage` seam (column
//!   families `raft_log` and `raft_state`).
//! - `testkit.rs` — in-memory cluster and network (a public test harness used
//!   by the tests and the `cairn-benches` micro-benchmark; not for production).
//!
//! Invariants: see `check_invariants` in `raft.rs`, `log.rs`, `tracker.rs`;
//! tests call `RawNode::check_invariants()` after every step.
//!
//! Tests:
//! - `golden.rs` runs every script in `src/raft/testdata/*.txt`. To rewrite
//!   the expected output after a deliberate change:
//!   `REWRITE=1 cargo test -p cairn --lib raft::golden` — then read the diff
//!   and check every line against the Raft paper before committing it.
//! - `properties.rs`: quickcheck properties over random schedules (election
//!   safety, log matching, leader completeness, state-machine safety,
//!   liveness after healing).
//! - `storage.rs` tests: persistence round trip and crash recovery on SimStorage.

mod log;
mod progress;
#[allow(clippy::module_inception)]
mod raft;
mod raw_node;
mod read_only;
pub mod storage;
pub mod testkit;
mod tracker;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod properties;

pub use cairn_proto::raftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, MessageType,
    Snapshot, SnapshotMetadata,
};
pub(crate) use log::snapshot_index_term;
pub use log::RaftLog;
pub use progress::{Inflights, Progress, ProgressState};
pub use raft::{decode_conf_change, TRANSFER_CONTEXT};
pub use raw_node::{RawNode, Ready, SnapshotStatus, SoftState, Status};
pub use tracker::ProgressTracker;

/// A node's role. `Learner` is reported for a follower that is a learner in
/// its current configuration; learners never campaign and never count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
}

/// The answer to a ReadIndex request: once the application has applied up to
/// `index`, a read with context `request_ctx` is linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub request_ctx: Vec<u8>,
}

/// What a RawNode is built from: the durable state the persistence adapter
/// recovered (or the bootstrap state of a new cluster).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftState {
    pub hard_state: HardState,
    /// The latest snapshot (its metadata carries the conf state at its index;
    /// `data` is the application's small description of it).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// Expected failures of the Raft API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("raft: proposal dropped (no leader, leader transfer in progress, or removed)")]
    ProposalDropped,
    #[error("raft: read index dropped (no known leader)")]
    ReadIndexDropped,
    #[error("raft: a configuration change is already pending")]
    ConfChangePending,
    #[error("raft: message type {0:?} is local and cannot be stepped")]
    StepLocalMessage(MessageType),
    #[error("raft: cannot compact at {index}: {reason}")]
    Compaction { index: u64, reason: &'static str },
    #[error("raft: invalid config: {0}")]
    InvalidConfig(&'static str),
}

/// Tunables of one Raft node. Units are ticks, bytes and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: u64,
    /// A follower campaigns after a random timeout in `[election_tick, 2 * election_tick)`.
    pub election_tick: usize,
    /// A leader sends heartbeats every `heartbeat_tick` ticks. Must be < `election_tick`.
    pub heartbeat_tick: usize,
    /// Upper bound on the entry bytes of one append (at least one entry is always sent).
    pub max_size_per_msg: u64,
    /// Upper bound on appends in flight to one follower in Replicate state.
    pub max_inflight_msgs: usize,
    /// Upper bound on entry bytes in flight to one follower (0 = unlimited).
    pub max_inflight_bytes: u64,
    /// Upper bound on the entry bytes of `Ready::committed_entries` (at least one).
    pub max_committed_size_per_ready: u64,
    /// A leader steps down if it did not hear from a quorum within an election
    /// timeout, and followers ignore vote requests while they have a leader.
    pub check_quorum: bool,
    /// Campaign with a pre-vote round first, so a node that cannot win does
    /// not raise everyone's term.
    pub pre_vote: bool,
    /// The last index the application applied (from its own durable state).
    pub applied: u64,
    /// Upper bound on ReadIndex requests a leader holds.
    pub max_pending_read_index: usize,
}

impl Config {
    /// etcd-like defaults: election 10 ticks, heartbeat 1 tick, 1 MiB per
    /// message, 256 inflight, pre-vote and check-quorum on.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            max_committed_size_per_ready: 64 * 1024 * 1024,
            check_quorum: true,
            pre_vote: true,
            applied: 0,
            max_pending_read_index: 4096,
        }
    }

    pub fn validate(&self) -> Result<(), RaftError> {
        if self.id == 0 {
            return Err(RaftError::InvalidConfig("id must not be 0"));
        }
        if self.heartbeat_tick == 0 {
            return Err(RaftError::InvalidConfig("heartbeat_tick must be positive"));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(RaftError::InvalidConfig(
                "election_tick must exceed heartbeat_tick",
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(RaftError::InvalidConfig(
                "max_inflight_msgs must be positive",
            ));
        }
        if self.max_pending_read_index == 0 {
            return Err(RaftError::InvalidConfig(
                "max_pending_read_index must be positive",
            ));
        }
        Ok(())
    }
}
