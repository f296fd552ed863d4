//! The Raft state machine: roles, terms, elections (with pre-vote and
//! check-quorum), replication with flow control, commit, snapshots,
//! ReadIndex, leader transfer and membership changes.
//!
//! `step` first applies the term rules common to every role, then answers
//! vote requests, then dispatches by role (`step_leader`, `step_candidate`,
//! `step_follower`). Outputs are only ever pushed to `msgs` / `read_states`;
//! `RawNode` turns them into a `Ready`.
//!
//! Invariants (`check_invariants`): a leader or candidate voted for itself in
//! its term; a leader is a voter; the log never holds an entry of a term
//! above the current one; plus those of `RaftLog` and `ProgressTracker`.
//! Tests: `raft::golden` (scripts in `src/raft/testdata/`), `raft::properties`.

use cairn_proto::raftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
    SnapshotMetadata,
};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::Rng;

use super::log::{entry_size, snapshot_conf_state, snapshot_index_term, RaftLog};
use super::progress::ProgressState;
use super::read_only::ReadOnly;
use super::tracker::{ProgressTracker, VoteResult};
use super::{Config, RaftError, RaftState, ReadState, Role};

/// Context of vote requests sent because of a leader transfer: they bypass
/// the lease that check-quorum gives a healthy leader.
pub const TRANSFER_CONTEXT: &[u8] = b"CampaignTransfer";

fn msg(to: u64, msg_type: MessageType) -> Message {
    let mut m = Message {
        to,
        ..Default::default()
    };
    m.set_msg_type(msg_type);
    m
}

fn is_vote_request(t: MessageType) -> bool {
    matches!(t, MessageType::MsgVote | MessageType::MsgPreVote)
}

fn vote_response_type(t: MessageType) -> MessageType {
    if t == MessageType::MsgPreVote {
        MessageType::MsgPreVoteResp
    } else {
        MessageType::MsgVoteResp
    }
}

#[derive(Debug)]
pub struct Raft {
    pub(super) id: u64,
    pub(super) term: u64,
    /// Whom we voted for in `term` (0: nobody). At most one vote per term.
    pub(super) vote: u64,
    pub(super) log: RaftLog,
    pub(super) tracker: ProgressTracker,
    pub(super) role: Role,
    pub(super) leader_id: u64,
    /// The node a leader transfer is in progress to (0: none). Proposals are
    /// refused meanwhile.
    pub(super) lead_transferee: u64,
    /// Index of the latest conf change proposed; another may be proposed only
    /// once it is applied (one change at a time).
    pub(super) pending_conf_index: u64,
    read_only: ReadOnly,
    /// ReadIndex requests received before this leader committed an entry of
    /// its term; answered once it has. Bounded by `max_pending_read_index`.
    pending_read_index: Vec<Message>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) msgs: Vec<Message>,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    /// In `[election_tick, 2 * election_tick)`, drawn from `rng` on every reset.
    randomized_election_timeout: usize,
    cfg: Config,
    rng: StdRng,
}

impl Raft {
    pub fn new(cfg: &Config, state: RaftState, rng: StdRng) -> Result<Raft, RaftError> {
        cfg.validate()?;
        let RaftState {
            hard_state,
            snapshot,
            entries,
        } = state;
        let log = RaftLog::new(snapshot, entries, hard_state.commit, cfg.applied);
        let mut r = Raft {
            id: cfg.id,
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            tracker: ProgressTracker::new(cfg.max_inflight_msgs, cfg.max_inflight_bytes),
            role: Role::Follower,
            leader_id: 0,
            lead_transferee: 0,
            pending_conf_index: 0,
            read_only: ReadOnly::default(),
            pending_read_index: Vec::new(),
            read_states: Vec::new(),
            msgs: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            cfg: cfg.clone(),
            rng,
        };
        let conf = r.conf_state_at(r.log.applied());
        r.tracker.reset_conf(&conf, r.log.last_index() + 1);
        r.become_follower(r.term, 0);
        Ok(r)
    }

    /// The membership as of `index` (at or after the snapshot): the
    /// snapshot's, plus every conf change in the log up to `index`.
    pub fn conf_state_at(&self, index: u64) -> ConfState {
        let mut t = ProgressTracker::new(1, 0);
        t.reset_conf(&snapshot_conf_state(self.log.snapshot()), 1);
        for i in self.log.first_index()..=index.min(self.log.last_index()) {
            let e = self.log.entry(i).expect("index within the log");
            if let Some(cc) = decode_conf_change(e) {
                apply_to_tracker(&mut t, &cc, 1);
            }
        }
        t.conf_state()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id) && self.log.pending_snapshot().is_none()
    }

    // ---- sending ---------------------------------------------------------------

    /// Queues `m` for the next Ready. `from` defaults to us; `term` to ours,
    /// except for forwarded requests (proposals, reads, transfers), which
    /// carry no term: they are not part of the protocol's term logic.
    fn send(&mut self, mut m: Message) {
        if m.from == 0 {
            m.from = self.id;
        }
        let termless = matches!(
            m.msg_type(),
            MessageType::MsgProp | MessageType::MsgReadIndex | MessageType::MsgTransferLeader
        );
        if !termless && m.term == 0 {
            m.term = self.term;
        }
        self.msgs.push(m);
    }

    // ---- role transitions ------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        self.leader_id = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .random_range(self.cfg.election_tick..2 * self.cfg.election_tick);
        self.lead_transferee = 0;
        self.tracker.reset_votes();
        self.read_only.clear();
        self.pending_read_index.clear();
        let next = self.log.last_index() + 1;
        let stabled = self.log.stabled();
        let id = self.id;
        for (&pid, pr) in self.tracker.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = super::progress::Progress::new(
                next,
                self.cfg.max_inflight_msgs,
                self.cfg.max_inflight_bytes,
                is_learner,
            );
            if pid == id {
                pr.matched = stabled;
                pr.next = pr.next.max(stabled + 1);
            }
        }
    }

    pub fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader_id;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "leader {} cannot become pre-candidate",
            self.id
        );
        // Pre-vote changes neither term nor vote: a node that cannot win
        // disturbs nobody.
        self.tracker.reset_votes();
        self.role = Role::PreCandidate;
        self.leader_id = 0;
    }

    fn become_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "leader {} cannot become candidate",
            self.id
        );
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "{} becomes leader from {:?}",
            self.id,
            self.role
        );
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&self.id) {
            pr.recent_active = true;
            pr.become_replicate(); // a leader trivially matches itself
        }
        // Conservatively treat any conf change in the log as pending.
        self.pending_conf_index = self.log.last_index();
        // The no-op entry commits everything of earlier terms (§5.4.2).
        self.append_entries(vec![Entry::default()]);
    }

    // ---- elections -----------------------------------------------------------

    /// Election timeout or explicit campaign: start a (pre-)election.
    pub fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() || self.has_unapplied_conf_change() {
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.campaign_pre();
        } else {
            self.campaign(transfer);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        (self.log.applied() + 1..=self.log.committed())
            .filter_map(|i| self.log.entry(i))
            .any(|e| e.entry_type() == EntryType::EntryConfChange)
    }

    fn campaign_pre(&mut self) {
        self.become_pre_candidate();
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            return self.campaign(false);
        }
        self.request_votes(MessageType::MsgPreVote, self.term + 1, false);
    }

    fn campaign(&mut self, transfer: bool) {
        self.become_candidate();
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            self.become_leader();
            return self.bcast_append();
        }
        self.request_votes(MessageType::MsgVote, self.term, transfer);
    }

    fn request_votes(&mut self, t: MessageType, term: u64, transfer: bool) {
        let voters: Vec<u64> = self
            .tracker
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for to in voters {
            let mut m = msg(to, t);
            m.term = term;
            m.index = self.log.last_index();
            m.log_term = self.log.last_term();
            if transfer {
                m.context = TRANSFER_CONTEXT.to_vec();
            }
            self.send(m);
        }
    }

    fn handle_vote_request(&mut self, m: &Message) {
        let t = m.msg_type();
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader_id == 0)
            || (t == MessageType::MsgPreVote && m.term > self.term);
        let mut resp = msg(m.from, vote_response_type(t));
        if can_vote && self.log.is_up_to_date(m.index, m.log_term) {
            // A granted pre-vote carries the term asked for, so the
            // pre-candidate does not mistake it for a newer term.
            resp.term = m.term;
            if t == MessageType::MsgVote {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            resp.term = self.term;
            resp.reject = true;
        }
        self.send(resp);
    }

    // ---- step ----------------------------------------------------------------

    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if !self.step_term(&m) {
            return Ok(());
        }
        if is_vote_request(m.msg_type()) {
            self.handle_vote_request(&m);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower | Role::Learner => self.step_follower(m),
        }
    }

    /// The term rules shared by every role. Returns false if `m` must be ignored.
    fn step_term(&mut self, m: &Message) -> bool {
        let t = m.msg_type();
        if m.term == 0 {
            return true; // forwarded request, no term
        }
        if m.term > self.term {
            if is_vote_request(t) && self.in_lease() && m.context != TRANSFER_CONTEXT {
                // Check-quorum: we heard from a leader within an election
                // timeout, so a vote request is from a disruptive node.
                return false;
            }
            match t {
                MessageType::MsgPreVote => {}
                MessageType::MsgPreVoteResp if !m.reject => {}
                MessageType::MsgApp | MessageType::MsgHeartbeat | MessageType::MsgSnap => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, 0),
            }
            return true;
        }
        if m.term < self.term {
            self.answer_stale(m);
            return false;
        }
        true
    }

    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader_id != 0
            && self.election_elapsed < self.cfg.election_tick
    }

    /// A message from an older term. Tell a stale leader our term so it
    /// steps down (needed with check-quorum / pre-vote, where a node may have
    /// a higher term without having disrupted anyone), and reject pre-votes
    /// so the pre-candidate learns our term.
    fn answer_stale(&mut self, m: &Message) {
        let t = m.msg_type();
        if (self.cfg.check_quorum || self.cfg.pre_vote)
            && matches!(t, MessageType::MsgApp | MessageType::MsgHeartbeat)
        {
            self.send(msg(m.from, MessageType::MsgAppResp));
        } else if t == MessageType::MsgPreVote {
            let mut resp = msg(m.from, MessageType::MsgPreVoteResp);
            resp.reject = true;
            self.send(resp);
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<(), RaftError> {
        match m.msg_type() {
            MessageType::MsgProp => self.leader_propose(m.entries),
            MessageType::MsgReadIndex => {
                self.leader_read_index(m);
                Ok(())
            }
            MessageType::MsgAppResp => {
                self.handle_append_response(&m);
                Ok(())
            }
            MessageType::MsgHeartbeatResp => {
                self.handle_heartbeat_response(&m);
                Ok(())
            }
            MessageType::MsgTransferLeader => {
                self.handle_transfer_leader(m.from);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), RaftError> {
        let t = m.msg_type();
        let my_resp = if self.role == Role::PreCandidate {
            MessageType::MsgPreVoteResp
        } else {
            MessageType::MsgVoteResp
        };
        match t {
            MessageType::MsgProp => Err(RaftError::ProposalDropped),
            MessageType::MsgReadIndex => Err(RaftError::ReadIndexDropped),
            MessageType::MsgApp | MessageType::MsgHeartbeat | MessageType::MsgSnap => {
                // A leader of our term exists: we lost.
                self.become_follower(m.term, m.from);
                self.step_follower(m)
            }
            _ if t == my_resp => {
                self.tracker.record_vote(m.from, !m.reject);
                match self.tracker.tally_votes() {
                    VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false),
                    VoteResult::Won => {
                        self.become_leader();
                        self.bcast_append();
                    }
                    VoteResult::Lost => self.become_follower(self.term, 0),
                    VoteResult::Pending => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), RaftError> {
        match m.msg_type() {
            MessageType::MsgProp | MessageType::MsgReadIndex | MessageType::MsgTransferLeader => {
                self.forward(m)
            }
            MessageType::MsgApp => {
                self.heard_from_leader(m.from);
                self.handle_append(&m);
                Ok(())
            }
            MessageType::MsgHeartbeat => {
                self.heard_from_leader(m.from);
                self.handle_heartbeat(&m);
                Ok(())
            }
            MessageType::MsgSnap => {
                self.heard_from_leader(m.from);
                self.handle_snapshot(m);
                Ok(())
            }
            MessageType::MsgTimeoutNow => {
                // Leader transfer: campaign at once, skipping pre-vote.
                self.hup(true);
                Ok(())
            }
            MessageType::MsgReadIndexResp => {
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx: m.context,
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn heard_from_leader(&mut self, from: u64) {
        self.election_elapsed = 0;
        self.leader_id = from;
    }

    /// Forwards a proposal, read or transfer request to the leader.
    fn forward(&mut self, mut m: Message) -> Result<(), RaftError> {
        if self.leader_id == 0 {
            return Err(if m.msg_type() == MessageType::MsgReadIndex {
                RaftError::ReadIndexDropped
            } else {
                RaftError::ProposalDropped
            });
        }
        m.to = self.leader_id;
        if m.msg_type() != MessageType::MsgTransferLeader {
            m.from = self.id;
        }
        self.send(m);
        Ok(())
    }

    // ---- leader: proposals and replication -------------------------------------

    fn leader_propose(&mut self, mut entries: Vec<Entry>) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        if !self.tracker.progress.contains_key(&self.id) {
            return Err(RaftError::ProposalDropped); // we were removed
        }
        if self.lead_transferee != 0 {
            return Err(RaftError::ProposalDropped);
        }
        for (k, e) in entries.iter_mut().enumerate() {
            if e.entry_type() != EntryType::EntryConfChange {
                continue;
            }
            if self.pending_conf_index > self.log.applied() {
                return Err(RaftError::ConfChangePending);
            }
            self.pending_conf_index = self.log.last_index() + 1 + k as u64;
        }
        self.append_entries(entries);
        self.bcast_append();
        Ok(())
    }

    fn append_entries(&mut self, mut entries: Vec<Entry>) {
        let last = self.log.last_index();
        for (k, e) in entries.iter_mut().enumerate() {
            e.term = self.term;
            e.index = last + 1 + k as u64;
        }
        self.log.append(&entries);
        // Our own progress advances only once the entries are persisted (`on_persisted`).
    }

    /// The application persisted the log up to `stabled`: count our own copy.
    pub fn on_persisted(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let stabled = self.log.stabled();
        let updated = self
            .tracker
            .progress
            .get_mut(&self.id)
            .is_some_and(|pr| pr.maybe_update(stabled));
        if updated && self.maybe_commit() {
            self.bcast_append();
        }
    }

    pub fn bcast_append(&mut self) {
        let peers: Vec<u64> = self
            .tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in peers {
            self.send_append(id, true);
        }
    }

    /// Sends `to` the entries it needs next (or a snapshot). Returns whether
    /// anything was sent. `send_if_empty`: also send an empty append (a probe
    /// or a commit update).
    fn send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries_from(pr.next, self.cfg.max_size_per_msg);
        let (Some(prev_term), Some(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let bytes = entries.iter().map(entry_size).sum();
        let last = entries.last().map(|e| e.index);
        self.tracker
            .progress
            .get_mut(&to)
            .expect("checked above")
            .sent_append(last, bytes);
        let mut m = msg(to, MessageType::MsgApp);
        m.index = prev_index;
        m.log_term = prev_term;
        m.entries = entries;
        m.commit = self.log.committed();
        self.send(m);
        true
    }

    fn send_snapshot(&mut self, to: u64) -> bool {
        if !self.tracker.progress[&to].recent_active {
            return false; // not worth a snapshot until it answers again
        }
        let Some(snapshot) = self.snapshot_to_send() else {
            return false;
        };
        let pr = self.tracker.progress.get_mut(&to).expect("caller checked");
        pr.become_snapshot(snapshot_index_term(&snapshot).0);
        let mut m = msg(to, MessageType::MsgSnap);
        m.snapshot = Some(snapshot);
        self.send(m);
        true
    }

    /// What a follower behind our log's start is sent: the application's
    /// state at our *applied* index — not the compacted snapshot's older one
    /// — so the metadata (index, term, membership) and the state the
    /// application attaches describe the same point (the `Ready::messages`
    /// contract). A follower that installed state newer than the snapshot's
    /// index made its applied index durable ahead of its log, and could not
    /// restart after a crash before the missing entries reached its disk
    /// (simulation kv5 seed 7037, lease3 seed 7149). etcd does the same: its
    /// snapshot messages carry the metadata of the state they ship.
    /// None while a received snapshot awaits install (nothing to ship yet).
    fn snapshot_to_send(&self) -> Option<Snapshot> {
        if self.log.pending_snapshot().is_some() {
            return None;
        }
        let index = self.log.applied();
        let term = self.log.term(index)?;
        Some(Snapshot {
            metadata: Some(SnapshotMetadata {
                conf_state: Some(self.conf_state_at(index)),
                index,
                term,
            }),
            data: Vec::new(),
        })
    }

    fn bcast_heartbeat(&mut self) {
        let context = self
            .read_only
            .last_pending()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.bcast_heartbeat_with(context);
    }

    fn bcast_heartbeat_with(&mut self, context: Vec<u8>) {
        let peers: Vec<(u64, u64)> = self
            .tracker
            .progress
            .iter()
            .filter(|(&id, _)| id != self.id)
            .map(|(&id, pr)| (id, pr.matched))
            .collect();
        for (to, matched) in peers {
            let mut m = msg(to, MessageType::MsgHeartbeat);
            // Never tell a follower to commit beyond what it is known to hold.
            m.commit = matched.min(self.log.committed());
            m.context = context.clone();
            self.send(m);
        }
    }

    /// Commits the quorum index if it is of the current term (§5.4.2: entries
    /// of earlier terms are committed only indirectly, never by counting).
    fn maybe_commit(&mut self) -> bool {
        let index = self.tracker.committed_index();
        if index <= self.log.committed() || self.log.term(index) != Some(self.term) {
            return false;
        }
        let first_in_term = self.log.term(self.log.committed()) != Some(self.term);
        self.log.commit_to(index);
        if first_in_term {
            self.release_pending_read_index();
        }
        true
    }

    fn handle_append_response(&mut self, m: &Message) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject {
            return self.handle_append_rejection(m);
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= self.log.first_index() => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        let caught_up = pr.matched == last_index;
        if self.maybe_commit() {
            self.bcast_append();
        } else if old_paused {
            self.send_append(m.from, true);
        }
        while self.send_append(m.from, false) {}
        if m.from == self.lead_transferee && caught_up {
            self.send_timeout_now(m.from);
        }
    }

    fn handle_append_rejection(&mut self, m: &Message) {
        // Fast back-off: skip the follower's whole conflicting term at once.
        let mut hint = m.reject_hint;
        if m.reject_hint_term > 0 {
            hint = self
                .log
                .find_conflict_by_term(m.reject_hint, m.reject_hint_term)
                .0;
        }
        let pr = self
            .tracker
            .progress
            .get_mut(&m.from)
            .expect("caller checked");
        if pr.maybe_decr_to(m.index, hint) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.send_append(m.from, true);
        }
    }

    fn handle_heartbeat_response(&mut self, m: &Message) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last_index {
            self.send_append(m.from, true);
        }
        if !m.context.is_empty() {
            self.handle_read_ack(m.from, &m.context);
        }
    }

    // ---- leader: ReadIndex -----------------------------------------------------

    fn leader_read_index(&mut self, m: Message) {
        if self.tracker.voters.len() == 1 && self.tracker.is_voter(self.id) {
            let index = self.log.committed();
            return self.answer_read(m.from, index, m.context);
        }
        if self.log.term(self.log.committed()) != Some(self.term) {
            // Our commit index may lag the true one until we commit in our term.
            if self.pending_read_index.len() < self.cfg.max_pending_read_index {
                self.pending_read_index.push(m);
            }
            return;
        }
        if self.read_only.len() >= self.cfg.max_pending_read_index {
            return; // bounded: the client retries
        }
        let context = m.context.clone();
        if self
            .read_only
            .add_request(self.log.committed(), m.from, context.clone())
        {
            self.handle_read_ack(self.id, &context);
            self.bcast_heartbeat_with(context);
        }
    }

    fn release_pending_read_index(&mut self) {
        for m in std::mem::take(&mut self.pending_read_index) {
            self.leader_read_index(m);
        }
    }

    fn handle_read_ack(&mut self, from: u64, context: &[u8]) {
        let Some(acks) = self.read_only.recv_ack(from, context) else {
            return;
        };
        let voter_acks = acks
            .iter()
            .filter(|id| self.tracker.voters.contains(id))
            .count();
        if voter_acks < self.tracker.quorum() {
            return;
        }
        for rs in self.read_only.advance(context) {
            self.answer_read(rs.from, rs.index, rs.context);
        }
    }

    fn answer_read(&mut self, from: u64, index: u64, context: Vec<u8>) {
        if from == 0 || from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: context,
            });
        } else {
            let mut m = msg(from, MessageType::MsgReadIndexResp);
            m.index = index;
            m.context = context;
            self.send(m);
        }
    }

    // ---- leader: transfer --------------------------------------------------------

    fn handle_transfer_leader(&mut self, transferee: u64) {
        if !self.tracker.is_voter(transferee) {
            return; // learners and strangers cannot lead
        }
        if self.lead_transferee == transferee {
            return;
        }
        self.lead_transferee = 0;
        if transferee == self.id {
            return;
        }
        // The transfer must finish within an election timeout or it is aborted.
        self.election_elapsed = 0;
        self.lead_transferee = transferee;
        let matched = self
            .tracker
            .progress
            .get(&transferee)
            .map_or(0, |p| p.matched);
        if matched == self.log.last_index() {
            self.send_timeout_now(transferee);
        } else {
            self.send_append(transferee, true);
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        self.send(msg(to, MessageType::MsgTimeoutNow));
    }

    // ---- follower: append, heartbeat, snapshot -----------------------------------

    fn handle_append(&mut self, m: &Message) {
        let mut resp = msg(m.from, MessageType::MsgAppResp);
        if m.index < self.log.committed() {
            resp.index = self.log.committed();
            return self.send(resp);
        }
        if let Some(last_new) = self
            .log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            resp.index = last_new;
            return self.send(resp);
        }
        // Mismatch: hint the largest index that may match, with its term.
        let (hint_index, hint_term) = self
            .log
            .find_conflict_by_term(m.index.min(self.log.last_index()), m.log_term);
        resp.index = m.index;
        resp.reject = true;
        resp.reject_hint = hint_index;
        resp.reject_hint_term = hint_term;
        self.send(resp);
    }

    fn handle_heartbeat(&mut self, m: &Message) {
        self.log.commit_to(m.commit);
        let mut resp = msg(m.from, MessageType::MsgHeartbeatResp);
        resp.context = m.context.clone();
        self.send(resp);
    }

    fn handle_snapshot(&mut self, m: Message) {
        let Some(snapshot) = m.snapshot else { return };
        let mut resp = msg(m.from, MessageType::MsgAppResp);
        resp.index = if self.restore(snapshot) {
            self.log.last_index()
        } else {
            self.log.committed()
        };
        self.send(resp);
    }

    /// Installs a snapshot from the leader unless we already have what it covers.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let (index, term) = snapshot_index_term(&snapshot);
        if index <= self.log.committed() {
            return false;
        }
        if self.log.match_term(index, term) {
            // Our log already holds the snapshot's last entry: just commit up to it.
            self.log.commit_to(index);
            return false;
        }
        let conf = snapshot_conf_state(&snapshot);
        self.log.restore(snapshot);
        self.tracker.reset_conf(&conf, self.log.last_index() + 1);
        true
    }

    // ---- ticks ---------------------------------------------------------------

    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.check_quorum() {
                return;
            }
            self.lead_transferee = 0; // a transfer that took an election timeout failed
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    /// Check-quorum: a leader that did not hear from a quorum within an
    /// election timeout steps down (it may be partitioned away). Returns
    /// whether it is still leader.
    fn check_quorum(&mut self) -> bool {
        if !self.tracker.quorum_active(self.id) {
            self.become_follower(self.term, 0);
            return false;
        }
        for (&id, pr) in self.tracker.progress.iter_mut() {
            if id != self.id {
                pr.recent_active = false;
            }
        }
        true
    }

    // ---- local reports ---------------------------------------------------------

    pub fn report_unreachable(&mut self, to: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    pub fn report_snapshot(&mut self, to: u64, success: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if !success {
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for the follower's answer (or a heartbeat response) before probing.
        pr.probe_sent = true;
    }

    // ---- membership ----------------------------------------------------------

    /// Applies a committed conf change (called when the application applied it).
    pub fn apply_conf_change(&mut self, cc: &ConfChange) {
        let next = self.log.last_index() + 1;
        apply_to_tracker(&mut self.tracker, cc, next);
        if self.role != Role::Leader {
            return;
        }
        if !self.tracker.is_voter(self.id) {
            // Removed (or demoted) leader: tell everyone the commit index, then step down.
            self.bcast_append();
            let term = self.term;
            self.become_follower(term, 0);
            return;
        }
        if self.lead_transferee != 0 && !self.tracker.is_voter(self.lead_transferee) {
            self.lead_transferee = 0;
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            // Probe newly added members now rather than at the next heartbeat.
            let fresh: Vec<u64> = self
                .tracker
                .progress
                .iter()
                .filter(|(&id, p)| id != self.id && p.matched == 0)
                .map(|(&id, _)| id)
                .collect();
            for id in fresh {
                self.send_append(id, true);
            }
        }
    }

    pub fn check_invariants(&self) {
        self.log.check_invariants(self.term);
        self.tracker.check_invariants();
        assert!(
            self.log.last_term() <= self.term,
            "last log term {} > term {}",
            self.log.last_term(),
            self.term
        );
        match self.role {
            Role::Leader => {
                assert_eq!(
                    self.leader_id, self.id,
                    "leader {} does not know it leads",
                    self.id
                );
                assert_eq!(
                    self.vote, self.id,
                    "leader {} did not vote for itself in term {}",
                    self.id, self.term
                );
                assert!(
                    self.tracker.is_voter(self.id),
                    "leader {} is not a voter",
                    self.id
                );
                for (id, pr) in &self.tracker.progress {
                    assert!(
                        pr.matched <= self.log.last_index(),
                        "progress of {id} beyond leader's log"
                    );
                }
            }
            Role::Candidate => assert_eq!(
                self.vote, self.id,
                "candidate {} did not vote for itself",
                self.id
            ),
            _ => {}
        }
    }
}

/// Decodes the conf change carried by a conf-change entry.
pub fn decode_conf_change(e: &Entry) -> Option<ConfChange> {
    if e.entry_type() != EntryType::EntryConfChange {
        return None;
    }
    Some(
        ConfChange::decode(e.data.as_slice())
            .expect("conf-change entries are written by propose_conf_change"),
    )
}

fn apply_to_tracker(t: &mut ProgressTracker, cc: &ConfChange, next: u64) {
    let id = cc.node_id;
    match cc.change_type() {
        ConfChangeType::AddNode => {
            if t.learners.remove(&id) {
                t.voters.insert(id);
                if let Some(pr) = t.progress.get_mut(&id) {
                    pr.is_learner = false;
                }
            } else if t.voters.insert(id) {
                t.insert_progress(id, next, false);
            }
        }
        ConfChangeType::AddLearnerNode => {
            if t.voters.remove(&id) {
                t.learners.insert(id);
                if let Some(pr) = t.progress.get_mut(&id) {
                    pr.is_learner = true;
                }
            } else if t.learners.insert(id) {
                t.insert_progress(id, next, true);
            }
        }
        ConfChangeType::RemoveNode => {
            t.voters.remove(&id);
            t.learners.remove(&id);
            t.progress.remove(&id);
        }
    }
}
