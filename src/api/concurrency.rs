//! The building blocks the Lock and Election services share: etcd's clientv3
//! `concurrency` recipes (Session, Mutex, Election), run inside the member
//! over its `Server` handle and its watch hub, as etcd's v3lock / v3election
//! servers run them over an in-process client.
//!
//! Key layout (as etcd): a participant of lock or election `name` owns the
//! key `name + "/" + hex(lease)` (Go's `%x` of the signed lease id), attached
//! to its lease; the participant whose key has the lowest create revision
//! under `name/` holds the lock / leads. That create revision is the fencing
//! token.
//!
//! Invariants:
//! - A participant waits only for the deletion of keys created before its
//!   own (`wait_turn`), through the member's watch hub — never by polling.
//!   Each wait re-reads the predecessors linearizably, so a deletion that
//!   raced the read is seen by the watcher started just after that read.
//! - A request whose client goes away (deadline, cancellation, dropped
//!   connection) never leaves its key behind: the work runs in its own task
//!   (`run_detached`), which learns of the cancellation and cleans up, also
//!   when the client left just as the lock / leadership was won.
//!
//! Auth: the recipes act for the client that called (`Acting`): every write,
//! read and lease grant they make carries its credentials and is checked as
//! the client's own request would be, as etcd's in-process client does.
//!
//! Errors: etcd's servers return clientv3's plain errors, so every failure
//! reaches the client as gRPC `Unknown` with etcd's message (mapped in
//! `api::concurrency_status`).
//! Tests: `tests/lock_election.rs` (gRPC, with etcd 3.4 as the oracle for
//! answers and errors), `tests/lock_election_interop.rs` (etcdctl).

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchResponse,
};
use cairn_proto::mvccpb::{event::EventType, KeyValue};
use tokio::sync::oneshot;

use crate::server::{Caller, Server, ServerError, WatchSession};

/// clientv3 `concurrency`'s default session TTL: the lease a request without
/// one gets (etcd grants it and never keeps it alive).
pub const DEFAULT_SESSION_TTL_SECS: i64 = 60;

/// Why a lock or election request failed. The texts are etcd's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConcurrencyError {
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Proclaim by a key that no longer leads (or a campaign whose key was
    /// deleted while it waited).
    #[error("election: not leader")]
    NotLeader,
    /// Leader of an election nobody campaigns in.
    #[error("election: no leader")]
    NoLeader,
    /// The lock's key was deleted (its lease expired or was revoked) before
    /// the lock was acquired.
    #[error("mutex: session is expired")]
    SessionExpired,
    /// Proclaim or Resign without a leader key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// The client went away; nobody sees this error.
    #[error("context canceled")]
    Cancelled,
}

type Result<T> = std::result::Result<T, ConcurrencyError>;

/// A member handle acting for one client: the recipes' KV and lease calls
/// carry that client's credentials (every other method is the `Server`'s).
#[derive(Clone)]
pub struct Acting {
    server: Server,
    who: Caller,
}

impl std::ops::Deref for Acting {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Acting {
    pub fn new(server: Server, who: Caller) -> Acting {
        Acting { server, who }
    }

    pub async fn txn(&self, req: TxnRequest) -> std::result::Result<TxnResponse, ServerError> {
        self.server.txn_as(&self.who, req).await
    }

    pub async fn range(
        &self,
        req: RangeRequest,
    ) -> std::result::Result<RangeResponse, ServerError> {
        self.server.range_as(&self.who, req).await
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> std::result::Result<DeleteRangeResponse, ServerError> {
        self.server.delete_range_as(&self.who, req).await
    }

    pub async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
    ) -> std::result::Result<LeaseGrantResponse, ServerError> {
        self.server.lease_grant_as(&self.who, req).await
    }
}

/// The lease of a request: the given one, or a new one with the default
/// session TTL when none is given (0), as clientv3's `NewSession`.
pub async fn session_lease(server: &Acting, lease: i64) -> Result<i64> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = server
        .lease_grant(LeaseGrantRequest {
            ttl: DEFAULT_SESSION_TTL_SECS,
            id: 0,
        })
        .await?;
    Ok(granted.id)
}

/// `name/`: the prefix all participants' keys share.
pub fn participants_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// A participant's key: the prefix and the lease id as Go's `%x` prints a
/// signed integer (a minus sign, then the magnitude).
pub fn participant_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = prefix.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k
}

/// The end of the range of all keys starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`; `\0`, every key, when no such end exists).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key under `prefix` with the lowest create revision: the owner.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The key under `prefix` created last at or before `max_create_revision`:
/// the one a waiter waits for.
fn last_created_up_to(prefix: &[u8], max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn create_revision_is(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
    }
}

fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    op(Op::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    }))
}

/// The key-values of the `index`-th response of a txn (a range).
pub fn range_kvs(resp: &TxnResponse, index: usize) -> &[KeyValue] {
    match resp.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// A participant's key after joining.
#[derive(Debug, Clone)]
pub struct Joined {
    pub key: Vec<u8>,
    /// The key's create revision: the participant's place in line.
    pub revision: i64,
    /// The key existed already (the same lease joined before).
    pub existed: bool,
    /// The key's value when it existed.
    pub existing_value: Vec<u8>,
    /// The current owner (lowest create revision under the prefix).
    pub owner: Option<KeyValue>,
    pub header: ResponseHeader,
}

/// Puts `key` (with `value`, on `lease`) unless it exists, and reads the
/// owner of `prefix`, in one txn: clientv3's Mutex / Election first step.
pub async fn join(
    server: &Acting,
    prefix: &[u8],
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<Joined> {
    let resp = server
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, 0)],
            success: vec![
                put_op(key, value, lease),
                op(Op::RequestRange(first_created(prefix))),
            ],
            failure: vec![
                op(Op::RequestRange(get(key))),
                op(Op::RequestRange(first_created(prefix))),
            ],
        })
        .await?;
    let header = resp.header.unwrap_or_default();
    let owner = range_kvs(&resp, 1).first().cloned();
    let (revision, existing_value) = if resp.succeeded {
        (header.revision, Vec::new())
    } else {
        // The failure branch ran: the key exists (no write in between, the
        // txn is atomic), so its range has it.
        let kv = range_kvs(&resp, 0)
            .first()
            .expect("a failed create-revision-0 compare means the key exists");
        (kv.create_revision, kv.value.clone())
    };
    Ok(Joined {
        key: key.to_vec(),
        revision,
        existed: !resp.succeeded,
        existing_value,
        owner,
        header,
    })
}

/// Deletes `key` if its create revision is still `revision` (it is still
/// the incarnation this request created); the txn's header.
pub async fn delete_if_created_at(
    server: &Acting,
    key: &[u8],
    revision: i64,
) -> Result<ResponseHeader> {
    let resp = server
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, revision)],
            success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            }))],
            failure: vec![],
        })
        .await?;
    Ok(resp.header.unwrap_or_default())
}

/// Puts `value` on `key` (on `lease`) if its create revision is still
/// `revision`: whether it was, and the txn's header.
pub async fn put_if_created_at(
    server: &Acting,
    key: &[u8],
    revision: i64,
    value: &[u8],
    lease: i64,
) -> Result<(bool, ResponseHeader)> {
    let resp = server
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, revision)],
            success: vec![put_op(key, value, lease)],
            failure: vec![],
        })
        .await?;
    Ok((resp.succeeded, resp.header.unwrap_or_default()))
}

/// How a wait for the participant's turn ended.
#[derive(Debug)]
pub enum Turn {
    /// No key created before the participant's is left; the header of that read.
    Mine(ResponseHeader),
    /// The participant's own key was deleted (or replaced) while it waited.
    Lost,
}

/// Waits until no key under `prefix` has a lower create revision than the
/// participant's (`my_key`, created at `my_revision`), as clientv3's
/// `waitDeletes`: read the last key created before mine, wait for its
/// deletion, repeat. Unlike clientv3, it also watches `my_key` and ends at
/// once when that is deleted (clientv3 notices only after all predecessors
/// are gone).
pub async fn wait_turn(
    server: &Acting,
    prefix: &[u8],
    my_key: &[u8],
    my_revision: i64,
    cancel: &mut Cancel,
) -> Result<Turn> {
    loop {
        cancel.check()?;
        // One linearizable read of both: the predecessor, and whether my key
        // is still the incarnation that joined.
        let read = server
            .txn(TxnRequest {
                compare: vec![],
                success: vec![
                    op(Op::RequestRange(last_created_up_to(
                        prefix,
                        my_revision - 1,
                    ))),
                    op(Op::RequestRange(get(my_key))),
                ],
                failure: vec![],
            })
            .await?;
        let header = read.header.unwrap_or_default();
        if range_kvs(&read, 1)
            .first()
            .is_none_or(|kv| kv.create_revision != my_revision)
        {
            return Ok(Turn::Lost);
        }
        let Some(predecessor) = range_kvs(&read, 0).first() else {
            return Ok(Turn::Mine(header));
        };
        // Deletions after the read; the watchers see only deletions.
        let mut watch = KeyWatch::open(
            server,
            &[
                deletions_of(&predecessor.key, header.revision + 1),
                deletions_of(my_key, header.revision + 1),
            ],
        );
        loop {
            let responses = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ConcurrencyError::Cancelled),
                r = watch.next() => r?,
            };
            if responses.iter().any(|r| r.canceled) {
                // A watcher was cancelled (its history was compacted away):
                // read again.
                break;
            }
            let deleted = |key: &[u8]| {
                responses.iter().flat_map(|r| &r.events).any(|e| {
                    e.r#type() == EventType::Delete && e.kv.as_ref().is_some_and(|kv| kv.key == key)
                })
            };
            if deleted(my_key) {
                return Ok(Turn::Lost);
            }
            if deleted(&predecessor.key) {
                break;
            }
        }
    }
}

fn deletions_of(key: &[u8], start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.to_vec(),
        start_revision,
        filters: vec![FilterType::Noput as i32],
        ..Default::default()
    }
}

/// Watchers on the member's hub for one request; removed when dropped.
pub struct KeyWatch {
    session: WatchSession,
}

impl KeyWatch {
    pub fn open(server: &Server, watchers: &[WatchCreateRequest]) -> KeyWatch {
        let session = server.watch_session();
        for w in watchers {
            session.create(w);
        }
        KeyWatch { session }
    }

    /// The next responses that carry events or cancel a watcher (`created`
    /// confirmations and progress notifications are skipped).
    pub async fn next(&mut self) -> Result<Vec<WatchResponse>> {
        loop {
            let out: Vec<WatchResponse> = self
                .session
                .take()
                .into_iter()
                .filter(|r| !r.events.is_empty() || r.canceled)
                .collect();
            if !out.is_empty() {
                return Ok(out);
            }
            if self.session.catch_up()? || self.session.has_output() {
                continue;
            }
            tokio::select! {
                biased;
                _ = self.session.stopped() => return Err(ServerError::Stopped.into()),
                _ = self.session.changed() => {}
            }
        }
    }
}

/// Tells detached work that its client went away.
pub struct Cancel {
    rx: oneshot::Receiver<()>,
    fired: bool,
}

impl Cancel {
    /// Resolves once the client has gone away.
    pub async fn cancelled(&mut self) {
        if !self.fired {
            let _ = (&mut self.rx).await;
            self.fired = true;
        }
    }

    /// `Cancelled` if the client has gone away.
    pub fn check(&mut self) -> Result<()> {
        if !self.fired {
            match self.rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                _ => self.fired = true,
            }
        }
        Err(ConcurrencyError::Cancelled)
    }
}

/// Runs `work` in its own task, so it finishes (and cleans up) even when the
/// calling gRPC handler is dropped because its client went away. `work`
/// learns of that through its `Cancel`; a success nobody receives any more
/// is handed to `abandoned` (to release what it acquired).
pub async fn run_detached<T, W, A>(
    work: impl FnOnce(Cancel) -> W,
    abandoned: impl FnOnce(T) -> A + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
    W: std::future::Future<Output = Result<T>> + Send + 'static,
    A: std::future::Future<Output = ()> + Send + 'static,
{
    // Dropped with this future: that is the cancellation signal.
    let (_cancel_on_drop, rx) = oneshot::channel::<()>();
    let (done, result) = oneshot::channel();
    let fut = work(Cancel { rx, fired: false });
    tokio::spawn(async move {
        if let Err(Ok(won)) = done.send(fut.await) {
            abandoned(won).await;
        }
    });
    result
        .await
        .unwrap_or(Err(ConcurrencyError::Server(ServerError::Stopped)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_keys_print_lease_ids_as_go_does() {
        assert_eq!(
            participant_key(b"l/", 0x694d77aa9e38260f),
            b"l/694d77aa9e38260f"
        );
        assert_eq!(participant_key(b"l/", 10), b"l/a");
        assert_eq!(participant_key(b"l/", -1), b"l/-1");
        assert_eq!(participant_key(b"l/", i64::MIN), b"l/-8000000000000000");
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
