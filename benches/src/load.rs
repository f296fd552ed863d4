//! The workloads of `cairn-bench`, run over real gRPC connections (tonic) to
//! any etcd v3 endpoint: etcd itself or cairn.
//!
//! - Unary workloads (`put`, `range`, `txn-put`): `clients` tasks share
//!   `conns` connections (client `i` on connection `i % conns`) and take
//!   request numbers from one counter until `total` are taken, so exactly
//!   `total` requests are made whatever their speed.
//! - `watch`: watchers are created on `streams` streams and confirmed before
//!   `writers` putters start; each value carries the put's send time, so
//!   every event gives a put-to-event latency.
//! - `lease-keepalive`: each client grants a lease and opens its own
//!   keep-alive stream before the clock starts; a request is one keep-alive
//!   sent and its answer received.
//!
//! Connections write through `BatchedWrites` (the server's, see
//! `write_batch`): requests that several client tasks make at about the same
//! time leave in one `send`, so the load generator, which shares the machine
//! with the servers it measures, spends less of it.
//!
//! Every awaited request or event has a deadline (`--request-timeout`). A
//! gRPC `Unimplemented` answer stops the run and is reported as such.
//! Each task records into its own histogram; they are merged at the end.
//!
//! Not compiled under madsim (real sockets). Tests: below (keys) and the
//! end-to-end runs in `benches/compare.sh`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    request_op, watch_request, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::histogram::Histogram;
use crate::options::{Options, Workload};
use crate::report::{Errors, EventStats, Report};

/// Why a run could not produce a report at all.
#[derive(Debug)]
pub enum RunError {
    /// Bad endpoint or no connection.
    Connect(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Connect(m) => write!(f, "{m}"),
        }
    }
}

/// Runs the workload `o` describes and reports on it.
pub async fn run(o: &Options) -> Result<Report, RunError> {
    let channels = connect(o).await?;
    let mut report = Report::new(o);
    match o.workload {
        Workload::Put | Workload::TxnPut => run_unary(o, &channels, &mut report).await,
        Workload::Range => {
            populate(o, &channels, &mut report).await;
            if report.unimplemented.is_none() {
                run_unary(o, &channels, &mut report).await
            }
        }
        Workload::Watch => run_watch(o, &channels, &mut report).await,
        Workload::LeaseKeepalive => run_lease_keepalive(o, &channels, &mut report).await,
    }
    Ok(report)
}

async fn connect(o: &Options) -> Result<Vec<Channel>, RunError> {
    let mut channels = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let ep = &o.endpoints[i % o.endpoints.len()];
        let url = match ep.contains("://") {
            true => ep.clone(),
            false => format!("http://{ep}"),
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| RunError::Connect(format!("bad endpoint {url:?}: {e}")))?
            .connect_timeout(o.dial_timeout)
            .tcp_nodelay(true);
        let channel = tokio::time::timeout(
            o.dial_timeout,
            endpoint.connect_with_connector(BatchedConnector),
        )
        .await
        .map_err(|_| RunError::Connect(format!("connecting to {url}: timed out")))?
        .map_err(|e| RunError::Connect(format!("connecting to {url}: {e}")))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Dials plain TCP (no-delay) and puts `BatchedWrites` under the HTTP/2
/// client.
#[derive(Clone, Copy)]
struct BatchedConnector;

type BatchedConn =
    hyper_util::rt::TokioIo<crate::write_batch::BatchedWrites<tokio::net::TcpStream>>;

impl tower_service::Service<tonic::codegen::http::Uri> for BatchedConnector {
    type Response = BatchedConn;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BatchedConn, std::io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            if uri.scheme_str() == Some("https") {
                return Err(std::io::Error::other(
                    "cairn-bench speaks plain HTTP/2 only (no TLS)",
                ));
            }
            let port = uri.port_u16().unwrap_or(80);
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(
                crate::write_batch::BatchedWrites::new(stream),
            ))
        })
    }
}

// ---- keys and values ----

/// Key number `n` as `size` decimal digits (zero-padded; the lowest digits
/// when `n` has more), so keys sort by number.
pub fn encode_key(n: u64, size: usize) -> Vec<u8> {
    let digits = format!("{n:0size$}");
    digits.as_bytes()[digits.len() - size..].to_vec()
}

/// A fixed value of `size` pseudo-random printable bytes (as etcd's tool,
/// one value for all requests).
fn make_value(size: usize) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..size).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

/// The key number of request `i`.
fn key_number(o: &Options, i: u64, rng: &mut SmallRng) -> u64 {
    match o.sequential_keys {
        true => i % o.key_space_size,
        false => rng.random_range(0..o.key_space_size),
    }
}

fn range_end_of_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // all keys
}

// ---- per-task results ----

/// Shared by the tasks of one run: the next request number, and the stop
/// signal with its reason when the server does not implement the service.
struct Shared {
    next: AtomicU64,
    total: u64,
    stop: AtomicBool,
    unimplemented: Mutex<Option<String>>,
}

impl Shared {
    fn new(total: u64) -> Arc<Shared> {
        Arc::new(Shared {
            next: AtomicU64::new(0),
            total,
            stop: AtomicBool::new(false),
            unimplemented: Mutex::new(None),
        })
    }

    /// The next request number, or `None` when all are taken or the run stops.
    fn take(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }

    fn unimplemented(&self, status: &Status) {
        self.stop.store(true, Ordering::Relaxed);
        let mut u = self.unimplemented.lock().expect("not poisoned");
        u.get_or_insert_with(|| unimplemented_reason(status));
    }

    fn take_unimplemented(&self) -> Option<String> {
        self.unimplemented.lock().expect("not poisoned").take()
    }
}

#[derive(Default)]
struct TaskStats {
    latency: Histogram,
    ok: u64,
    errors: Errors,
}

impl TaskStats {
    /// Records one request's outcome; tells `shared` to stop on Unimplemented.
    fn record(&mut self, shared: &Shared, started: Instant, result: Result<(), Status>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latency.record(started.elapsed().as_nanos() as u64);
            }
            Err(status) => {
                if status.code() == Code::Unimplemented {
                    shared.unimplemented(&status);
                }
                self.errors
                    .record(format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }

    fn into_report(self, report: &mut Report) {
        report.ok += self.ok;
        report.latency.merge(&self.latency);
        report.errors.merge(self.errors);
    }
}

/// The message of an Unimplemented status (tonic's server sends none for
/// an unknown service).
fn unimplemented_reason(status: &Status) -> String {
    match status.message() {
        "" => "gRPC status Unimplemented (service not served)".to_string(),
        m => m.to_string(),
    }
}

/// Awaits `fut` for at most `limit`, turning a timeout into a status.
async fn deadline<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("cairn-bench: request timed out")))
}

// ---- put, range, txn-put ----

/// What one unary request of the run is.
struct Unary {
    workload: Workload,
    value: Vec<u8>,
    range: RangeRequest,
}

impl Unary {
    fn new(o: &Options) -> Unary {
        let key = o.key.as_bytes().to_vec();
        Unary {
            workload: o.workload,
            value: make_value(o.val_size),
            range: RangeRequest {
                range_end: match o.prefix {
                    true => range_end_of_prefix(&key),
                    false => Vec::new(),
                },
                key,
                limit: o.limit,
                serializable: o.serializable,
                ..Default::default()
            },
        }
    }

    fn put(&self, o: &Options, i: u64, rng: &mut SmallRng) -> PutRequest {
        PutRequest {
            key: encode_key(key_number(o, i, rng), o.key_size),
            value: self.value.clone(),
            ..Default::default()
        }
    }

    async fn call(
        &self,
        o: &Options,
        kv: &mut KvClient<Channel>,
        i: u64,
        rng: &mut SmallRng,
    ) -> Result<(), Status> {
        match self.workload {
            Workload::Put => kv.put(self.put(o, i, rng)).await.map(drop),
            Workload::Range => kv.range(self.range.clone()).await.map(drop),
            Workload::TxnPut => {
                let txn = TxnRequest {
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(self.put(o, i, rng))),
                    }],
                    ..Default::default()
                };
                kv.txn(txn).await.map(drop)
            }
            Workload::Watch | Workload::LeaseKeepalive => {
                unreachable!("not a unary KV workload")
            }
        }
    }
}

async fn run_unary(o: &Options, channels: &[Channel], report: &mut Report) {
    let shared = Shared::new(o.total);
    let op = Arc::new(Unary::new(o));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(o.clients);
    for c in 0..o.clients {
        let (o, op, shared) = (o.clone(), op.clone(), shared.clone());
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(c as u64 + 1);
            let mut stats = TaskStats::default();
            while let Some(i) = shared.take() {
                let t0 = Instant::now();
                let result = deadline(o.request_timeout, op.call(&o, &mut kv, i, &mut rng)).await;
                stats.record(&shared, t0, result);
            }
            stats
        }));
    }
    for t in tasks {
        t.await.expect("client task panicked").into_report(report);
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.unimplemented = shared.take_unimplemented();
}

/// `range --populate N`: writes the key (or N keys under the prefix) before
/// measuring. Failures count as errors of the report; Unimplemented stops.
async fn populate(o: &Options, channels: &[Channel], report: &mut Report) {
    let n = match o.prefix {
        true => o.populate,
        false => o.populate.min(1),
    };
    let value = make_value(o.val_size);
    let shared = Shared::new(n);
    let mut tasks = Vec::new();
    for c in 0..o.clients.min(n as usize) {
        let (o, value, shared) = (o.clone(), value.clone(), shared.clone());
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = Errors::default();
            while let Some(i) = shared.take() {
                let mut key = o.key.as_bytes().to_vec();
                if o.prefix {
                    key.extend(encode_key(i, o.key_size));
                }
                let put = PutRequest {
                    key,
                    value: value.clone(),
                    ..Default::default()
                };
                if let Err(status) = deadline(o.request_timeout, kv.put(put)).await {
                    if status.code() == Code::Unimplemented {
                        shared.unimplemented(&status);
                    }
                    errors.record(format!(
                        "populate: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
            errors
        }));
    }
    for t in tasks {
        report
            .errors
            .merge(t.await.expect("populate task panicked"));
    }
    report.unimplemented = shared.take_unimplemented();
}

// ---- watch ----

/// One watch stream with its watchers created.
struct OpenStream {
    /// Kept open for the stream's life: dropping it ends the request side.
    _requests: mpsc::Sender<WatchRequest>,
    events: tonic::Streaming<cairn_proto::etcdserverpb::WatchResponse>,
    watchers: u64,
}

/// Opens a watch stream on `channel` and creates `watchers` watchers on it,
/// returning once the server has confirmed them all.
async fn open_watch_stream(
    o: &Options,
    channel: Channel,
    watchers: usize,
) -> Result<OpenStream, Status> {
    let key = o.key.as_bytes().to_vec();
    let create = WatchCreateRequest {
        range_end: match o.prefix {
            true => range_end_of_prefix(&key),
            false => Vec::new(),
        },
        key,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(watchers + 1);
    for _ in 0..watchers {
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create.clone())),
        };
        tx.send(req).await.expect("receiver alive: held below");
    }
    let mut client = WatchClient::new(channel);
    let mut events = deadline(o.request_timeout, client.watch(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    let mut created = 0;
    while created < watchers {
        let resp = deadline(o.request_timeout, events.message())
            .await?
            .ok_or_else(|| {
                Status::unavailable("watch stream ended before watchers were created")
            })?;
        if resp.canceled {
            return Err(Status::internal(format!(
                "watcher canceled at creation: {}",
                resp.cancel_reason
            )));
        }
        if resp.created {
            created += 1;
        }
    }
    Ok(OpenStream {
        _requests: tx,
        events,
        watchers: watchers as u64,
    })
}

/// What a stream's reader learns: events, their latencies, the last arrival.
#[derive(Default)]
struct ReaderStats {
    received: u64,
    latency: Histogram,
    last_event: Option<Duration>,
    errors: Errors,
}

async fn run_watch(o: &Options, channels: &[Channel], report: &mut Report) {
    report.clients = o.writers;
    let base = Instant::now();
    let mut streams = Vec::with_capacity(o.streams);
    for s in 0..o.streams {
        let n = o.watchers / o.streams + usize::from(s < o.watchers % o.streams);
        if n == 0 {
            continue;
        }
        match open_watch_stream(o, channels[s % channels.len()].clone(), n).await {
            Ok(st) => streams.push(st),
            Err(status) => {
                if status.code() == Code::Unimplemented {
                    report.unimplemented = Some(unimplemented_reason(&status));
                    return;
                }
                report.errors.record(format!(
                    "creating watchers: {:?}: {}",
                    status.code(),
                    status.message()
                ));
            }
        }
    }
    let watchers: u64 = streams.iter().map(|s| s.watchers).sum();

    // Readers: each stream's events until the writers are done and every
    // successful put has reached each of its watchers (or nothing came for
    // a whole request timeout).
    let puts_ok = Arc::new(AtomicU64::new(0));
    let writers_done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for st in streams {
        let (puts_ok, writers_done, idle) =
            (puts_ok.clone(), writers_done.clone(), o.request_timeout);
        readers.push(tokio::spawn(read_events(
            st,
            base,
            puts_ok,
            writers_done,
            idle,
        )));
    }

    // Writers.
    let shared = Shared::new(o.total);
    let value = make_value(o.val_size);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..o.writers {
        let (o, value, shared, puts_ok) =
            (o.clone(), value.clone(), shared.clone(), puts_ok.clone());
        let mut kv = KvClient::new(channels[w % channels.len()].clone());
        writers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w as u64 + 1);
            let mut stats = TaskStats::default();
            while let Some(i) = shared.take() {
                let mut key = o.key.as_bytes().to_vec();
                if o.prefix {
                    key.extend(encode_key(key_number(&o, i, &mut rng), o.key_size));
                }
                let mut v = value.clone();
                let t0 = Instant::now();
                let sent_ns = (t0 - base).as_nanos() as u64;
                v[..8].copy_from_slice(&sent_ns.to_le_bytes());
                let put = PutRequest {
                    key,
                    value: v,
                    ..Default::default()
                };
                let result = deadline(o.request_timeout, kv.put(put)).await.map(drop);
                if result.is_ok() {
                    puts_ok.fetch_add(1, Ordering::SeqCst);
                }
                stats.record(&shared, t0, result);
            }
            stats
        }));
    }
    for t in writers {
        t.await.expect("writer task panicked").into_report(report);
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    writers_done.store(true, Ordering::SeqCst);
    report.unimplemented = shared.take_unimplemented();

    let mut events = EventStats {
        expected: report.ok * watchers,
        ..Default::default()
    };
    let mut last_event = None::<Duration>;
    for r in readers {
        let r = r.await.expect("watch reader panicked");
        events.received += r.received;
        events.latency.merge(&r.latency);
        report.errors.merge(r.errors);
        last_event = last_event.max(r.last_event);
    }
    events.elapsed_secs =
        last_event.map_or(0.0, |l| l.saturating_sub(started - base).as_secs_f64());
    report.events = Some(events);
}

async fn read_events(
    mut st: OpenStream,
    base: Instant,
    puts_ok: Arc<AtomicU64>,
    writers_done: Arc<AtomicBool>,
    idle: Duration,
) -> ReaderStats {
    let mut r = ReaderStats::default();
    let slice = Duration::from_millis(100);
    let mut quiet = Duration::ZERO;
    loop {
        if writers_done.load(Ordering::SeqCst)
            && r.received >= puts_ok.load(Ordering::SeqCst) * st.watchers
        {
            break;
        }
        match tokio::time::timeout(slice, st.events.message()).await {
            Err(_) => {
                quiet += slice;
                if quiet >= idle {
                    r.errors
                        .record("watch: no event for a whole request timeout".into());
                    break;
                }
            }
            Ok(Ok(Some(resp))) => {
                quiet = Duration::ZERO;
                let now = base.elapsed();
                if resp.canceled {
                    r.errors
                        .record(format!("watch canceled: {}", resp.cancel_reason));
                    break;
                }
                for ev in &resp.events {
                    let Some(kv) = &ev.kv else { continue };
                    let Some(sent) = kv.value.get(..8) else {
                        continue;
                    };
                    let sent_ns = u64::from_le_bytes(sent.try_into().expect("8 bytes"));
                    r.latency
                        .record((now.as_nanos() as u64).saturating_sub(sent_ns));
                    r.received += 1;
                }
                if !resp.events.is_empty() {
                    r.last_event = Some(now);
                }
            }
            Ok(Ok(None)) => {
                r.errors.record("watch stream ended by the server".into());
                break;
            }
            Ok(Err(status)) => {
                r.errors
                    .record(format!("watch: {:?}: {}", status.code(), status.message()));
                break;
            }
        }
    }
    r
}

// ---- lease-keepalive ----

/// A client's lease and its open keep-alive stream.
struct KeepAlive {
    lease: LeaseClient<Channel>,
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: tonic::Streaming<cairn_proto::etcdserverpb::LeaseKeepAliveResponse>,
}

async fn open_keepalive(o: &Options, channel: Channel) -> Result<KeepAlive, Status> {
    let mut lease = LeaseClient::new(channel);
    let grant = LeaseGrantRequest {
        ttl: o.ttl_secs,
        id: 0,
    };
    let id = deadline(o.request_timeout, lease.lease_grant(grant))
        .await?
        .into_inner()
        .id;
    // A first keep-alive goes in before the call: a Go gRPC server sends the
    // response headers (which the call awaits) only with its first answer.
    let (tx, rx) = mpsc::channel(1);
    tx.send(LeaseKeepAliveRequest { id })
        .await
        .expect("receiver alive: held below");
    let mut responses = deadline(
        o.request_timeout,
        lease.lease_keep_alive(ReceiverStream::new(rx)),
    )
    .await?
    .into_inner();
    deadline(o.request_timeout, responses.message())
        .await?
        .ok_or_else(|| Status::unavailable("keep-alive stream ended by the server"))?;
    Ok(KeepAlive {
        lease,
        id,
        requests: tx,
        responses,
    })
}

async fn keepalive_once(o: &Options, ka: &mut KeepAlive) -> Result<(), Status> {
    ka.requests
        .send(LeaseKeepAliveRequest { id: ka.id })
        .await
        .map_err(|_| Status::unavailable("keep-alive stream closed"))?;
    let resp = deadline(o.request_timeout, ka.responses.message())
        .await?
        .ok_or_else(|| Status::unavailable("keep-alive stream ended by the server"))?;
    match resp.ttl > 0 {
        true => Ok(()),
        false => Err(Status::not_found("lease expired or not found")),
    }
}

async fn run_lease_keepalive(o: &Options, channels: &[Channel], report: &mut Report) {
    let mut opened = Vec::with_capacity(o.clients);
    for c in 0..o.clients {
        match open_keepalive(o, channels[c % channels.len()].clone()).await {
            Ok(ka) => opened.push(ka),
            Err(status) if status.code() == Code::Unimplemented => {
                report.unimplemented = Some(unimplemented_reason(&status));
                return;
            }
            Err(status) => report.errors.record(format!(
                "granting: {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }
    let shared = Shared::new(o.total);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut ka in opened {
        let (o, shared) = (o.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = TaskStats::default();
            while let Some(_i) = shared.take() {
                let t0 = Instant::now();
                let result = keepalive_once(&o, &mut ka).await;
                stats.record(&shared, t0, result);
            }
            // Not measured: leave nothing behind.
            let revoke = LeaseRevokeRequest { id: ka.id };
            let _ = deadline(o.request_timeout, ka.lease.lease_revoke(revoke)).await;
            stats
        }));
    }
    for t in tasks {
        t.await
            .expect("keep-alive task panicked")
            .into_report(report);
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.unimplemented = shared.take_unimplemented();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_sort_by_number() {
        assert_eq!(encode_key(42, 8), b"00000042".to_vec());
        assert_eq!(encode_key(123_456_789, 4), b"6789".to_vec());
        let keys: Vec<Vec<u8>> = (0..1000).map(|n| encode_key(n, 6)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn prefix_range_end_is_the_next_prefix() {
        assert_eq!(range_end_of_prefix(b"abc"), b"abd".to_vec());
        assert_eq!(range_end_of_prefix(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(range_end_of_prefix(&[0xff]), vec![0]);
    }

    #[test]
    fn shared_counter_hands_out_exactly_total_requests() {
        let s = Shared::new(5);
        let taken: Vec<u64> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(taken, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.take(), None);
        let s = Shared::new(5);
        s.unimplemented(&Status::unimplemented("nope"));
        assert_eq!(s.take(), None);
        assert_eq!(s.take_unimplemented().as_deref(), Some("nope"));
    }
}
