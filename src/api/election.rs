//! etcd's Election service (`v3electionpb.Election`), served by the member
//! as etcd's v3election server runs clientv3's `concurrency.Election`.
//!
//! - `Campaign(name, lease, value)`: joins with the key `name/hex(lease)`
//!   holding `value` (a lease that already joined keeps its key and, if the
//!   value differs, proclaims the new one), waits until no key under `name/`
//!   was created before it, and answers the `LeaderKey{name, key, rev,
//!   lease}` with the header of the joining txn (as etcd). No lease (0): a
//!   new one with the session TTL (60 s), never kept alive, as etcd. A client
//!   that goes away while campaigning (or just as it won) resigns. The key
//!   deleted while waiting: `election: not leader` (etcd would answer
//!   success for a key that no longer exists once its predecessors are gone).
//! - `Proclaim(leader, value)`: puts the value if the leader key's create
//!   revision is still `leader.rev`, else `election: not leader`.
//! - `Leader(name)`: the key under `name/` created first, else `election: no
//!   leader`.
//! - `Observe(name)`: a stream of the leader's key-value — at once if there
//!   is a leader, else at the first put under `name/` — then each change of
//!   its value, and the next leader when its key is deleted. As etcd, the
//!   stream ends (cleanly) when a read or a watcher fails.
//! - `Resign(leader)`: deletes the leader key if its create revision is still
//!   `leader.rev`; not leading is not an error (as etcd).
//!
//! Proclaim and Resign without `leader`: `"leader" field must be provided`.
//! The shared recipe is in `concurrency.rs`. Tests: `tests/lock_election.rs`,
//! `tests/lock_election_interop.rs`.

use std::pin::Pin;

use cairn_proto::etcdserverpb::WatchCreateRequest;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::concurrency::{self as recipe, Acting, Cancel, ConcurrencyError, KeyWatch, Turn};
use super::concurrency_reply;
use super::lock::acting;
use crate::server::Server;

/// Leader answers buffered per Observe stream (then the stream waits for its
/// client; the watch hub bounds what piles up behind it).
const OBSERVE_BUFFER: usize = 16;

type ObserveStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

/// The Election service.
#[derive(Clone)]
pub struct ElectionService(pub Server);

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let server = acting(&self.0, &request).await?;
        let req = request.into_inner();
        let cleanup = server.clone();
        concurrency_reply(
            recipe::run_detached(
                move |cancel| async move { campaign(&server, req, cancel).await },
                move |won: Won| async move {
                    // Nobody learnt of this leadership: resign it, unless
                    // this request only re-entered an earlier campaign.
                    if !won.existed {
                        let _ =
                            recipe::delete_if_created_at(&cleanup, &won.key, won.revision).await;
                    }
                },
            )
            .await
            .map(|won| won.resp),
        )
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let server = acting(&self.0, &request).await?;
        concurrency_reply(proclaim(&server, request.into_inner()).await)
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let server = acting(&self.0, &request).await?;
        concurrency_reply(leader(&server, &request.into_inner().name).await)
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let server = acting(&self.0, &request).await?;
        let prefix = recipe::participants_prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = tx.closed() => {}
                _ = observe(&server, &prefix, &tx) => {}
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let server = acting(&self.0, &request).await?;
        concurrency_reply(resign(&server, request.into_inner()).await)
    }
}

/// A won campaign.
struct Won {
    resp: CampaignResponse,
    key: Vec<u8>,
    revision: i64,
    /// The lease had joined before this request.
    existed: bool,
}

async fn campaign(
    server: &Acting,
    req: CampaignRequest,
    mut cancel: Cancel,
) -> Result<Won, ConcurrencyError> {
    let lease = recipe::session_lease(server, req.lease).await?;
    let prefix = recipe::participants_prefix(&req.name);
    let key = recipe::participant_key(&prefix, lease);
    let joined = recipe::join(server, &prefix, &key, &req.value, lease).await?;
    if joined.existed && joined.existing_value != req.value {
        match recipe::put_if_created_at(server, &key, joined.revision, &req.value, lease).await {
            Ok((true, _)) => {}
            Ok((false, _)) => return Err(ConcurrencyError::NotLeader),
            Err(e) => {
                let _ = recipe::delete_if_created_at(server, &key, joined.revision).await;
                return Err(e);
            }
        }
    }
    match recipe::wait_turn(server, &prefix, &key, joined.revision, &mut cancel).await {
        Ok(Turn::Mine(_)) => {}
        Ok(Turn::Lost) => return Err(ConcurrencyError::NotLeader),
        Err(ConcurrencyError::Cancelled) => {
            // As etcd: a candidate whose client went away resigns.
            let _ = recipe::delete_if_created_at(server, &key, joined.revision).await;
            return Err(ConcurrencyError::Cancelled);
        }
        // As etcd: other failures leave the key to its lease.
        Err(e) => return Err(e),
    }
    Ok(Won {
        resp: CampaignResponse {
            header: Some(joined.header),
            leader: Some(LeaderKey {
                name: req.name,
                key: key.clone(),
                rev: joined.revision,
                lease,
            }),
        },
        key,
        revision: joined.revision,
        existed: joined.existed,
    })
}

async fn proclaim(
    server: &Acting,
    req: ProclaimRequest,
) -> Result<ProclaimResponse, ConcurrencyError> {
    let leader = req.leader.ok_or(ConcurrencyError::MissingLeaderKey)?;
    // As etcd's session: no lease means a new one (which the value then gets).
    let lease = recipe::session_lease(server, leader.lease).await?;
    let (still_leader, header) =
        recipe::put_if_created_at(server, &leader.key, leader.rev, &req.value, lease).await?;
    if !still_leader {
        return Err(ConcurrencyError::NotLeader);
    }
    Ok(ProclaimResponse {
        header: Some(header),
    })
}

async fn resign(server: &Acting, req: ResignRequest) -> Result<ResignResponse, ConcurrencyError> {
    let leader = req.leader.ok_or(ConcurrencyError::MissingLeaderKey)?;
    // As etcd's session (a lease is granted if none is given, then unused).
    recipe::session_lease(server, leader.lease).await?;
    let header = recipe::delete_if_created_at(server, &leader.key, leader.rev).await?;
    Ok(ResignResponse {
        header: Some(header),
    })
}

async fn leader(server: &Acting, name: &[u8]) -> Result<LeaderResponse, ConcurrencyError> {
    let prefix = recipe::participants_prefix(name);
    let resp = server.range(recipe::first_created(&prefix)).await?;
    let kv = resp
        .kvs
        .into_iter()
        .next()
        .ok_or(ConcurrencyError::NoLeader)?;
    Ok(LeaderResponse {
        header: resp.header,
        kv: Some(kv),
    })
}

/// Sends the leader of `prefix` and its changes until a read or watcher
/// fails or the client goes away (`tx` refuses).
async fn observe(
    server: &Acting,
    prefix: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    loop {
        let Ok(current) = leader_or_next(server, prefix).await else {
            return;
        };
        let (header, kv) = current;
        let revision = header.as_ref().map_or(0, |h| h.revision);
        let key = kv.key.clone();
        let answer = LeaderResponse {
            header,
            kv: Some(kv),
        };
        if tx.send(Ok(answer)).await.is_err() {
            return;
        }
        // The leader's changes after what was sent, until its key goes.
        let mut watch = KeyWatch::open(
            server,
            &[WatchCreateRequest {
                key,
                start_revision: revision + 1,
                ..Default::default()
            }],
        );
        'leader: loop {
            let Ok(responses) = watch.next().await else {
                return;
            };
            for r in responses {
                if r.canceled {
                    return;
                }
                for ev in r.events {
                    if ev.r#type() == EventType::Delete {
                        break 'leader;
                    }
                    let answer = LeaderResponse {
                        header: r.header,
                        kv: ev.kv,
                    };
                    if tx.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

type Current = (
    Option<cairn_proto::etcdserverpb::ResponseHeader>,
    cairn_proto::mvccpb::KeyValue,
);

/// The current leader, or (when there is none) the first key put under
/// `prefix` after the read, with a header at that put's revision (as etcd).
async fn leader_or_next(server: &Acting, prefix: &[u8]) -> Result<Current, ConcurrencyError> {
    let resp = server.range(recipe::first_created(prefix)).await?;
    if let Some(kv) = resp.kvs.into_iter().next() {
        return Ok((resp.header, kv));
    }
    let revision = resp.header.map_or(0, |h| h.revision);
    let mut watch = KeyWatch::open(
        server,
        &[WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: recipe::prefix_end(prefix),
            start_revision: revision,
            ..Default::default()
        }],
    );
    loop {
        for r in watch.next().await? {
            if r.canceled {
                return Err(ConcurrencyError::NoLeader);
            }
            let put = r.events.into_iter().find(|e| e.r#type() == EventType::Put);
            if let Some(kv) = put.and_then(|e| e.kv) {
                let mut header = r.header.unwrap_or_default();
                header.revision = kv.mod_revision;
                return Ok((Some(header), kv));
            }
        }
    }
}
