//! What only the leader does with leases: renewals, each batch after one
//! leadership confirmation; time-to-live from its primary lessor; and the
//! node loop's duties — `promote` when the leader has applied its term's
//! first entry, `demote` when leadership is lost, and on each tick
//! `due_proposals`: revokes of expired leases (bounded per tick; a lease is
//! not proposed again while its revoke may be in flight) and due checkpoints.
//!
//! Tests: `src/server/tests.rs` (failover, expiry, checkpoints).

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest, LeaseCheckpoints};
use cairn_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

use super::super::{Server, ServerError, Shared};
use crate::lease::{LeaseError, LeaseId, RenewOutcome, MAX_CHECKPOINT_BATCH, REVOKE_RATE_PER_SEC};

/// One lease of a batch renewed on the leader.
pub(super) enum Renewal {
    /// Renewed: expires this many seconds from now.
    Ttl(i64),
    /// No such lease.
    NotFound,
    /// Expired, its revoke not yet applied: ask again.
    Retry,
}

impl Server {
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
    pub(super) async fn renew_local(&self, id: i64) -> Result<Option<i64>, ServerError> {
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
    /// Both callers run it under the request deadline, so the barrier arms
    /// no timer of its own.
    pub(super) async fn renew_local_batch(
        &self,
        ids: &[i64],
    ) -> Result<Option<Vec<Renewal>>, ServerError> {
        let me = self.shared.config.member_id;
        let term = || {
            self.shared
                .raft
                .term
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let term_before = term();
        match self.linearizable_barrier_untimed().await {
            Ok(()) => {}
            Err(ServerError::NoLeader | ServerError::LeaderChanged) => return Ok(None),
            Err(e) => return Err(e),
        }
        if self.leader() != Some(me) || term() != term_before {
            return Ok(None);
        }
        let checkpointed: Vec<LeaseCheckpoint> = {
            let lessor = self.shared.lessor();
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
        let mut lessor = self.shared.lessor_mut();
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

    pub(super) async fn time_to_live_local(
        &self,
        req: &LeaseTimeToLiveRequest,
    ) -> Result<Option<LeaseTimeToLiveResponse>, ServerError> {
        self.wait_applied_to_commit().await?;
        let lessor = self.shared.lessor();
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
}

/// The lessor becomes primary: called when the leader applies the first
/// entry of its term. Every lease gets its remaining TTL plus the election
/// timeout from now.
pub(in crate::server) fn promote(shared: &Shared) {
    let mut lessor = shared.lessor_mut();
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
pub(in crate::server) fn demote(shared: &Shared) {
    let mut lessor = shared.lessor_mut();
    if lessor.is_primary() {
        lessor.demote();
        tracing::info!("lessor demoted");
    }
}

/// What the primary proposes on a tick: a revoke per expired lease (at most
/// etcd's revoke rate, spread over the ticks of a second) and one entry of
/// due checkpoints.
pub(in crate::server) fn due_proposals(shared: &Shared) -> Vec<InternalRequest> {
    let mut lessor = shared.lessor_mut();
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
        caller: None,
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
