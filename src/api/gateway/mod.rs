//! etcd's JSON gateway on the client port: `POST /v3/<service>/<method>`
//! with the request as JSON answers the RPC's response as JSON, as etcd
//! 3.4's grpc-gateway does (the routes of its `google.api.http`
//! annotations, `ROUTES`; `/v3beta/...` is the same as `/v3/...`).
//!
//! - Bodies and answers use protobuf's JSON mapping as etcd's gateway
//!   applies it: the serde code cairn-proto generates (original snake_case
//!   names out, both names in, 64-bit integers as strings, bytes in base64,
//!   enums by name, zero values left out). Bodies are read as Go reads
//!   them, with Go's syntax errors (`json.rs`).
//! - Each call goes to the same service code as the gRPC call
//!   (`super::KvService`, `super::lease::LeaseService`, ...), so rights,
//!   errors and effects are the same; the `Authorization` header is the
//!   auth token (etcd's gateway passes it on as the `authorization`
//!   metadata), and `Grpc-Metadata-<key>` headers become metadata `<key>`.
//! - A failure answers `{"error":m,"message":m,"code":c}` with the HTTP
//!   status grpc-gateway gives gRPC code `c` (`http_status`).
//! - Streams (`/v3/watch`, `/v3/lease/keepalive`, and the server streams
//!   of snapshot and election observe) answer one `{"result":...}` line per
//!   message, chunked, as the messages come; a failure in a stream answers
//!   `{"error":{"grpc_code":...,"http_code":...,"message":...,"http_status":...}}`.
//!   A stream's requests are the body's JSON values; once they are sent the
//!   stream is half-closed (a watch goes on; keep-alives end).
//!
//! Where cairn's gateway answers differently from etcd 3.4's, and why:
//!
//! - A field of the wrong type (`"limit":"abc"`, `"keys_only":"yes"`, an
//!   unknown enum name) fails with etcd's code and status but serde's words,
//!   not Go's. Bytes fields also take URL-safe or unpadded base64; `null`
//!   for a scalar field and a field given twice are refused (Go leaves the
//!   field unset, takes the last).
//! - A request body is read whole before the call: a stream's requests are
//!   the values of a complete body (curl's `-d`), not sent as they arrive.
//! - Failures are sent with a length, without the `Trailer:
//!   Grpc-Trailer-Content-Type` etcd's Go server adds; no websocket upgrade
//!   of `/v3/watch`; `/v3alpha/` is not served (neither is it by 3.4.23).
//! - Gateway calls do not pass through gRPC, so they are not counted in the
//!   `grpc_server_*` metrics (etcd's gateway calls its own gRPC port).
//! - A TLS client certificate is never the user here (the token is); etcd
//!   refuses gateway calls whose certificate has a CN when auth and
//!   `--client-cert-auth` are on.
//! - The gateway shows what cairn's gRPC services answer, and where those
//!   follow etcd 3.5 rather than 3.4 it does too: headers in Alarm,
//!   Defragment, MoveLeader and Snapshot responses and the revision in
//!   Cluster ones, alarms changed only by root, keep-alives checked
//!   against the token.
//!
//! Tests: `tests/gateway.rs` sends the same requests to etcd 3.4 and to
//! cairn and compares the answers; `json.rs` has unit tests.

pub mod json;

use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{LeaseKeepAliveRequest, WatchRequest};
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_runtime::client_port::{HttpBody, HttpReply, HttpRequest};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Response, Status};

use super::auth::AuthService;
use super::election::ElectionService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::{status_of, ClusterService, KvService, MaintenanceService};
use crate::server::Server;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The RPCs the gateway serves.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
    LeaseTimeToLive,
    LeaseLeases,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberList,
    MemberPromote,
    Alarm,
    Status,
    Defragment,
    Hash,
    Snapshot,
    MoveLeader,
    AuthEnable,
    AuthDisable,
    Authenticate,
    UserAdd,
    UserGet,
    UserList,
    UserDelete,
    UserChangePassword,
    UserGrantRole,
    UserRevokeRole,
    RoleAdd,
    RoleGet,
    RoleList,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    Lock,
    Unlock,
    Campaign,
    Proclaim,
    Leader,
    Observe,
    Resign,
}

/// etcd 3.4's gateway routes (its protos' `google.api.http` paths, every
/// one POST). `/v3/maintenance/hash` is Hash: HashKV has the same path and
/// etcd's gateway never reaches it. AuthStatus and Downgrade have none in
/// 3.4.
const ROUTES: &[(&str, Rpc)] = &[
    ("/v3/kv/range", Rpc::Range),
    ("/v3/kv/put", Rpc::Put),
    ("/v3/kv/deleterange", Rpc::DeleteRange),
    ("/v3/kv/txn", Rpc::Txn),
    ("/v3/kv/compaction", Rpc::Compact),
    ("/v3/watch", Rpc::Watch),
    ("/v3/lease/grant", Rpc::LeaseGrant),
    ("/v3/lease/revoke", Rpc::LeaseRevoke),
    ("/v3/kv/lease/revoke", Rpc::LeaseRevoke),
    ("/v3/lease/keepalive", Rpc::LeaseKeepAlive),
    ("/v3/lease/timetolive", Rpc::LeaseTimeToLive),
    ("/v3/kv/lease/timetolive", Rpc::LeaseTimeToLive),
    ("/v3/lease/leases", Rpc::LeaseLeases),
    ("/v3/kv/lease/leases", Rpc::LeaseLeases),
    ("/v3/cluster/member/add", Rpc::MemberAdd),
    ("/v3/cluster/member/remove", Rpc::MemberRemove),
    ("/v3/cluster/member/update", Rpc::MemberUpdate),
    ("/v3/cluster/member/list", Rpc::MemberList),
    ("/v3/cluster/member/promote", Rpc::MemberPromote),
    ("/v3/maintenance/alarm", Rpc::Alarm),
    ("/v3/maintenance/status", Rpc::Status),
    ("/v3/maintenance/defragment", Rpc::Defragment),
    ("/v3/maintenance/hash", Rpc::Hash),
    ("/v3/maintenance/snapshot", Rpc::Snapshot),
    ("/v3/maintenance/transfer-leadership", Rpc::MoveLeader),
    ("/v3/auth/enable", Rpc::AuthEnable),
    ("/v3/auth/disable", Rpc::AuthDisable),
    ("/v3/auth/authenticate", Rpc::Authenticate),
    ("/v3/auth/user/add", Rpc::UserAdd),
    ("/v3/auth/user/get", Rpc::UserGet),
    ("/v3/auth/user/list", Rpc::UserList),
    ("/v3/auth/user/delete", Rpc::UserDelete),
    ("/v3/auth/user/changepw", Rpc::UserChangePassword),
    ("/v3/auth/user/grant", Rpc::UserGrantRole),
    ("/v3/auth/user/revoke", Rpc::UserRevokeRole),
    ("/v3/auth/role/add", Rpc::RoleAdd),
    ("/v3/auth/role/get", Rpc::RoleGet),
    ("/v3/auth/role/list", Rpc::RoleList),
    ("/v3/auth/role/delete", Rpc::RoleDelete),
    ("/v3/auth/role/grant", Rpc::RoleGrantPermission),
    ("/v3/auth/role/revoke", Rpc::RoleRevokePermission),
    ("/v3/lock/lock", Rpc::Lock),
    ("/v3/lock/unlock", Rpc::Unlock),
    ("/v3/election/campaign", Rpc::Campaign),
    ("/v3/election/proclaim", Rpc::Proclaim),
    ("/v3/election/leader", Rpc::Leader),
    ("/v3/election/observe", Rpc::Observe),
    ("/v3/election/resign", Rpc::Resign),
];

/// The headers etcd puts on every answer of its client port (its default
/// `--cors '*'`).
pub fn cors_headers() -> Vec<(&'static str, String)> {
    vec![
        (
            "Access-Control-Allow-Headers",
            "accept, content-type, authorization".to_owned(),
        ),
        (
            "Access-Control-Allow-Methods",
            "POST, GET, OPTIONS, PUT, DELETE".to_owned(),
        ),
        ("Access-Control-Allow-Origin", "*".to_owned()),
    ]
}

/// The gateway's answer to `req` (whose path is `path`), or `None` when
/// the path is not the gateway's (not under `/v3/` or `/v3beta/`).
pub async fn answer(server: &Server, req: &HttpRequest, path: &str) -> Option<HttpReply> {
    let path = match path.strip_prefix("/v3beta/") {
        Some(rest) => format!("/v3/{rest}"),
        None if path.starts_with("/v3/") => path.to_owned(),
        None => return None,
    };
    let mut reply = match ROUTES.iter().find(|(p, _)| *p == path) {
        None => plain_error(404, "Not Found\n"),
        Some(_) if req.method != "POST" => plain_error(405, "Method Not Allowed\n"),
        Some((_, rpc)) => call(server, *rpc, req).await,
    };
    reply.headers.extend(cors_headers());
    Some(reply)
}

/// Go's `http.Error`.
fn plain_error(status: u16, text: &str) -> HttpReply {
    let mut reply = HttpReply::new(status, TEXT, text);
    reply
        .headers
        .push(("X-Content-Type-Options", "nosniff".to_owned()));
    reply
}

/// The gRPC request for `msg`, with the HTTP request's credentials and
/// metadata as etcd's gateway passes them on.
fn grpc_request<T>(req: &HttpRequest, msg: T) -> tonic::Request<T> {
    use tonic::metadata::{MetadataKey, MetadataValue};
    let mut request = tonic::Request::new(msg);
    let md = request.metadata_mut();
    for (name, value) in &req.headers {
        let name = name.to_ascii_lowercase();
        let key = if name == "authorization" {
            name
        } else if let Some(key) = name.strip_prefix("grpc-metadata-") {
            // Markers one member sets for another are not the client's.
            if key == crate::server::LEASE_FORWARDED_HEADER
                || key == crate::server::members::FORWARDED_HEADER
            {
                continue;
            }
            key.to_owned()
        } else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            md.append(k, v);
        }
    }
    request
}

/// The HTTP status grpc-gateway (v1) answers for a gRPC code.
fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 408,
        Code::Unknown => 500,
        Code::InvalidArgument => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::FailedPrecondition => 412,
        Code::Aborted => 409,
        Code::OutOfRange => 400,
        Code::Unimplemented => 501,
        Code::Internal => 500,
        Code::Unavailable => 503,
        Code::DataLoss => 500,
    }
}

/// Go's `http.StatusText` of the statuses `http_status` gives.
fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A unary call's failure: `{"error":m,"message":m,"code":c}`.
fn error_reply(status: &Status) -> HttpReply {
    let m = json_string(status.message());
    let body = format!(
        "{{\"error\":{m},\"message\":{m},\"code\":{}}}",
        status.code() as i32
    );
    HttpReply::new(http_status(status.code()), JSON, body)
}

/// A stream's failure: grpc-gateway's error chunk.
fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{http},\"message\":{},\"http_status\":{}}}}}",
        status.code() as i32,
        json_string(status.message()),
        json_string(status_text(http)),
    )
    .into_bytes()
}

fn to_json<T: Serialize>(msg: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(msg).map_err(|e| Status::internal(e.to_string()))
}

/// A successful answer (what etcd's gateway adds: the gRPC response's
/// content type as `Grpc-Metadata-Content-Type`).
fn ok_reply(body: HttpBody) -> HttpReply {
    HttpReply {
        status: 200,
        content_type: JSON,
        headers: vec![("Grpc-Metadata-Content-Type", "application/grpc".to_owned())],
        body,
    }
}

fn unary_reply<T: Serialize>(result: Result<Response<T>, Status>) -> HttpReply {
    match result.and_then(|r| to_json(r.get_ref())) {
        Ok(body) => ok_reply(HttpBody::Full(body)),
        Err(status) => error_reply(&status),
    }
}

/// The first JSON value of a unary call's body as its request (an empty
/// body is the empty request), or the answer to a body that is not one.
#[allow(clippy::result_large_err)]
fn first_message<T: DeserializeOwned + Default>(req: &HttpRequest) -> Result<T, HttpReply> {
    match json::Values::new(&req.body).next_message() {
        None => Ok(T::default()),
        Some(Ok(msg)) => Ok(msg),
        Some(Err(e)) => Err(error_reply(&Status::invalid_argument(e.message()))),
    }
}

/// A stream's requests: the body's JSON values, up to the first that is
/// not one (as etcd's gateway, which stops sending there). An error when
/// the first is not.
#[allow(clippy::result_large_err)]
fn stream_messages<T: DeserializeOwned + Default>(req: &HttpRequest) -> Result<Vec<T>, HttpReply> {
    let mut values = json::Values::new(&req.body);
    let mut out = Vec::new();
    while let Some(next) = values.next_message() {
        match next {
            Ok(msg) => out.push(msg),
            // etcd answers a first request it cannot read as Unknown.
            Err(e) if out.is_empty() => return Err(error_reply(&Status::unknown(e.message()))),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Streamed answers: nothing is written before the first message (or the
/// failure, whose status is then the answer's); then one line per message.
async fn stream_reply<T, S>(result: Result<S, Status>) -> HttpReply
where
    T: Serialize + Send + 'static,
    S: futures::Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    // A call refused at once fails as a failed first message: etcd's
    // gateway learns of either only when it reads the gRPC stream.
    let refused =
        |status: Status| HttpReply::new(http_status(status.code()), JSON, stream_error(&status));
    let mut stream = match result {
        Ok(s) => s,
        Err(status) => return refused(status),
    };
    let first = match stream.next().await {
        None => return ok_reply(HttpBody::Full(Vec::new())),
        Some(Err(status)) => return refused(status),
        Some(Ok(msg)) => result_line(&msg),
    };
    let rest = futures::stream::unfold((stream, false), |(mut stream, failed)| async move {
        if failed {
            return None;
        }
        match stream.next().await? {
            Ok(msg) => Some((result_line(&msg), (stream, false))),
            Err(status) => Some((stream_error(&status), (stream, true))),
        }
    });
    ok_reply(HttpBody::Stream(
        futures::stream::once(async move { first })
            .chain(rest)
            .boxed(),
    ))
}

/// `{"result":<msg>}` and a newline.
fn result_line<T: Serialize>(msg: &T) -> Vec<u8> {
    match to_json(msg) {
        Ok(json) => {
            let mut line = Vec::with_capacity(json.len() + 12);
            line.extend_from_slice(b"{\"result\":");
            line.extend_from_slice(&json);
            line.extend_from_slice(b"}\n");
            line
        }
        Err(status) => stream_error(&status),
    }
}

/// A unary call: `$svc.$method` with the body's first value.
macro_rules! unary {
    ($req:expr, $svc:expr, $method:ident) => {
        match first_message($req) {
            Ok(msg) => unary_reply($svc.$method(grpc_request($req, msg)).await),
            Err(reply) => reply,
        }
    };
}

/// A server stream: `$svc.$method` with the body's first value.
macro_rules! server_stream {
    ($req:expr, $svc:expr, $method:ident) => {
        match first_message($req) {
            Ok(msg) => {
                stream_reply(
                    $svc.$method(grpc_request($req, msg))
                        .await
                        .map(Response::into_inner),
                )
                .await
            }
            Err(reply) => reply,
        }
    };
}

async fn call(server: &Server, rpc: Rpc, req: &HttpRequest) -> HttpReply {
    let kv = KvService(server.clone());
    let lease = LeaseService(server.clone());
    let cluster = ClusterService(server.clone());
    let maintenance = MaintenanceService(server.clone());
    let auth = AuthService(server.clone());
    let lock = LockService(server.clone());
    let election = ElectionService(server.clone());
    match rpc {
        Rpc::Range => unary!(req, kv, range),
        Rpc::Put => unary!(req, kv, put),
        Rpc::DeleteRange => unary!(req, kv, delete_range),
        Rpc::Txn => unary!(req, kv, txn),
        Rpc::Compact => unary!(req, kv, compact),
        Rpc::Watch => match stream_messages::<WatchRequest>(req) {
            Ok(requests) => {
                let inbound = futures::stream::iter(requests.into_iter().map(Ok));
                stream_reply(super::watch::start(server, grpc_request(req, inbound))).await
            }
            Err(reply) => reply,
        },
        Rpc::LeaseGrant => unary!(req, lease, lease_grant),
        Rpc::LeaseRevoke => unary!(req, lease, lease_revoke),
        Rpc::LeaseKeepAlive => match stream_messages::<LeaseKeepAliveRequest>(req) {
            Ok(requests) => {
                let inbound = futures::stream::iter(requests.into_iter().map(Ok));
                let request = grpc_request(req, ());
                let answers = server.refuse_learner().map_err(status_of).map(|()| {
                    let creds = super::auth::credentials(&request);
                    super::lease::keep_alive(server, creds, inbound)
                });
                stream_reply(answers).await
            }
            Err(reply) => reply,
        },
        Rpc::LeaseTimeToLive => unary!(req, lease, lease_time_to_live),
        Rpc::LeaseLeases => unary!(req, lease, lease_leases),
        Rpc::MemberAdd => unary!(req, cluster, member_add),
        Rpc::MemberRemove => unary!(req, cluster, member_remove),
        Rpc::MemberUpdate => unary!(req, cluster, member_update),
        Rpc::MemberList => unary!(req, cluster, member_list),
        Rpc::MemberPromote => unary!(req, cluster, member_promote),
        Rpc::Alarm => unary!(req, maintenance, alarm),
        Rpc::Status => unary!(req, maintenance, status),
        Rpc::Defragment => unary!(req, maintenance, defragment),
        Rpc::Hash => unary!(req, maintenance, hash),
        Rpc::Snapshot => server_stream!(req, maintenance, snapshot),
        Rpc::MoveLeader => unary!(req, maintenance, move_leader),
        Rpc::AuthEnable => unary!(req, auth, auth_enable),
        Rpc::AuthDisable => unary!(req, auth, auth_disable),
        Rpc::Authenticate => unary!(req, auth, authenticate),
        Rpc::UserAdd => unary!(req, auth, user_add),
        Rpc::UserGet => unary!(req, auth, user_get),
        Rpc::UserList => unary!(req, auth, user_list),
        Rpc::UserDelete => unary!(req, auth, user_delete),
        Rpc::UserChangePassword => unary!(req, auth, user_change_password),
        Rpc::UserGrantRole => unary!(req, auth, user_grant_role),
        Rpc::UserRevokeRole => unary!(req, auth, user_revoke_role),
        Rpc::RoleAdd => unary!(req, auth, role_add),
        Rpc::RoleGet => unary!(req, auth, role_get),
        Rpc::RoleList => unary!(req, auth, role_list),
        Rpc::RoleDelete => unary!(req, auth, role_delete),
        Rpc::RoleGrantPermission => unary!(req, auth, role_grant_permission),
        Rpc::RoleRevokePermission => unary!(req, auth, role_revoke_permission),
        Rpc::Lock => unary!(req, lock, lock),
        Rpc::Unlock => unary!(req, lock, unlock),
        Rpc::Campaign => unary!(req, election, campaign),
        Rpc::Proclaim => unary!(req, election, proclaim),
        Rpc::Leader => unary!(req, election, leader),
        Rpc::Observe => server_stream!(req, election, observe),
        Rpc::Resign => unary!(req, election, resign),
    }
}
