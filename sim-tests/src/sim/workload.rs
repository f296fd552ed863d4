//! Workloads: clients on their own simulated nodes issuing etcd requests over
//! gRPC, recorded as `checker::history` operations.
//!
//! Every RPC carries a deadline (in simulation a partition is unbounded
//! latency, not an error). Writes carry unique values (`c<client>-<n>`).
//! Outcomes: a response is `Ok`; etcd's compacted / future-revision errors
//! are definite errors; "database space exceeded" is a definite failure
//! (refused before proposing, or at apply: no effect); any other failure of a read is `Failed` (it changed
//! nothing), of a write `Unknown` (it may still commit), never `Ok`.
//!
//! Two mixes run side by side:
//! - KV over `k0..k9`: linearizable and serializable Gets (latest and past
//!   revisions), Put, Delete, multi-op Txn, compare-and-set, Compact;
//! - list-append over `l0..l3`: read two lists, then a Txn guarded by both
//!   mod_revisions appends one token to each (checked for lost, duplicated,
//!   non-atomic appends and reads that are not a prefix of the final list).
//! Tests: `tests/sim.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, CompactionRequest, Compare as PbCompare,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{
    Compare, CompareOp, CompareTarget, EtcdError, KeyValue, Operation, Request, Response, Revision,
    Txn, TxnOp, TxnOpResult,
};

pub const KV_KEYS: usize = 10;
pub const LIST_KEYS: usize = 4;

/// Everything the clients observed.
#[derive(Default)]
pub struct Recorder {
    /// The logical clock: the simulated time of each tick so far (tick `t`
    /// at index `t - 1`), which the HTML report's time axis uses.
    clock: Mutex<Vec<tokio::time::Instant>>,
    /// Operations checked for linearizability.
    pub history: Mutex<Vec<Operation>>,
    /// Serializable Gets (checked against the committed history instead).
    pub serializable: Mutex<Vec<Operation>>,
}

impl Recorder {
    /// The next tick of the history's logical clock (strictly increasing).
    pub fn tick(&self) -> u64 {
        let mut ticks = self.clock.lock().expect("clock lock");
        ticks.push(tokio::time::Instant::now());
        ticks.len() as u64
    }

    /// Each tick's simulated time in nanoseconds after `origin` (tick `t`
    /// at index `t - 1`; earlier ticks count as `origin`).
    pub fn tick_times(&self, origin: tokio::time::Instant) -> Vec<u64> {
        self.clock
            .lock()
            .expect("clock lock")
            .iter()
            .map(|t| {
                u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
            })
            .collect()
    }

    /// Adds an operation the caller classified itself.
    pub fn record_op(&self, op: Operation, serializable: bool) {
        self.record(op, serializable)
    }

    fn record(&self, op: Operation, serializable: bool) {
        let list = if serializable {
            &self.serializable
        } else {
            &self.history
        };
        list.lock().expect("history lock poisoned").push(op);
    }
}

/// The client URLs of the current members, which clients, watchers, lease
/// and lock clients pick from at random. Fixed in most scenarios; in `churn`
/// the membership driver changes it as members join and leave. Picking
/// draws one number from the caller's RNG, as indexing a fixed list did.
#[derive(Clone, Default)]
pub struct Endpoints(Arc<Mutex<Vec<String>>>);

impl Endpoints {
    pub fn new(urls: Vec<String>) -> Endpoints {
        Endpoints(Arc::new(Mutex::new(urls)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().expect("endpoints lock poisoned")
    }

    /// Replaces the list (never with an empty one).
    pub fn set(&self, urls: Vec<String>) {
        assert!(!urls.is_empty(), "a cluster always has a member");
        *self.lock() = urls;
    }

    pub fn all(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// A URL drawn at random.
    pub fn pick(&self, rng: &mut StdRng) -> String {
        let urls = self.lock();
        urls[rng.random_range(0..urls.len())].clone()
    }
}

/// The latest revision any client saw, for picking past revisions.
#[derive(Default)]
pub struct Shared {
    pub max_seen: AtomicU64,
    pub acked_ops: AtomicU64,
    pub unknown_ops: AtomicU64,
    /// Writes refused with "database space exceeded" (recorded as failed:
    /// no effect).
    pub nospace_ops: AtomicU64,
    /// Operations refused by auth (recorded as failed: no effect).
    pub refused_ops: AtomicU64,
}

pub struct Client {
    pub id: u64,
    urls: Endpoints,
    rng: StdRng,
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    deadline: Duration,
    written: u64,
    /// The user this client is, in the auth scenario.
    login: Option<UserLogin>,
}

/// How one call ended, before classification.
enum CallError {
    Etcd(EtcdError),
    /// "etcdserver: mvcc: database space exceeded": refused before or at
    /// apply, so it had no effect.
    NoSpace,
    /// An auth refusal (no user, a denied permission, a void token, an old
    /// auth revision): refused before proposing or at apply, no effect.
    Refused(String),
    Other(#[allow(dead_code)] String),
}

/// etcd's texts of the auth refusals (`CallError::Refused`).
pub const AUTH_REFUSALS: [&str; 4] = [
    "etcdserver: user name is empty",
    "etcdserver: permission denied",
    "etcdserver: invalid auth token",
    "etcdserver: revision of auth store is old",
];

fn to_call_error(s: tonic::Status) -> CallError {
    let msg = s.message();
    if msg.contains("required revision has been compacted") {
        CallError::Etcd(EtcdError::Compacted)
    } else if msg.contains("required revision is a future revision") {
        CallError::Etcd(EtcdError::FutureRevision)
    } else if msg.contains("database space exceeded") {
        CallError::NoSpace
    } else if AUTH_REFUSALS.iter().any(|r| msg == *r) {
        CallError::Refused(msg.to_owned())
    } else {
        CallError::Other(format!("{:?}: {msg}", s.code()))
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kv_of(kv: &cairn_proto::mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        value: utf8(&kv.value),
        create_revision: Revision(kv.create_revision as u64),
        mod_revision: Revision(kv.mod_revision as u64),
        version: kv.version as u64,
    }
}

fn header_rev(h: &Option<cairn_proto::etcdserverpb::ResponseHeader>) -> Revision {
    Revision(h.as_ref().map_or(0, |h| h.revision) as u64)
}

fn pb_compare(c: &Compare) -> PbCompare {
    use compare::{CompareResult, CompareTarget as T, TargetUnion as U};
    let result = match c.op {
        CompareOp::Equal => CompareResult::Equal,
        CompareOp::NotEqual => CompareResult::NotEqual,
        CompareOp::Less => CompareResult::Less,
        CompareOp::Greater => CompareResult::Greater,
    };
    let (target, union) = match &c.target {
        CompareTarget::Value(v) => (T::Value, U::Value(v.clone().into_bytes())),
        CompareTarget::Version(v) => (T::Version, U::Version(*v as i64)),
        CompareTarget::ModRevision(r) => (T::Mod, U::ModRevision(r.0 as i64)),
        CompareTarget::CreateRevision(r) => (T::Create, U::CreateRevision(r.0 as i64)),
    };
    PbCompare {
        result: result as i32,
        target: target as i32,
        key: c.key.clone().into_bytes(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

fn pb_op(op: &TxnOp) -> RequestOp {
    let request = match op {
        TxnOp::Get { key } => request_op::Request::RequestRange(RangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        }),
        TxnOp::Put { key, value } => request_op::Request::RequestPut(PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..Default::default()
        }),
        TxnOp::Delete { key } => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        }),
    };
    RequestOp {
        request: Some(request),
    }
}

/// `msg` as a request carrying `token` (the auth scenario's users).
fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token.and_then(|t| t.parse().ok()) {
        r.metadata_mut().insert("token", t);
    }
    r
}

/// A client that is an auth user (`auth3`): it logs in with the password
/// the auth operator last set, and again when told its token is void.
pub struct UserLogin {
    pub user: String,
    pub passwords: Arc<super::auth::Passwords>,
    token: Option<String>,
    logged_in: bool,
}

/// Sends `req` to `url`, waits at most `deadline`.
async fn execute(
    url: &str,
    req: &Request,
    serializable: bool,
    deadline: Duration,
    token: Option<&str>,
) -> Result<Response, CallError> {
    let call = async {
        let mut kv = KvClient::connect(url.to_owned())
            .await
            .map_err(|e| CallError::Other(format!("connect: {e}")))?;
        let resp = match req {
            Request::Get { key, revision } => {
                let r = kv
                    .range(with_token(
                        RangeRequest {
                            key: key.clone().into_bytes(),
                            revision: revision.0 as i64,
                            serializable,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map_err(to_call_error)?
                    .into_inner();
                Response::Get {
                    header_revision: header_rev(&r.header),
                    kv: r.kvs.first().map(kv_of),
                }
            }
            Request::Put { key, value } => {
                let r = kv
                    .put(with_token(
                        PutRequest {
                            key: key.clone().into_bytes(),
                            value: value.clone().into_bytes(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map_err(to_call_error)?
                    .into_inner();
                Response::Put {
                    header_revision: header_rev(&r.header),
                }
            }
            Request::Delete { key } => {
                let r = kv
                    .delete_range(with_token(
                        DeleteRangeRequest {
                            key: key.clone().into_bytes(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map_err(to_call_error)?
                    .into_inner();
                Response::Delete {
                    header_revision: header_rev(&r.header),
                    deleted: r.deleted as u64,
                }
            }
            Request::Txn(t) => {
                let r = kv
                    .txn(with_token(
                        TxnRequest {
                            compare: t.compares.iter().map(pb_compare).collect(),
                            success: t.success.iter().map(pb_op).collect(),
                            failure: t.failure.iter().map(pb_op).collect(),
                        },
                        token,
                    ))
                    .await
                    .map_err(to_call_error)?
                    .into_inner();
                let results = r
                    .responses
                    .iter()
                    .map(|op| match &op.response {
                        Some(response_op::Response::ResponseRange(rr)) => {
                            TxnOpResult::Get(rr.kvs.first().map(kv_of))
                        }
                        Some(response_op::Response::ResponsePut(_)) => TxnOpResult::Put,
                        Some(response_op::Response::ResponseDeleteRange(d)) => {
                            TxnOpResult::Delete {
                                deleted: d.deleted as u64,
                            }
                        }
                        other => panic!("unexpected txn op response {other:?}"),
                    })
                    .collect();
                Response::Txn {
                    header_revision: header_rev(&r.header),
                    succeeded: r.succeeded,
                    results,
                }
            }
            Request::Compact { revision } => {
                let r = kv
                    .compact(with_token(
                        CompactionRequest {
                            revision: revision.0 as i64,
                            physical: revision.0 % 2 == 0,
                        },
                        token,
                    ))
                    .await
                    .map_err(to_call_error)?
                    .into_inner();
                Response::Compact {
                    header_revision: header_rev(&r.header),
                }
            }
        };
        Ok(resp)
    };
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Other("deadline exceeded".into())),
    }
}

impl Client {
    pub fn new(
        id: u64,
        urls: Endpoints,
        seed: u64,
        recorder: Arc<Recorder>,
        shared: Arc<Shared>,
    ) -> Client {
        Client {
            id,
            urls,
            rng: StdRng::seed_from_u64(seed),
            recorder,
            shared,
            deadline: Duration::from_secs(2),
            written: 0,
            login: None,
        }
    }

    /// Makes this client the auth user `user`.
    pub fn as_user(mut self, user: String, passwords: Arc<super::auth::Passwords>) -> Client {
        self.login = Some(UserLogin {
            user,
            passwords,
            token: None,
            logged_in: false,
        });
        self
    }

    /// The token to send (logging in first if needed; failures are left to
    /// the request, which auth then refuses).
    async fn token_for(&mut self, url: &str) -> Option<String> {
        let login = self.login.as_mut()?;
        if !login.logged_in {
            let password = login.passwords.get(&login.user)?;
            if let Ok(token) = super::auth::login(url, &login.user, &password).await {
                login.token = token;
                login.logged_in = true;
            }
        }
        login.token.clone()
    }

    /// A value no other write uses.
    pub fn next_value(&mut self) -> String {
        self.value()
    }

    fn value(&mut self) -> String {
        self.written += 1;
        format!("c{}-{}", self.id, self.written)
    }

    fn kv_key(&mut self) -> String {
        format!("k{}", self.rng.random_range(0..KV_KEYS))
    }

    fn pick_url(&mut self) -> String {
        self.urls.pick(&mut self.rng)
    }

    fn past_revision(&mut self) -> Revision {
        let max = self.shared.max_seen.load(Ordering::SeqCst).max(1);
        Revision(self.rng.random_range(1..=max + 2))
    }

    /// Issues `req` to a random member and records it; returns the response.
    pub async fn call(&mut self, req: Request, serializable: bool) -> Option<Response> {
        let url = self.pick_url();
        self.call_at(&url, req, serializable).await
    }

    pub async fn call_at(
        &mut self,
        url: &str,
        req: Request,
        serializable: bool,
    ) -> Option<Response> {
        let call = self.recorder.tick();
        let token = self.token_for(url).await;
        let result = execute(url, &req, serializable, self.deadline, token.as_deref()).await;
        if let (Some(login), Err(CallError::Refused(why))) = (self.login.as_mut(), &result) {
            // A void or stale token, or none while auth is on: log in again.
            if why != "etcdserver: permission denied" {
                login.logged_in = false;
            }
        }
        let ret = self.recorder.tick();
        let (op, resp) = match result {
            Ok(resp) => {
                if let Some(r) = resp.header_revision() {
                    self.shared.max_seen.fetch_max(r.0, Ordering::SeqCst);
                }
                self.shared.acked_ops.fetch_add(1, Ordering::Relaxed);
                (
                    Operation::ok(self.id, call, ret, req, resp.clone()),
                    Some(resp),
                )
            }
            Err(CallError::Etcd(e)) => {
                let resp = Response::Error(e);
                (
                    Operation::ok(self.id, call, ret, req, resp.clone()),
                    Some(resp),
                )
            }
            Err(CallError::NoSpace) => {
                self.shared.nospace_ops.fetch_add(1, Ordering::Relaxed);
                (Operation::failed(self.id, call, ret, req), None)
            }
            Err(CallError::Refused(_)) => {
                self.shared.refused_ops.fetch_add(1, Ordering::Relaxed);
                (Operation::failed(self.id, call, ret, req), None)
            }
            Err(CallError::Other(_)) if req.is_read_only() => {
                (Operation::failed(self.id, call, ret, req), None)
            }
            Err(CallError::Other(_)) => {
                self.shared.unknown_ops.fetch_add(1, Ordering::Relaxed);
                (Operation::unknown(self.id, call, req), None)
            }
        };
        self.recorder.record(op, serializable);
        resp
    }

    /// One step of the mixed workload.
    pub async fn step(&mut self) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=24 => {
                let key = self.kv_key();
                self.call(Request::get(&key), false).await;
            }
            25..=34 => {
                let key = self.kv_key();
                let rev = if self.rng.random_bool(0.3) {
                    self.past_revision()
                } else {
                    Revision::LATEST
                };
                self.call(Request::Get { key, revision: rev }, true).await;
            }
            35..=39 => {
                let key = self.kv_key();
                let revision = self.past_revision();
                self.call(Request::Get { key, revision }, false).await;
            }
            40..=59 => {
                let (key, value) = (self.kv_key(), self.value());
                self.call(Request::put(&key, &value), false).await;
            }
            60..=64 => {
                let key = self.kv_key();
                self.call(Request::delete(&key), false).await;
            }
            65..=74 => self.multi_op_txn().await,
            75..=84 => self.compare_and_set().await,
            85..=98 => self.list_append().await,
            _ => {
                let max = self.shared.max_seen.load(Ordering::SeqCst);
                if max > 30 {
                    let revision = Revision(max - self.rng.random_range(5..30));
                    self.call(Request::Compact { revision }, false).await;
                }
            }
        }
    }

    async fn multi_op_txn(&mut self) {
        let (a, b) = (self.kv_key(), self.kv_key());
        let target = match self.rng.random_range(0..3) {
            0 => CompareTarget::Version(self.rng.random_range(0..4)),
            1 => CompareTarget::ModRevision(self.past_revision()),
            _ => CompareTarget::CreateRevision(self.past_revision()),
        };
        let op = [
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Less,
            CompareOp::Greater,
        ][self.rng.random_range(0..4)];
        let mut success = vec![TxnOp::Put {
            key: a.clone(),
            value: self.value(),
        }];
        if b != a {
            success.push(TxnOp::Get { key: b.clone() });
            if self.rng.random_bool(0.3) {
                success.push(TxnOp::Delete { key: b.clone() });
            }
        }
        let failure = vec![
            TxnOp::Get { key: a.clone() },
            TxnOp::Put {
                key: b,
                value: self.value(),
            },
        ];
        let txn = Txn {
            compares: vec![Compare::new(&a, target, op)],
            success,
            failure,
        };
        self.call(Request::Txn(txn), false).await;
    }

    /// Read a key, then write it only if nobody else did meanwhile.
    async fn compare_and_set(&mut self) {
        let key = self.kv_key();
        let url = self.pick_url();
        let Some(Response::Get { kv, .. }) = self.call_at(&url, Request::get(&key), false).await
        else {
            return;
        };
        let compare = match &kv {
            Some(kv) => Compare::new(
                &key,
                CompareTarget::Value(kv.value.clone()),
                CompareOp::Equal,
            ),
            None => Compare::new(&key, CompareTarget::Version(0), CompareOp::Equal),
        };
        let txn = Txn {
            compares: vec![compare],
            success: vec![TxnOp::Put {
                key: key.clone(),
                value: self.value(),
            }],
            failure: vec![TxnOp::Get { key }],
        };
        self.call_at(&url, Request::Txn(txn), false).await;
    }

    /// Appends one token to two lists atomically, guarded by what was read.
    async fn list_append(&mut self) {
        let a = self.rng.random_range(0..LIST_KEYS);
        let b = (a + 1 + self.rng.random_range(0..LIST_KEYS - 1)) % LIST_KEYS;
        let (ka, kb) = (format!("l{a}"), format!("l{b}"));
        let url = self.pick_url();
        let mut read = Vec::new();
        for key in [&ka, &kb] {
            match self.call_at(&url, Request::get(key), false).await {
                Some(Response::Get { kv, .. }) => read.push(kv),
                _ => return,
            }
        }
        let token = self.value();
        let mut compares = Vec::new();
        let mut success = Vec::new();
        for (key, kv) in [(&ka, &read[0]), (&kb, &read[1])] {
            let rev = kv.as_ref().map_or(Revision(0), |kv| kv.mod_revision);
            compares.push(Compare::new(
                key,
                CompareTarget::ModRevision(rev),
                CompareOp::Equal,
            ));
            let list = match kv {
                Some(kv) => format!("{} {token}", kv.value),
                None => token.clone(),
            };
            success.push(TxnOp::Put {
                key: key.clone(),
                value: list,
            });
        }
        let txn = Txn {
            compares,
            success,
            failure: Vec::new(),
        };
        self.call_at(&url, Request::Txn(txn), false).await;
    }
}

/// Runs `client` until `stop` is set, pausing a little between requests.
pub async fn run_until(mut client: Client, stop: Arc<AtomicBool>) -> Client {
    while !stop.load(Ordering::SeqCst) {
        client.step().await;
        let pause = client.rng.random_range(0..30);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    client
}
