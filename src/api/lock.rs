//! etcd's Lock service (`v3lockpb.Lock`): a distributed mutex served by the
//! member, as etcd's v3lock server runs clientv3's `concurrency.Mutex`.
//!
//! - `Lock(name, lease)`: joins the line with the key `name/hex(lease)` on
//!   the lease (reusing it if the lease already joined: the lock is
//!   reentrant per lease), then waits until no key under `name/` was created
//!   before it; answers the header and the key. The key's create revision is
//!   the fencing token: each holder's is higher than every earlier holder's.
//!   No lease (0): a new one with the session TTL (60 s), never kept alive,
//!   as etcd. The key deleted while waiting (its lease expired or was
//!   revoked): `mutex: session is expired`. Any other failure, or the client
//!   going away, deletes the key (also when the client left just as the lock
//!   was acquired — etcd would leave that one to its lease).
//! - `Unlock(key)`: deletes the key (a missing key is not an error).
//!
//! The shared recipe is in `concurrency.rs`. Tests: `tests/lock_election.rs`,
//! `tests/lock_election_interop.rs`.

use cairn_proto::etcdserverpb::{DeleteRangeRequest, ResponseHeader};
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::concurrency::{self as recipe, Acting, Cancel, ConcurrencyError, Joined, Turn};
use super::concurrency_reply;
use crate::server::Server;

/// The Lock service.
#[derive(Clone)]
pub struct LockService(pub Server);

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let server = acting(&self.0, &request).await?;
        let req = request.into_inner();
        let cleanup = server.clone();
        concurrency_reply(
            recipe::run_detached(
                move |cancel| async move { lock(&server, req, cancel).await },
                move |won: Won| async move {
                    // Nobody learnt of this lock: release it, unless this
                    // request only re-entered a lock its lease already held.
                    if !won.existed {
                        let _ = recipe::delete_if_created_at(&cleanup, &won.resp.key, won.revision)
                            .await;
                    }
                },
            )
            .await
            .map(|won| won.resp),
        )
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let server = acting(&self.0, &request).await?;
        let resp = server
            .delete_range(DeleteRangeRequest {
                key: request.into_inner().key,
                ..Default::default()
            })
            .await
            .map_err(ConcurrencyError::from);
        concurrency_reply(resp.map(|r| UnlockResponse { header: r.header }))
    }
}

/// The member acting for the client that sent `request` (an unknown token
/// is answered as etcd's lock server answers it: `Unknown`, etcd's text).
pub(super) async fn acting<T>(server: &Server, request: &Request<T>) -> Result<Acting, Status> {
    let who = server
        .caller(super::auth::credentials(request))
        .await
        .map_err(|e| super::concurrency_status(ConcurrencyError::Server(e)))?;
    Ok(Acting::new(server.clone(), who))
}

/// An acquired lock.
struct Won {
    resp: LockResponse,
    /// The key's create revision.
    revision: i64,
    /// The lease held the lock (or waited for it) before this request.
    existed: bool,
}

async fn lock(
    server: &Acting,
    req: LockRequest,
    mut cancel: Cancel,
) -> Result<Won, ConcurrencyError> {
    let lease = recipe::session_lease(server, req.lease).await?;
    let prefix = recipe::participants_prefix(&req.name);
    let key = recipe::participant_key(&prefix, lease);
    let joined = recipe::join(server, &prefix, &key, b"", lease).await?;
    if joined
        .owner
        .as_ref()
        .is_none_or(|o| o.create_revision == joined.revision)
    {
        let header = joined.header;
        return Ok(joined.won(header));
    }
    match recipe::wait_turn(server, &prefix, &key, joined.revision, &mut cancel).await {
        Ok(Turn::Mine(header)) => Ok(joined.won(header)),
        Ok(Turn::Lost) => Err(ConcurrencyError::SessionExpired),
        Err(e) => {
            // As etcd: a failed or cancelled wait gives up its place in line.
            let _ = recipe::delete_if_created_at(server, &key, joined.revision).await;
            Err(e)
        }
    }
}

impl Joined {
    fn won(self, header: ResponseHeader) -> Won {
        Won {
            resp: LockResponse {
                header: Some(header),
                key: self.key,
            },
            revision: self.revision,
            existed: self.existed,
        }
    }
}
