//! The request path from a `Server` handler to the node loop and back:
//! proposing a write and waiting for its apply, the ReadIndex barrier of
//! linearizable reads, and the one deadline every request waits under.
//!
//! - `Proposal` ties each client request to the answer its apply gives, so
//!   a handler is `self.propose_for(req).await` — no matching on `Applied`.
//! - `within_request_timeout` is the one place a request's deadline becomes
//!   an error: `etcdserver: no leader` when the member has no leader when it
//!   expires, `etcdserver: request timed out` otherwise.
//!
//! Tests: `src/server/tests.rs` and the integration tests in `tests/`.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use super::apply::Applied;
use super::{Caller, Command, Server, ServerError, MAX_APPLY_GAP};
use crate::mvcc::MvccError;

/// How far a linearizable barrier got (`barrier_steps`).
const UNSENT: u8 = 0;
const SENT: u8 = 1;
const INDEXED: u8 = 2;

/// A client request applied through Raft, and the answer its apply gives.
pub(super) trait Proposal {
    type Answer;
    /// The request as the log carries it.
    fn into_request(self) -> Request;
    /// The answer in what the apply produced, with the response header (at
    /// the apply's revision) filled in; `Err` gives back an apply result of
    /// another kind, which would be a bug.
    fn answer(applied: Applied, header: ResponseHeader) -> Result<Self::Answer, Applied>;
}

/// Requests whose answer is one response message with a header.
macro_rules! proposal {
    ($req:ty => $resp:ty, $variant:ident) => {
        impl Proposal for $req {
            type Answer = $resp;
            fn into_request(self) -> Request {
                Request::$variant(self)
            }
            fn answer(applied: Applied, header: ResponseHeader) -> Result<$resp, Applied> {
                match applied {
                    Applied::$variant(mut resp) => {
                        resp.header = Some(header);
                        Ok(resp)
                    }
                    other => Err(other),
                }
            }
        }
    };
}

proposal!(PutRequest => PutResponse, Put);
proposal!(DeleteRangeRequest => DeleteRangeResponse, DeleteRange);
proposal!(LeaseGrantRequest => LeaseGrantResponse, LeaseGrant);
proposal!(LeaseRevokeRequest => LeaseRevokeResponse, LeaseRevoke);

impl Proposal for TxnRequest {
    type Answer = TxnResponse;
    fn into_request(self) -> Request {
        Request::Txn(self)
    }
    fn answer(applied: Applied, header: ResponseHeader) -> Result<TxnResponse, Applied> {
        match applied {
            Applied::Txn(mut resp) => {
                super::fill_nested_headers(&mut resp, header.revision);
                resp.header = Some(header);
                Ok(resp)
            }
            other => Err(other),
        }
    }
}

/// A compaction answers whether it was physical (the caller then waits for
/// the deletion to be durable).
impl Proposal for CompactionRequest {
    type Answer = (CompactionResponse, bool);
    fn into_request(self) -> Request {
        Request::Compaction(self)
    }
    fn answer(applied: Applied, header: ResponseHeader) -> Result<Self::Answer, Applied> {
        match applied {
            Applied::Compaction(mut resp, physical) => {
                resp.header = Some(header);
                Ok((resp, physical))
            }
            other => Err(other),
        }
    }
}

impl Server {
    /// Proposes a client's `req`, checked against auth when applied.
    pub(super) async fn propose_for_as<P: Proposal>(
        &self,
        who: &Caller,
        req: P,
    ) -> Result<P::Answer, ServerError> {
        let caller = Some(who.record());
        self.answer_of::<P>(self.propose_with(caller, req.into_request()).await?)
    }

    fn answer_of<P: Proposal>(
        &self,
        (applied, revision): (Applied, i64),
    ) -> Result<P::Answer, ServerError> {
        P::answer(applied, self.header(revision)).map_err(|other| {
            // The apply result always matches the request kind.
            panic!("a proposal was applied as {other:?}")
        })
    }

    /// Proposes a write of the member's own and waits until it is applied
    /// here: the apply's result and the revision after it.
    pub(super) async fn propose(&self, request: Request) -> Result<(Applied, i64), ServerError> {
        self.propose_with(None, request).await
    }

    /// Proposes a client's write (`propose`, checked against auth).
    pub(super) async fn propose_as(
        &self,
        who: &Caller,
        request: Request,
    ) -> Result<(Applied, i64), ServerError> {
        self.propose_with(Some(who.record()), request).await
    }

    async fn propose_with(
        &self,
        caller: Option<cairn_proto::cairnpb::Caller>,
        request: Request,
    ) -> Result<(Applied, i64), ServerError> {
        self.refuse_learner()?;
        let raft = &self.shared.raft;
        if raft
            .commit_index
            .load(Ordering::SeqCst)
            .saturating_sub(raft.applied_index.load(Ordering::SeqCst))
            > MAX_APPLY_GAP
        {
            return Err(ServerError::TooManyRequests);
        }
        let request = InternalRequest {
            id: self.next_request_id.fetch_add(1, Ordering::Relaxed),
            member_id: self.shared.config.member_id,
            caller,
            request: Some(request),
        };
        if request.encoded_len() > self.shared.config.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        let (done, rx) = oneshot::channel();
        self.send(Command::Propose { request, done }).await?;
        let applied = self.wait(rx).await?;
        applied.map_err(|e| match e {
            ServerError::Mvcc(MvccError::Storage(_)) => ServerError::Stopped,
            e => e,
        })
    }

    /// Returns once this member has applied everything committed before the
    /// call: the ReadIndex protocol, then waiting for apply.
    pub(super) async fn linearizable_barrier(&self) -> Result<(), ServerError> {
        // One deadline over both steps (a timer is armed per deadline, and
        // linearizable reads come here once per request).
        let stage = AtomicU8::new(UNSENT);
        let done = self
            .within_request_timeout(self.barrier_steps(&stage))
            .await;
        self.count_failed_read_index(&done, &stage);
        done
    }

    /// `linearizable_barrier` for a caller that already runs under the
    /// request deadline (a lease renewal, once per keep-alive: one timer
    /// per renewal, not two). A round that caller's deadline gives up is not
    /// counted as failed (nor was it when the barrier had its own deadline:
    /// the caller's, armed first, fired first).
    pub(super) async fn linearizable_barrier_untimed(&self) -> Result<(), ServerError> {
        let stage = AtomicU8::new(UNSENT);
        let done = self.barrier_steps(&stage).await;
        self.count_failed_read_index(&done, &stage);
        done
    }

    /// The barrier's two steps; `stage` says how far it got (`SENT`, then
    /// `INDEXED` once the read index came back).
    async fn barrier_steps(&self, stage: &AtomicU8) -> Result<(), ServerError> {
        self.refuse_learner()?;
        let (done, rx) = oneshot::channel();
        self.send(Command::ReadIndex { done }).await?;
        stage.store(SENT, Ordering::Relaxed);
        let index = rx.await.map_err(|_| self.answer_dropped())??;
        stage.store(INDEXED, Ordering::Relaxed);
        let applied = self.shared.applied.wait_for(index);
        applied.await.map_err(|_| ServerError::Stopped)
    }

    /// `etcd_server_read_indexes_failed_total`: a barrier whose ReadIndex
    /// was sent and failed before its index came back (not one refused or
    /// never sent).
    fn count_failed_read_index(&self, done: &Result<(), ServerError>, stage: &AtomicU8) {
        if done.is_err() && stage.load(Ordering::Relaxed) == SENT {
            self.shared
                .metrics
                .read_indexes_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Why the node loop dropped a command's answer: the member stopped,
    /// or the entry was lost to a leader change.
    fn answer_dropped(&self) -> ServerError {
        if self.is_stopped() {
            ServerError::Stopped
        } else {
            ServerError::LeaderChanged
        }
    }

    /// Runs `fut` under the request timeout (the one deadline mapping).
    pub(super) async fn within_request_timeout<T>(
        &self,
        fut: impl Future<Output = Result<T, ServerError>>,
    ) -> Result<T, ServerError> {
        match cairn_runtime::timer::timeout(self.shared.config.request_timeout, fut).await {
            Ok(r) => r,
            Err(_) if self.leader().is_none() => Err(ServerError::NoLeader),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// The node loop's answer to a command: a dropped answer means the
    /// member stopped or the entry was lost to a leader change.
    pub(super) async fn wait<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, ServerError> {
        self.within_request_timeout(async { rx.await.map_err(|_| self.answer_dropped()) })
            .await
    }

    pub(super) async fn send(&self, cmd: Command) -> Result<(), ServerError> {
        if self.is_stopped() {
            return Err(ServerError::Stopped);
        }
        self.commands.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ServerError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => ServerError::Stopped,
        })
    }
}
