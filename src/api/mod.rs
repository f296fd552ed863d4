//! The client API: etcd's v3 gRPC services over a `Server` handle (DESIGN §6).
//!
//! Every expected failure becomes etcd's gRPC code and exact message here, in
//! one place (`status_of`), because clients match on them. Implemented: KV
//! (all of it), Lease (all of it, `lease.rs`), Watch (`watch.rs`), Lock
//! (`lock.rs`) and Election (`election.rs`) over the shared recipes of
//! `concurrency.rs` (their errors: `concurrency_status`), Maintenance
//! `Status` / `Hash` / `HashKV` / `Alarm` / `Defragment` / `Snapshot` / `MoveLeader`,
//! Cluster (all of it). Other RPCs answer `Unimplemented` with a message naming what
//! is missing.
//! Range on the client port is served by `range_stream` (large responses
//! in bounded memory, through `cairn_runtime::large_reply`), outside the
//! simulation world; there `KvService::range` answers.
//! Tests: `tests/etcdctl_interop.rs`, `tests/client_crate.rs`, `tests/etcdctl_interop.rs` (its bad-input session),
//! `tests/lease_interop.rs`, `tests/watch_interop.rs`, `tests/lock_election.rs`,
//! `tests/lock_election_interop.rs`.

pub mod auth;
pub mod concurrency;
pub mod election;
pub mod gateway;
pub mod http;
pub mod lease;
pub mod lock;
pub mod metrics;
pub mod range_stream;
pub mod v2;
pub mod watch;

use std::pin::Pin;

use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use cairn_proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::etcdserverpb::*;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use tonic::{Request, Response, Status};

use crate::auth::AuthError;
use crate::lease::LeaseError;
use crate::mvcc::MvccError;
use crate::server::{Server, ServerError};
use concurrency::ConcurrencyError;

/// etcd's gRPC status for each expected failure.
pub fn status_of(e: ServerError) -> Status {
    use tonic::Code;
    let (code, msg): (Code, String) = match &e {
        ServerError::Mvcc(m) => match m {
            MvccError::Compacted | MvccError::FutureRevision => {
                (Code::OutOfRange, format!("etcdserver: {m}"))
            }
            MvccError::LeaseNotFound => (Code::NotFound, m.to_string()),
            MvccError::KeyNotFound
            | MvccError::DuplicateKey
            | MvccError::TooManyOps
            | MvccError::EmptyKey
            | MvccError::ValueProvided
            | MvccError::LeaseProvided => (Code::InvalidArgument, m.to_string()),
            MvccError::NotReadOnly | MvccError::Storage(_) => (Code::Internal, m.to_string()),
            MvccError::Corrupt(_) => (Code::DataLoss, "etcdserver: corrupt cluster".to_owned()),
        },
        ServerError::Lease(l) => match l {
            LeaseError::NotFound => (Code::NotFound, l.to_string()),
            LeaseError::AlreadyExists => (Code::FailedPrecondition, l.to_string()),
            LeaseError::TtlTooLarge => (Code::OutOfRange, l.to_string()),
            LeaseError::NotPrimary => (Code::Unavailable, l.to_string()),
        },
        ServerError::Auth(a) => (auth_code(a), a.to_string()),
        ServerError::NoLeader
        | ServerError::LeaderChanged
        | ServerError::Timeout
        | ServerError::Stopped
        | ServerError::NotCapable => (Code::Unavailable, e.to_string()),
        ServerError::Corrupt => (Code::DataLoss, e.to_string()),
        ServerError::TooManyRequests | ServerError::NoSpace => {
            (Code::ResourceExhausted, e.to_string())
        }
        ServerError::RequestTooLarge | ServerError::MemberBadUrls => {
            (Code::InvalidArgument, e.to_string())
        }
        ServerError::MemberExists
        | ServerError::PeerUrlExists
        | ServerError::MemberNotLearner
        | ServerError::LearnerNotReady
        | ServerError::TooManyLearners
        | ServerError::NotEnoughStartedMembers
        | ServerError::NotLeader
        | ServerError::BadLeaderTransferee => (Code::FailedPrecondition, e.to_string()),
        ServerError::MemberNotFound => (Code::NotFound, e.to_string()),
        ServerError::Unhealthy | ServerError::NotSupportedForLearner => {
            (Code::Unavailable, e.to_string())
        }
        // Not one of etcd's gRPC errors: it reaches clients as Unknown.
        ServerError::LeaderTransferTimeout => (Code::Unknown, e.to_string()),
    };
    Status::new(code, msg)
}

/// etcd's gRPC code of each auth error (`rpctypes`).
fn auth_code(e: &AuthError) -> tonic::Code {
    use tonic::Code;
    match e {
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::AuthNotEnabled => Code::FailedPrecondition,
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::PermissionNotGiven
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision => Code::InvalidArgument,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidAuthToken => Code::Unauthenticated,
        AuthError::NoPasswordUser | AuthError::VerifyOnly => Code::Unknown,
    }
}

/// The gRPC status of a Lock or Election failure. etcd's v3lock and
/// v3election servers return clientv3's errors, which are not gRPC statuses,
/// so every one reaches the client as `Unknown` with etcd's message — the
/// server errors too (`etcdserver: requested lease not found`, …).
pub fn concurrency_status(e: ConcurrencyError) -> Status {
    let msg = match e {
        ConcurrencyError::Server(e) => status_of(e).message().to_owned(),
        e => e.to_string(),
    };
    Status::new(tonic::Code::Unknown, msg)
}

fn concurrency_reply<T>(r: Result<T, ConcurrencyError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(concurrency_status)
}

fn reply<T>(r: Result<T, ServerError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(status_of)
}

/// The KV service.
#[derive(Clone)]
pub struct KvService(pub Server);

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let who = auth::caller(&self.0, &request).await?;
        reply(self.0.range_as(&who, request.into_inner()).await)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = auth::caller(&self.0, &request).await?;
        reply(self.0.put_as(&who, request.into_inner()).await)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = auth::caller(&self.0, &request).await?;
        reply(self.0.delete_range_as(&who, request.into_inner()).await)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let who = auth::caller(&self.0, &request).await?;
        reply(self.0.txn_as(&who, request.into_inner()).await)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let who = auth::caller(&self.0, &request).await?;
        reply(self.0.compact_as(&who, request.into_inner()).await)
    }
}

/// etcd's admin-only RPCs: root, when auth is on.
async fn admin<T>(server: &Server, request: &Request<T>) -> Result<(), Status> {
    let who = auth::caller(server, request).await?;
    server.check_admin(&who).map_err(status_of)
}

/// Hash, HashKV, Defragment and Snapshot are root-only too, but etcd answers
/// their refusal with its auth package's own error text and code `Unknown`.
async fn admin_raw<T>(server: &Server, request: &Request<T>) -> Result<(), Status> {
    let raw = |e: ServerError| match e {
        ServerError::Auth(a) => Status::unknown(a.raw_message()),
        e => status_of(e),
    };
    let who = server
        .caller(auth::credentials(request))
        .await
        .map_err(raw)?;
    server.check_admin(&who).map_err(raw)
}

/// Status needs a user when auth is on (etcd 3.5).
async fn any_user<T>(server: &Server, request: &Request<T>) -> Result<(), Status> {
    let who = auth::caller(server, request).await?;
    server.require_user(&who).map_err(status_of)
}

/// The Maintenance service.
#[derive(Clone)]
pub struct MaintenanceService(pub Server);

type SnapshotStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // Listing alarms needs a user; changing them, root (as etcd).
        let who = auth::caller(&self.0, &request).await?;
        if request.get_ref().action == alarm_request::AlarmAction::Get as i32 {
            self.0.require_user(&who).map_err(status_of)?;
        } else {
            self.0.check_admin(&who).map_err(status_of)?;
        }
        reply(self.0.alarm(request.into_inner()).await)
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        any_user(&self.0, &request).await?;
        reply(self.0.status().await)
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        admin_raw(&self.0, &request).await?;
        reply(self.0.defragment().await)
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        admin_raw(&self.0, &request).await?;
        reply(self.0.hash().await)
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        admin_raw(&self.0, &request).await?;
        reply(self.0.hash_kv(request.into_inner().revision).await)
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        admin_raw(&self.0, &request).await?;
        use crate::server::SnapshotError;
        use tokio_stream::StreamExt as _;
        let status = |e: SnapshotError| match e {
            SnapshotError::Stopped => status_of(ServerError::Stopped),
            SnapshotError::Failed(msg) => Status::unknown(msg),
        };
        let rx = self.0.snapshot().await.map_err(status)?;
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| item.map_err(status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        admin(&self.0, &request).await?;
        self.0
            .move_leader(request.into_inner().target_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(
                self.0.header(
                    self.0
                        .status()
                        .await
                        .map_err(status_of)?
                        .header
                        .map_or(0, |h| h.revision),
                ),
            ),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("cairn: downgrade is not supported"))
    }
}

/// The Cluster service.
#[derive(Clone)]
pub struct ClusterService(pub Server);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        admin(&self.0, &request).await?;
        let forwarded = is_member_forwarded(&request);
        let who = auth::caller(&self.0, &request).await?;
        reply(
            self.0
                .member_add_as(&who, request.into_inner(), forwarded)
                .await,
        )
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        admin(&self.0, &request).await?;
        let forwarded = is_member_forwarded(&request);
        let who = auth::caller(&self.0, &request).await?;
        reply(
            self.0
                .member_remove_as(&who, request.into_inner(), forwarded)
                .await,
        )
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        admin(&self.0, &request).await?;
        reply(self.0.member_update(request.into_inner()).await)
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        reply(self.0.member_list(request.into_inner().linearizable).await)
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        admin(&self.0, &request).await?;
        let forwarded = is_member_forwarded(&request);
        let who = auth::caller(&self.0, &request).await?;
        reply(
            self.0
                .member_promote_as(&who, request.into_inner(), forwarded)
                .await,
        )
    }
}

/// Whether a follower forwarded this Cluster call (it must not be forwarded again).
fn is_member_forwarded<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .contains_key(crate::server::members::FORWARDED_HEADER)
}

/// The gRPC services of the client port, with etcd's message size limit
/// (max request bytes plus gRPC overhead, as etcd sets it), every call
/// counted for `/metrics` (`server.metrics().grpc`). Serve it with
/// `.serve(addr)`; the same code runs on madsim-tonic in simulation.
pub fn client_router(server: &Server) -> cairn_runtime::metrics::grpc::ClientRouter {
    let limit = server.max_request_bytes() + 512 * 1024;
    let large_ranges = range_stream::large_ranges(server, limit);
    cairn_runtime::metrics::grpc::counted_server_with(&server.metrics().grpc, Some(large_ranges))
        .add_service(KvServer::new(KvService(server.clone())).max_decoding_message_size(limit))
        .add_service(
            MaintenanceServer::new(MaintenanceService(server.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(ClusterService(server.clone())).max_decoding_message_size(limit),
        )
        .add_service(
            LeaseServer::new(lease::LeaseService(server.clone())).max_decoding_message_size(limit),
        )
        .add_service(
            WatchServer::new(watch::WatchService(server.clone())).max_decoding_message_size(limit),
        )
        .add_service(
            LockServer::new(lock::LockService(server.clone())).max_decoding_message_size(limit),
        )
        .add_service(
            ElectionServer::new(election::ElectionService(server.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            AuthServer::new(auth::AuthService(server.clone())).max_decoding_message_size(limit),
        )
}
