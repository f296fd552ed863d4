//! Workloads: many clients at once through etcd-client (a gRPC client no one
//! here wrote), each call recorded as a `cairn_check` operation with call and
//! return times in nanoseconds since the run started.
//! - registers: get / put / compare-and-set (a txn on the value) on keys
//!   `r0`..`r4`, unique values;
//! - append: list-append txns on `a0`..`a2`: if the list's mod revision is
//!   the last one seen, put the list with a unique element appended and read
//!   another list, else read it;
//! - watches: streams on the `r` and `a` prefixes on every member, resumed
//!   after the last revision seen when a stream breaks;
//! - locks: etcd's Lock service on `mutex/m` with a lease, the lock key's
//!   create revision as fencing token, writes to `fenced/m` guarded by it;
//! - leases: each client holds up to three leases (TTL 2–5 s) at a time,
//!   attaches up to three keys `l/<lease>/<n>` to each, and per lease
//!   either keeps it alive for a while and then lets it expire, lets it
//!   expire at once, or revokes it; meanwhile it reads the keys
//!   (linearizable gets) and asks TimeToLive (with keys), and goes on reading
//!   a lease for a second and a half after seeing it gone. Recorded as
//!   `cairn_check::lease::LeaseOp`s.
//! A call that errs is `Unknown` (it may have taken effect) unless the
//! client never reached a server (a refused connection: `Failed`); the
//! client then continues under a fresh id, as its old one has a call that
//! may still be in flight.
//!
//! Tests: `tests` below (request and response conversion); whole runs in
//! the smoke run (`jepsen/smoke.sh`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_check::fencing::{FencedWrite, WriteOutcome, FENCED_KEY, LOCK_NAME};
use cairn_check::history::{
    Compare, CompareOp, CompareTarget, KeyValue, Operation, Outcome, Request, Response, Revision,
    Txn, TxnOp, TxnOpResult,
};
use cairn_check::jsonl::HoldRecord;
use cairn_check::lease::{LeaseOp, LeaseOutcome, LeaseRequest, LeaseResponse, LeasedKv};
use cairn_check::watch::WatchStream;
use cairn_check::CommittedChange;
use etcd_client as ec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

/// Client ids of one worker are `stream * CLIENTS_PER_STREAM + n`.
pub const CLIENTS_PER_STREAM: u64 = 1_000_000;

/// What every client shares: the clock, the recorded history, the stop flag.
pub struct Shared {
    pub t0: Instant,
    pub ops: Mutex<Vec<Operation>>,
    pub holds: Mutex<Vec<HoldRecord>>,
    pub lease_ops: Mutex<Vec<LeaseOp>>,
    pub watches: Mutex<Vec<WatchStream>>,
    /// Per watcher, its prefix and the highest revision its streams reached.
    pub reached: Mutex<Vec<(String, u64)>>,
    next_client: AtomicU64,
    pub seed: u64,
}

impl Shared {
    pub fn new(seed: u64) -> Shared {
        Shared {
            t0: Instant::now(),
            ops: Mutex::new(Vec::new()),
            holds: Mutex::new(Vec::new()),
            lease_ops: Mutex::new(Vec::new()),
            watches: Mutex::new(Vec::new()),
            reached: Mutex::new(Vec::new()),
            next_client: AtomicU64::new(1),
            seed,
        }
    }

    pub fn now(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A fresh client id for worker `stream`: `stream * CLIENTS_PER_STREAM
    /// + n`, so the report can draw a worker's successive ids on one row.
    fn client_id(&self, stream: u64) -> u64 {
        stream * CLIENTS_PER_STREAM + self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, op: Operation) {
        self.ops.lock().map(|mut v| v.push(op)).unwrap_or_default();
    }
}

pub async fn connect(url: &str, timeout: Duration) -> Result<ec::Client, ec::Error> {
    let opts = ec::ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_secs(1));
    ec::Client::connect([url], Some(opts)).await
}

/// Whether the request certainly never reached a server.
fn never_sent(e: &ec::Error) -> bool {
    let text = e.to_string().to_lowercase();
    matches!(e, ec::Error::TransportError(_))
        || text.contains("connection refused")
        || text.contains("tcp connect error")
}

fn kv_of(kv: &ec::KeyValue) -> KeyValue {
    KeyValue {
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: Revision(kv.create_revision() as u64),
        mod_revision: Revision(kv.mod_revision() as u64),
        version: kv.version() as u64,
    }
}

fn rev(h: Option<&ec::ResponseHeader>) -> Revision {
    Revision(h.map_or(0, |h| h.revision()) as u64)
}

pub fn to_etcd_txn(t: &Txn) -> ec::Txn {
    let compares: Vec<ec::Compare> = t
        .compares
        .iter()
        .map(|c| {
            let op = match c.op {
                CompareOp::Equal => ec::CompareOp::Equal,
                CompareOp::NotEqual => ec::CompareOp::NotEqual,
                CompareOp::Less => ec::CompareOp::Less,
                CompareOp::Greater => ec::CompareOp::Greater,
            };
            let k = c.key.clone();
            match &c.target {
                CompareTarget::Value(v) => ec::Compare::value(k, op, v.clone()),
                CompareTarget::Version(v) => ec::Compare::version(k, op, *v as i64),
                CompareTarget::ModRevision(r) => ec::Compare::mod_revision(k, op, r.0 as i64),
                CompareTarget::CreateRevision(r) => ec::Compare::create_revision(k, op, r.0 as i64),
            }
        })
        .collect();
    let ops = |ops: &[TxnOp]| -> Vec<ec::TxnOp> {
        ops.iter()
            .map(|o| match o {
                TxnOp::Get { key } => ec::TxnOp::get(key.clone(), None),
                TxnOp::Put { key, value } => ec::TxnOp::put(key.clone(), value.clone(), None),
                TxnOp::Delete { key } => ec::TxnOp::delete(key.clone(), None),
            })
            .collect()
    };
    ec::Txn::new()
        .when(compares)
        .and_then(ops(&t.success))
        .or_else(ops(&t.failure))
}

pub fn from_etcd_txn(r: &ec::TxnResponse) -> Response {
    let results = r
        .op_responses()
        .iter()
        .map(|o| match o {
            ec::TxnOpResponse::Put(_) => TxnOpResult::Put,
            ec::TxnOpResponse::Get(g) => TxnOpResult::Get(g.kvs().first().map(kv_of)),
            ec::TxnOpResponse::Delete(d) => TxnOpResult::Delete {
                deleted: d.deleted() as u64,
            },
            ec::TxnOpResponse::Txn(_) => TxnOpResult::Put,
        })
        .collect();
    Response::Txn {
        header_revision: rev(r.header()),
        succeeded: r.succeeded(),
        results,
    }
}

/// Executes one request; the outcome as the checker wants it.
async fn execute(client: &mut ec::Client, req: &Request) -> Outcome {
    let result = match req {
        Request::Get { key, .. } => client.get(key.clone(), None).await.map(|r| Response::Get {
            header_revision: rev(r.header()),
            kv: r.kvs().first().map(kv_of),
        }),
        Request::Put { key, value } => {
            client
                .put(key.clone(), value.clone(), None)
                .await
                .map(|r| Response::Put {
                    header_revision: rev(r.header()),
                })
        }
        Request::Delete { key } => {
            client
                .delete(key.clone(), None)
                .await
                .map(|r| Response::Delete {
                    header_revision: rev(r.header()),
                    deleted: r.deleted() as u64,
                })
        }
        Request::Txn(t) => client.txn(to_etcd_txn(t)).await.map(|r| from_etcd_txn(&r)),
        Request::Compact { revision } => {
            client
                .compact(revision.0 as i64, None)
                .await
                .map(|r| Response::Compact {
                    header_revision: rev(r.header()),
                })
        }
    };
    match result {
        Ok(r) => Outcome::Ok(r),
        Err(e) if never_sent(&e) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// Runs `req`, records it, and returns its outcome.
async fn call(shared: &Shared, client: &mut ec::Client, id: &mut u64, req: Request) -> Outcome {
    let stream = *id / CLIENTS_PER_STREAM;
    let call = shared.now();
    let out = execute(client, &req).await;
    let ret = shared.now();
    let op = Operation {
        client: *id,
        call,
        ret: (out != Outcome::Unknown).then_some(ret),
        input: req,
        output: out.clone(),
    };
    shared.record(op);
    if out == Outcome::Unknown {
        *id = shared.client_id(stream);
    }
    out
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn pause_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One register client against the member at `url`.
pub async fn registers(shared: &Shared, url: String, stream: u64, stop: watch::Receiver<bool>) {
    let mut rng = SmallRng::seed_from_u64(shared.seed ^ (stream << 20) ^ 0x5e);
    let mut id = shared.client_id(stream);
    let mut n = 0u64;
    let mut last_seen: [Option<String>; 5] = Default::default();
    while !stopped(&stop) {
        let Ok(mut client) = connect(&url, Duration::from_secs(2)).await else {
            pause_ms(200).await;
            continue;
        };
        while !stopped(&stop) {
            let k = rng.random_range(0..5usize);
            let key = format!("r{k}");
            n += 1;
            let value = format!("s{stream}-{n}");
            let req = match rng.random_range(0..10) {
                0..4 => Request::get(&key),
                4..7 => Request::put(&key, &value),
                _ => {
                    let target = match &last_seen[k] {
                        Some(v) => CompareTarget::Value(v.clone()),
                        None => CompareTarget::Version(0),
                    };
                    Request::Txn(Txn {
                        compares: vec![Compare::new(&key, target, CompareOp::Equal)],
                        success: vec![TxnOp::Put {
                            key: key.clone(),
                            value,
                        }],
                        failure: vec![TxnOp::Get { key: key.clone() }],
                    })
                }
            };
            let out = call(shared, &mut client, &mut id, req.clone()).await;
            match (&req, &out) {
                (_, Outcome::Ok(Response::Get { kv, .. })) => {
                    last_seen[k] = kv.as_ref().map(|kv| kv.value.clone());
                }
                (Request::Put { value, .. }, Outcome::Ok(_)) => last_seen[k] = Some(value.clone()),
                (
                    Request::Txn(t),
                    Outcome::Ok(Response::Txn {
                        succeeded, results, ..
                    }),
                ) => {
                    if *succeeded {
                        if let Some(TxnOp::Put { value, .. }) = t.success.first() {
                            last_seen[k] = Some(value.clone());
                        }
                    } else if let Some(TxnOpResult::Get(kv)) = results.first() {
                        last_seen[k] = kv.as_ref().map(|kv| kv.value.clone());
                    }
                }
                (_, Outcome::Failed) => {
                    pause_ms(100).await;
                    break;
                }
                _ => {}
            }
            pause_ms(rng.random_range(5..40)).await;
        }
    }
}

/// One list-append client against the member at `url`.
pub async fn append(shared: &Shared, url: String, stream: u64, stop: watch::Receiver<bool>) {
    let mut rng = SmallRng::seed_from_u64(shared.seed ^ (stream << 20) ^ 0xa9);
    let mut id = shared.client_id(stream);
    let mut n = 0u64;
    // Per list: the last value and mod revision seen.
    let mut seen: [(String, u64); 3] = Default::default();
    while !stopped(&stop) {
        let Ok(mut client) = connect(&url, Duration::from_secs(2)).await else {
            pause_ms(200).await;
            continue;
        };
        while !stopped(&stop) {
            let k = rng.random_range(0..3usize);
            let other = (k + rng.random_range(1..3usize)) % 3;
            let key = format!("a{k}");
            let okey = format!("a{other}");
            n += 1;
            let list = if seen[k].0.is_empty() {
                format!("{stream}.{n}")
            } else {
                format!("{} {stream}.{n}", seen[k].0)
            };
            let txn = Txn {
                compares: vec![Compare::new(
                    &key,
                    CompareTarget::ModRevision(Revision(seen[k].1)),
                    CompareOp::Equal,
                )],
                success: vec![
                    TxnOp::Put {
                        key: key.clone(),
                        value: list.clone(),
                    },
                    TxnOp::Get { key: okey },
                ],
                failure: vec![TxnOp::Get { key: key.clone() }],
            };
            let out = call(shared, &mut client, &mut id, Request::Txn(txn)).await;
            match out {
                Outcome::Ok(Response::Txn {
                    header_revision,
                    succeeded: true,
                    ..
                }) => seen[k] = (list, header_revision.0),
                Outcome::Ok(Response::Txn { results, .. }) => {
                    if let Some(TxnOpResult::Get(kv)) = results.first() {
                        seen[k] = kv.as_ref().map_or((String::new(), 0), |kv| {
                            (kv.value.clone(), kv.mod_revision.0)
                        });
                    }
                }
                Outcome::Failed => {
                    pause_ms(100).await;
                    break;
                }
                _ => {}
            }
            pause_ms(rng.random_range(5..40)).await;
        }
    }
}

/// One watcher: streams on `prefix` from revision 1 against `url`, each
/// stream recorded; `slot` indexes `Shared::reached`.
pub async fn watcher(
    shared: &Shared,
    url: String,
    prefix: String,
    slot: usize,
    mut stop: watch::Receiver<bool>,
) {
    let id = shared.client_id(1000 + slot as u64);
    let mut next = 1u64;
    while !stopped(&stop) {
        let Ok(mut client) = connect(&url, Duration::from_secs(2)).await else {
            pause_ms(200).await;
            continue;
        };
        let opts = ec::WatchOptions::new()
            .with_prefix()
            .with_start_revision(next as i64)
            .with_progress_notify();
        let mut stream = match client.watch(prefix.clone(), Some(opts)).await {
            Ok(s) => s,
            Err(_) => {
                pause_ms(200).await;
                continue;
            }
        };
        let mut rec = WatchStream {
            client: id,
            prefix: prefix.clone(),
            start_revision: Revision(next),
            events: Vec::new(),
            progress: None,
        };
        loop {
            let msg = tokio::select! {
                biased;
                _ = stop.changed() => break,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                _ => break,
            };
            if resp.canceled() {
                break;
            }
            for e in resp.events() {
                let Some(kv) = e.kv() else { continue };
                let value = match e.event_type() {
                    ec::EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    ec::EventType::Delete => None,
                };
                rec.events.push(CommittedChange {
                    revision: Revision(kv.mod_revision() as u64),
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value,
                });
            }
            let last = rec.events.last().map_or(0, |e| e.revision.0);
            let mut reached = last;
            if resp.events().is_empty() && !resp.created() {
                let h = rev(resp.header()).0;
                if h > last {
                    rec.progress = Some(Revision(h));
                    reached = h;
                }
            }
            if reached >= next {
                next = reached + 1;
            }
            if let Ok(mut r) = shared.reached.lock() {
                if let Some((_, x)) = r.get_mut(slot) {
                    *x = (*x).max(reached);
                }
            }
        }
        if !rec.events.is_empty() || rec.progress.is_some() {
            if let Ok(mut w) = shared.watches.lock() {
                w.push(rec);
            }
        }
    }
}

/// One lock client: lease, lock, fenced writes, release.
pub async fn locks(shared: &Shared, url: String, stream: u64, stop: watch::Receiver<bool>) {
    let mut rng = SmallRng::seed_from_u64(shared.seed ^ (stream << 20) ^ 0x10c);
    let client_no = shared.client_id(stream);
    while !stopped(&stop) {
        let Ok(mut client) = connect(&url, Duration::from_secs(8)).await else {
            pause_ms(200).await;
            continue;
        };
        let Ok(lease) = client.lease_grant(4, None).await else {
            pause_ms(200).await;
            continue;
        };
        let lease = lease.id();
        let opts = ec::LockOptions::new().with_lease(lease);
        let Ok(locked) = client.lock(LOCK_NAME, Some(opts)).await else {
            let _ = client.lease_revoke(lease).await;
            continue;
        };
        let key = String::from_utf8_lossy(locked.key()).into_owned();
        let acquired_at_ms = shared.t0.elapsed().as_millis() as u64;
        let token = match client.get(key.clone(), None).await {
            Ok(r) => r.kvs().first().map_or(0, |kv| kv.create_revision()),
            Err(_) => 0,
        };
        let mut hold = HoldRecord {
            client: client_no,
            key: key.clone(),
            token,
            acquired_at_ms,
            writes: Vec::new(),
            release: String::new(),
        };
        if token > 0 {
            for n in 0..rng.random_range(1..4u32) {
                let value = format!("c{client_no}-t{token}-{stream}.{n}");
                let txn = ec::Txn::new()
                    .when([ec::Compare::create_revision(
                        key.clone(),
                        ec::CompareOp::Equal,
                        token,
                    )])
                    .and_then([ec::TxnOp::put(FENCED_KEY, value.clone(), None)]);
                let outcome = match client.txn(txn).await {
                    Ok(r) if r.succeeded() => WriteOutcome::Written,
                    Ok(_) => WriteOutcome::GuardFailed,
                    Err(_) => WriteOutcome::Unknown,
                };
                hold.writes.push(FencedWrite { value, outcome });
                pause_ms(rng.random_range(0..50)).await;
            }
        }
        hold.release = if rng.random_range(0..10) < 7 {
            let _ = client.unlock(key).await;
            let _ = client.lease_revoke(lease).await;
            "unlock".into()
        } else {
            let _ = client.lease_revoke(lease).await;
            "revoke".into()
        };
        if let Ok(mut h) = shared.holds.lock() {
            h.push(hold);
        }
    }
}

/// What a lease client does with one of its leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Keep-alives until `keep_until`, then left to expire.
    Keep,
    /// Never kept alive.
    Expire,
    /// Revoked at `revoke_at`.
    Revoke,
}

struct Held {
    id: i64,
    ttl: i64,
    fate: Fate,
    keys: Vec<String>,
    born: u64,
    last_keep_alive: u64,
    keep_until: u64,
    revoke_at: u64,
    gone_seen: Option<u64>,
}

const SEC: u64 = 1_000_000_000;

fn lease_not_found(e: &ec::Error) -> bool {
    e.to_string().contains("lease not found")
}

fn lease_outcome<T>(
    r: Result<T, ec::Error>,
    ok: impl FnOnce(T) -> LeaseResponse,
    not_found: Option<LeaseResponse>,
) -> LeaseOutcome {
    match r {
        Ok(v) => LeaseOutcome::Ok(ok(v)),
        Err(e) if lease_not_found(&e) && not_found.is_some() => {
            LeaseOutcome::Ok(not_found.unwrap_or(LeaseResponse::LeaseNotFound))
        }
        Err(e) if never_sent(&e) => LeaseOutcome::Failed,
        Err(_) => LeaseOutcome::Unknown,
    }
}

/// Executes one lease call.
async fn execute_lease(client: &mut ec::Client, req: &LeaseRequest) -> LeaseOutcome {
    match req {
        LeaseRequest::Grant { ttl } => lease_outcome(
            client.lease_grant(*ttl, None).await,
            |r| LeaseResponse::Grant {
                lease: r.id(),
                ttl: r.ttl(),
            },
            None,
        ),
        LeaseRequest::Put { key, value, lease } => lease_outcome(
            client
                .put(
                    key.clone(),
                    value.clone(),
                    Some(ec::PutOptions::new().with_lease(*lease)),
                )
                .await,
            |r| LeaseResponse::Put {
                revision: rev(r.header()).0,
            },
            Some(LeaseResponse::LeaseNotFound),
        ),
        LeaseRequest::Revoke { lease } => lease_outcome(
            client.lease_revoke(*lease).await,
            |r| LeaseResponse::Revoke {
                revision: rev(r.header()).0,
            },
            Some(LeaseResponse::LeaseNotFound),
        ),
        LeaseRequest::TimeToLive { lease } => lease_outcome(
            client
                .lease_time_to_live(*lease, Some(ec::LeaseTimeToLiveOptions::new().with_keys()))
                .await,
            |r| LeaseResponse::TimeToLive {
                ttl: r.ttl(),
                granted_ttl: r.granted_ttl(),
                keys: r
                    .keys()
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect(),
            },
            Some(LeaseResponse::TimeToLive {
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }),
        ),
        LeaseRequest::KeepAlive { lease } => {
            // One stream per keep-alive: a request, its answer.
            let once = async {
                let (mut keeper, mut stream) = client.lease_keep_alive(*lease).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(r) => Ok(r.ttl()),
                    None => Err(ec::Error::InvalidArgs("keep-alive stream ended".into())),
                }
            };
            let r = tokio::time::timeout(Duration::from_secs(3), once)
                .await
                .unwrap_or_else(|_| Err(ec::Error::InvalidArgs("keep-alive timed out".into())));
            lease_outcome(
                r,
                |ttl| LeaseResponse::KeepAlive { ttl },
                Some(LeaseResponse::KeepAlive { ttl: 0 }),
            )
        }
        LeaseRequest::Get { key } => lease_outcome(
            client.get(key.clone(), None).await,
            |r| LeaseResponse::Get {
                revision: rev(r.header()).0,
                kv: r.kvs().first().map(|kv| LeasedKv {
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    lease: kv.lease(),
                    mod_revision: kv.mod_revision() as u64,
                }),
            },
            None,
        ),
    }
}

/// Runs a lease call and records it.
async fn lease_call(
    shared: &Shared,
    client: &mut ec::Client,
    id: &mut u64,
    req: LeaseRequest,
) -> LeaseOutcome {
    let stream = *id / CLIENTS_PER_STREAM;
    let call = shared.now();
    let out = execute_lease(client, &req).await;
    let ret = shared.now();
    let op = LeaseOp {
        client: *id,
        call,
        ret: (out != LeaseOutcome::Unknown).then_some(ret),
        input: req,
        output: out.clone(),
    };
    shared
        .lease_ops
        .lock()
        .map(|mut v| v.push(op))
        .unwrap_or_default();
    if out == LeaseOutcome::Unknown {
        *id = shared.client_id(stream);
    }
    out
}

/// One lease client against the member at `url`.
pub async fn leases(shared: &Shared, url: String, stream: u64, stop: watch::Receiver<bool>) {
    let mut rng = SmallRng::seed_from_u64(shared.seed ^ (stream << 20) ^ 0x1ea5e);
    let mut id = shared.client_id(stream);
    let mut held: Vec<Held> = Vec::new();
    let mut n = 0u64;
    while !stopped(&stop) {
        let Ok(mut client) = connect(&url, Duration::from_secs(2)).await else {
            pause_ms(200).await;
            continue;
        };
        while !stopped(&stop) {
            let now = shared.now();
            // Forget leases seen gone a while ago, and leases that outlive
            // their TTL by far (a partition keeps leases alive).
            held.retain(|h| {
                h.gone_seen.is_none_or(|t| now < t + 3 * SEC / 2)
                    && now < h.born + (h.ttl as u64 + 20) * SEC
            });
            let alive = |h: &&mut Held| h.gone_seen.is_none();
            let due_keep = held.iter_mut().filter(alive).find(|h| {
                h.fate == Fate::Keep
                    && now < h.keep_until
                    && now >= h.last_keep_alive + h.ttl as u64 * SEC / 3
            });
            let req = if let Some(h) = due_keep {
                h.last_keep_alive = now;
                LeaseRequest::KeepAlive { lease: h.id }
            } else if let Some(h) = held
                .iter_mut()
                .filter(alive)
                .find(|h| h.fate == Fate::Revoke && now >= h.revoke_at)
            {
                h.revoke_at = u64::MAX;
                LeaseRequest::Revoke { lease: h.id }
            } else {
                let pick = rng.random_range(0..10);
                if held.is_empty() || (pick < 2 && held.len() < 3) {
                    LeaseRequest::Grant {
                        ttl: rng.random_range(2..6),
                    }
                } else {
                    let k = rng.random_range(0..held.len());
                    let h = &mut held[k];
                    match pick {
                        0..4 if h.keys.len() < 3 && h.gone_seen.is_none() => {
                            n += 1;
                            let key = format!("l/{:x}/{}", h.id, h.keys.len());
                            h.keys.push(key.clone());
                            LeaseRequest::Put {
                                key,
                                value: format!("s{stream}-{n}"),
                                lease: h.id,
                            }
                        }
                        0..8 if !h.keys.is_empty() => LeaseRequest::Get {
                            key: h.keys[rng.random_range(0..h.keys.len())].clone(),
                        },
                        _ => LeaseRequest::TimeToLive { lease: h.id },
                    }
                }
            };
            let out = lease_call(shared, &mut client, &mut id, req.clone()).await;
            let now = shared.now();
            let lease_of = |req: &LeaseRequest| match req {
                LeaseRequest::Put { lease, .. }
                | LeaseRequest::KeepAlive { lease }
                | LeaseRequest::TimeToLive { lease }
                | LeaseRequest::Revoke { lease } => Some(*lease),
                LeaseRequest::Get { key } => {
                    let hex = key.split('/').nth(1)?;
                    u64::from_str_radix(hex, 16).ok().map(|v| v as i64)
                }
                LeaseRequest::Grant { .. } => None,
            };
            let gone = match &out {
                LeaseOutcome::Ok(LeaseResponse::Grant { lease, ttl }) => {
                    let fate = match rng.random_range(0..3) {
                        0 => Fate::Keep,
                        1 => Fate::Expire,
                        _ => Fate::Revoke,
                    };
                    let ttl = (*ttl).max(1);
                    held.push(Held {
                        id: *lease,
                        ttl,
                        fate,
                        keys: Vec::new(),
                        born: now,
                        last_keep_alive: now,
                        keep_until: now + rng.random_range(ttl as u64..3 * ttl as u64) * SEC,
                        revoke_at: now + rng.random_range(0..2 * ttl as u64 * 1000) * 1_000_000,
                        gone_seen: None,
                    });
                    false
                }
                LeaseOutcome::Ok(LeaseResponse::LeaseNotFound)
                | LeaseOutcome::Ok(LeaseResponse::Revoke { .. })
                | LeaseOutcome::Ok(LeaseResponse::KeepAlive { ttl: 0 })
                | LeaseOutcome::Ok(LeaseResponse::TimeToLive { ttl: -1, .. })
                | LeaseOutcome::Ok(LeaseResponse::Get { kv: None, .. }) => true,
                LeaseOutcome::Failed => {
                    pause_ms(100).await;
                    break;
                }
                _ => false,
            };
            if gone {
                if let Some(l) = lease_of(&req) {
                    for h in held.iter_mut().filter(|h| h.id == l) {
                        h.gone_seen.get_or_insert(now);
                    }
                }
            }
            pause_ms(rng.random_range(10..60)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txn_converts_with_its_compares_and_both_branches() {
        let t = Txn {
            compares: vec![
                Compare::new("k", CompareTarget::Value("v".into()), CompareOp::Equal),
                Compare::new(
                    "k",
                    CompareTarget::ModRevision(Revision(3)),
                    CompareOp::Less,
                ),
            ],
            success: vec![TxnOp::Put {
                key: "k".into(),
                value: "w".into(),
            }],
            failure: vec![
                TxnOp::Get { key: "k".into() },
                TxnOp::Delete { key: "j".into() },
            ],
        };
        let text = format!("{:?}", to_etcd_txn(&t));
        for needle in ["compare", "success", "failure"] {
            assert!(text.to_lowercase().contains(needle), "{needle} in {text}");
        }
        assert_eq!(text.matches("RequestPut").count(), 1, "{text}");
        assert_eq!(text.matches("RequestDeleteRange").count(), 1, "{text}");
    }
}
