//! Probes: how a test harness watches a member from the inside and steers it.
//!
//! The simulation suite's raft oracle needs to see what every member does —
//! which member led which term, which entry it applied at which index and
//! what that changed — and its fault scheduler wants "buggify" points inside
//! the node loop (a delayed apply, an early log compaction); and it may have
//! every member check its invariants at every step, so a broken one fails
//! the run where it broke, not at the end. A `Probe` given
//! to `Server::start_probed` receives both. Production members have none; a
//! probe must not block (it is called on the node loop).
//!
//! Tests: the simulation suite (`sim-tests/`) is the user of every method.

use std::time::Duration;

use cairn_proto::mvccpb::Event;

/// What a probe sees of one applied entry.
pub struct AppliedEntry<'a> {
    pub member: u64,
    pub index: u64,
    pub term: u64,
    /// The entry's payload as committed (an encoded `InternalRequest`, a
    /// conf change, or empty for a leader's no-op).
    pub data: &'a [u8],
    /// The changes the entry made, in revision order.
    pub events: &'a [Event],
    /// The store's revision after the entry.
    pub revision: i64,
    /// For a conf-change entry: the Raft configuration after it (what this
    /// member's Raft uses from then on). `None` for any other entry.
    pub conf: Option<ConfAfter>,
    /// A client request the apply refused: etcd's error text (a permission
    /// denied, a lease not found, …). `None` when it took effect.
    pub refused: Option<String>,
    /// For a v2 keys write: what it did to the v2 store (its events or its
    /// error, without the member-local TTL countdowns), so members can be
    /// compared. `None` for any other entry.
    pub v2: Option<String>,
}

/// A Raft configuration as applied: voters and learners, each sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfAfter {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// Hooks into a running member. Every method has a do-nothing default.
pub trait Probe: Send + Sync {
    /// `member` became the leader of `term`.
    fn on_leader(&self, _member: u64, _term: u64) {}

    /// `member` applied an entry (once per entry and member, in index order,
    /// except that entries covered by an installed snapshot are never seen).
    fn on_apply(&self, _entry: &AppliedEntry<'_>) {}

    /// `member` replaced its state with a snapshot at `index`.
    fn on_snapshot_installed(&self, _member: u64, _index: u64) {}

    /// Buggify: wait this long before applying the next committed entries.
    fn delay_apply(&self, _member: u64) -> Option<Duration> {
        None
    }

    /// Buggify: compact the Raft log now, whatever `--snapshot-count` says
    /// (followers that fall behind then need a snapshot).
    fn compact_log_early(&self, _member: u64) -> bool {
        false
    }

    /// Whether `member` checks its invariants now: the Raft core's after
    /// each Ready, the MVCC store's, the lessor's and the watch hub's after
    /// each apply (expensive: simulation only).
    fn check_invariants(&self, _member: u64) -> bool {
        false
    }

    /// An invariant check of `what` (`raft`, `mvcc`, `lessor`, `watch hub`)
    /// failed on `member` with `message` (the check's panic, caught).
    fn on_invariant_broken(&self, _member: u64, _what: &str, _message: &str) {}

    /// Something worth counting happened on `member` (the simulation's
    /// coverage report): `"pre-vote rejected"` (it sent a rejecting pre-vote
    /// answer), `"leader transfer"` (it sent MsgTimeoutNow), `"snapshot sent"`
    /// (it started streaming a snapshot to a follower), `"read index retried"`
    /// (a ReadIndex round went unanswered and a new one started for its reads),
    /// `"fsync failed"` or `"storage failed"` (another storage error: the
    /// member stops either way).
    fn on_event(&self, _member: u64, _event: &'static str) {}

    /// The member started and serves `server` (a harness may call it
    /// directly: the simulation's v2 clients do, since the simulated network
    /// carries no plain HTTP).
    fn on_started(&self, _server: &super::Server) {}
}
