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
//! - **Snapshot** streams a backup in etcd's format (`crate::backup`): a
//!   bbolt database made from a storage view of the applied state (writes
//!   go on meanwhile), produced a megabyte at a time off the async workers
//!   and sent in 32 KiB messages, then its SHA-256 — as etcd does.
//!
//! Tests: `src/server/tests.rs` (quota section), `tests/quota.rs` (the real
//! binary on cairn and etcd 3.4), `tests/snapshot.rs`.

use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    DefragmentResponse, SnapshotResponse,
};
use cairn_runtime::MonoTime;
use tokio::sync::mpsc;

use crate::backup::{etcd::Export, StreamHash, SNAPSHOT_CHUNK};

use super::apply::Applied;
use super::{Server, ServerError};

/// Bytes of the snapshot database produced per step off the async workers.
const SNAPSHOT_STEP: usize = 1 << 20;

/// Why a snapshot stream ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The member is stopping.
    Stopped,
    /// Producing the database failed (storage or internal error).
    Failed(String),
}

/// etcd's per-request overhead in its quota cost.
const REQUEST_OVERHEAD: u64 = 256;

/// How long a reading of the storage's size stands for the quota check
/// (reading it asks RocksDB for two properties of every state column family:
/// 6 % of a member's CPU under a put load when done for every request).
const QUOTA_SIZE_FRESH: Duration = Duration::from_millis(100);

/// The storage's size as the quota check sees it: the latest reading plus
/// the cost of every request admitted since (an over-estimate: so a request
/// is never admitted past the quota because the reading was stale).
#[derive(Debug, Default)]
pub(crate) struct QuotaSize {
    read_at: Option<MonoTime>,
    size: u64,
    admitted: u64,
}

impl Server {
    /// Refuses a request that adds `size` bytes when the storage would pass
    /// the quota, raising this member's NOSPACE alarm (once).
    pub(super) fn check_quota(&self, size: usize) -> Result<(), ServerError> {
        let cost = size as u64 + REQUEST_OVERHEAD;
        if self.quota_size_with(cost) <= self.quota_backend_bytes() {
            return Ok(());
        }
        let me = self.shared.config.member_id;
        let nospace = AlarmType::Nospace as i32;
        if !self.shared.alarms().contains(&(me, nospace)) {
            tracing::warn!(
                size = self.db_size(),
                quota = self.quota_backend_bytes(),
                "the storage passed its quota: raising the NOSPACE alarm"
            );
            let server = self.clone();
            tokio::spawn(async move { server.raise_alarm(me, AlarmType::Nospace).await });
        }
        Err(ServerError::NoSpace)
    }

    /// The storage's size after admitting `cost` more bytes, for the quota
    /// check: read again when the reading is older than `QUOTA_SIZE_FRESH`,
    /// or when what was admitted since is a sixteenth of the quota (a small
    /// quota is read at almost every request), else estimated.
    fn quota_size_with(&self, cost: u64) -> u64 {
        let now = self.shared.clock.now();
        let quota = self.quota_backend_bytes();
        let mut q = self.shared.quota_size();
        let stale = match q.read_at {
            None => true,
            Some(at) => {
                now.0.saturating_sub(at.0) >= QUOTA_SIZE_FRESH
                    || q.admitted.saturating_add(cost) >= (quota / 16).min(1 << 20)
            }
        };
        if stale {
            *q = QuotaSize {
                read_at: Some(now),
                size: self.db_size(),
                admitted: 0,
            };
        }
        q.admitted = q.admitted.saturating_add(cost);
        q.size.saturating_add(q.admitted)
    }

    /// Forgets the quota check's reading of the storage's size (after a
    /// defragment shrank it).
    pub(super) fn forget_quota_size(&self) {
        *self.shared.quota_size() = QuotaSize::default();
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
        self.forget_quota_size();
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

    /// etcd's Snapshot: a consistent backup of the applied state in etcd's
    /// format, streamed while the member keeps serving. The receiver gets
    /// the database in `SNAPSHOT_CHUNK` pieces (each with the bytes still to
    /// come), then a last message holding the database's SHA-256.
    pub async fn snapshot(
        &self,
    ) -> Result<mpsc::Receiver<Result<SnapshotResponse, SnapshotError>>, SnapshotError> {
        let (view, revision) = {
            let store = self.shared.mvcc();
            (self.shared.storage.snapshot(), store.current_revision().0)
        };
        let export = cairn_runtime::run_blocking(move || Export::new(view))
            .await
            .map_err(SnapshotError::Failed)?
            .map_err(|e| SnapshotError::Failed(e.to_string()))?;
        let total = export.size_bytes();
        tracing::info!(
            revision,
            bytes = total,
            "sending a database snapshot to a client"
        );
        let header = self.header(revision);
        let server = self.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(e) = server.stream_snapshot(export, header, &tx).await {
                tracing::warn!(error = ?e, "database snapshot not sent");
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }

    async fn stream_snapshot(
        &self,
        export: Export,
        header: cairn_proto::etcdserverpb::ResponseHeader,
        tx: &mpsc::Sender<Result<SnapshotResponse, SnapshotError>>,
    ) -> Result<(), SnapshotError> {
        let total = export.size_bytes();
        let (mut sent, mut hash, mut header) = (0u64, StreamHash::default(), Some(header));
        let mut export = Some(export);
        while let Some(mut ex) = export.take() {
            if self.is_stopped() {
                return Err(SnapshotError::Stopped);
            }
            let (ex, buf, more) = cairn_runtime::run_blocking(move || {
                let mut buf = Vec::with_capacity(SNAPSHOT_STEP + crate::backup::bbolt::PAGE_SIZE);
                let more = ex.fill(&mut buf, SNAPSHOT_STEP);
                (ex, buf, more)
            })
            .await
            .map_err(SnapshotError::Failed)?;
            let more = more.map_err(|e| SnapshotError::Failed(e.to_string()))?;
            for chunk in buf.chunks(SNAPSHOT_CHUNK) {
                sent += chunk.len() as u64;
                hash.update(chunk);
                let msg = SnapshotResponse {
                    header: header.take(),
                    remaining_bytes: total.saturating_sub(sent),
                    blob: chunk.to_vec(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
            if more {
                export = Some(ex);
            }
        }
        if sent != total {
            return Err(SnapshotError::Failed(format!(
                "the snapshot database has {sent} bytes, planned {total}"
            )));
        }
        let last = SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: hash.finish(),
        };
        let _ = tx.send(Ok(last)).await;
        Ok(())
    }
}
