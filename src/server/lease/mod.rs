//! Leasing on the server side, in one folder (the lessor itself, a pure
//! state machine, is `crate::lease`):
//! - here: the lease requests of the `Server` handle, routed to the leader;
//! - `leader.rs`: what only the leader does — renewals (with a leadership
//!   confirmation), time-to-live, and the node loop's duties (promote,
//!   demote, expiries and checkpoints to propose);
//! - `forward.rs`: the forwarding protocol, both ends — a follower's
//!   keep-alives on one long-lived stream to the leader, and the leader
//!   serving such a stream in batches.
//!
//! - Grant and revoke are proposed through Raft like any write (a grant
//!   without an id gets one here, from the member's seeded generator).
//! - Keep-alive and time-to-live are answered by the leader only, from its
//!   primary lessor (member-local expiries). A follower forwards them to the
//!   leader's published client URL over the Lease gRPC service, marking the
//!   call as forwarded so it is never forwarded again. Everything forwarded
//!   has a deadline (in simulation a partition is unbounded latency). Without
//!   a leader for the whole request timeout: `etcdserver: no leader`.
//! - A keep-alive of a lease whose remaining TTL was checkpointed first
//!   clears the checkpoint through Raft (as etcd), so a later leader does not
//!   restart it from a stale, shorter remaining TTL.
//!
//! Tests: `src/server/tests.rs` (failover, restart, expiry, keep-alives
//! through a follower), `tests/lease_interop.rs` (etcdctl against etcd 3.4
//! and cairn).

mod forward;
mod leader;

use std::time::Duration;

use futures::future::BoxFuture;

use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};

use super::{Caller, Server, ServerConfig, ServerError};
use crate::lease::{min_lease_ttl_secs, IdGenerator, LeaseError, LessorConfig};
pub use forward::{serve_forwarded_keep_alives, FORWARDED_HEADER};
pub(super) use leader::{demote, due_proposals, promote};

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

/// Lease state of the `Server` handle: the id generator and the follower's
/// end of the forwarding protocol.
pub(super) struct Frontend {
    ids: IdGenerator,
    follower: forward::Follower,
}

impl Frontend {
    pub(super) fn new(config: &ServerConfig) -> Frontend {
        Frontend {
            ids: IdGenerator::new(config.member_id, config.rng_seed),
            follower: forward::Follower::new(
                config.request_timeout / 2,
                config.client_dialer.clone(),
            ),
        }
    }
}

/// Where a leader-only lease request is served.
enum Route {
    Local,
    Forward(String),
    Wait,
}

impl Server {
    // ---- through Raft ----

    pub async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        self.lease_grant_as(&Caller::default(), req).await
    }

    pub async fn lease_grant_as(
        &self,
        who: &Caller,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        self.require_user(who)?;
        if req.id == 0 {
            let lessor = self.shared.lessor();
            let mut id = self.leases.ids.next();
            while lessor.contains(id) {
                id = self.leases.ids.next();
            }
            req.id = id.0;
        }
        self.refuse_learner()?;
        self.check_quota(prost::Message::encoded_len(&req))?;
        self.propose_for_as(who, req).await
    }

    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        self.lease_revoke_as(&Caller::default(), req).await
    }

    pub async fn lease_revoke_as(
        &self,
        who: &Caller,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        self.require_user(who)?;
        self.propose_for_as(who, req).await
    }

    // ---- local ----

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, ServerError> {
        let leases = self
            .shared
            .lessor()
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
        self.lease_keep_alive_as(None, id, forwarded).await
    }

    /// `lease_keep_alive` for a client whose `token` (if any) goes with a
    /// renewal forwarded to the leader, which checks the client's rights
    /// again with it.
    pub async fn lease_keep_alive_as(
        &self,
        token: Option<&str>,
        id: i64,
        forwarded: bool,
    ) -> Result<LeaseKeepAliveResponse, ServerError> {
        let header = self.header(self.current_revision());
        let ttl = match self.lease_renew_as(token, id, forwarded).await {
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
        self.lease_renew_as(None, id, forwarded).await
    }

    async fn lease_renew_as(
        &self,
        token: Option<&str>,
        id: i64,
        forwarded: bool,
    ) -> Result<i64, ServerError> {
        self.on_leader(
            forwarded,
            || Box::pin(self.renew_local(id)),
            |url| Box::pin(async move { self.forward_renew(&url, id, token).await }),
        )
        .await
    }

    /// etcd's TimeToLive, answered by the leader: remaining TTL (-1 when
    /// the lease does not exist), granted TTL and, if asked, attached keys.
    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        forwarded: bool,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        self.lease_time_to_live_as(&Caller::default(), req, forwarded)
            .await
    }

    /// `lease_time_to_live` for a client: with keys, it needs read
    /// permission on every attached key (checked again if auth changed
    /// meanwhile); a forwarded call carries the client's token.
    pub async fn lease_time_to_live_as(
        &self,
        who: &Caller,
        req: LeaseTimeToLiveRequest,
        forwarded: bool,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        self.require_user(who)?;
        if req.keys {
            self.check_lease_reads(who, Some(&[req.id]))?;
        }
        let token = who.token.as_deref();
        let mut resp = self
            .on_leader(
                forwarded,
                || Box::pin(self.time_to_live_local(&req)),
                |url| {
                    Box::pin(async move { Ok(self.forward_time_to_live(&url, &req, token).await) })
                },
            )
            .await?;
        if req.keys {
            self.check_still_current(who)?;
        }
        resp.header = Some(self.header(self.current_revision()));
        Ok(resp)
    }

    /// Serves a leader-only request within the request timeout: `local` on
    /// the leader, `forward` to the leader's client URL on a follower, each
    /// answering `None` for "not now" (not yet primary, forward failed), in
    /// which case it is tried again — as is waiting for a leader.
    async fn on_leader<'a, T>(
        &'a self,
        forwarded: bool,
        mut local: impl FnMut() -> BoxFuture<'a, Result<Option<T>, ServerError>>,
        mut forward: impl FnMut(String) -> BoxFuture<'a, Result<Option<T>, ServerError>>,
    ) -> Result<T, ServerError> {
        self.within_request_timeout(async {
            loop {
                let done = match self.route(forwarded)? {
                    Route::Local => local().await?,
                    Route::Forward(url) => forward(url).await?,
                    Route::Wait => None,
                };
                if let Some(answer) = done {
                    return Ok(answer);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        })
        .await
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
                let members = self.shared.members();
                Ok(members
                    .get(&l)
                    .and_then(|m| m.client_urls.first())
                    .map_or(Route::Wait, |url| Route::Forward(url.clone())))
            }
            None => Ok(Route::Wait),
        }
    }
}
