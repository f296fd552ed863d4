//! RawNode: the application's handle on the Raft state machine, and `Ready`,
//! the batch of work it hands back.
//!
//! The driving loop (the server, or `testkit`); the field docs of `Ready`
//! are the contract, stated once — this is only its outline:
//! ```text
//! loop {
//!     tick / step / propose / read_index ...
//!     if node.has_ready() {
//!         let rd = node.ready();
//!         send rd.messages (at once: they vouch for nothing unpersisted);
//!         write rd.snapshot's state with rd.snapshot, rd.entries, rd.hard_state;
//!         start the sync if rd.must_sync;
//!         apply rd.committed_entries (the write is enough: no need to wait);
//!         once synced: send rd.persisted_messages;
//!         answer rd.read_states once applied; node.advance(rd);
//!     }
//! }
//! ```
//! Only one Ready is outstanding at a time: `has_ready()` is false and
//! `ready()` panics until `advance` is called. A Ready that is taken but never
//! advanced (the process crashed) loses nothing that was acknowledged:
//! nothing sent before it was persisted vouched for it (a leader's appends
//! and heartbeats: the leader counts its own copy only at `advance`, so an
//! entry it never persisted is committed only if a majority of the others
//! persisted it — the parallel leader write of the Raft thesis, §10.2.1).
//!
//! Tests: `raft::golden`, `raft::properties`.

use cairn_proto::raftpb::{
    ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use prost::Message as _;
use rand::rngs::StdRng;

use super::log::snapshot_index_term;
use super::progress::Progress;
use super::raft::{decode_conf_change, Raft};
use super::{Config, RaftError, RaftState, ReadState, Role};

/// Volatile state worth reporting: who leads, and our role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    pub leader_id: u64,
    pub role: Role,
}

/// Outcome of a snapshot transfer, reported by the transport to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    Finish,
    Failure,
}

/// Work for the application. Each field states when it may be acted on;
/// this is the one statement of that contract (the node loop and the
/// testkit follow it without restating it).
///
/// "Written" means handed to the storage in one atomic batch; "durable"
/// means synced. The storage must keep a prefix of its writes across a crash
/// (runtime's Storage contract), which is what lets apply run before the
/// sync.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ready {
    /// Changed leader or role; informational, no ordering duty.
    pub soft_state: Option<SoftState>,
    /// New term / vote / commit, to write. Only term and vote changes make
    /// `must_sync` true (a vote must be durable before it is granted, which
    /// `persisted_messages` carries); commit may be lost and relearned.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to install: write the application's state
    /// from it in the same batch as this snapshot's metadata (Raft's record
    /// of it), `entries` (which follow it) and `hard_state`, so that no
    /// prefix of the writes holds the state without the log covering it.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log (overwriting any written entries at or
    /// after the first one's index).
    pub entries: Vec<Entry>,
    /// Committed entries to apply, in order, each in one batch with the
    /// applied index. They may be applied as soon as this Ready's batch is
    /// written, while its sync runs: every one is durable on a quorum, and
    /// in this node's log it is either durable already or in this Ready's
    /// batch, written before its effects — a crash keeps a prefix of the
    /// writes, so never an effect without its entry. (A leader counts its own
    /// copy toward commit only at `advance`, after it is durable.)
    /// Conf-change entries take effect in Raft at `advance`.
    pub committed_entries: Vec<Entry>,
    /// Messages that vouch for nothing this Ready writes: send them at once,
    /// before or while writing (we lead, our term and vote are unchanged and
    /// durable, there is no snapshot: appends, heartbeats, read-index answers
    /// and rejections). The leader's disk write then overlaps the followers'
    /// round trip.
    ///
    /// For both message lists: delivery may drop, duplicate or reorder them;
    /// a MsgSnap's outcome is reported back with `report_snapshot`. A MsgSnap's
    /// metadata is this node's applied index (with its term and membership)
    /// as of this Ready, before `committed_entries` apply: attach the
    /// application's state as of that point, so that a follower installs
    /// state and metadata that agree.
    pub messages: Vec<Message>,
    /// Messages that vouch for what this Ready writes (votes, append
    /// acknowledgements, a new term's first messages): send them only once
    /// the batch is durable (after its sync when `must_sync`, else once
    /// written).
    pub persisted_messages: Vec<Message>,
    /// Answers to ReadIndex requests: serve each read once applied >= index.
    pub read_states: Vec<ReadState>,
    /// Whether the batch of `hard_state` / `entries` / `snapshot` must be
    /// synced before `persisted_messages` go and before `advance`.
    pub must_sync: bool,
}

/// A read-only view of a node for tests, metrics and the server.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub hard_state: HardState,
    pub soft_state: SoftState,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub lead_transferee: u64,
    /// Per-node progress, as the leader sees it (empty on followers).
    pub progress: Vec<(u64, Progress)>,
}

#[derive(Debug)]
pub struct RawNode {
    raft: Raft,
    /// What the last Ready reported, to report only changes.
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    /// A Ready was handed out and not yet advanced.
    ready_outstanding: bool,
}

impl RawNode {
    /// Builds a node from recovered (or bootstrap) state. `rng` drives
    /// election jitter; seed it from the runtime for determinism.
    pub fn new(cfg: &Config, state: RaftState, rng: StdRng) -> Result<RawNode, RaftError> {
        let prev_hard_state = state.hard_state.clone();
        let raft = Raft::new(cfg, state, rng)?;
        let mut node = RawNode {
            raft,
            prev_soft_state: SoftState::default(),
            prev_hard_state,
            ready_outstanding: false,
        };
        node.prev_soft_state = node.soft_state();
        Ok(node)
    }

    /// The state machine itself, for the raft module's own tests; everyone
    /// else reads `status()` and the accessors below.
    #[cfg(test)]
    pub(super) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's role in its current term.
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raft.term
    }

    /// The last index of the log (written or not).
    pub fn last_index(&self) -> u64 {
        self.raft.log.last_index()
    }

    /// The applied index as Raft knows it (what the last `advance` marked).
    pub fn applied(&self) -> u64 {
        self.raft.log.applied()
    }

    pub fn id(&self) -> u64 {
        self.raft.id
    }

    /// The configuration as of log index `index` (at or after the snapshot,
    /// at most the last index): the snapshot's plus the conf changes after it.
    pub fn conf_state_at(&self, index: u64) -> ConfState {
        self.raft.conf_state_at(index)
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (as if the election timeout elapsed).
    pub fn campaign(&mut self) {
        self.raft.hup(false);
    }

    /// Steps a message received from a peer.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        let t = m.msg_type();
        if matches!(
            t,
            MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
        ) {
            return Err(RaftError::StepLocalMessage(t));
        }
        self.raft.step(m)
    }

    fn local_message(&self, t: MessageType) -> Message {
        let mut m = Message {
            from: self.raft.id,
            to: self.raft.id,
            ..Default::default()
        };
        m.set_msg_type(t);
        m
    }

    /// Proposes `data` as a normal entry (forwarded to the leader by followers).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        self.propose_many(vec![data])
    }

    /// Proposes several normal entries in one message: a follower forwards
    /// them to the leader together (one MsgProp instead of one per entry).
    /// All or none are accepted.
    pub fn propose_many(&mut self, data: Vec<Vec<u8>>) -> Result<(), RaftError> {
        let mut m = self.local_message(MessageType::MsgProp);
        m.entries = data
            .into_iter()
            .map(|data| Entry {
                data,
                ..Default::default()
            })
            .collect();
        self.raft.step(m)
    }

    /// Proposes a membership change; it takes effect when applied. Refused
    /// while an earlier change is not yet applied.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(), RaftError> {
        let mut entry = Entry {
            data: cc.encode_to_vec(),
            ..Default::default()
        };
        entry.set_entry_type(EntryType::EntryConfChange);
        let mut m = self.local_message(MessageType::MsgProp);
        m.entries = vec![entry];
        self.raft.step(m)
    }

    /// Whether a conf change is in the log and not yet applied (a leader
    /// refuses another until it is).
    pub fn has_pending_conf_change(&self) -> bool {
        self.raft.pending_conf_index > self.raft.log.applied()
    }

    /// Asks for a linearizable read point; the answer is a `ReadState` with
    /// the same `ctx` in a later Ready. Contexts must be unique.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), RaftError> {
        let mut m = self.local_message(MessageType::MsgReadIndex);
        m.context = ctx;
        self.raft.step(m)
    }

    /// Asks the leader to hand leadership to `transferee` (MoveLeader).
    pub fn transfer_leader(&mut self, transferee: u64) -> Result<(), RaftError> {
        let mut m = self.local_message(MessageType::MsgTransferLeader);
        m.from = transferee; // the transferee travels in `from`, as in etcd
        self.raft.step(m)
    }

    pub fn report_unreachable(&mut self, to: u64) {
        self.raft.report_unreachable(to);
    }

    pub fn report_snapshot(&mut self, to: u64, status: SnapshotStatus) {
        self.raft
            .report_snapshot(to, status == SnapshotStatus::Finish);
    }

    /// The application took a snapshot of its state at `index` (<= applied):
    /// the log up to `index` is dropped and the returned snapshot (with the
    /// membership at `index`) is what lagging followers will be sent. The
    /// caller persists it with `storage::compaction_batch`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<Snapshot, RaftError> {
        let log = &self.raft.log;
        if index <= log.snapshot_index() {
            return Err(RaftError::Compaction {
                index,
                reason: "already compacted",
            });
        }
        if index > log.applied() || index > log.stabled() {
            return Err(RaftError::Compaction {
                index,
                reason: "not yet applied",
            });
        }
        let conf = self.raft.conf_state_at(index);
        Ok(self.raft.log.compact(index, conf, data))
    }

    pub fn soft_state(&self) -> SoftState {
        let mut role = self.raft.role;
        if role == Role::Follower && self.raft.tracker.learners.contains(&self.raft.id) {
            role = Role::Learner;
        }
        SoftState {
            leader_id: self.raft.leader_id,
            role,
        }
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.raft.term,
            vote: self.raft.vote,
            commit: self.raft.log.committed(),
        }
    }

    pub fn has_ready(&self) -> bool {
        if self.ready_outstanding {
            return false;
        }
        let r = &self.raft;
        self.soft_state() != self.prev_soft_state
            || self.hard_state() != self.prev_hard_state
            || r.log.pending_snapshot().is_some()
            || !r.log.unstable_entries().is_empty()
            || !r.msgs.is_empty()
            || !r.read_states.is_empty()
            || (r.log.applied() < r.log.committed() && r.log.pending_snapshot().is_none())
    }

    /// Takes the pending work. Call `advance` with it once it is done.
    pub fn ready(&mut self) -> Ready {
        assert!(
            !self.ready_outstanding,
            "node {}: ready() before advance() of the previous Ready",
            self.raft.id
        );
        self.ready_outstanding = true;
        let soft = self.soft_state();
        let hard = self.hard_state();
        let soft_state = (soft != self.prev_soft_state).then_some(soft);
        let hard_state = (hard != self.prev_hard_state).then(|| hard.clone());
        let vote_changed =
            hard.term != self.prev_hard_state.term || hard.vote != self.prev_hard_state.vote;
        self.prev_soft_state = soft;
        self.prev_hard_state = hard;
        let log = &self.raft.log;
        let rd = Ready {
            soft_state,
            hard_state,
            snapshot: log.pending_snapshot().cloned(),
            entries: log.unstable_entries().to_vec(),
            committed_entries: log
                .next_committed_entries(self.raft.config().max_committed_size_per_ready),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: std::mem::take(&mut self.raft.read_states),
            must_sync: false,
        };
        let must_sync = vote_changed || !rd.entries.is_empty() || rd.snapshot.is_some();
        let send_first = self.raft.role == Role::Leader && !vote_changed && rd.snapshot.is_none();
        let msgs = std::mem::take(&mut self.raft.msgs);
        let (messages, persisted_messages) = if send_first {
            (msgs, Vec::new())
        } else {
            (Vec::new(), msgs)
        };
        Ready {
            must_sync,
            messages,
            persisted_messages,
            ..rd
        }
    }

    /// The application finished the Ready: what it persisted becomes stable
    /// (a leader counts its own copy only now), what it applied is applied
    /// (conf changes take effect here).
    pub fn advance(&mut self, rd: Ready) {
        assert!(
            self.ready_outstanding,
            "node {}: advance() without ready()",
            self.raft.id
        );
        self.ready_outstanding = false;
        if rd.snapshot.is_some() {
            self.raft.log.snapshot_installed();
        }
        if let Some(last) = rd.entries.last() {
            self.raft.log.stable_to(last.index, last.term);
            self.raft.on_persisted();
        }
        for e in &rd.committed_entries {
            self.raft.log.applied_to(e.index);
            // A snapshot received meanwhile carries a newer membership.
            let superseded = self.raft.log.pending_snapshot().is_some();
            if let Some(cc) = decode_conf_change(e).filter(|_| !superseded) {
                self.raft.apply_conf_change(&cc);
            }
        }
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.role == Role::Leader {
            r.tracker
                .progress
                .iter()
                .map(|(&id, p)| (id, p.clone()))
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: r.id,
            hard_state: self.hard_state(),
            soft_state: self.soft_state(),
            applied: r.log.applied(),
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            lead_transferee: r.lead_transferee,
            progress,
        }
    }

    /// The index of a snapshot received from a leader and not yet handed
    /// out in a Ready, if any (at most one is pending; a newer one replaces it).
    pub fn pending_snapshot_index(&self) -> Option<u64> {
        self.raft
            .log
            .pending_snapshot()
            .map(|s| snapshot_index_term(s).0)
    }

    /// Index and term of the latest snapshot.
    pub fn snapshot_index_term(&self) -> (u64, u64) {
        snapshot_index_term(self.raft.log.snapshot())
    }

    /// Panics with context if any invariant is broken. Tests call this after every step.
    pub fn check_invariants(&self) {
        self.raft.check_invariants();
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::raftpb::MessageType;

    use super::super::testkit::Cluster;
    use super::super::Config;

    /// `propose_many` on a follower: one MsgProp carries the whole batch to
    /// the leader, and every member applies the entries once, in order.
    #[test]
    fn a_follower_forwards_a_batch_of_proposals_in_one_message_applied_in_order() {
        let ids = [1, 2, 3];
        let cfg = Config {
            election_tick: 10,
            heartbeat_tick: 1,
            ..Config::new(1)
        };
        let mut c = Cluster::new(&ids, &ids, &[], 5, cfg, 7);
        c.node_mut(1).campaign();
        c.stabilize();
        assert_eq!(c.leader(), Some(1));
        let batch: Vec<Vec<u8>> = ["a", "b", "c"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        c.node_mut(2)
            .propose_many(batch.clone())
            .expect("forwarded");
        let rd = c.handle_ready(2).expect("a Ready with the forward");
        let props: Vec<_> = rd
            .messages
            .iter()
            .chain(&rd.persisted_messages)
            .filter(|m| m.msg_type() == MessageType::MsgProp)
            .collect();
        assert_eq!(props.len(), 1, "one message for the batch: {rd:?}");
        assert_eq!(props[0].to, 1);
        assert_eq!(props[0].entries.len(), 3);
        c.stabilize();
        for id in ids {
            let applied: Vec<Vec<u8>> = c.nodes[&id]
                .app
                .applied
                .iter()
                .map(|e| e.data.clone())
                .collect();
            assert_eq!(applied, batch, "member {id}");
        }
    }
}
