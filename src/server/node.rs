//! The node loop: the one task that owns a member's `RawNode` (DESIGN §4).
//!
//! Each turn: tick on the Clock, step every inbound peer message queued, take
//! every proposal and read request queued by handlers, then drain Ready, following its contract
//! (the field docs of `raft::Ready`): send its early messages, write its
//! batch and start the sync (every proposal that arrived meanwhile shares it:
//! group commit), apply while the sync runs and answer the waiting handler
//! of each entry this member proposed, send the other messages once synced;
//! snapshots stream in their own task. Then answer read states, start the
//! next ReadIndex round for the reads queued meanwhile (one round in
//! flight), advance, and snapshot and compact the log every `snapshot_count`
//! applied entries.
//!
//! Leases: the leader's lessor becomes primary when the leader applies the
//! empty entry of its term (everything before it is applied) and stops being
//! primary when leadership is lost; on each tick the primary proposes
//! revokes of expired leases and due checkpoints (`lease::due_proposals`).
//!
//! A storage error is fatal: the member stops and every request fails with
//! `server stopped` (a failed fsync must never be followed by more writes).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn_proto::cairnpb::{
    internal_request, ConfChangeContext, InternalRequest, MemberAttributes, MemberRecord,
};
use cairn_runtime::transport::{Inbound, Transport};
use cairn_runtime::{Clock, MonoTime, NodeId, Storage, StorageError};
use prost::Message as _;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::{self, Applied};
use super::compactor::AutoCompactor;
use super::members::{self, MemberChange, PeerHealth};
use super::metrics::Metrics;
use super::watchers::WatchShared;
use super::{lease, Command, RaftProgress, ServerConfig, ServerError, Shared, StartError};
use crate::mvcc::{MvccError, MvccStore};
use crate::raft::{
    self, ConfChangeType, Entry, EntryType, MessageType, RawNode, Ready, Role, SnapshotStatus,
};
use crate::watch::HubConfig;

/// Handler requests queued before new ones are refused with `too many requests`.
pub const COMMAND_QUEUE_LEN: usize = 8192;

/// Bytes of applied entries after which the log is compacted even before
/// `snapshot_count` entries (etcd keeps at most five 64 MiB WAL files
/// beyond its snapshot; cairn loads its whole log since the last compaction
/// at start).
pub const LOG_COMPACT_BYTES: u64 = 64 << 20;

/// Ticks a ReadIndex round may stay unanswered before the reads queued
/// behind it start a round of their own.
const READ_ROUND_PATIENCE_TICKS: u32 = 2;

type ProposeReply = oneshot::Sender<Result<(Applied, i64), ServerError>>;
type ReadReply = oneshot::Sender<Result<u64, ServerError>>;
type ConfReply = oneshot::Sender<Result<u64, ServerError>>;

/// A sync under way in its own task (so it is timed when it completes, not
/// when the node loop gets back to it).
type SyncWait = tokio::task::JoinHandle<Result<(), StorageError>>;

/// Recovers the member's durable state (bootstrapping a new member).
pub(super) fn recover(
    config: ServerConfig,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
) -> Result<(Shared, RawNode), StartError> {
    match apply::read_member_id(storage.as_ref())? {
        Some(found) if found != config.member_id => {
            return Err(StartError::MemberMismatch {
                found,
                expected: config.member_id,
            })
        }
        Some(_) => {}
        None => bootstrap(&config, storage.as_ref())?,
    }
    if apply::is_removed_self(storage.as_ref(), config.member_id)? {
        return Err(StartError::Removed);
    }
    let incarnation = apply::next_incarnation(storage.as_ref())?;
    let raft_state = raft::storage::load(storage.as_ref())?;
    let applied = apply::read_applied_index(storage.as_ref())?;
    let snapshot_index = raft::snapshot_index_term(&raft_state.snapshot).0;
    let mut cfg = raft::Config::new(config.member_id);
    cfg.election_tick = config.election_ticks.max(2);
    cfg.heartbeat_tick = 1;
    cfg.pre_vote = config.pre_vote;
    cfg.check_quorum = config.check_quorum;
    // Entries at or below the persisted applied index are already in the state.
    cfg.applied = applied.max(snapshot_index);
    let rng = rand::rngs::StdRng::seed_from_u64(config.rng_seed);
    let raw = RawNode::new(&cfg, raft_state, rng)?;
    let mvcc = MvccStore::open(storage.clone())?;
    let lessor = apply::load_lessor(&mvcc, config.lessor_config())?;
    let watch = WatchShared::new(
        HubConfig::new(config.max_request_bytes),
        mvcc.current_revision().0,
    );
    let members = apply::load_members(storage.as_ref())?;
    let removed = apply::load_removed(storage.as_ref())?;
    let alarms = apply::load_alarms(storage.as_ref())?;
    let auth = crate::auth::AuthStore::load(storage.as_ref())?;
    let tokens = crate::auth::tokens::SimpleTokens::new(config.auth_token_ttl, auth.is_enabled());
    let v2 = apply::load_v2(storage.as_ref())?;
    let progress = RaftProgress::default();
    progress.applied_index.store(cfg.applied, Ordering::SeqCst);
    progress.term.store(raw.hard_state().term, Ordering::SeqCst);
    progress
        .commit_index
        .store(raw.hard_state().commit, Ordering::SeqCst);
    let metrics = Metrics::new(config.metrics_extensive, config.peer_stats.clone());
    let shared = Shared {
        config,
        mvcc: RwLock::new(mvcc),
        lessor: RwLock::new(lessor),
        members: RwLock::new(members),
        removed: RwLock::new(removed),
        alarms: RwLock::new(alarms),
        auth: RwLock::new(auth),
        v2: RwLock::new(v2),
        v2_watchers: super::v2::Hub::new(
            i64::try_from(clock.unix_now().as_nanos()).unwrap_or(i64::MAX),
        ),
        tokens: std::sync::Mutex::new(tokens),
        token_rng: std::sync::Mutex::new(rand::rngs::StdRng::from_os_rng()),
        raft: progress,
        metrics,
        storage,
        clock,
        stopped: AtomicBool::new(false),
        published: AtomicBool::new(false),
        applied: super::waiters::IndexWaiters::new(cfg.applied),
        shutdown: watch::channel(false).0,
        halted: watch::channel(false).0,
        read_ctx_next: AtomicU64::new(0),
        quota_size: Default::default(),
        removed_self: AtomicBool::new(false),
        corrupt_halt: std::sync::Mutex::new(None),
        probe: None,
        watch,
        incarnation,
    };
    Ok((shared, raw))
}

pub(crate) fn bootstrap(config: &ServerConfig, storage: &dyn Storage) -> Result<(), StorageError> {
    if config.joining {
        // A member joining a running cluster starts with no log and no
        // configuration: the leader's snapshot brings both.
        let state = raft::RaftState::default();
        let mut batch = raft::storage::bootstrap_batch(&state);
        batch.extend(apply::bootstrap_batch(
            config.member_id,
            config.cluster_id,
            &config.initial_members,
        ));
        storage.write(batch)?;
        return Ok(());
    }
    let voters: Vec<u64> = config
        .initial_members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let learners: Vec<u64> = config
        .initial_members
        .iter()
        .filter(|m| m.is_learner)
        .map(|m| m.id)
        .collect();
    let state = raft::RaftState {
        hard_state: raft::HardState {
            term: 1,
            vote: 0,
            commit: 1,
        },
        snapshot: raft::Snapshot {
            metadata: Some(raft::SnapshotMetadata {
                conf_state: Some(raft::ConfState { voters, learners }),
                index: 1,
                term: 1,
            }),
            data: Vec::new(),
        },
        entries: Vec::new(),
    };
    let mut batch = raft::storage::bootstrap_batch(&state);
    batch.extend(apply::bootstrap_batch(
        config.member_id,
        config.cluster_id,
        &config.initial_members,
    ));
    // Synchronous by design: a member must not start before its identity is on disk.
    storage.write(batch)?;
    Ok(())
}

pub(super) fn spawn(
    raw: RawNode,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Receiver<Inbound>,
) {
    let (snapshot_reports, snapshot_report_rx) = mpsc::channel(64);
    // Right after recovery every entry RawNode has is on disk.
    let persisted_last = raw.last_index();
    // The peers are the members as applied (the flags only found the cluster).
    sync_transport_peers(&shared, transport.as_ref(), &BTreeMap::new());
    let next_conf_id = apply::first_request_id(shared.incarnation);
    let next_read_ctx = next_conf_id;
    let node = Node {
        raw,
        shared,
        transport,
        clock,
        waiters: BTreeMap::new(),
        reads: BTreeMap::new(),
        // Read contexts, as request ids, never repeat those of an earlier
        // start: a leader may still hold a read of the previous start and
        // would answer the new read with its older index (a stale read).
        next_read_ctx,
        queued_reads: Vec::new(),
        read_round_ticks: 0,
        pending_snapshot: None,
        snapshot_reports,
        last_snapshot_index: 0,
        log_bytes_since_snapshot: 0,
        persisted_last,
        leader: 0,
        conf_queue: VecDeque::new(),
        conf_waiters: BTreeMap::new(),
        next_conf_id,
        connected: BTreeMap::new(),
        unknown_senders: BTreeMap::new(),
        removed_ticks: None,
        compactor: None,
    };
    tokio::spawn(node.run(commands, inbound, snapshot_report_rx));
}

struct Node {
    raw: RawNode,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    /// Proposals of this member waiting for their entry to apply, by request id.
    waiters: BTreeMap<u64, ProposeReply>,
    /// Read-index requests in flight, by context.
    reads: BTreeMap<u64, Vec<ReadReply>>,
    next_read_ctx: u64,
    /// Reads that came while a round was in flight: they share the next
    /// round, started when that one is answered (as etcd's read loop: one
    /// heartbeat round serves every read that waited for it).
    queued_reads: Vec<ReadReply>,
    /// Ticks the newest round has been in flight: after
    /// `READ_ROUND_PATIENCE_TICKS` the queue starts its own round (the old
    /// one's messages may have been lost).
    read_round_ticks: u32,
    /// The state of the snapshot Raft holds pending install (its index and
    /// the state), until Raft hands the snapshot out in a Ready. One at most:
    /// Raft keeps one pending snapshot, and the state of a snapshot it
    /// declines is dropped at once (each is a full copy of the state).
    pending_snapshot: Option<(u64, Vec<u8>)>,
    snapshot_reports: mpsc::Sender<(u64, bool)>,
    last_snapshot_index: u64,
    /// Bytes of the entries applied since the log was last compacted (this
    /// start's: the log loaded at start is counted from the next compaction).
    log_bytes_since_snapshot: u64,
    leader: u64,
    /// The last Raft log index written to storage (bounds conflict deletions).
    persisted_last: u64,
    /// Membership changes waiting for the one in flight to apply (leader only).
    conf_queue: VecDeque<(MemberChange, ConfReply)>,
    /// Conf changes this member proposed, by their id: the member's id to answer.
    conf_waiters: BTreeMap<u64, (u64, ConfReply)>,
    next_conf_id: u64,
    /// The peers heard from without a break (for the membership health checks).
    connected: BTreeMap<u64, Connected>,
    /// Senders this member has no address for, and when it last asked its
    /// peers for one (`look_up_unknown_sender`).
    unknown_senders: BTreeMap<u64, MonoTime>,
    /// The automatic compaction schedule (`--auto-compaction-*`), from the first tick.
    compactor: Option<AutoCompactor>,
    /// Set once this member applied its own removal: ticks until it stops
    /// (it lets its last messages — a leader's commit — go out first).
    removed_ticks: Option<u32>,
}

/// A peer's connection as the health checks see it: heard from since
/// `since` without a failed send or a silence of an election timeout.
struct Connected {
    since: MonoTime,
    last: MonoTime,
}

/// Ticks a removed member keeps running so its last messages and answers
/// go out — etcd's 10 ticks. With 3, a `member remove` sent to the member
/// being removed and forwarded to the leader lost its answer under load
/// ("transport is closing": the member had stopped first), seen in
/// `growing_from_1_to_3_to_5_members_and_shrinking_to_3_under_writes_ends_with_equal_hash_kv`.
const REMOVED_STOP_TICKS: u32 = 10;

/// How often a member asks its peers for the address of a sender it does
/// not know, and how long it waits for each answer.
const UNKNOWN_SENDER_ASK_EVERY: Duration = Duration::from_secs(1);
const UNKNOWN_SENDER_ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// Adds the transport peers of `members` that are new or moved, removes
/// those of `old` that are gone.
fn sync_transport_peers(
    shared: &Shared,
    transport: &dyn Transport,
    old: &BTreeMap<u64, MemberRecord>,
) {
    let me = shared.config.member_id;
    let members = shared.members();
    for (id, m) in members.iter().filter(|(id, _)| **id != me) {
        if let Some(url) = m.peer_urls.first() {
            transport.add_peer(NodeId(*id), url.clone());
        }
    }
    for id in old.keys().filter(|id| !members.contains_key(id)) {
        transport.remove_peer(NodeId(*id));
    }
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut snapshot_reports: mpsc::Receiver<(u64, bool)>,
    ) {
        self.last_snapshot_index = self.raw.snapshot_index_term().0;
        // This start's number (which request ids carry) is durable before
        // any proposal is handled.
        if let Err(e) = self.shared.storage.sync().await {
            self.storage_failed(&e);
            return;
        }
        let interval = self.shared.config.heartbeat_interval;
        let mut tick = self.clock.sleep(interval);
        let mut shutdown = self.shared.shutdown.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.stop();
                    return;
                }
                _ = &mut tick => {
                    tick = self.clock.sleep(interval);
                    self.raw.tick();
                    self.on_tick();
                }
                Some(m) = inbound.recv() => {
                    // Take everything queued: one Ready (one fsync on a
                    // follower) for all the appends that came meanwhile.
                    self.on_inbound(m);
                    while let Ok(m) = inbound.try_recv() {
                        self.on_inbound(m);
                    }
                }
                Some((to, ok)) = snapshot_reports.recv() => {
                    let status = if ok { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                    self.raw.report_snapshot(to, status);
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        let proposed = self.on_commands(cmd, &mut commands);
                        // Before a Ready with proposals is made: let the
                        // runtime poll the sockets once, so writes that
                        // already arrived join this batch (one fsync)
                        // instead of waiting for the next. (Not for reads
                        // alone: no fsync to share, and the extra turn
                        // cost linearizable ranges 10 %.)
                        if proposed && !self.shared.stopped.load(Ordering::SeqCst) {
                            tokio::task::yield_now().await;
                            if let Ok(cmd) = commands.try_recv() {
                                self.on_commands(cmd, &mut commands);
                            }
                        }
                    }
                    None => return,
                },
            }
            if self.shared.stopped.load(Ordering::SeqCst) {
                return; // removed from the cluster
            }
            if let Err(e) = self.drain_ready().await {
                self.storage_failed(&e);
                return;
            }
        }
    }

    /// A storage failure stops the member (a probe hears of it).
    fn storage_failed(&mut self, e: &StorageError) {
        tracing::error!(error = %e, "storage failed; stopping this member");
        if let Some(p) = &self.shared.probe {
            let what = match e {
                StorageError::SyncFailed(_) => "fsync failed",
                _ => "storage failed",
            };
            p.on_event(self.shared.config.member_id, what);
        }
        self.stop();
    }

    fn is_published(&self) -> bool {
        self.shared.published.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        self.fail_waiters();
        self.shared.halted.send_replace(true);
    }

    /// Marks the member stopped and fails every request waiting on it.
    fn fail_waiters(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.applied.close();
        for (_, w) in std::mem::take(&mut self.waiters) {
            let _ = w.send(Err(ServerError::Stopped));
        }
        for (_, ws) in std::mem::take(&mut self.reads) {
            for w in ws {
                let _ = w.send(Err(ServerError::Stopped));
            }
        }
        for w in std::mem::take(&mut self.queued_reads) {
            let _ = w.send(Err(ServerError::Stopped));
        }
        for (_, w) in std::mem::take(&mut self.conf_queue) {
            let _ = w.send(Err(ServerError::Stopped));
        }
        for (_, (_, w)) in std::mem::take(&mut self.conf_waiters) {
            let _ = w.send(Err(ServerError::Stopped));
        }
    }

    /// This member was removed from the cluster: it stops for good, once
    /// the record of its removal is durable (so its data refuses to start).
    fn stop_removed(&mut self) {
        tracing::warn!(member = %NodeId(self.shared.config.member_id), "{}", cairn_runtime::transport::MEMBER_REMOVED);
        self.fail_waiters();
        let shared = self.shared.clone();
        let sync = shared.storage.sync();
        tokio::spawn(async move {
            if let Err(e) = sync.await {
                tracing::error!(error = %e, "cannot make the removal durable");
            }
            shared.removed_self.store(true, Ordering::SeqCst);
            shared.halted.send_replace(true);
        });
    }

    /// A peer refused this member as removed (it missed its own removal):
    /// remember it, so the data directory refuses to start again, and stop
    /// after the same ticks as when it applies its removal — a `member
    /// remove` it forwarded to the leader is answered through it, and the
    /// leader's refusal can arrive before that answer (stopping at once
    /// closed the client's connection first: "transport is closing", seen
    /// in `growing_from_1_to_3_to_5_members_and_shrinking_to_3_under_writes_ends_with_equal_hash_kv`).
    fn on_removed_by_peer(&mut self) {
        if self.shared.stopped.load(Ordering::SeqCst) || self.removed_ticks.is_some() {
            return;
        }
        if let Err(e) = self.shared.storage.write(apply::removed_self_batch()) {
            tracing::error!(error = %e, "cannot record the removal");
        }
        tracing::warn!(member = %NodeId(self.shared.config.member_id), "a peer refused this member as removed: stopping in {REMOVED_STOP_TICKS} ticks");
        self.removed_ticks = Some(0);
    }

    /// A message came from a member this one has no address for: one added
    /// in a change this member has not applied yet (it was cut off or down
    /// meanwhile). If that member leads, every answer to it would be
    /// dropped for want of an address, and this member could never catch up
    /// (simulation churn seed 3865: the new member was elected while this
    /// one lagged). Asks the members it knows for the sender's peer URL, at
    /// most once a second per sender, and gives it to the transport; the
    /// change's apply later records the same address.
    fn look_up_unknown_sender(&mut self, from: u64) {
        let me = self.shared.config.member_id;
        if from == me || from == 0 || self.shared.members().contains_key(&from) {
            return;
        }
        if self.shared.removed().contains(&from) {
            return;
        }
        let now = self.clock.now();
        if let Some(asked) = self.unknown_senders.get(&from) {
            if now.saturating_duration_since(*asked) < UNKNOWN_SENDER_ASK_EVERY {
                return;
            }
        }
        self.unknown_senders.insert(from, now);
        let urls: Vec<String> = self
            .shared
            .members()
            .iter()
            .filter(|(id, _)| **id != me)
            .filter_map(|(_, m)| m.peer_urls.first().cloned())
            .collect();
        let (transport, dialer, cluster_id) = (
            self.transport.clone(),
            self.shared.config.peer_dialer.clone(),
            self.shared.config.cluster_id,
        );
        tokio::spawn(async move {
            for url in urls {
                let Ok(listed) = cairn_runtime::transport::fetch_members_with(
                    &dialer,
                    &url,
                    UNKNOWN_SENDER_ASK_TIMEOUT,
                )
                .await
                else {
                    continue;
                };
                if listed.cluster_id != cluster_id {
                    continue;
                }
                let found = listed.members.iter().find(|m| m.id == from);
                if let Some(peer_url) = found.and_then(|m| m.peer_urls.first()) {
                    tracing::info!(member = %NodeId(from), url = %peer_url, asked = %url, "learned the address of a member not yet applied here");
                    transport.add_peer(NodeId(from), peer_url.clone());
                    return;
                }
            }
        });
    }

    fn on_tick(&mut self) {
        if let Some(ticks) = &mut self.removed_ticks {
            *ticks += 1;
            if *ticks >= REMOVED_STOP_TICKS {
                self.stop_removed();
                return;
            }
        }
        // Handlers that gave up (deadline) leave closed senders behind.
        self.waiters.retain(|_, w| !w.is_closed());
        self.reads.retain(|_, ws| {
            ws.retain(|w| !w.is_closed());
            !ws.is_empty()
        });
        self.queued_reads.retain(|w| !w.is_closed());
        if !self.reads.is_empty() {
            self.read_round_ticks += 1;
        }
        self.start_read_round(Vec::new());
        self.shared
            .metrics
            .proposals_pending
            .store(self.waiters.len() as u64, Ordering::Relaxed);
        if !self.is_published() && self.leader != 0 {
            self.publish();
        }
        for req in lease::due_proposals(&self.shared) {
            let _ = self.raw.propose(req.encode_to_vec());
        }
        self.auto_compact();
    }

    /// The leader proposes the compaction the schedule says is due.
    fn auto_compact(&mut self) {
        let Some(policy) = self.shared.config.auto_compaction else {
            return;
        };
        let now = self.clock.now();
        let compactor = self
            .compactor
            .get_or_insert_with(|| AutoCompactor::new(policy, now));
        let (current, compacted) = {
            let store = self.shared.mvcc();
            (
                store.current_revision().0,
                store.compact_revision().map_or(0, |r| r.0),
            )
        };
        let leader = self.raw.role() == Role::Leader;
        let Some(revision) = compactor.tick(now, current, compacted, leader) else {
            return;
        };
        tracing::info!(revision, ?policy, "starting auto-compaction");
        let req = InternalRequest {
            id: 0,
            member_id: self.shared.config.member_id,
            caller: None,
            request: Some(cairn_proto::cairnpb::internal_request::Request::Compaction(
                cairn_proto::etcdserverpb::CompactionRequest {
                    revision,
                    physical: false,
                },
            )),
        };
        let _ = self.raw.propose(req.encode_to_vec());
    }

    /// Proposes this member's name and client URLs (retried each tick until applied).
    fn publish(&mut self) {
        let cfg = &self.shared.config;
        let attrs = MemberAttributes {
            id: cfg.member_id,
            name: cfg.name.clone(),
            client_urls: cfg.client_urls.clone(),
        };
        let req = InternalRequest {
            id: 0,
            member_id: cfg.member_id,
            caller: None,
            request: Some(cairn_proto::cairnpb::internal_request::Request::Publish(
                attrs,
            )),
        };
        let _ = self.raw.propose(req.encode_to_vec());
    }

    fn on_inbound(&mut self, m: Inbound) {
        match m {
            Inbound::Messages(msgs) => {
                let now = self.clock.now();
                let silence = self.shared.config.heartbeat_interval
                    * self.shared.config.election_ticks as u32;
                for msg in msgs {
                    self.look_up_unknown_sender(msg.from);
                    let c = self.connected.entry(msg.from).or_insert(Connected {
                        since: now,
                        last: now,
                    });
                    if now.saturating_duration_since(c.last) > silence {
                        c.since = now; // a break: connected again only from now
                    }
                    c.last = now;
                    // A snapshot is accepted only with its state (streamed).
                    if msg.msg_type() == MessageType::MsgSnap {
                        continue;
                    }
                    let _ = self.raw.step(msg);
                }
            }
            Inbound::Snapshot { message, data } => {
                let index = snapshot_message_index(&message);
                let _ = self.raw.step(message);
                if self.raw.pending_snapshot_index() == Some(index) {
                    self.pending_snapshot = Some((index, data));
                }
            }
            Inbound::Unreachable(NodeId(id)) => {
                // As etcd's broken stream: not connected until heard from again.
                self.connected.remove(&id);
                self.raw.report_unreachable(id);
            }
            Inbound::Removed => self.on_removed_by_peer(),
        }
    }

    /// Takes `first` and what is queued behind it; returns whether any of
    /// it was a proposal.
    fn on_commands(&mut self, first: Command, rx: &mut mpsc::Receiver<Command>) -> bool {
        let mut reads = Vec::new();
        let mut proposals = Vec::new();
        let mut next = Some(first);
        // Take everything queued: one ReadIndex serves all reads of the
        // batch, one Raft message carries all its proposals (a follower
        // forwards them to the leader together).
        while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
            match cmd {
                Command::Propose { request, done } => proposals.push((request, done)),
                Command::ReadIndex { done } => reads.push(done),
                Command::ConfChange { change, done } => self.conf_queue.push_back((change, done)),
                Command::TransferToBest { done } => {
                    let _ = done.send(self.transfer_to_best());
                }
                Command::TransferLeader { to, done } => {
                    let r = if self.raw.role() == Role::Leader {
                        self.raw
                            .transfer_leader(to)
                            .map_err(|_| ServerError::NotLeader)
                    } else {
                        Err(ServerError::NotLeader)
                    };
                    let _ = done.send(r);
                }
                Command::Halt => {
                    self.stop();
                    return false;
                }
            }
            if reads.len() + proposals.len() + self.waiters.len() > COMMAND_QUEUE_LEN * 4 {
                break;
            }
        }
        let proposed = !proposals.is_empty();
        self.propose(proposals);
        self.start_read_round(reads);
        self.propose_queued_conf_changes();
        proposed
    }

    /// Starts a leader transfer to the voter with the longest log among
    /// those heard from recently; returns it. "Recently": Raft's
    /// `recent_active`, or a message within an election timeout — Raft
    /// clears `recent_active` at every check-quorum tick, so right after one
    /// no peer has it (a SIGTERM then stopped the leader without a hand-off:
    /// test `transfer_to_best_finds_a_target_whatever_the_check_quorum_phase`; a stopping leader also asks again each heartbeat until a target appears).
    fn transfer_to_best(&mut self) -> Option<u64> {
        if self.raw.role() != Role::Leader {
            return None;
        }
        let now = self.clock.now();
        let silence =
            self.shared.config.heartbeat_interval * self.shared.config.election_ticks as u32;
        let heard = |id: &u64| {
            self.connected
                .get(id)
                .is_some_and(|c| now.saturating_duration_since(c.last) <= silence)
        };
        let me = self.shared.config.member_id;
        let voters: std::collections::BTreeSet<u64> = self
            .raw
            .conf_state_at(self.raw.last_index())
            .voters
            .into_iter()
            .collect();
        let best = self
            .raw
            .status()
            .progress
            .into_iter()
            .filter(|(id, p)| *id != me && voters.contains(id) && (p.recent_active || heard(id)))
            .max_by_key(|(id, p)| (p.matched, std::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        let Some(best) = best else {
            let peers: Vec<String> = self
                .raw
                .status()
                .progress
                .into_iter()
                .filter(|(id, _)| *id != me)
                .map(|(id, p)| {
                    format!(
                        "{}: voter {} active {} heard {} matched {}",
                        NodeId(id),
                        voters.contains(&id),
                        p.recent_active,
                        heard(&id),
                        p.matched
                    )
                })
                .collect();
            tracing::info!(?peers, "no voter to hand leadership to yet");
            return None;
        };
        if let Err(e) = self.raw.transfer_leader(best) {
            tracing::info!(error = %e, to = %NodeId(best), "leader transfer refused");
            return None;
        }
        Some(best)
    }

    /// What the leader knows of its peers, for the membership checks.
    fn peer_health(&self) -> PeerHealth {
        let me = self.shared.config.member_id;
        let now = self.clock.now();
        let interval = self.shared.config.health_interval;
        let mut active: std::collections::BTreeSet<u64> = self
            .connected
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= interval)
            .map(|(id, _)| *id)
            .collect();
        active.insert(me);
        let mut matched: BTreeMap<u64, u64> = self
            .raw
            .status()
            .progress
            .into_iter()
            .map(|(id, p)| (id, p.matched))
            .collect();
        matched.insert(me, self.raw.last_index());
        PeerHealth {
            active,
            matched,
            leader: me,
        }
    }

    /// Proposes the queued membership changes, one at a time: the next goes
    /// once Raft has no conf change pending (the earlier one applied here).
    fn propose_queued_conf_changes(&mut self) {
        while let Some((change, done)) = self.conf_queue.pop_front() {
            if done.is_closed() {
                continue;
            }
            if self.raw.role() != Role::Leader {
                // Nothing was proposed: the caller may ask the new leader.
                let _ = done.send(Err(ServerError::NotLeader));
                continue;
            }
            if self.raw.has_pending_conf_change() {
                self.conf_queue.push_front((change, done));
                return;
            }
            let me = self.shared.config.member_id;
            let new_id = match &change {
                MemberChange::Add { peer_urls, .. } => members::new_member_id(
                    peer_urls,
                    self.shared.config.cluster_id,
                    self.clock.unix_now().as_secs(),
                ),
                MemberChange::Remove { id } | MemberChange::Promote { id } => *id,
            };
            let checked = {
                let members = self.shared.members();
                let removed = self.shared.removed();
                let health = self.peer_health();
                members::check_conf_change(&change, new_id, &members, &removed, &health)
            };
            if let Err(e) = checked {
                let _ = done.send(Err(e));
                continue;
            }
            let (change_type, node_id, member) = match &change {
                MemberChange::Add { peer_urls, learner } => {
                    let record = MemberRecord {
                        id: new_id,
                        name: String::new(),
                        peer_urls: peer_urls.clone(),
                        client_urls: Vec::new(),
                        is_learner: *learner,
                    };
                    let t = if *learner {
                        ConfChangeType::AddLearnerNode
                    } else {
                        ConfChangeType::AddNode
                    };
                    (t, new_id, Some(record))
                }
                MemberChange::Remove { id } => (ConfChangeType::RemoveNode, *id, None),
                MemberChange::Promote { id } => {
                    let mut record = self.shared.members().get(id).cloned();
                    if let Some(r) = &mut record {
                        r.is_learner = false;
                    }
                    (ConfChangeType::AddNode, *id, record)
                }
            };
            let cc_id = self.next_conf_id;
            self.next_conf_id += 1;
            let mut cc = raft::ConfChange {
                node_id,
                context: ConfChangeContext {
                    proposer: me,
                    member,
                }
                .encode_to_vec(),
                id: cc_id,
                ..Default::default()
            };
            cc.set_change_type(change_type);
            match self.raw.propose_conf_change(cc) {
                Ok(()) => {
                    self.conf_waiters.insert(cc_id, (node_id, done));
                    tracing::info!(?change, member = %NodeId(node_id), "proposed a membership change");
                }
                Err(raft::RaftError::ConfChangePending) => {
                    self.conf_queue.push_front((change, done));
                    return;
                }
                Err(_) => {
                    let _ = done.send(Err(ServerError::LeaderChanged));
                }
            }
        }
    }

    /// Starts a ReadIndex round for `reads` and the queued ones — or queues
    /// them while a round is in flight (its answer starts the next).
    fn start_read_round(&mut self, reads: Vec<ReadReply>) {
        self.queued_reads.extend(reads);
        if self.queued_reads.is_empty() {
            return;
        }
        if !self.reads.is_empty() && self.read_round_ticks < READ_ROUND_PATIENCE_TICKS {
            return;
        }
        let retry = !self.reads.is_empty();
        let reads = std::mem::take(&mut self.queued_reads);
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.shared
            .read_ctx_next
            .store(self.next_read_ctx, Ordering::SeqCst);
        match self
            .raw
            .read_index(read_ctx(self.shared.config.member_id, ctx))
        {
            Ok(()) => {
                self.reads.insert(ctx, reads);
                self.read_round_ticks = 0;
                if let Some(p) = self.shared.probe.as_ref().filter(|_| retry) {
                    p.on_event(self.shared.config.member_id, "read index retried");
                }
            }
            Err(_) => {
                for r in reads {
                    let _ = r.send(Err(ServerError::NoLeader));
                }
            }
        }
    }

    fn propose(&mut self, proposals: Vec<(InternalRequest, ProposeReply)>) {
        if proposals.is_empty() {
            return;
        }
        let data = proposals
            .iter()
            .map(|(request, _)| request.encode_to_vec())
            .collect();
        match self.raw.propose_many(data) {
            Ok(()) => {
                for (request, done) in proposals {
                    self.waiters.insert(request.id, done);
                }
            }
            Err(_) => {
                self.shared
                    .metrics
                    .proposals_failed
                    .fetch_add(proposals.len() as u64, Ordering::Relaxed);
                let err = if self.leader == 0 {
                    ServerError::NoLeader
                } else {
                    ServerError::LeaderChanged
                };
                for (_, done) in proposals {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }

    async fn drain_ready(&mut self) -> Result<(), StorageError> {
        while self.raw.has_ready() {
            let rd = self.raw.ready();
            self.handle_ready(rd).await?;
        }
        Ok(())
    }

    async fn handle_ready(&mut self, mut rd: Ready) -> Result<(), StorageError> {
        if let Some(ss) = &rd.soft_state {
            self.on_soft_state(ss.leader_id, ss.role);
        }
        // Before anything applies: the state snapshot messages ship.
        let early = self.attach_snapshot_states(std::mem::take(&mut rd.messages))?;
        let late = self.attach_snapshot_states(std::mem::take(&mut rd.persisted_messages))?;
        let install = match &rd.snapshot {
            Some(snap) => {
                self.shared
                    .metrics
                    .snapshot_installing
                    .store(1, Ordering::Relaxed);
                Some(self.install_snapshot_batch(snap)?)
            }
            None => None,
        };
        self.send(early);
        let installed = install.as_ref().map(|(index, _)| *index);
        let synced = self.persist(&rd, install.map(|(_, batch)| batch))?;
        if let Some(index) = installed {
            self.reload_installed_state(index)?;
            self.shared
                .metrics
                .snapshot_installing
                .store(0, Ordering::Relaxed);
        }
        if !rd.committed_entries.is_empty() {
            let me = self.shared.config.member_id;
            if let Some(delay) = self.shared.probe.as_ref().and_then(|p| p.delay_apply(me)) {
                tokio::time::sleep(delay).await;
            }
        }
        // `advance` needs the committed entries back: it marks them applied.
        if !rd.committed_entries.is_empty() {
            let began = self.clock.now();
            self.apply(&rd.committed_entries)?;
            let took = self.clock.now().saturating_duration_since(began);
            self.shared.metrics.observe_apply(took);
            self.check_invariants(true);
        }
        if let Some(synced) = synced {
            // A join error means the runtime is going away: report it as closed.
            synced.await.unwrap_or(Err(StorageError::Closed))?;
        }
        self.send(late);
        for rs in std::mem::take(&mut rd.read_states) {
            self.answer_read(rs);
        }
        self.start_read_round(Vec::new());
        if let Some(hs) = &rd.hard_state {
            self.shared.raft.term.store(hs.term, Ordering::SeqCst);
            self.shared
                .raft
                .commit_index
                .store(hs.commit, Ordering::SeqCst);
        }
        self.raw.advance(rd);
        self.propose_queued_conf_changes();
        self.maybe_compact_log()?;
        self.check_invariants(false);
        Ok(())
    }

    /// When the probe asks: the Raft core's invariants (after a Ready), and
    /// with `applied` the state machine's too (after an apply). A failed
    /// check is reported to the probe, not raised.
    fn check_invariants(&self, applied: bool) {
        let Some(p) = &self.shared.probe else {
            return;
        };
        let me = self.shared.config.member_id;
        if !p.check_invariants(me) {
            return;
        }
        let mut failed = Vec::new();
        if applied {
            {
                let store = self.shared.mvcc();
                // A record it cannot read is not a broken invariant: the
                // member stops when it reads it itself.
                failed.push((
                    "mvcc",
                    caught(|| {
                        let _unreadable = store.check_invariants_if_readable();
                    }),
                ));
            }
            {
                let lessor = self.shared.lessor();
                failed.push(("lessor", caught(|| lessor.check_invariants())));
            }
            failed.push(("watch hub", self.shared.watch.check_invariants()));
            failed.push(("v2 store", self.shared.v2().check_invariants()));
        } else {
            failed.push(("raft", caught(|| self.raw.check_invariants())));
        }
        for (what, result) in failed {
            if let Err(message) = result {
                p.on_invariant_broken(me, what, &message);
            }
        }
    }

    fn on_soft_state(&mut self, leader: u64, role: Role) {
        if leader != self.leader {
            if leader != 0 {
                self.shared
                    .metrics
                    .leader_changes
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Reads waiting on the old leader will never be answered.
            let queued = std::mem::take(&mut self.queued_reads);
            for w in std::mem::take(&mut self.reads)
                .into_values()
                .flatten()
                .chain(queued)
            {
                let _ = w.send(Err(ServerError::LeaderChanged));
            }
            tracing::info!(member = %NodeId(self.shared.config.member_id), leader = %NodeId(leader), "leader changed");
        }
        if role == Role::Leader && self.leader != leader {
            if let Some(p) = &self.shared.probe {
                p.on_leader(leader, self.raw.hard_state().term);
            }
        }
        self.leader = leader;
        self.shared.raft.leader.store(leader, Ordering::SeqCst);
        if role != Role::Leader {
            lease::demote(&self.shared);
        }
        if leader != 0 && !self.is_published() {
            self.publish();
        }
        self.shared
            .raft
            .is_learner
            .store(role == Role::Learner, Ordering::SeqCst);
        self.shared
            .metrics
            .has_leader
            .store(leader != 0, Ordering::Relaxed);
    }

    /// Writes the Ready's entries and hard state. When it must be durable
    /// before `advance`, returns the sync to await (already under way); it
    /// feeds the fsync histogram when it completes.
    fn persist(
        &mut self,
        rd: &Ready,
        install: Option<cairn_runtime::WriteBatch>,
    ) -> Result<Option<SyncWait>, StorageError> {
        let mut batch = install.unwrap_or_default();
        batch.extend(raft::storage::ready_batch(rd, self.persisted_last));
        self.persisted_last = raft::storage::last_index_after(rd, self.persisted_last);
        if batch.is_empty() {
            return Ok(None);
        }
        self.shared.storage.write(batch)?;
        if !rd.must_sync {
            return Ok(None);
        }
        let (sync, shared, t0) = (
            self.shared.storage.sync(),
            self.shared.clone(),
            self.clock.now(),
        );
        Ok(Some(tokio::spawn(async move {
            sync.await?;
            let took = shared.clock.now().saturating_duration_since(t0);
            shared.metrics.wal_fsync.observe(took);
            Ok(())
        })))
    }

    /// Takes the snapshot messages out of `messages` and encodes, for each,
    /// the applied state it ships: the state now, at the applied index its
    /// metadata names (Raft builds snapshot messages at its applied index,
    /// which the state reaches between Readys).
    fn attach_snapshot_states(
        &mut self,
        messages: Vec<raft::Message>,
    ) -> Result<Outgoing, StorageError> {
        let (snaps, msgs): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| m.msg_type() == MessageType::MsgSnap);
        let mut out = Outgoing {
            messages: msgs,
            snapshots: Vec::new(),
        };
        if snaps.is_empty() {
            return Ok(out);
        }
        let applied = self.shared.raft.applied_index.load(Ordering::SeqCst);
        // One encoding serves every follower of this Ready: all get the same state.
        let data = apply::encode_state_snapshot(self.shared.storage.snapshot().as_ref(), applied)?;
        for m in snaps {
            let index = snapshot_message_index(&m);
            if index != applied {
                return Err(StorageError::Corruption(format!(
                    "raft asked for a snapshot at {index} while the state is applied at {applied}"
                )));
            }
            out.snapshots.push((m, data.clone()));
        }
        Ok(out)
    }

    fn send(&mut self, out: Outgoing) {
        if let Some(p) = &self.shared.probe {
            let me = self.shared.config.member_id;
            for m in &out.messages {
                match m.msg_type() {
                    MessageType::MsgPreVoteResp if m.reject => p.on_event(me, "pre-vote rejected"),
                    MessageType::MsgTimeoutNow => p.on_event(me, "leader transfer"),
                    _ => {}
                }
            }
            for _ in &out.snapshots {
                p.on_event(me, "snapshot sent");
            }
        }
        if !out.messages.is_empty() {
            self.transport.send(out.messages);
        }
        for (m, data) in out.snapshots {
            self.send_snapshot(m, data);
        }
    }

    /// Streams a snapshot message with its state in a task of its own.
    fn send_snapshot(&mut self, m: raft::Message, data: Vec<u8>) {
        let (transport, reports, to) =
            (self.transport.clone(), self.snapshot_reports.clone(), m.to);
        let index = snapshot_message_index(&m);
        tracing::info!(to = %NodeId(to), index, bytes = data.len(), "sending a snapshot");
        tokio::spawn(async move {
            let result = transport.send_snapshot(m, data).await;
            if let Err(e) = &result {
                tracing::warn!(to = %NodeId(to), error = %e, "snapshot not delivered");
            }
            let ok = result.is_ok();
            let _ = reports.send((to, ok)).await;
        });
    }

    /// The writes that install the received snapshot `snap` (its state from
    /// the leader), with its index.
    fn install_snapshot_batch(
        &mut self,
        snap: &raft::Snapshot,
    ) -> Result<(u64, cairn_runtime::WriteBatch), StorageError> {
        let index = raft::snapshot_index_term(snap).0;
        let data = match self.pending_snapshot.take() {
            Some((i, data)) if i == index => data,
            _ => {
                return Err(StorageError::Corruption(format!(
                    "raft installed snapshot {index} without its state"
                )))
            }
        };
        let batch =
            apply::install_state_snapshot_batch(self.shared.storage.as_ref(), &data, index)?;
        Ok((index, batch))
    }

    /// After the installed snapshot's state is written: the in-memory state
    /// is rebuilt from it.
    fn reload_installed_state(&mut self, index: u64) -> Result<(), StorageError> {
        let store = MvccStore::open(self.shared.storage.clone()).map_err(mvcc_storage_error)?;
        let lessor = apply::load_lessor(&store, self.shared.config.lessor_config())
            .map_err(mvcc_storage_error)?;
        let revision = store.current_revision().0;
        *self.shared.mvcc_mut() = store;
        *self.shared.lessor_mut() = lessor;
        // Watchers resume from history in the new store.
        self.shared.watch.reset(revision);
        let old = std::mem::replace(
            &mut *self.shared.members_mut(),
            apply::load_members(self.shared.storage.as_ref())?,
        );
        *self.shared.removed_mut() = apply::load_removed(self.shared.storage.as_ref())?;
        *self.shared.alarms_mut() = apply::load_alarms(self.shared.storage.as_ref())?;
        let auth = crate::auth::AuthStore::load(self.shared.storage.as_ref())?;
        // Tokens name entries of the log the snapshot replaced: void them.
        self.shared.tokens().reset(auth.is_enabled());
        *self.shared.auth_mut() = auth;
        *self.shared.v2_mut() = apply::load_v2(self.shared.storage.as_ref())?;
        sync_transport_peers(&self.shared, self.transport.as_ref(), &old);
        let me = self.shared.config.member_id;
        if self.shared.removed().contains(&me) && self.removed_ticks.is_none() {
            self.removed_ticks = Some(0);
        }
        self.set_applied(index);
        self.shared
            .metrics
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.shared.probe {
            p.on_snapshot_installed(self.shared.config.member_id, index);
        }
        tracing::info!(index, "installed snapshot from the leader");
        Ok(())
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        for e in entries {
            if e.index <= self.shared.raft.applied_index.load(Ordering::SeqCst) {
                continue;
            }
            let mut conf = None;
            let mut refused = None;
            let mut v2_effects = None;
            let events = match e.entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => {
                    let (events, why, v2) = self.apply_normal(e)?;
                    refused = why;
                    v2_effects = v2;
                    events
                }
                EntryType::EntryConfChange => {
                    self.apply_conf_change(e)?;
                    if self.shared.probe.is_some() {
                        let cs = self.raw.conf_state_at(e.index);
                        conf = Some(super::ConfAfter {
                            voters: cs.voters,
                            learners: cs.learners,
                        });
                    }
                    Vec::new()
                }
                EntryType::EntryNormal => {
                    let store = self.shared.mvcc();
                    apply::apply_marker(&store, e.index, cairn_runtime::WriteBatch::new())?;
                    drop(store);
                    // The leader's empty entry: everything before its term is applied.
                    if self.raw.role() == Role::Leader && e.term == self.raw.term() {
                        lease::promote(&self.shared);
                    }
                    Vec::new()
                }
            };
            self.set_applied(e.index);
            self.log_bytes_since_snapshot += e.data.len() as u64;
            if let Some(p) = &self.shared.probe {
                let revision = self.shared.mvcc();
                p.on_apply(&super::AppliedEntry {
                    member: self.shared.config.member_id,
                    index: e.index,
                    term: e.term,
                    data: &e.data,
                    events: &events,
                    revision: revision.current_revision().0,
                    conf,
                    refused,
                    v2: v2_effects,
                });
            }
            self.shared
                .metrics
                .proposals_applied
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Applies a client request entry; returns the changes it made, if the
    /// request was refused, why (etcd's error text), and for a v2 write what
    /// it did to the v2 store (for a probe).
    #[allow(clippy::type_complexity)]
    fn apply_normal(
        &mut self,
        e: &Entry,
    ) -> Result<
        (
            Vec<cairn_proto::mvccpb::Event>,
            Option<String>,
            Option<String>,
        ),
        StorageError,
    > {
        let req = InternalRequest::decode(e.data.as_slice()).map_err(|err| {
            StorageError::Corruption(format!("entry {} does not decode: {err}", e.index))
        })?;
        let prev_kv = self.shared.watch.wants_prev_kv();
        let outcome = {
            let mut store = self.shared.mvcc_mut();
            store.set_events_prev_kv(prev_kv);
            let mut members = self.shared.members_mut();
            let mut lessor = self.shared.lessor_mut();
            let mut alarms = self.shared.alarms_mut();
            let mut auth = self.shared.auth_mut();
            let mut tokens = self.shared.tokens();
            let mut v2 = self.shared.v2_mut();
            let now = self.clock.now();
            let unix = i64::try_from(self.clock.unix_now().as_nanos()).unwrap_or(i64::MAX);
            apply::apply_request(
                &mut store,
                &mut members,
                &mut lessor,
                &mut alarms,
                (&mut auth, &mut tokens),
                &mut v2,
                &req,
                e.index,
                (now, unix),
            )
        };
        if !outcome.v2_events.is_empty() {
            self.shared.v2_watchers.notify(&outcome.v2_events);
        }
        // Storage that fails or holds corrupt data stops the member: the
        // entry is not applied (nothing of it was written) and is applied
        // again after a restart on good data.
        match &outcome.result {
            Err(ServerError::Mvcc(MvccError::Storage(err))) => return Err(err.clone()),
            Err(ServerError::Mvcc(MvccError::Corrupt(msg))) => {
                return Err(StorageError::Corruption(msg.clone()))
            }
            _ => {}
        }
        if !outcome.events.is_empty() {
            // Applied, hence committed: watchers may see it now.
            self.shared
                .watch
                .notify(outcome.revision.0, &outcome.events, prev_kv);
        }
        let refused = outcome.result.as_ref().err().map(ToString::to_string);
        let v2_effects = match &outcome.result {
            Ok(Applied::V2(r)) if self.shared.probe.is_some() => Some(match r {
                Ok(ev) => ev.digest(),
                Err(err) => err.to_json(),
            }),
            Ok(Applied::V2Swept) if self.shared.probe.is_some() => Some(
                outcome
                    .v2_events
                    .iter()
                    .map(crate::v2store::Event::digest)
                    .collect(),
            ),
            _ => None,
        };
        self.count_mvcc(&req, &outcome.result);
        let me = self.shared.config.member_id;
        if req.member_id == me {
            if matches!(outcome.result, Ok(Applied::Published)) && req.id == 0 {
                self.shared.published.store(true, Ordering::SeqCst);
            }
            if let Some(w) = self.waiters.remove(&req.id) {
                let _ = w.send(outcome.result.map(|a| (a, outcome.revision.0)));
            }
        }
        Ok((outcome.events, refused, v2_effects))
    }

    /// Counts the key-space operations an applied request did.
    fn count_mvcc(&self, req: &InternalRequest, result: &Result<Applied, ServerError>) {
        let m = &self.shared.metrics.mvcc;
        match (result, req.request.as_ref()) {
            (Ok(Applied::Put(_)), _) => m.put_applied(),
            (Ok(Applied::DeleteRange(_)), _) => m.delete_applied(),
            (Ok(Applied::Txn(resp)), Some(internal_request::Request::Txn(txn))) => {
                m.txn_done(txn, resp)
            }
            _ => {}
        }
    }

    fn apply_conf_change(&mut self, e: &Entry) -> Result<(), StorageError> {
        let Some(cc) = raft::decode_conf_change(e) else {
            let store = self.shared.mvcc();
            return apply::apply_marker(&store, e.index, cairn_runtime::WriteBatch::new());
        };
        let ctx = ConfChangeContext::decode(cc.context.as_slice()).unwrap_or_default();
        let existing = self.shared.members().get(&cc.node_id).cloned();
        let (added, removed) = match cc.change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                // A promotion keeps the member's record (its published name).
                let mut m = existing.or(ctx.member).unwrap_or(MemberRecord {
                    id: cc.node_id,
                    ..Default::default()
                });
                m.id = cc.node_id;
                m.is_learner = cc.change_type() == ConfChangeType::AddLearnerNode;
                (Some(m), None)
            }
            ConfChangeType::RemoveNode => (None, Some(cc.node_id)),
        };
        {
            let store = self.shared.mvcc();
            apply::apply_marker(
                &store,
                e.index,
                apply::member_change_batch(added.as_ref(), removed),
            )?;
        }
        let me = self.shared.config.member_id;
        {
            let mut members = self.shared.members_mut();
            if let Some(m) = added {
                if let Some(url) = m.peer_urls.first() {
                    self.transport.add_peer(NodeId(m.id), url.clone());
                }
                members.insert(m.id, m);
            }
            if let Some(id) = removed {
                self.transport.remove_peer(NodeId(id));
                members.remove(&id);
                self.shared.removed_mut().insert(id);
            }
        }
        tracing::info!(index = e.index, change = ?cc.change_type(), member = %NodeId(cc.node_id), "applied a membership change");
        if ctx.proposer == me {
            if let Some((id, w)) = self.conf_waiters.remove(&cc.id) {
                let _ = w.send(Ok(id));
            }
        }
        if removed == Some(me) && self.removed_ticks.is_none() {
            self.removed_ticks = Some(0);
        }
        Ok(())
    }

    fn set_applied(&mut self, index: u64) {
        self.shared
            .raft
            .applied_index
            .store(index, Ordering::SeqCst);
        self.shared.applied.advance(index);
    }

    fn answer_read(&mut self, rs: raft::ReadState) {
        let me = self.shared.config.member_id;
        let Some(ctx) = parse_read_ctx(&rs.request_ctx)
            .filter(|(m, _)| *m == me)
            .map(|(_, c)| c)
        else {
            return;
        };
        for w in self.reads.remove(&ctx).unwrap_or_default() {
            let _ = w.send(Ok(rs.index));
        }
    }

    /// Every `snapshot_count` applied entries, or every `LOG_COMPACT_BYTES`
    /// of applied entries (large requests would otherwise keep a log of many
    /// GiB, all of it loaded into memory at the next start): snapshot and
    /// drop the log prefix.
    fn maybe_compact_log(&mut self) -> Result<(), StorageError> {
        let applied = self.shared.raft.applied_index.load(Ordering::SeqCst);
        let me = self.shared.config.member_id;
        let early = applied > self.last_snapshot_index
            && self
                .shared
                .probe
                .as_ref()
                .is_some_and(|p| p.compact_log_early(me));
        let by_bytes = applied > self.last_snapshot_index
            && self.log_bytes_since_snapshot >= LOG_COMPACT_BYTES;
        if applied < self.last_snapshot_index + self.shared.config.snapshot_count
            && !early
            && !by_bytes
        {
            return Ok(());
        }
        match self.raw.compact(applied, Vec::new()) {
            Ok(snap) => {
                self.shared
                    .storage
                    .write(raft::storage::compaction_batch(&snap))?;
                self.last_snapshot_index = applied;
                self.log_bytes_since_snapshot = 0;
                tracing::debug!(index = applied, "compacted the raft log");
            }
            Err(e) => tracing::debug!(error = %e, "log compaction postponed"),
        }
        Ok(())
    }
}

/// Messages of one Ready, with the state each snapshot message ships.
struct Outgoing {
    messages: Vec<raft::Message>,
    snapshots: Vec<(raft::Message, Vec<u8>)>,
}

/// Runs an invariant check that panics when broken; the panic's message.
pub(super) fn caught(check: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a check panicked".to_owned())
    })
}

fn snapshot_message_index(m: &raft::Message) -> u64 {
    m.snapshot
        .as_ref()
        .map_or(0, |s| raft::snapshot_index_term(s).0)
}

/// A ReadIndex context unique in the cluster: the member id, then its own
/// counter. (The leader ignores a context already pending, so counters alone
/// would collide between members: regression test
/// `concurrent_linearizable_reads_on_every_member_are_all_answered_promptly`.)
fn read_ctx(member_id: u64, n: u64) -> Vec<u8> {
    let mut ctx = member_id.to_be_bytes().to_vec();
    ctx.extend_from_slice(&n.to_be_bytes());
    ctx
}

fn parse_read_ctx(ctx: &[u8]) -> Option<(u64, u64)> {
    let (m, n) = ctx.split_at_checked(8)?;
    Some((
        u64::from_be_bytes(m.try_into().ok()?),
        u64::from_be_bytes(n.try_into().ok()?),
    ))
}

fn mvcc_storage_error(e: MvccError) -> StorageError {
    match e {
        MvccError::Storage(s) => s,
        other => StorageError::Corruption(other.to_string()),
    }
}
