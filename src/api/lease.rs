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

/// Keep-alive answers buffered per stream before the stream stops reading
/// requests (the client is not reading its answers).
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

type KeepAliveAnswers = mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>;

/// A client's keep-alive stream: one renewal at a time, in order (as etcd).
/// Ends when the client closes its side (the stream then ends cleanly), the
/// client goes away, or a renewal fails.
async fn serve_client<S>(server: Server, creds: Credentials, mut requests: S, tx: KeepAliveAnswers)
where
    S: tokio_stream::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt as _;
    while let Some(Ok(req)) = requests.next().await {
        // Each renewal needs write permission on the lease's keys (etcd's
        // `checkLeaseRenew`), with the token as it stands now.
        let checked = match server.caller(creds.clone()).await {
            Ok(who) => server.check_lease_renew(&who, req.id),
            Err(e) => Err(e),
        };
        let answer = match checked {
            Ok(()) => {
                server
                    .lease_keep_alive_as(creds.token.as_deref(), req.id, false)
                    .await
            }
            Err(e) => Err(e),
        }
        .map_err(status_of);
        let failed = answer.is_err();
        if tx.send(answer).await.is_err() || failed {
            break;
        }
    }
}

/// Serves a client's keep-alive stream whose requests come from `requests`
/// (a gRPC stream, or the JSON gateway's decoded body); its answers.
pub(crate) fn keep_alive<S>(server: &Server, creds: Credentials, requests: S) -> KeepAliveStream
where
    S: tokio_stream::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
    tokio::spawn(serve_client(server.clone(), creds, requests, tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
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
