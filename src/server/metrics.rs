//! What a member counts about itself, read by `/metrics`
//! (`crate::api::metrics` names the families as etcd does).
//!
//! Counters live here when the server updates them (proposals, leader
//! changes, disk timings, MVCC operations, health checks), and point to the
//! runtime's when the work happens there: `grpc` (client RPCs, counted by a
//! layer on the client port's router, `client_router`) and `peer` (the Raft
//! transport's traffic, given by the process that made the transport).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{response_op, TxnRequest, TxnResponse};
use cairn_runtime::metrics::grpc::{CallKind, GrpcStats, MethodSpec};
use cairn_runtime::metrics::peer::PeerStats;
use cairn_runtime::metrics::{Histogram, DISK_BUCKETS_SECS};

/// A member's counters.
#[derive(Debug)]
pub struct Metrics {
    pub proposals_applied: AtomicU64,
    pub proposals_pending: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub leader_changes: AtomicU64,
    pub has_leader: AtomicBool,
    /// Synced writes of the Raft log and hard state (etcd's WAL fsync).
    pub wal_fsync: Histogram,
    /// Applying a Ready's committed entries to the state (etcd's backend
    /// commit: the batch of applied changes written to the state store).
    pub backend_commit: Histogram,
    /// Applies that took longer than etcd's 100 ms warning threshold.
    pub slow_applies: AtomicU64,
    /// State snapshots received from a leader and installed.
    pub snapshots_installed: AtomicU64,
    /// Installing one now (0 or 1).
    pub snapshot_installing: AtomicU64,
    /// MVCC operations, counted as etcd's `etcd_mvcc_*_total`.
    pub mvcc: MvccCounters,
    /// `/health` answers (etcd's `etcd_server_health_{success,failures}`).
    pub health_success: AtomicU64,
    pub health_failures: AtomicU64,
    /// Linearizable reads whose read index could not be had.
    pub read_indexes_failed: AtomicU64,
    /// Client RPCs of every client port of this member.
    pub grpc: Arc<GrpcStats>,
    /// The Raft transport's traffic per peer.
    pub peer: Arc<PeerStats>,
}

/// etcd's apply warning threshold.
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

impl Metrics {
    pub fn new(handling_times: bool, peer: Arc<PeerStats>) -> Self {
        Metrics {
            proposals_applied: AtomicU64::new(0),
            proposals_pending: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            has_leader: AtomicBool::new(false),
            wal_fsync: Histogram::new(&DISK_BUCKETS_SECS),
            backend_commit: Histogram::new(&DISK_BUCKETS_SECS),
            slow_applies: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            snapshot_installing: AtomicU64::new(0),
            mvcc: MvccCounters::default(),
            health_success: AtomicU64::new(0),
            health_failures: AtomicU64::new(0),
            read_indexes_failed: AtomicU64::new(0),
            grpc: GrpcStats::new(CLIENT_METHODS, handling_times),
            peer,
        }
    }

    pub(super) fn observe_apply(&self, took: Duration) {
        self.backend_commit.observe(took);
        if took > SLOW_APPLY {
            self.slow_applies.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Operations on the key space, as etcd counts them: every range (a Range
/// request, a range inside a txn, and each compare of a txn, which etcd
/// evaluates with a range), put and delete, and a txn when it did more than
/// one of those.
#[derive(Debug, Default)]
pub struct MvccCounters {
    pub range: AtomicU64,
    pub put: AtomicU64,
    pub delete: AtomicU64,
    pub txn: AtomicU64,
}

impl MvccCounters {
    pub fn ranged(&self) {
        self.range.fetch_add(1, Ordering::Relaxed);
    }

    pub fn put_applied(&self) {
        self.put.fetch_add(1, Ordering::Relaxed);
    }

    pub fn delete_applied(&self) {
        self.delete.fetch_add(1, Ordering::Relaxed);
    }

    /// A txn that was executed (applied, or served as a read-only txn).
    pub fn txn_done(&self, req: &TxnRequest, resp: &TxnResponse) {
        let (mut ranges, mut puts, mut deletes) = (0u64, 0u64, 0u64);
        count_txn(req, resp, &mut ranges, &mut puts, &mut deletes);
        self.range.fetch_add(ranges, Ordering::Relaxed);
        self.put.fetch_add(puts, Ordering::Relaxed);
        self.delete.fetch_add(deletes, Ordering::Relaxed);
        if ranges + puts + deletes > 1 {
            self.txn.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts a txn's compares and the operations of the branch it took,
/// nested txns included (they run in the same MVCC transaction).
fn count_txn(
    req: &TxnRequest,
    resp: &TxnResponse,
    ranges: &mut u64,
    puts: &mut u64,
    deletes: &mut u64,
) {
    *ranges += req.compare.len() as u64;
    let ops = if resp.succeeded {
        &req.success
    } else {
        &req.failure
    };
    for (op, out) in ops.iter().zip(&resp.responses) {
        match out.response.as_ref() {
            Some(response_op::Response::ResponseRange(_)) => *ranges += 1,
            Some(response_op::Response::ResponsePut(_)) => *puts += 1,
            Some(response_op::Response::ResponseDeleteRange(_)) => *deletes += 1,
            Some(response_op::Response::ResponseTxn(inner)) => {
                if let Some(cairn_proto::etcdserverpb::request_op::Request::RequestTxn(r)) =
                    op.request.as_ref()
                {
                    count_txn(r, inner, ranges, puts, deletes);
                }
            }
            None => {}
        }
    }
}

const fn unary(service: &'static str, method: &'static str) -> MethodSpec {
    MethodSpec {
        service,
        method,
        kind: CallKind::Unary,
    }
}

const fn streaming(service: &'static str, method: &'static str, kind: CallKind) -> MethodSpec {
    MethodSpec {
        service,
        method,
        kind,
    }
}

const KV: &str = "etcdserverpb.KV";
const WATCH: &str = "etcdserverpb.Watch";
const LEASE: &str = "etcdserverpb.Lease";
const CLUSTER: &str = "etcdserverpb.Cluster";
const MAINTENANCE: &str = "etcdserverpb.Maintenance";
const AUTH: &str = "etcdserverpb.Auth";
const LOCK: &str = "v3lockpb.Lock";
const ELECTION: &str = "v3electionpb.Election";

/// Every method the client port serves (`crate::api::client_router`).
pub const CLIENT_METHODS: &[MethodSpec] = &[
    unary(KV, "Range"),
    unary(KV, "Put"),
    unary(KV, "DeleteRange"),
    unary(KV, "Txn"),
    unary(KV, "Compact"),
    streaming(WATCH, "Watch", CallKind::BidiStream),
    unary(LEASE, "LeaseGrant"),
    unary(LEASE, "LeaseRevoke"),
    streaming(LEASE, "LeaseKeepAlive", CallKind::BidiStream),
    unary(LEASE, "LeaseTimeToLive"),
    unary(LEASE, "LeaseLeases"),
    unary(CLUSTER, "MemberAdd"),
    unary(CLUSTER, "MemberRemove"),
    unary(CLUSTER, "MemberUpdate"),
    unary(CLUSTER, "MemberList"),
    unary(CLUSTER, "MemberPromote"),
    unary(MAINTENANCE, "Alarm"),
    unary(MAINTENANCE, "Status"),
    unary(MAINTENANCE, "Defragment"),
    unary(MAINTENANCE, "Hash"),
    unary(MAINTENANCE, "HashKV"),
    streaming(MAINTENANCE, "Snapshot", CallKind::ServerStream),
    unary(MAINTENANCE, "MoveLeader"),
    unary(MAINTENANCE, "Downgrade"),
    unary(AUTH, "AuthEnable"),
    unary(AUTH, "AuthDisable"),
    unary(AUTH, "AuthStatus"),
    unary(AUTH, "Authenticate"),
    unary(AUTH, "UserAdd"),
    unary(AUTH, "UserGet"),
    unary(AUTH, "UserList"),
    unary(AUTH, "UserDelete"),
    unary(AUTH, "UserChangePassword"),
    unary(AUTH, "UserGrantRole"),
    unary(AUTH, "UserRevokeRole"),
    unary(AUTH, "RoleAdd"),
    unary(AUTH, "RoleGet"),
    unary(AUTH, "RoleList"),
    unary(AUTH, "RoleDelete"),
    unary(AUTH, "RoleGrantPermission"),
    unary(AUTH, "RoleRevokePermission"),
    unary(LOCK, "Lock"),
    unary(LOCK, "Unlock"),
    unary(ELECTION, "Campaign"),
    unary(ELECTION, "Proclaim"),
    unary(ELECTION, "Leader"),
    streaming(ELECTION, "Observe", CallKind::ServerStream),
    unary(ELECTION, "Resign"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{
        request_op, Compare, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
        ResponseOp,
    };

    fn op_put() -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest::default())),
        }
    }

    fn op_range() -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest::default())),
        }
    }

    #[test]
    fn txns_count_compares_as_ranges_and_only_the_branch_taken() {
        let c = MvccCounters::default();
        let req = TxnRequest {
            compare: vec![Compare::default()],
            success: vec![op_put(), op_put()],
            failure: vec![op_range()],
        };
        let took_failure = TxnResponse {
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponseRange(
                    RangeResponse::default(),
                )),
            }],
            ..Default::default()
        };
        c.txn_done(&req, &took_failure);
        assert_eq!(c.range.load(Ordering::Relaxed), 2);
        assert_eq!(c.put.load(Ordering::Relaxed), 0);
        assert_eq!(c.txn.load(Ordering::Relaxed), 1);
        // A txn of one put and no compare is not counted as a txn (as etcd).
        let single = TxnRequest {
            success: vec![op_put()],
            ..Default::default()
        };
        let put = TxnResponse {
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponsePut(PutResponse::default())),
            }],
            ..Default::default()
        };
        c.txn_done(&single, &put);
        assert_eq!(c.put.load(Ordering::Relaxed), 1);
        assert_eq!(c.txn.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn every_client_service_method_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for m in CLIENT_METHODS {
            assert!(seen.insert((m.service, m.method)), "{m:?} twice");
        }
        assert_eq!(CLIENT_METHODS.len(), 48);
    }
}
