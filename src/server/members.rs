//! Runtime membership (etcd's Cluster service) and leader transfer.
//!
//! A change is decided by the leader: `MemberAdd`, `MemberRemove` and
//! `MemberPromote` become Raft conf changes, `MemberUpdate` a normal entry.
//! A follower forwards the call to the leader's client port (marked
//! `FORWARDED_HEADER`; the receiver never forwards again), so the checks that
//! need the leader's view — which peers it hears from, how far a learner has
//! caught up — are made where that view is, as etcd does for promotion.
//!
//! On the leader the node loop takes one conf change at a time
//! (`node::Node::propose_queued_conf_changes`): it validates the change
//! against the membership as applied — every earlier conf change is applied
//! then, since Raft refuses a second one while one is pending, so the check
//! is exact for the log position the change gets — then proposes it, and
//! answers once the change is applied on this member. The answer lists the
//! members after the change.
//!
//! Checks, in etcd 3.4's order and words (`check_conf_change`):
//! - add: peer URLs valid; a voter needs a quorum of started voters counting
//!   the new one (a 1-member cluster may add its second); every voter
//!   connected for `HEALTH_INTERVAL` (etcd's 5 s; a failed send breaks the
//!   connection at once) else `unhealthy cluster`; then, as etcd's apply
//!   does, the new id unused (ids hash the URLs and the second, so the same
//!   URLs twice within a second are `member ID already exist`), the peer
//!   URLs unused, at most one learner;
//! - remove: a member; removing a voter needs a quorum of started voters
//!   among the rest and, if the removed member is connected, a quorum of
//!   connected voters after it;
//! - promote: a learner the leader tracks within 90 % of its log (`… in sync
//!   with leader`), a quorum of started voters counting it, a member
//!   (`member not found`), a learner (`can only promote a learner member`).
//! "Started" is etcd's: the member published its name.
//!
//! Removal: a member that applies its own removal stops serving and
//! `process::run` returns; its data refuses to start again
//! (`StartError::Removed`). Peers refuse a removed member's messages
//! (`PeerDirectory`), which stops one that missed its removal.
//!
//! Learners answer only serializable reads and Status (`refuse_learner`).
//!
//! Tests: unit tests below, `src/server/tests.rs` (membership section), the
//! integration tests in `tests/` (real binary against etcd 3.4), the
//! simulation's `churn` scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairnpb::MemberRecord;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use cairn_proto::raftpb::PeerMember;
use cairn_runtime::transport::PeerDirectory;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::{Caller, Command, Server, ServerError, Shared};

/// gRPC metadata marking a Cluster call forwarded by a follower: the
/// receiver answers it or fails with `not leader`, never forwards it.
pub const FORWARDED_HEADER: &str = "cairn-member-forwarded";

/// etcd: a learner may be promoted once its log reaches this share of the leader's.
const LEARNER_READY_PERCENT: f64 = 0.9;
/// etcd's `HealthInterval`: a peer counts as connected for membership
/// checks once heard from without a break for this long.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// etcd allows one learner at a time.
pub(super) const MAX_LEARNERS: usize = 1;

/// A membership change as the leader's node loop takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberChange {
    /// A new member with these peer URLs (its id is chosen by the leader).
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Remove {
        id: u64,
    },
    Promote {
        id: u64,
    },
}

/// What the leader knows of its peers when it checks a change.
pub(super) struct PeerHealth {
    /// Voters and learners heard from recently (the leader itself included).
    pub active: BTreeSet<u64>,
    /// Raft's matched index per member (the leader's own is its last index).
    pub matched: BTreeMap<u64, u64>,
    pub leader: u64,
}

fn is_started(m: &MemberRecord) -> bool {
    !m.name.is_empty()
}

/// etcd's `IsReadyToAddVotingMember`: a quorum of started voters once the
/// new voter counts (which has not started); a 1-member cluster may always
/// add its second member.
fn ready_to_add_voter(members: &BTreeMap<u64, MemberRecord>) -> bool {
    let voters: Vec<&MemberRecord> = members.values().filter(|m| !m.is_learner).collect();
    let started = voters.iter().filter(|m| is_started(m)).count();
    let count = voters.len() + 1;
    if started == 1 && count == 2 {
        return true;
    }
    started >= count / 2 + 1
}

/// etcd's `IsReadyToPromoteMember`: as adding, with the learner counted as
/// the new voter (it has started if it published).
fn ready_to_promote(members: &BTreeMap<u64, MemberRecord>, id: u64) -> bool {
    let voters: Vec<&MemberRecord> = members.values().filter(|m| !m.is_learner).collect();
    let mut started = voters.iter().filter(|m| is_started(m)).count();
    if members.get(&id).is_some_and(is_started) {
        started += 1;
    }
    let count = voters.len() + 1;
    if started == 1 && count == 2 {
        return true;
    }
    started >= count / 2 + 1
}

/// etcd's `IsReadyToRemoveVotingMember`: a quorum of started voters among
/// the voters left.
fn ready_to_remove_voter(members: &BTreeMap<u64, MemberRecord>, id: u64) -> bool {
    let rest: Vec<&MemberRecord> = members
        .values()
        .filter(|m| !m.is_learner && m.id != id)
        .collect();
    let started = rest.iter().filter(|m| is_started(m)).count();
    started >= rest.len() / 2 + 1
}

/// A peer URL as etcd accepts one: `http(s)://host:port`.
pub(crate) fn valid_peer_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Whether another member than `except` already has one of `urls`.
fn peer_url_taken(members: &BTreeMap<u64, MemberRecord>, urls: &[String], except: u64) -> bool {
    members
        .values()
        .filter(|m| m.id != except)
        .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
}

/// The checks of a change against the applied membership and the leader's
/// view of its peers; etcd's error for the first that fails, in etcd's
/// order (its pre-proposal checks, then those it makes when applying).
/// `new_id` is the id an added member would get.
pub(super) fn check_conf_change(
    change: &MemberChange,
    new_id: u64,
    members: &BTreeMap<u64, MemberRecord>,
    removed: &BTreeSet<u64>,
    health: &PeerHealth,
) -> Result<(), ServerError> {
    let voters: Vec<u64> = members
        .values()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let all_voters_active = voters.iter().all(|id| health.active.contains(id));
    match change {
        MemberChange::Add { peer_urls, learner } => {
            if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_peer_url(u)) {
                return Err(ServerError::MemberBadUrls);
            }
            if !*learner && !ready_to_add_voter(members) {
                return Err(ServerError::NotEnoughStartedMembers);
            }
            if !all_voters_active {
                return Err(ServerError::Unhealthy);
            }
            if members.contains_key(&new_id) || removed.contains(&new_id) {
                return Err(ServerError::MemberExists);
            }
            if peer_url_taken(members, peer_urls, 0) {
                return Err(ServerError::PeerUrlExists);
            }
            let learners = members.values().filter(|m| m.is_learner).count();
            if *learner && learners >= MAX_LEARNERS {
                return Err(ServerError::TooManyLearners);
            }
            Ok(())
        }
        MemberChange::Remove { id } => {
            let Some(m) = members.get(id) else {
                return Err(ServerError::MemberNotFound);
            };
            if m.is_learner {
                return Ok(()); // a learner is in no quorum
            }
            if !ready_to_remove_voter(members, *id) {
                return Err(ServerError::NotEnoughStartedMembers);
            }
            // A member that is down is safe to remove: it is not in the active quorum.
            if *id != health.leader && !health.active.contains(id) {
                return Ok(());
            }
            let active = voters.iter().filter(|v| health.active.contains(v)).count();
            if active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
                return Err(ServerError::Unhealthy);
            }
            Ok(())
        }
        MemberChange::Promote { id } => {
            // etcd asks the leader's progress first: a member it tracks must
            // be within 90 % of the leader's log.
            let leader_match = health.matched.get(&health.leader).copied().unwrap_or(0);
            if let Some(&learner_match) = health.matched.get(id) {
                if (learner_match as f64) < (leader_match as f64) * LEARNER_READY_PERCENT {
                    return Err(ServerError::LearnerNotReady);
                }
            }
            let Some(m) = members.get(id) else {
                return Err(ServerError::MemberNotFound);
            };
            if !m.is_learner {
                return Err(ServerError::MemberNotLearner);
            }
            if !ready_to_promote(members, *id) {
                return Err(ServerError::NotEnoughStartedMembers);
            }
            Ok(())
        }
    }
}

/// The id of a member added with `peer_urls`, as etcd makes one: a hash of
/// its sorted URLs, the cluster and the time in whole seconds — the same
/// URLs added twice within a second get the same id (`member ID already
/// exist`), added again later a new one. Never 0.
pub(super) fn new_member_id(peer_urls: &[String], cluster_id: u64, now_secs: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = std::hash::DefaultHasher::new();
    (&urls, cluster_id, now_secs).hash(&mut h);
    h.finish().max(1)
}

fn to_member(m: &MemberRecord) -> Member {
    Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// The peer service's view of the membership (`process::run` hands it to
/// the peer listener).
pub(crate) struct Directory(pub Arc<Shared>);

impl PeerDirectory for Directory {
    fn is_removed(&self, id: u64) -> bool {
        self.0.removed().contains(&id)
    }

    fn members(&self) -> Vec<PeerMember> {
        self.0
            .members()
            .values()
            .map(|m| PeerMember {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect()
    }
}

/// The follower's channel to the leader's client port, reused between calls.
#[derive(Default)]
pub(super) struct LeaderChannel(Mutex<Option<(String, Channel)>>);

impl Server {
    /// The members as this member has applied them.
    pub(super) fn member_list_now(&self) -> Vec<Member> {
        self.shared.members().values().map(to_member).collect()
    }

    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse, ServerError> {
        self.refuse_learner()?;
        if linearizable {
            self.linearizable_barrier().await?;
        }
        Ok(MemberListResponse {
            header: Some(self.header(self.current_revision())),
            members: self.member_list_now(),
        })
    }

    /// Whether this member is a learner now (Raft's view).
    pub fn status_is_learner(&self) -> bool {
        self.shared.raft.is_learner.load(Ordering::SeqCst)
    }

    /// The peer service's view of this member's membership.
    pub fn peer_directory(&self) -> Arc<dyn PeerDirectory> {
        Arc::new(Directory(self.shared.clone()))
    }

    /// etcd answers a learner's clients only for serializable reads and
    /// Status; everything else is refused.
    pub fn refuse_learner(&self) -> Result<(), ServerError> {
        if self.shared.raft.is_learner.load(Ordering::SeqCst) {
            return Err(ServerError::NotSupportedForLearner);
        }
        Ok(())
    }

    fn is_leader(&self) -> bool {
        self.shared.raft.leader.load(Ordering::SeqCst) == self.shared.config.member_id
    }

    /// The leader's client URL, when another member leads.
    fn leader_client_url(&self) -> Result<String, ServerError> {
        let leader = self.shared.raft.leader.load(Ordering::SeqCst);
        if leader == 0 {
            return Err(ServerError::NoLeader);
        }
        self.shared
            .members()
            .get(&leader)
            .and_then(|m| m.client_urls.first().cloned())
            .ok_or(ServerError::NoLeader)
    }

    fn leader_cluster_client(&self) -> Result<ClusterClient<Channel>, ServerError> {
        let url = self.leader_client_url()?;
        let mut cached = self.member_forward.0.lock().expect("leader channel lock");
        if let Some((u, ch)) = cached.as_ref() {
            if *u == url {
                return Ok(ClusterClient::new(ch.clone()));
            }
        }
        // TLS for an `https://` client URL, with the client-port settings.
        let channel = self
            .shared
            .config
            .client_dialer
            .lazy_channel(&url, Duration::from_secs(1))
            .map_err(|_| ServerError::NoLeader)?;
        *cached = Some((url, channel.clone()));
        Ok(ClusterClient::new(channel))
    }

    /// Runs a Cluster call on the leader: here if this member leads, else
    /// forwarded once to the leader's client port. A call no leader took
    /// (`not leader`, `no leader`: nothing was proposed) is tried again
    /// until the request timeout, so a leader change does not fail it.
    async fn cluster_call_on_leader<Req, Resp, Fut, Local>(
        &self,
        who: &Caller,
        forwarded: bool,
        req: Req,
        local: impl Fn() -> Local,
        forward: impl Fn(ClusterClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, ServerError>
    where
        Req: Clone,
        Local: std::future::Future<Output = Result<Resp, ServerError>>,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.refuse_learner()?;
        let timeout = self.shared.config.request_timeout;
        let retry_after = self.shared.config.heartbeat_interval * 2;
        let started = self.shared.clock.now();
        loop {
            let result = if self.is_leader() {
                local().await
            } else if forwarded {
                Err(ServerError::NotLeader)
            } else {
                self.forward_to_leader(who, req.clone(), &forward, timeout)
                    .await
            };
            let elapsed = self.shared.clock.now().saturating_duration_since(started);
            match result {
                Err(ServerError::NotLeader | ServerError::NoLeader)
                    if !forwarded && elapsed + retry_after < timeout =>
                {
                    self.shared.clock.sleep(retry_after).await;
                }
                other => return other,
            }
        }
    }

    async fn forward_to_leader<Req, Resp, Fut>(
        &self,
        who: &Caller,
        req: Req,
        forward: &impl Fn(ClusterClient<Channel>, tonic::Request<Req>) -> Fut,
        timeout: Duration,
    ) -> Result<Resp, ServerError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let client = self.leader_cluster_client()?;
        let mut request = tonic::Request::new(req);
        request.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        // The leader checks the caller's rights again with its token.
        if let Some(token) = who.token.as_deref().and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert("token", token);
        }
        request.set_timeout(timeout);
        match cairn_runtime::timer::timeout(timeout, forward(client, request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(error_of_status(&status)),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Hands a change to the node loop and waits for it to apply here.
    async fn change_members(&self, change: MemberChange) -> Result<u64, ServerError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::ConfChange { change, done }).await?;
        self.wait(rx).await?
    }

    pub async fn member_add(
        &self,
        req: MemberAddRequest,
        forwarded: bool,
    ) -> Result<MemberAddResponse, ServerError> {
        self.member_add_as(&Caller::default(), req, forwarded).await
    }

    pub async fn member_add_as(
        &self,
        who: &Caller,
        req: MemberAddRequest,
        forwarded: bool,
    ) -> Result<MemberAddResponse, ServerError> {
        let local = || async {
            let change = MemberChange::Add {
                peer_urls: req.peer_ur_ls.clone(),
                learner: req.is_learner,
            };
            let id = self.change_members(change).await?;
            let members = self.member_list_now();
            let member = members.iter().find(|m| m.id == id).cloned();
            Ok(MemberAddResponse {
                header: Some(self.header(self.current_revision())),
                member,
                members,
            })
        };
        self.cluster_call_on_leader(who, forwarded, req.clone(), local, |mut c, r| async move {
            c.member_add(r).await
        })
        .await
    }

    pub async fn member_remove(
        &self,
        req: MemberRemoveRequest,
        forwarded: bool,
    ) -> Result<MemberRemoveResponse, ServerError> {
        self.member_remove_as(&Caller::default(), req, forwarded)
            .await
    }

    pub async fn member_remove_as(
        &self,
        who: &Caller,
        req: MemberRemoveRequest,
        forwarded: bool,
    ) -> Result<MemberRemoveResponse, ServerError> {
        let local = || async {
            self.change_members(MemberChange::Remove { id: req.id })
                .await?;
            Ok(MemberRemoveResponse {
                header: Some(self.header(self.current_revision())),
                members: self.member_list_now(),
            })
        };
        self.cluster_call_on_leader(who, forwarded, req.clone(), local, |mut c, r| async move {
            c.member_remove(r).await
        })
        .await
    }

    pub async fn member_promote(
        &self,
        req: MemberPromoteRequest,
        forwarded: bool,
    ) -> Result<MemberPromoteResponse, ServerError> {
        self.member_promote_as(&Caller::default(), req, forwarded)
            .await
    }

    pub async fn member_promote_as(
        &self,
        who: &Caller,
        req: MemberPromoteRequest,
        forwarded: bool,
    ) -> Result<MemberPromoteResponse, ServerError> {
        let local = || async {
            self.change_members(MemberChange::Promote { id: req.id })
                .await?;
            Ok(MemberPromoteResponse {
                header: Some(self.header(self.current_revision())),
                members: self.member_list_now(),
            })
        };
        self.cluster_call_on_leader(who, forwarded, req.clone(), local, |mut c, r| async move {
            c.member_promote(r).await
        })
        .await
    }

    /// A member's new peer URLs: a normal entry, checked when applied.
    pub async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, ServerError> {
        self.refuse_learner()?;
        if req.peer_ur_ls.is_empty() || !req.peer_ur_ls.iter().all(|u| valid_peer_url(u)) {
            return Err(ServerError::MemberBadUrls);
        }
        if !self.shared.members().contains_key(&req.id) || self.shared.removed().contains(&req.id) {
            return Err(ServerError::MemberNotFound);
        }
        use cairn_proto::cairnpb::internal_request::Request;
        self.propose(Request::MemberUpdate(req)).await?;
        Ok(MemberUpdateResponse {
            header: Some(self.header(self.current_revision())),
            members: self.member_list_now(),
        })
    }

    /// etcd's MoveLeader: only the leader takes it; returns once `target`
    /// leads, or fails after the request timeout.
    pub async fn move_leader(&self, target: u64) -> Result<(), ServerError> {
        self.refuse_learner()?;
        if !self.is_leader() {
            return Err(ServerError::NotLeader);
        }
        let is_voter = self
            .shared
            .members()
            .get(&target)
            .is_some_and(|m| !m.is_learner);
        if !is_voter {
            return Err(ServerError::BadLeaderTransferee);
        }
        if target == self.shared.config.member_id {
            return Ok(());
        }
        let deadline = self.shared.config.request_timeout;
        let wait = async {
            let interval = self.shared.config.heartbeat_interval;
            loop {
                let (done, rx) = oneshot::channel();
                self.send(Command::TransferLeader { to: target, done })
                    .await?;
                rx.await.map_err(|_| ServerError::Stopped)??;
                // Raft gives a transfer an election timeout; ask again after it.
                let patience = interval * self.shared.config.election_ticks as u32;
                let mut waited = Duration::ZERO;
                while waited < patience {
                    if self.shared.raft.leader.load(Ordering::SeqCst) == target {
                        return Ok(());
                    }
                    if self.is_stopped() {
                        return Err(ServerError::Stopped);
                    }
                    self.shared.clock.sleep(interval / 2).await;
                    waited += interval / 2;
                }
            }
        };
        match cairn_runtime::timer::timeout(deadline, wait).await {
            Ok(r) => r,
            Err(_) => Err(ServerError::LeaderTransferTimeout),
        }
    }
}

impl Server {
    /// Stops this member cleanly: a leader first hands leadership to its
    /// most up-to-date connected voter (as etcd does on shutdown; bounded by
    /// `SHUTDOWN_HANDOFF_TIMEOUT`), then the node loop stops and storage is
    /// synced.
    pub async fn stop_gracefully(&self) {
        if self.is_leader() {
            let handoff = async {
                // No target yet (just elected, peers not heard from): ask
                // again each heartbeat, within the hand-off timeout.
                let target = loop {
                    if let Some(t) = self.transfer_to_best().await {
                        break t;
                    }
                    if !self.is_leader() {
                        return Some(());
                    }
                    self.shared
                        .clock
                        .sleep(self.shared.config.heartbeat_interval)
                        .await;
                };
                tracing::info!(to = %cairn_runtime::NodeId(target), "handing leadership over before stopping");
                let interval = self.shared.config.heartbeat_interval;
                while self.shared.raft.leader.load(Ordering::SeqCst) != target {
                    self.shared.clock.sleep(interval / 2).await;
                }
                Some(())
            };
            if cairn_runtime::timer::timeout(SHUTDOWN_HANDOFF_TIMEOUT, handoff)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                tracing::warn!("leadership not handed over before stopping");
            }
        }
        self.shutdown();
        self.stopped().await;
        if let Err(e) = self.shared.storage.sync().await {
            tracing::error!(error = %e, "storage sync at shutdown failed");
        }
    }
}

impl Server {
    /// On the leader: starts a transfer to its best voter (see
    /// `Node::transfer_to_best`) and returns the target.
    pub(crate) async fn transfer_to_best(&self) -> Option<u64> {
        let (done, rx) = oneshot::channel();
        self.send(Command::TransferToBest { done }).await.ok()?;
        rx.await.ok()?
    }
}

/// How long a stopping leader waits for its hand-off.
pub const SHUTDOWN_HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// The server error a forwarded call's status carries (by etcd's message).
fn error_of_status(status: &tonic::Status) -> ServerError {
    let all = [
        ServerError::MemberExists,
        ServerError::PeerUrlExists,
        ServerError::MemberNotFound,
        ServerError::MemberBadUrls,
        ServerError::MemberNotLearner,
        ServerError::LearnerNotReady,
        ServerError::TooManyLearners,
        ServerError::NotEnoughStartedMembers,
        ServerError::Unhealthy,
        ServerError::NotLeader,
        ServerError::NoLeader,
        ServerError::LeaderChanged,
        ServerError::Timeout,
        ServerError::Stopped,
        ServerError::TooManyRequests,
        ServerError::NotSupportedForLearner,
    ];
    all.into_iter()
        .find(|e| e.to_string() == status.message())
        .unwrap_or(match status.code() {
            tonic::Code::DeadlineExceeded => ServerError::Timeout,
            _ => ServerError::LeaderChanged,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, url: &str, learner: bool) -> MemberRecord {
        MemberRecord {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
            client_urls: vec![],
            is_learner: learner,
        }
    }

    fn cluster(ms: &[MemberRecord]) -> BTreeMap<u64, MemberRecord> {
        ms.iter().map(|m| (m.id, m.clone())).collect()
    }

    fn healthy(ids: &[u64], leader: u64) -> PeerHealth {
        PeerHealth {
            active: ids.iter().copied().collect(),
            matched: ids.iter().map(|&i| (i, 100)).collect(),
            leader,
        }
    }

    fn add(url: &str, learner: bool) -> MemberChange {
        MemberChange::Add {
            peer_urls: vec![url.into()],
            learner,
        }
    }

    /// `check_conf_change` with a fresh id for an added member.
    fn check_conf_change(
        change: &MemberChange,
        members: &BTreeMap<u64, MemberRecord>,
        removed: &BTreeSet<u64>,
        health: &PeerHealth,
    ) -> Result<(), ServerError> {
        super::check_conf_change(change, 777, members, removed, health)
    }

    #[test]
    fn adding_a_voter_needs_a_quorum_of_started_voters_counting_the_new_one() {
        let one = cluster(&[member(1, "a", "http://a:1", false)]);
        let h = healthy(&[1], 1);
        let none = BTreeSet::new();
        // 1 → 2: always allowed (etcd's restore case).
        assert_eq!(
            check_conf_change(&add("http://b:1", false), &one, &none, &h),
            Ok(())
        );
        // 2 members, the second not started: a third voter would leave 1 of 3 started.
        let two = cluster(&[
            member(1, "a", "http://a:1", false),
            member(2, "", "http://b:1", false),
        ]);
        let h2 = healthy(&[1, 2], 1);
        assert_eq!(
            check_conf_change(&add("http://c:1", false), &two, &none, &h2),
            Err(ServerError::NotEnoughStartedMembers)
        );
        // A learner is not a voter: allowed.
        assert_eq!(
            check_conf_change(&add("http://c:1", true), &two, &none, &h2),
            Ok(())
        );
    }

    #[test]
    fn a_peer_url_in_use_and_a_second_learner_are_refused_with_etcds_errors() {
        let ms = cluster(&[
            member(1, "a", "http://a:1", false),
            member(2, "b", "http://b:1", true),
        ]);
        let h = healthy(&[1, 2], 1);
        let none = BTreeSet::new();
        assert_eq!(
            check_conf_change(&add("http://b:1", false), &ms, &none, &h),
            Err(ServerError::PeerUrlExists)
        );
        assert_eq!(
            check_conf_change(&add("http://c:1", true), &ms, &none, &h),
            Err(ServerError::TooManyLearners)
        );
        assert_eq!(
            check_conf_change(&add("c:1", false), &ms, &none, &h),
            Err(ServerError::MemberBadUrls)
        );
    }

    #[test]
    fn promotion_needs_a_learner_in_sync_with_the_leader() {
        let ms = cluster(&[
            member(1, "a", "http://a:1", false),
            member(2, "b", "http://b:1", true),
        ]);
        let none = BTreeSet::new();
        let mut h = healthy(&[1, 2], 1);
        h.matched.insert(2, 50);
        let promote = |id| MemberChange::Promote { id };
        assert_eq!(
            check_conf_change(&promote(2), &ms, &none, &h),
            Err(ServerError::LearnerNotReady)
        );
        h.matched.insert(2, 95);
        assert_eq!(check_conf_change(&promote(2), &ms, &none, &h), Ok(()));
        assert_eq!(
            check_conf_change(&promote(1), &ms, &none, &h),
            Err(ServerError::MemberNotLearner)
        );
        assert_eq!(
            check_conf_change(&promote(9), &ms, &none, &h),
            Err(ServerError::MemberNotFound)
        );
    }

    #[test]
    fn removing_an_active_voter_must_leave_an_active_quorum_but_a_down_one_may_go() {
        let ms = cluster(&[
            member(1, "a", "http://a:1", false),
            member(2, "b", "http://b:1", false),
            member(3, "c", "http://c:1", false),
        ]);
        let none = BTreeSet::new();
        // 3 is down: removing 2 (active) would leave 1 active of 2.
        let h = healthy(&[1, 2], 1);
        assert_eq!(
            check_conf_change(&MemberChange::Remove { id: 2 }, &ms, &none, &h),
            Err(ServerError::Unhealthy)
        );
        // Removing the down member itself is fine.
        assert_eq!(
            check_conf_change(&MemberChange::Remove { id: 3 }, &ms, &none, &h),
            Ok(())
        );
        assert_eq!(
            check_conf_change(&MemberChange::Remove { id: 7 }, &ms, &none, &h),
            Err(ServerError::MemberNotFound)
        );
    }

    #[test]
    fn new_member_ids_repeat_within_a_second_only() {
        let urls = vec!["http://x:1".to_owned()];
        let first = new_member_id(&urls, 7, 1);
        assert_ne!(first, 0);
        assert_eq!(new_member_id(&urls, 7, 1), first, "same URLs, same second");
        assert_ne!(
            new_member_id(&urls, 7, 2),
            first,
            "a second later, a new id"
        );
        assert_ne!(
            new_member_id(&urls, 8, 1),
            first,
            "another cluster, another id"
        );
    }

    #[test]
    fn an_id_in_use_or_removed_is_refused_as_existing_before_the_url_check() {
        let ms = cluster(&[
            member(1, "a", "http://a:1", false),
            member(2, "b", "http://b:1", false),
        ]);
        let h = healthy(&[1, 2], 1);
        let removed = BTreeSet::from([9]);
        let change = add("http://b:1", false);
        assert_eq!(
            super::check_conf_change(&change, 2, &ms, &removed, &h),
            Err(ServerError::MemberExists)
        );
        assert_eq!(
            super::check_conf_change(&add("http://c:1", false), 9, &ms, &removed, &h),
            Err(ServerError::MemberExists)
        );
    }

    #[test]
    fn adding_even_a_learner_needs_every_voter_connected() {
        let ms = cluster(&[
            member(1, "a", "http://a:1", false),
            member(2, "b", "http://b:1", false),
        ]);
        let h = healthy(&[1], 1);
        let none = BTreeSet::new();
        assert_eq!(
            check_conf_change(&add("http://c:1", true), &ms, &none, &h),
            Err(ServerError::Unhealthy)
        );
    }

    #[test]
    fn peer_urls_must_be_http_host_and_port() {
        assert!(valid_peer_url("http://127.0.0.1:2380"));
        assert!(valid_peer_url("https://node-1.example:2380"));
        assert!(!valid_peer_url("127.0.0.1:2380"));
        assert!(!valid_peer_url("http://127.0.0.1"));
        assert!(!valid_peer_url("http://:2380"));
    }
}
