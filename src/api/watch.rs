//! etcd's Watch service: `Watch(stream WatchRequest) returns (stream
//! WatchResponse)`, served by the member the client talks to (leader or
//! follower alike: events come from this member's applied state).
//!
//! Each call gets a task and a `WatchSession` on the member's hub. The task
//! reads create / cancel / progress requests (only while the session's queue
//! has room: backpressure instead of unbounded buffering), sends the queued
//! responses through a small channel, runs catch-up reads for watchers behind
//! the current revision, and ticks the progress-notify timer. It ends — and
//! the session with its watchers goes away — when the client goes away, the
//! client's request stream fails, or the member stops. A client that only
//! half-closes its request stream keeps receiving events, as with etcd.
//!
//! Streams opened with etcd's `hasleader` metadata (etcdctl and clientv3's
//! `WithRequireLeader`) are refused, and later ended, with `etcdserver: no
//! leader` when the member has no leader, as etcd does.
//! Tests: `tests/watch_interop.rs` (real etcdctl, etcd 3.4 as the oracle),
//! `src/server/tests.rs`; the hub's own tests in `src/watch/`.

use std::pin::Pin;

use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::status_of;
use crate::auth::AuthError;
use crate::server::{Credentials, Server, ServerError, WatchSession};

/// Responses in flight between a stream's task and gRPC.
const OUTBOUND_BUFFER: usize = 16;

/// etcd gives up on a require-leader stream after this many leader checks
/// (one per election timeout) find no leader.
const MAX_LEADERLESS_CHECKS: u32 = 3;

/// The gRPC metadata key clients set to require a leader (etcd's
/// `rpctypes.MetadataRequireLeaderKey`).
const REQUIRE_LEADER_KEY: &str = "hasleader";

pub(crate) type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

/// The Watch service.
#[derive(Clone)]
pub struct WatchService(pub Server);

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        start(&self.0, request).map(Response::new)
    }
}

/// Starts serving a watch stream whose requests come from the body of
/// `request` (a gRPC stream, or the JSON gateway's decoded body); its
/// responses.
pub(crate) fn start<S>(server: &Server, request: Request<S>) -> Result<ResponseStream, Status>
where
    S: tokio_stream::Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
{
    // etcd refuses every stream on a learner.
    server.refuse_learner().map_err(status_of)?;
    let require_leader = request
        .metadata()
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|v| v.as_bytes() == b"true");
    if require_leader && server.leader().is_none() {
        return Err(status_of(ServerError::NoLeader));
    }
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    let session = server.watch_session();
    let creds = super::auth::credentials(&request);
    tokio::spawn(serve(
        server.clone(),
        creds,
        session,
        request.into_inner(),
        tx,
        require_leader,
    ));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// A watch on a range the caller may not read is answered created and
/// canceled at once, the reason being etcd's full gRPC error text.
async fn permitted(server: &Server, creds: &Credentials, c: &WatchCreateRequest) -> Option<String> {
    let checked = match server.caller(creds.clone()).await {
        Ok(who) => server.check_watch(&who, &c.key, &c.range_end),
        Err(e) => Err(e),
    };
    let e = checked.err()?;
    let status = status_of(e);
    let code = match status.code() {
        tonic::Code::Unauthenticated => "Unauthenticated",
        tonic::Code::InvalidArgument => "InvalidArgument",
        _ => "PermissionDenied",
    };
    let msg = if code == "PermissionDenied" {
        AuthError::PermissionDenied.to_string()
    } else {
        status.message().to_owned()
    };
    Some(format!("rpc error: code = {code} desc = {msg}"))
}

async fn handle(
    server: &Server,
    creds: &Credentials,
    session: &WatchSession,
    req: WatchRequest,
    tx: &mpsc::Sender<Result<WatchResponse, Status>>,
) {
    match req.request_union {
        Some(RequestUnion::CreateRequest(c)) => match permitted(server, creds, &c).await {
            None => session.create(&c),
            Some(reason) => {
                let resp = WatchResponse {
                    header: Some(server.header(server.revision())),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: reason,
                    ..Default::default()
                };
                let _ = tx.send(Ok(resp)).await;
            }
        },
        Some(RequestUnion::CancelRequest(c)) => session.cancel(c.watch_id),
        Some(RequestUnion::ProgressRequest(_)) => session.request_progress(),
        // As etcd: an empty or unknown request does not end the stream.
        None => {}
    }
}

/// Serves one Watch stream until the client or the member goes away.
async fn serve<S>(
    server: Server,
    creds: Credentials,
    session: WatchSession,
    mut inbound: S,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    require_leader: bool,
) where
    S: tokio_stream::Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt as _;
    let progress_every = session.progress_notify_interval();
    let mut next_progress = Instant::now() + progress_every;
    let leader_every = session.leader_check_interval();
    let mut next_leader_check = Instant::now() + leader_every;
    let mut leaderless = 0;
    let mut reading = true;
    loop {
        for resp in session.take() {
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
        let caught_up = match session.catch_up() {
            Ok(changed) => changed,
            Err(e) => {
                let _ = tx.send(Err(status_of(e))).await;
                return;
            }
        };
        let more = caught_up || session.has_output();
        let accept = reading && session.accepts_requests();
        tokio::select! {
            // Fixed priorities keep the simulation deterministic; requests
            // come before more output so a cancel is not starved by events.
            biased;
            _ = tx.closed() => return,
            _ = session.stopped() => {
                let _ = tx.send(Err(status_of(ServerError::Stopped))).await;
                return;
            }
            msg = inbound.next(), if accept => match msg {
                Some(Ok(req)) => handle(&server, &creds, &session, req, &tx).await,
                None => reading = false,
                Some(Err(_)) => return,
            },
            _ = tokio::time::sleep_until(next_progress) => {
                next_progress = Instant::now() + progress_every;
                session.progress_tick();
            }
            _ = tokio::time::sleep_until(next_leader_check), if require_leader => {
                next_leader_check = Instant::now() + leader_every;
                leaderless = if session.has_leader() { 0 } else { leaderless + 1 };
                if leaderless >= MAX_LEADERLESS_CHECKS {
                    let _ = tx.send(Err(status_of(ServerError::NoLeader))).await;
                    return;
                }
            }
            _ = std::future::ready(()), if more => {}
            _ = session.changed() => {}
        }
    }
}
