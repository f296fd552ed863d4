//! Space: the backend quota, the alarms it raises, and defragmentation.
//!
//! - **Quota** (`--quota-backend-bytes`, etcd's 2 GiB by default): before a
//!   Put, a Txn that puts, or a LeaseGrant is proposed, the member compares
//!   its storage size plus the request's cost (its size plus etcd's 256-byte
//!   overhead) with the quota. Over it, the request fails with `etcdserver:
//!   mvcc: database space exceeded` and the member raises the NOSPACE alarm
//!   for itself through Raft, as etcd does.
//! - **Alarms** are replicated state (`apply::Alarms`, stored under
//!   `alarm/` in the `server` column family, so snapshots carry them). While a
//!   NOSPACE alarm is active anywhere, every member's apply refuses Puts,
//!   Txns that put and LeaseGrants with the same error (etcd's capped
//!   applier); reads, deletes, compaction, defragmentation and the rest go
//!   on. `etcdctl alarm disarm` clears them once space is back.
//! - **Defragment** asks the storage to reclaim the space of deleted data
//!   (`Storage::reclaim_space`: RocksDB compacts every column family on a
//!   thread of its own), so unlike etcd's it does not block the member:
//!   reads and writes go on.
//!
//! Tests: `src/server/tests.rs` (quota section), `tests/quota.rs` (the real
//! binary on cairn and etcd 3.4).

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    DefragmentResponse,
};

use super::apply::Applied;
use super::{Server, ServerError};

/// etcd's per-request overhead in its quota cost.
const REQUEST_OVERHEAD: u64 = 256;

impl Server {
    /// The quota in bytes (0 in the config is etcd's 2 GiB).
    fn quota(&self) -> u64 {
        match self.shared.config.quota_backend_bytes {
            0 => 2 << 30,
            q => q,
        }
    }

    /// Refuses a request that adds `size` bytes when the storage would pass
    /// the quota, raising this member's NOSPACE alarm (once).
    pub(super) fn check_quota(&self, size: usize) -> Result<(), ServerError> {
        let cost = size as u64 + REQUEST_OVERHEAD;
        if self.db_size().saturating_add(cost) <= self.quota() {
            return Ok(());
        }
        let me = self.shared.config.member_id;
        let nospace = AlarmType::Nospace as i32;
        if !self.shared.alarms().contains(&(me, nospace)) {
            tracing::warn!(
                size = self.db_size(),
                quota = self.quota(),
                "the storage passed its quota: raising the NOSPACE alarm"
            );
            let server = self.clone();
            tokio::spawn(async move { server.raise_alarm(me, AlarmType::Nospace).await });
        }
        Err(ServerError::NoSpace)
    }

    /// etcd's Alarm RPC: list the active alarms (all, or one type), or raise
    /// / clear one through Raft.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, ServerError> {
        self.refuse_learner()?;
        let alarms = match req.action() {
            AlarmAction::Get => self
                .shared
                .alarms()
                .iter()
                .filter(|(_, a)| req.alarm == 0 || *a == req.alarm)
                .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
            AlarmAction::Activate | AlarmAction::Deactivate => {
                let (applied, _) = self.propose(Request::Alarm(req)).await?;
                match applied {
                    Applied::Alarm(resp) => resp.alarms,
                    other => panic!("an alarm was applied as {other:?}"),
                }
            }
        };
        Ok(AlarmResponse {
            header: Some(self.header(self.current_revision())),
            alarms,
        })
    }

    /// The active alarms as etcd words them in Status's `errors` and `/health`.
    pub fn alarm_names(&self) -> Vec<(u64, &'static str)> {
        self.shared
            .alarms()
            .iter()
            .map(|&(member, alarm)| {
                let name = AlarmType::try_from(alarm).map_or("UNKNOWN", |a| a.as_str_name());
                (member, name)
            })
            .collect()
    }

    /// etcd's Defragment: reclaims the space of compacted history, while the
    /// member keeps serving.
    pub async fn defragment(&self) -> Result<DefragmentResponse, ServerError> {
        self.refuse_learner()?;
        let before = self.db_size();
        self.shared
            .storage
            .reclaim_space()
            .await
            .map_err(|_| ServerError::Stopped)?;
        tracing::info!(before, after = self.db_size(), "defragmented");
        Ok(DefragmentResponse {
            header: Some(self.header(self.current_revision())),
        })
    }

    /// Raises `alarm` for `member` through Raft (a failure is logged: the
    /// next check raises it again).
    pub(super) async fn raise_alarm(&self, member: u64, alarm: AlarmType) {
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: member,
            alarm: alarm as i32,
        };
        if let Err(e) = self.propose(Request::Alarm(raise)).await {
            tracing::warn!(error = %e, alarm = alarm.as_str_name(), "could not raise the alarm");
        }
    }
}
