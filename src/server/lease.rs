//! Lease requests of the `Server` handle, and the node loop's lease duties.
//!
//! - Grant and revoke are proposed through Raft like any write (a grant
//!   without an id gets one here, from the member's seeded generator).
//! - Keep-alive and time-to-live are answered by the leader only, from its
//!   primary lessor (member-local expiries). A follower forwards them to the
//!   leader's published client URL over the Lease gRPC service, marking the
//!   call as forwarded so it is never forwarded again: keep-alives on one
//!   long-lived stream, renewed by the leader in batches with one leadership
//!   confirmation each (`lease_forward.rs`), time-to-live as a call each.
//!   Everything forwarded has a deadline (in simulation a partition is
//!   unbounded latency). Without a leader for the whole request timeout:
//!   `etcdserver: no leader`.
//! - A keep-alive of a lease whose remaining TTL was checkpointed first
//!   clears the checkpoint through Raft (as etcd), so a later leader does not
//!   restart it from a stale, shorter remaining TTL.
//! - The node loop: `promote` when the leader has applied its term's first
//!   entry, `demote` when leadership is lost, and on each tick
//!   `due_proposals` — revokes of expired leases (bounded per tick; a lease
//!   is not proposed again while its revoke may be in flight) and due
//!   checkpoints.
//!
//! Tests: `src/server/tests.rs` (failover, restart, expiry),
//! `tests/lease_interop.rs` (etcdctl against etcd 3.4 and cairn).

use std::sync::Mutex;
use std::time::Duration;

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest, LeaseCheckpoints};
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tonic::transport::{Channel, Endpoint};

use super::lease_forward::Forwarder;
use super::state::Applied;
use super::{unreachable_apply, Server, ServerConfig, ServerError, Shared};
use crate::lease::{
    min_lease_ttl_secs, IdGenerator, LeaseError, LeaseId, LessorConfig, RenewOutcome,
    MAX_CHECKPOINT_BATCH, REVOKE_RATE_PER_SEC,
};

/// gRPC metadata marking a keep-alive or time-to-live forwarded by a
/// follower: the receiver answers it itself or fails, never forwards it.
pub const FORWARDED_HEADER: &str = "cairn-lease-forwarded";

/// Pause between attempts while waiting for a leader or a promotion.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl ServerConfig {
    /// The lessor's settings: etcd's minimum TTL from the election timeout,
    /// the checkpoint interval, and the request timeout as the retry
    /// interval of revokes (as etcd's ExpiredLeasesRetryInterval).
    pub fn lessor_config(&self) -> LessorConfig {
        LessorConfig {
            min_ttl_secs: min_lease_ttl_secs(self.election_ticks, self.heartbeat_interval),
            checkpoint_interval: self.lease_checkpoint_interval,
            expired_retry_interval: self.request_timeout,
        }
    }

    /// The election timeout (what a new leader adds to every lease).
    pub fn election_timeout(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.election_ticks as u32)
    }
}

/// Lease state of the `Server` handle: the id generator and the channel to
/// the leader's client port for forwarded calls.
pub(super) struct Frontend {
    ids: IdGenerator,
    /// The leader's client URL and a channel to it, reused between calls.
    leader_channel: Mutex<Option<(String, Channel)>>,
    /// Keep-alives of this member's clients, on their way to the leader.
    forwarder: Forwarder,
}

impl Frontend {
    pub(super) fn new(config: &ServerConfig) -> Frontend {
        Frontend {
            ids: IdGenerator::new(config.member_id, config.rng_seed),
            leader_channel: Mutex::new(None),
            forwarder: Forwarder::new(config.request_timeout / 2),
        }
    }

    fn client(&self, url: &str) -> Option<LeaseClient<Channel>> {
        let mut cached = self.leader_channel.lock().expect("channel lock poisoned");
        if let Some((u, ch)) = cached.as_ref() {
            if u == url {
                return Some(LeaseClient::new(ch.clone()));
            }
        }
        let ch = lazy_channel(url, Duration::from_secs(1))?;
        *cached = Some((url.to_owned(), ch.clone()));
        Some(LeaseClient::new(ch))
    }

    /// Drops a channel that failed (it may lead to a dead incarnation).
    fn forget(&self, url: &str) {
        let mut cached = self.leader_channel.lock().expect("channel lock poisoned");
        if cached.as_ref().is_some_and(|(u, _)| u == url) {
            *cached = None;
        }
    }
}

/// One lease of a batch renewed on the leader.
enum Renewal {
    /// Renewed: expires this many seconds from now.
    Ttl(i64),
    /// No such lease.
    NotFound,
    /// Expired, its revoke not yet applied: ask again.
    Retry,
}

/// Where a leader-only lease request is served.
enum Route {
    Local,
    Forward(String),
    Wait,
}

/// A channel to a member's client URL that connects on first use; `None`
/// for a URL that is not one.
pub(super) fn lazy_channel(url: &str, connect_timeout: Duration) -> Option<Channel> {
    Some(
        Endpoint::from_shared(url.to_owned())
            .ok()?
            .connect_timeout(connect_timeout)
            .connect_lazy(),
    )
}

/// Marks a call as forwarded by a follower (`FORWARDED_HEADER`).
pub(super) fn mark_forwarded<T>(req: &mut tonic::Request<T>) {
    req.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}

impl Server {
    // ---- through Raft ----

    pub async fn lease_grant(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        if req.id == 0 {
            let lessor = self.shared.lessor.read().expect("lessor lock poisoned");
            let mut id = self.leases.ids.next();
            while lessor.contains(id) {
                id = self.leases.ids.next();
            }
            req.id = id.0;
        }
        match self.propose(Request::LeaseGrant(req)).await? {
            (Applied::LeaseGrant(mut resp), rev) => {
                resp.header = Some(self.header(rev));
                Ok(resp)
            }
            other => unreachable_apply("lease grant", other),
        }
    }

    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        match self.propose(Request::LeaseRevoke(req)).await? {
            (Applied::LeaseRevoke(mut resp), rev) => {
                resp.header = Some(self.header(rev));
                Ok(resp)
            }
            other => unreachable_apply("lease revoke", other),
        }
    }

    // ---- local ----

    /// Every lease this member knows, soonest expiry first (etcd serves it locally).
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, ServerError> {
        let leases = self
            .shared
            .lessor
            .read()
            .expect("lessor lock poisoned")
            .leases()
            .into_iter()
            .map(|id| LeaseStatus { id: id.0 })
            .collect();
        Ok(LeaseLeasesResponse {
            header: Some(self.header(self.current_revision())),
            leases,
        })
    }

    // ---- on the leader ----

    /// One keep-alive: renews the lease on the leader and answers with its
    /// TTL, or TTL 0 if it does not exist (as etcd). The header is taken
    /// before renewing, so its revision is never after a revoke the renewal
    /// did not see.
    pub async fn lease_keep_alive(
        &self,
        id: i64,
        forwarded: bool,
    ) -> Result<LeaseKeepAliveResponse, ServerError> {
        let header = self.header(self.current_revision());
        let ttl = match self.lease_renew(id, forwarded).await {
            Ok(ttl) => ttl,
            Err(ServerError::Lease(LeaseError::NotFound)) => 0,
            Err(e) => return Err(e),
        };
        Ok(LeaseKeepAliveResponse {
            header: Some(header),
            id,
            ttl,
        })
    }

    /// Renews a lease on the leader; returns its TTL.
    pub async fn lease_renew(&self, id: i64, forwarded: bool) -> Result<i64, ServerError> {
        self.within_request_timeout(async {
            loop {
                let done = match self.route(forwarded)? {
                    Route::Local => self.renew_local(id).await?,
                    Route::Forward(url) => self.forward_renew(&url, id).await?,
                    Route::Wait => None,
                };
                if let Some(ttl) = done {
                    return Ok(ttl);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        })
        .await
    }

    /// etcd's TimeToLive, answered by the leader: remaining TTL (-1 when
    /// the lease does not exist), granted TTL and, if asked, attached keys.
    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        forwarded: bool,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let mut resp = self
            .within_request_timeout(async {
                loop {
                    let done = match self.route(forwarded)? {
                        Route::Local => self.time_to_live_local(&req).await?,
                        Route::Forward(url) => self.forward_time_to_live(&url, &req).await,
                        Route::Wait => None,
                    };
                    if let Some(resp) = done {
                        return Ok(resp);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            })
            .await?;
        resp.header = Some(self.header(self.current_revision()));
        Ok(resp)
    }

    fn route(&self, forwarded: bool) -> Result<Route, ServerError> {
        if self.is_stopped() {
            return Err(ServerError::Stopped);
        }
        let me = self.shared.config.member_id;
        match self.leader() {
            Some(l) if l == me => Ok(Route::Local),
            // Forwarded here, but this member is not the leader (any more):
            // the forwarding member retries with its own view.
            Some(_) if forwarded => Err(LeaseError::NotPrimary.into()),
            Some(l) => {
                let members = self.shared.members.read().expect("members lock poisoned");
                Ok(members
                    .get(&l)
                    .and_then(|m| m.client_urls.first())
                    .map_or(Route::Wait, |url| Route::Forward(url.clone())))
            }
            None => Ok(Route::Wait),
        }
    }

    async fn within_request_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ServerError>>,
    ) -> Result<T, ServerError> {
        match tokio::time::timeout(self.shared.config.request_timeout, fut).await {
            Ok(r) => r,
            Err(_) if self.leader().is_none() => Err(ServerError::NoLeader),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Waits until everything committed when called is applied here (the
    /// leader must have seen every grant and revoke before answering).
    async fn wait_applied_to_commit(&self) -> Result<(), ServerError> {
        let target = self
            .shared
            .raft
            .commit_index
            .load(std::sync::atomic::Ordering::SeqCst);
        self.shared
            .applied
            .wait_for(target)
            .await
            .map_err(|_| ServerError::Stopped)
    }

    /// Renews in this member's lessor; `None`: not possible yet (not yet
    /// primary, no longer leader, or expired and its revoke not yet
    /// applied), try again.
    async fn renew_local(&self, id: i64) -> Result<Option<i64>, ServerError> {
        match self.renew_local_batch(&[id]).await?.as_deref() {
            Some([Renewal::Ttl(ttl)]) => Ok(Some(*ttl)),
            Some([Renewal::NotFound]) => Err(LeaseError::NotFound.into()),
            _ => Ok(None),
        }
    }

    /// Renews every lease of `ids` in this member's lessor, in order; `None`:
    /// not possible now (not yet primary, or no longer leader), try again.
    ///
    /// Leadership is confirmed first, once for the whole batch, by a
    /// ReadIndex round (a quorum answers this term's heartbeat), which also
    /// waits for everything committed to be applied: a leader paused or cut
    /// off while another was elected still believes it is primary, and a
    /// renewal it answered would be lost — the new leader's lessor expires
    /// the lease on its own schedule (simulation lease3 seed 1055). etcd's
    /// LeaseRenew confirms leadership the same way since etcd-io/etcd#15247.
    async fn renew_local_batch(&self, ids: &[i64]) -> Result<Option<Vec<Renewal>>, ServerError> {
        let me = self.shared.config.member_id;
        let term = || {
            self.shared
                .raft
                .term
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let term_before = term();
        match self.linearizable_barrier().await {
            Ok(()) => {}
            Err(ServerError::NoLeader | ServerError::LeaderChanged) => return Ok(None),
            Err(e) => return Err(e),
        }
        if self.leader() != Some(me) || term() != term_before {
            return Ok(None);
        }
        let checkpointed: Vec<LeaseCheckpoint> = {
            let lessor = self.shared.lessor.read().expect("lessor lock poisoned");
            ids.iter()
                .filter(|&&id| lessor.has_checkpoint(LeaseId(id)))
                .map(|&id| LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                })
                .collect()
        };
        if !checkpointed.is_empty() {
            let clear = LeaseCheckpoints {
                checkpoints: checkpointed,
            };
            match self.propose(Request::LeaseCheckpoint(clear)).await {
                Ok(_) => {}
                Err(ServerError::NoLeader | ServerError::LeaderChanged) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let now = self.shared.clock.now();
        let mut lessor = self.shared.lessor.write().expect("lessor lock poisoned");
        let mut renewals = Vec::with_capacity(ids.len());
        for &id in ids {
            renewals.push(match lessor.renew(LeaseId(id), now) {
                Ok(RenewOutcome::Renewed { ttl_secs }) => Renewal::Ttl(ttl_secs),
                Ok(RenewOutcome::Expired) => Renewal::Retry,
                Err(LeaseError::NotFound) => Renewal::NotFound,
                Err(LeaseError::NotPrimary) => return Ok(None),
                Err(e) => return Err(e.into()),
            });
        }
        Ok(Some(renewals))
    }

    /// The keep-alives a follower forwarded on one stream and that queued up
    /// together (`lease_forward.rs`): answered in order, with one leadership
    /// confirmation for all. Fails (the follower asks again) unless this
    /// member is the leader.
    pub async fn lease_keep_alive_batch(
        &self,
        ids: &[i64],
    ) -> Result<Vec<LeaseKeepAliveResponse>, ServerError> {
        let header = self.header(self.current_revision());
        if !matches!(self.route(true)?, Route::Local) {
            return Err(LeaseError::NotPrimary.into());
        }
        let renewals = self
            .within_request_timeout(self.renew_local_batch(ids))
            .await?
            .ok_or(LeaseError::NotPrimary)?;
        let mut answers = Vec::with_capacity(ids.len());
        for (&id, renewal) in ids.iter().zip(renewals) {
            let ttl = match renewal {
                Renewal::Ttl(ttl) => ttl,
                Renewal::NotFound => 0,
                // Expired, its revoke not applied yet: wait for it as a
                // single keep-alive does (rare; the batch waits too).
                Renewal::Retry => self.lease_keep_alive(id, true).await?.ttl,
            };
            answers.push(LeaseKeepAliveResponse {
                header: Some(header.clone()),
                id,
                ttl,
            });
        }
        Ok(answers)
    }

    async fn time_to_live_local(
        &self,
        req: &LeaseTimeToLiveRequest,
    ) -> Result<Option<LeaseTimeToLiveResponse>, ServerError> {
        self.wait_applied_to_commit().await?;
        let lessor = self.shared.lessor.read().expect("lessor lock poisoned");
        if !lessor.is_primary() {
            return Ok(None);
        }
        let resp = match lessor.time_to_live(LeaseId(req.id), self.shared.clock.now()) {
            Some(t) => LeaseTimeToLiveResponse {
                header: None,
                id: req.id,
                ttl: t.remaining_secs,
                granted_ttl: t.granted_ttl_secs,
                keys: if req.keys { t.keys } else { Vec::new() },
            },
            None => LeaseTimeToLiveResponse {
                header: None,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Some(resp))
    }

    fn forward_timeout(&self) -> Duration {
        self.shared.config.request_timeout / 2
    }

    /// One keep-alive through the leader at `url` (on this member's one
    /// forwarding stream). `None`: failed, retry.
    async fn forward_renew(&self, url: &str, id: i64) -> Result<Option<i64>, ServerError> {
        let call = self.leases.forwarder.renew(url, id);
        match tokio::time::timeout(self.forward_timeout(), call).await {
            Ok(Some(ttl)) if ttl > 0 => Ok(Some(ttl)),
            Ok(Some(_)) => Err(LeaseError::NotFound.into()),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    async fn forward_time_to_live(
        &self,
        url: &str,
        req: &LeaseTimeToLiveRequest,
    ) -> Option<LeaseTimeToLiveResponse> {
        let mut client = self.leases.client(url)?;
        let mut request = tonic::Request::new(*req);
        mark_forwarded(&mut request);
        let call = client.lease_time_to_live(request);
        match tokio::time::timeout(self.forward_timeout(), call).await {
            Ok(Ok(resp)) => Some(resp.into_inner()),
            Ok(Err(_)) | Err(_) => {
                self.leases.forget(url);
                None
            }
        }
    }
}

// ---- the node loop's duties ----

/// The lessor becomes primary: called when the leader applies the first
/// entry of its term. Every lease gets its remaining TTL plus the election
/// timeout from now.
pub(super) fn promote(shared: &Shared) {
    let mut lessor = shared.lessor.write().expect("lessor lock poisoned");
    if lessor.is_primary() {
        return;
    }
    lessor.promote(shared.clock.now(), shared.config.election_timeout());
    tracing::info!(
        leases = lessor.len(),
        "lessor promoted: this member expires leases"
    );
}

/// Leadership lost: leases no longer expire here.
pub(super) fn demote(shared: &Shared) {
    let mut lessor = shared.lessor.write().expect("lessor lock poisoned");
    if lessor.is_primary() {
        lessor.demote();
        tracing::info!("lessor demoted");
    }
}

/// What the primary proposes on a tick: a revoke per expired lease (at most
/// etcd's revoke rate, spread over the ticks of a second) and one entry of
/// due checkpoints.
pub(super) fn due_proposals(shared: &Shared) -> Vec<InternalRequest> {
    let mut lessor = shared.lessor.write().expect("lessor lock poisoned");
    if !lessor.is_primary() {
        return Vec::new();
    }
    let now = shared.clock.now();
    let per_tick = (REVOKE_RATE_PER_SEC as u128 * shared.config.heartbeat_interval.as_millis()
        / 1000)
        .max(1) as usize;
    let expired = lessor.expired(now, per_tick);
    let checkpoints = lessor.due_checkpoints(now, MAX_CHECKPOINT_BATCH);
    drop(lessor);
    let request = |r: Request| InternalRequest {
        id: 0,
        member_id: shared.config.member_id,
        request: Some(r),
    };
    let mut out: Vec<InternalRequest> = expired
        .into_iter()
        .map(|id| request(Request::LeaseRevoke(LeaseRevokeRequest { id: id.0 })))
        .collect();
    if !checkpoints.is_empty() {
        let checkpoints = checkpoints
            .into_iter()
            .map(|(id, remaining)| LeaseCheckpoint {
                id: id.0,
                remaining_ttl: remaining,
            })
            .collect();
        out.push(request(Request::LeaseCheckpoint(LeaseCheckpoints {
            checkpoints,
        })));
    }
    out
}
