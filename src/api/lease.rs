//! The Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive (a
//! bidirectional stream: each request renews and is answered with the TTL,
//! 0 for an unknown lease, as etcd), LeaseTimeToLive (-1 for an unknown
//! lease), LeaseLeases. The work is in `server/lease/`; errors become
//! etcd's statuses in `status_of`.
//! Tests: `tests/lease_interop.rs`, `src/server/tests.rs`.

use std::pin::Pin;

use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{caller, credentials};
use super::{reply, status_of};
use crate::server::{serve_forwarded_keep_alives, Credentials, Server, LEASE_FORWARDED_HEADER};

/// Answers buffered per forwarded keep-alive stream before it stops reading
/// requests (the forwarding member is not reading its answers).
const KEEP_ALIVE_BUFFER: usize = 16;

/// The Lease service.
#[derive(Clone)]
pub struct LeaseService(pub Server);

pub(crate) type KeepAliveStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>,
>;

fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(LEASE_FORWARDED_HEADER)
}

/// One renewal of a client's keep-alive stream: write permission on the
/// lease's keys (etcd's `checkLeaseRenew`, with the token as it stands now),
/// then the renewal itself.
async fn renew_for_client(
    server: &Server,
    creds: &Credentials,
    id: i64,
) -> Result<LeaseKeepAliveResponse, Status> {
    let who = server.caller(creds.clone()).await.map_err(status_of)?;
    server.check_lease_renew(&who, id).map_err(status_of)?;
    server
        .lease_keep_alive_as(creds.token.as_deref(), id, false)
        .await
        .map_err(status_of)
}

/// Serves a client's keep-alive stream whose requests come from `requests`
/// (a gRPC stream, or the JSON gateway's decoded body); its answers: one
/// renewal at a time, in order (as etcd), each made when the stream of
/// answers is polled for it — so in the task that writes the answers, with
/// no task or channel of its own per stream, and a client that stops reading
/// its answers stops its renewals (HTTP/2 flow control). Ends when the client
/// closes its side (the stream then ends cleanly), the client goes away, or a
/// renewal fails (after that failure's status).
pub(crate) fn keep_alive<S>(server: &Server, creds: Credentials, requests: S) -> KeepAliveStream
where
    S: tokio_stream::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt as _;
    let state = (server.clone(), creds, requests, false);
    Box::pin(futures::stream::unfold(
        state,
        |(server, creds, mut requests, failed)| async move {
            if failed {
                return None;
            }
            let req = match requests.next().await {
                Some(Ok(req)) => req,
                Some(Err(_)) | None => return None,
            };
            let answer = renew_for_client(&server, &creds, req.id).await;
            let failed = answer.is_err();
            Some((answer, (server, creds, requests, failed)))
        },
    ))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.lease_grant_as(&who, request.into_inner()).await)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.lease_revoke_as(&who, request.into_inner()).await)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.0.refuse_learner().map_err(status_of)?;
        let forwarded = is_forwarded(&request);
        let creds = credentials(&request);
        let requests = request.into_inner();
        if forwarded {
            let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
            let server = self.0.clone();
            // The leader's end of the forwarding protocol (`server/lease/forward.rs`).
            let (server_tx, mut answers) = mpsc::channel(KEEP_ALIVE_BUFFER);
            tokio::spawn(serve_forwarded_keep_alives(
                server, creds, requests, server_tx,
            ));
            tokio::spawn(async move {
                while let Some(a) = answers.recv().await {
                    if tx.send(a.map_err(status_of)).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        } else {
            Ok(Response::new(keep_alive(&self.0, creds, requests)))
        }
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.0.refuse_learner().map_err(status_of)?;
        let forwarded = is_forwarded(&request);
        let who = caller(&self.0, &request).await?;
        reply(
            self.0
                .lease_time_to_live_as(&who, request.into_inner(), forwarded)
                .await,
        )
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.0.refuse_learner().map_err(status_of)?;
        // Read permission on every key of every lease (etcd's `checkLeaseLeases`).
        let who = caller(&self.0, &request).await?;
        self.0.check_lease_reads(&who, None).map_err(status_of)?;
        reply(self.0.lease_leases().await)
    }
}
