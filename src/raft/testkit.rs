//! Test harness (public so `cairn-benches` can use it; not for production):
//! an in-memory cluster of `RawNode`s, a network that can drop, duplicate,
//! reorder and partition, a disk model that loses unsynced writes on a crash,
//! and a toy application that applies entries and records what it applied.
//!
//! The Ready loop here is the reference for the server's: persist (synced if
//! `must_sync`), send, apply, advance. A crash (`restart`) drops whatever was
//! not synced and any work Raft had not yet handed out.
//!
//! Invariants the harness itself checks on every `handle_ready`: a node never
//! votes for two candidates in one term, across restarts.
//! Tests: `raft::golden`, `raft::properties`; bench: `benches/benches/raft_commit.rs`.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::raftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{Config, RaftState, RawNode, ReadState, Ready, SnapshotStatus};

/// One durable write, as the persistence adapter would issue it.
#[derive(Debug, Clone)]
enum DiskOp {
    Ready {
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    },
    Compact(Snapshot),
}

/// What a node has on disk: durable state plus writes not yet synced.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    pub durable: RaftState,
    pending: Vec<DiskOp>,
}

impl Disk {
    fn write(&mut self, op: DiskOp, sync: bool) {
        self.pending.push(op);
        if sync {
            self.sync();
        }
    }

    fn sync(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            apply_op(&mut self.durable, op);
        }
    }

    /// Power loss: unsynced writes are gone.
    fn crash(&mut self) {
        self.pending.clear();
    }
}

fn snap_index(s: &Snapshot) -> u64 {
    s.metadata.as_ref().map_or(0, |m| m.index)
}

fn apply_op(st: &mut RaftState, op: DiskOp) {
    match op {
        DiskOp::Ready {
            hard_state,
            snapshot,
            entries,
        } => {
            if let Some(s) = snapshot {
                st.snapshot = s;
                st.entries.clear();
            }
            if let Some(first) = entries.first() {
                let base = snap_index(&st.snapshot);
                st.entries
                    .truncate(first.index.saturating_sub(base + 1) as usize);
                st.entries.extend(entries);
            }
            if let Some(hs) = hard_state {
                st.hard_state = hs;
            }
        }
        DiskOp::Compact(s) => {
            let drop = snap_index(&s).saturating_sub(snap_index(&st.snapshot)) as usize;
            st.entries.drain(..drop.min(st.entries.len()));
            st.snapshot = s;
        }
    }
}

/// The toy application: a running hash of applied normal entries. Its state
/// is durable as soon as applied (as the server applies in a synced batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App {
    pub applied_index: u64,
    pub hash: u64,
    /// Normal entries applied since start or the last snapshot install.
    pub applied: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl App {
    fn apply(&mut self, e: &Entry) {
        self.applied_index = e.index;
        for b in e.index.to_be_bytes().iter().chain(e.data.iter()) {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        if e.entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            self.applied.push(e.clone());
        }
    }

    fn snapshot_data(&self) -> Vec<u8> {
        let mut d = self.applied_index.to_be_bytes().to_vec();
        d.extend_from_slice(&self.hash.to_be_bytes());
        d
    }

    /// Replaces the state with a snapshot's. Like the server, the applied
    /// index is the one the *state* says (its first 8 bytes), which the
    /// Raft metadata must agree with; founding snapshots carry no state.
    fn install(&mut self, s: &Snapshot) {
        let be = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        if s.data.len() == 16 {
            self.applied_index = be(&s.data[..8]);
            self.hash = be(&s.data[8..16]);
        } else {
            self.applied_index = snap_index(s);
            self.hash = 0;
        }
        self.applied.clear();
    }
}

pub struct SimNode {
    /// None while the node is down.
    pub node: Option<RawNode>,
    pub disk: Disk,
    pub app: App,
    restarts: u64,
}

/// What happened to a message handed to the network or delivered.
#[derive(Debug, Clone)]
pub enum Delivery {
    Stepped(Message, Option<String>),
    Dropped(Message),
}

pub struct Cluster {
    pub nodes: BTreeMap<u64, SimNode>,
    /// Messages in flight, in send order.
    pub network: Vec<Message>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    base_cfg: Config,
    seed: u64,
    /// Every (term -> vote) each node ever made durable; one vote per term.
    votes: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Run `check_invariants` after every step (on by default; the
    /// benchmark turns it off to measure Raft rather than the checks).
    pub check_every_step: bool,
}

/// The bootstrap state of a founding member: a snapshot at `index` (term 1)
/// carrying the founding membership.
pub fn bootstrap_state(voters: &[u64], learners: &[u64], index: u64) -> RaftState {
    if index == 0 {
        let cs = ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        };
        let meta = SnapshotMetadata {
            conf_state: Some(cs),
            index: 0,
            term: 0,
        };
        return RaftState {
            snapshot: Snapshot {
                metadata: Some(meta),
                data: vec![],
            },
            ..Default::default()
        };
    }
    let cs = ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
    };
    let meta = SnapshotMetadata {
        conf_state: Some(cs),
        index,
        term: 1,
    };
    RaftState {
        hard_state: HardState {
            term: 1,
            vote: 0,
            commit: index,
        },
        snapshot: Snapshot {
            metadata: Some(meta),
            data: vec![],
        },
        entries: vec![],
    }
}

impl Cluster {
    /// Nodes `ids`; those in `voters` / `learners` are founding members
    /// bootstrapped at `index`, the others start empty (to be added later).
    pub fn new(
        ids: &[u64],
        voters: &[u64],
        learners: &[u64],
        index: u64,
        base_cfg: Config,
        seed: u64,
    ) -> Cluster {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            network: Vec::new(),
            cut: BTreeSet::new(),
            base_cfg,
            seed,
            votes: BTreeMap::new(),
            check_every_step: true,
        };
        for &id in ids {
            let founding = voters.contains(&id) || learners.contains(&id);
            let state = if founding {
                bootstrap_state(voters, learners, index)
            } else {
                RaftState::default()
            };
            c.add_node(id, state);
        }
        c
    }

    pub fn add_node(&mut self, id: u64, state: RaftState) {
        let disk = Disk {
            durable: state,
            pending: Vec::new(),
        };
        let app = App {
            applied_index: snap_index(&disk.durable.snapshot),
            ..Default::default()
        };
        self.nodes.insert(
            id,
            SimNode {
                node: None,
                disk,
                app,
                restarts: 0,
            },
        );
        self.start(id);
    }

    fn start(&mut self, id: u64) {
        let seed = self.seed;
        let sn = self.nodes.get_mut(&id).expect("known node");
        let cfg = Config {
            id,
            applied: sn.app.applied_index,
            ..self.base_cfg.clone()
        };
        let rng = StdRng::seed_from_u64(
            seed.wrapping_mul(1_000_003)
                .wrapping_add(id * 7919 + sn.restarts),
        );
        let node = RawNode::new(&cfg, sn.disk.durable.clone(), rng).expect("valid test config");
        node.check_invariants();
        sn.node = Some(node);
    }

    pub fn config(&self) -> &Config {
        &self.base_cfg
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &RawNode {
        self.nodes
            .get(&id)
            .and_then(|n| n.node.as_ref())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut RawNode {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.node.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.node.is_some())
    }

    pub fn check_invariants(&self) {
        if !self.check_every_step {
            return;
        }
        for sn in self.nodes.values() {
            if let Some(n) = &sn.node {
                n.check_invariants();
            }
        }
    }

    /// Runs one Ready of `id` through the loop (persist, send, apply,
    /// advance) and returns it, or None if it had nothing to do.
    pub fn handle_ready(&mut self, id: u64) -> Option<Ready> {
        let sn = self.nodes.get_mut(&id)?;
        let node = sn.node.as_mut()?;
        if !node.has_ready() {
            return None;
        }
        let mut rd = node.ready();
        // A snapshot message ships the state as of this Ready's start, before
        // its committed entries apply (the server attaches its state the same way).
        for m in rd.messages.iter_mut().chain(&mut rd.persisted_messages) {
            if let Some(snap) = m.snapshot.as_mut() {
                assert_eq!(
                    snap_index(snap),
                    sn.app.applied_index,
                    "node {id} sends a snapshot whose index is not its applied state's"
                );
                snap.data = sn.app.snapshot_data();
            }
        }
        let op = DiskOp::Ready {
            hard_state: rd.hard_state.clone(),
            snapshot: rd.snapshot.clone(),
            entries: rd.entries.clone(),
        };
        sn.disk.write(op, rd.must_sync);
        if let Some(s) = &rd.snapshot {
            sn.app.install(s);
        }
        for e in &rd.committed_entries {
            sn.app.apply(e);
        }
        sn.app.read_states.extend(rd.read_states.iter().cloned());
        sn.node.as_mut().expect("still up").advance(rd.clone());
        if let Some(hs) = &rd.hard_state {
            self.record_vote(id, hs);
        }
        for m in rd.messages.iter().chain(&rd.persisted_messages).cloned() {
            self.send(m);
        }
        self.check_invariants();
        Some(rd)
    }

    fn record_vote(&mut self, id: u64, hs: &HardState) {
        if hs.vote == 0 {
            return;
        }
        let votes = self.votes.entry(id).or_default();
        let prev = *votes.entry(hs.term).or_insert(hs.vote);
        assert_eq!(
            prev, hs.vote,
            "node {id} voted for {prev} and {} in term {}",
            hs.vote, hs.term
        );
    }

    /// Puts a message on the network, unless its link is cut.
    pub fn send(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            self.fail_snapshot(&m);
            return;
        }
        self.network.push(m);
    }

    /// A dropped MsgSnap is reported as failed to the leader, as the snapshot
    /// stream would; a delivered one as finished.
    fn fail_snapshot(&mut self, m: &Message) {
        self.report_snapshot(m, SnapshotStatus::Failure);
    }

    fn report_snapshot(&mut self, m: &Message, status: SnapshotStatus) {
        if m.msg_type() == MessageType::MsgSnap && self.is_up(m.from) {
            self.node_mut(m.from).report_snapshot(m.to, status);
        }
    }

    /// Delivers the in-flight message at `pos`.
    pub fn deliver_at(&mut self, pos: usize) -> Delivery {
        let m = self.network.remove(pos);
        self.deliver(m)
    }

    /// Delivers `m` now (also used to inject duplicates).
    pub fn deliver(&mut self, m: Message) -> Delivery {
        if !self.is_up(m.to) || self.cut.contains(&(m.from, m.to)) {
            self.fail_snapshot(&m);
            return Delivery::Dropped(m);
        }
        let res = self.node_mut(m.to).step(m.clone());
        self.check_invariants();
        self.report_snapshot(&m, SnapshotStatus::Finish);
        Delivery::Stepped(m, res.err().map(|e| e.to_string()))
    }

    /// Drops a message taken off the network.
    pub fn drop_now(&mut self, m: Message) -> Message {
        self.fail_snapshot(&m);
        m
    }

    pub fn drop_at(&mut self, pos: usize) -> Message {
        let m = self.network.remove(pos);
        self.fail_snapshot(&m);
        m
    }

    /// Delivers (or drops) every in-flight message addressed to `to`, in order.
    pub fn deliver_to(&mut self, to: u64, drop: bool) -> Vec<Delivery> {
        let (mine, rest): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|m| m.to == to);
        self.network = rest;
        mine.into_iter()
            .map(|m| {
                if drop {
                    self.fail_snapshot(&m);
                    Delivery::Dropped(m)
                } else {
                    self.deliver(m)
                }
            })
            .collect()
    }

    pub fn tick(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id).and_then(|n| n.node.as_mut()) {
            n.tick();
        }
        if self.check_every_step {
            self.check_invariants();
        }
    }

    /// Cuts every link between different groups (both directions).
    pub fn partition(&mut self, groups: &[Vec<u64>]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &x in a {
                    for &y in b {
                        self.cut.insert((x, y));
                    }
                }
            }
        }
    }

    /// Isolates `id` from everyone else.
    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.ids().into_iter().filter(|&x| x != id).collect();
        self.partition(&[vec![id], others]);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crash: the node loses its unsynced writes and everything Raft had not
    /// yet handed out; its in-flight messages stay in the network.
    pub fn crash(&mut self, id: u64) {
        if let Some(sn) = self.nodes.get_mut(&id) {
            sn.node = None;
            sn.disk.crash();
        }
    }

    /// Takes `id`'s Ready and crashes in the middle of it: the messages the
    /// Ready allows to go before writing (`messages`) are sent, nothing is
    /// written, applied or advanced. Then starts the node again.
    pub fn send_then_crash(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id).and_then(|sn| sn.node.as_mut()) else {
            return;
        };
        if node.has_ready() {
            let rd = node.ready();
            for m in rd.messages {
                self.send(m);
            }
        }
        self.restart(id);
    }

    /// Crash and start again from what was synced.
    pub fn restart(&mut self, id: u64) {
        self.crash(id);
        if let Some(sn) = self.nodes.get_mut(&id) {
            sn.restarts += 1;
            self.start(id);
        }
    }

    /// Starts a crashed node again.
    pub fn recover(&mut self, id: u64) {
        if self.nodes.get(&id).is_some_and(|n| n.node.is_none()) {
            self.nodes.get_mut(&id).expect("checked").restarts += 1;
            self.start(id);
        }
    }

    /// The application snapshots at its applied index; the log is compacted.
    pub fn compact(&mut self, id: u64) -> Option<Snapshot> {
        let sn = self.nodes.get_mut(&id)?;
        let node = sn.node.as_mut()?;
        let index = node.status().applied;
        let snap = node.compact(index, sn.app.snapshot_data()).ok()?;
        sn.disk.write(DiskOp::Compact(snap.clone()), false);
        Some(snap)
    }

    /// Runs Readys and delivers every message until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for id in self.ids() {
                while self.handle_ready(id).is_some() {
                    moved = true;
                }
            }
            while !self.network.is_empty() {
                moved = true;
                self.deliver_at(0);
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    /// The node that leads the highest term among running nodes, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(&id, sn)| sn.node.as_ref().map(|n| (id, n.status())))
            .filter(|(_, st)| st.soft_state.role == super::Role::Leader)
            .max_by_key(|(_, st)| st.hard_state.term)
            .map(|(id, _)| id)
    }
}
