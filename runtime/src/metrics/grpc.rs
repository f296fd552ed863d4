//! Client RPCs counted as go-grpc-prometheus counts etcd's: per method,
//! calls started (`grpc_server_started_total`), calls finished by status
//! code (`grpc_server_handled_total`), messages each way
//! (`grpc_server_msg_{received,sent}_total`), optionally handling time
//! (`grpc_server_handling_seconds`, etcd's `--metrics extensive`), and the
//! payload bytes of all calls together (etcd's
//! `etcd_network_client_grpc_{received,sent}_bytes_total`).
//!
//! `GrpcMetricsLayer` wraps the client port's gRPC router (a tower layer;
//! madsim-tonic ignores layers, so simulated members count nothing here).
//! It reads the method from the request path, counts message frames and
//! their payload bytes in both bodies (gRPC's 5-byte length prefix framing)
//! and takes the status code from the response headers (a trailers-only
//! reply) or trailers. A call whose reply is dropped before its status was
//! sent (the client went away) is counted `Canceled`.

// A simulated member counts nothing here (no layer runs): the counting
// parts are unused there.
#![cfg_attr(madsim, allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Histogram, GRPC_HANDLING_BUCKETS_SECS};

/// gRPC's status codes by number, with the names Go prints.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;

/// How a method streams (the `grpc_type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl CallKind {
    pub fn label(self) -> &'static str {
        match self {
            CallKind::Unary => "unary",
            CallKind::ClientStream => "client_stream",
            CallKind::ServerStream => "server_stream",
            CallKind::BidiStream => "bidi_stream",
        }
    }
}

/// A method served: its package-qualified service, name and kind.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    pub service: &'static str,
    pub method: &'static str,
    pub kind: CallKind,
}

/// The counters of one method.
#[derive(Debug)]
pub struct MethodStats {
    pub spec: MethodSpec,
    pub started: AtomicU64,
    /// Finished calls by status code (the index is the code).
    pub handled: [AtomicU64; 17],
    pub msg_received: AtomicU64,
    pub msg_sent: AtomicU64,
    /// From start to status, when handling times are kept.
    pub handling: Option<Histogram>,
}

/// Every counted method of a port, and the payload bytes of all calls.
#[derive(Debug)]
pub struct GrpcStats {
    methods: Vec<MethodStats>,
    by_path: HashMap<String, usize>,
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl GrpcStats {
    /// Counters for `methods`, all at zero (as go-grpc-prometheus
    /// initializes a registered server's), with handling-time histograms
    /// when `handling_times`.
    pub fn new(methods: &[MethodSpec], handling_times: bool) -> Arc<Self> {
        let by_path = methods
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("/{}/{}", m.service, m.method), i))
            .collect();
        let methods = methods
            .iter()
            .map(|spec| MethodStats {
                spec: *spec,
                started: AtomicU64::new(0),
                handled: std::array::from_fn(|_| AtomicU64::new(0)),
                msg_received: AtomicU64::new(0),
                msg_sent: AtomicU64::new(0),
                handling: handling_times.then(|| Histogram::new(&GRPC_HANDLING_BUCKETS_SECS)),
            })
            .collect();
        Arc::new(GrpcStats {
            methods,
            by_path,
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        })
    }

    pub fn methods(&self) -> &[MethodStats] {
        &self.methods
    }

    /// Whether handling times are kept.
    pub fn handling_times(&self) -> bool {
        self.methods.iter().any(|m| m.handling.is_some())
    }

    /// The layer that counts into these stats.
    pub fn layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            stats: self.clone(),
        }
    }

    fn method_index(&self, path: &str) -> Option<usize> {
        self.by_path.get(path).copied()
    }
}

/// The layer stack of the client port's router: `GrpcMetricsLayer` over
/// `LargeUnaryLayer` (so calls it serves are counted too).
#[cfg(not(madsim))]
pub type ClientLayer = tower_layer::Stack<
    crate::large_reply::LargeUnaryLayer,
    tower_layer::Stack<GrpcMetricsLayer, tower_layer::Identity>,
>;

/// The client port's gRPC server builder, counting into a `GrpcStats`
/// (`counted_server`). madsim-tonic ignores layers and its layered types
/// cannot be named, so a simulated member's builder is the plain one.
#[cfg(not(madsim))]
pub type ClientServer = tonic::transport::Server<ClientLayer>;
#[cfg(madsim)]
pub type ClientServer = tonic::transport::Server;

/// The client port's gRPC router (`ClientServer` with its services).
#[cfg(not(madsim))]
pub type ClientRouter = tonic::transport::server::Router<ClientLayer>;
#[cfg(madsim)]
pub type ClientRouter = tonic::transport::server::Router;

/// A gRPC server builder whose every call is counted in `stats`.
pub fn counted_server(stats: &Arc<GrpcStats>) -> ClientServer {
    counted_server_with(stats, None)
}

/// `counted_server` with `large` served by `LargeUnaryLayer`
/// (`crate::large_reply`); under madsim the router's own service answers
/// its calls.
pub fn counted_server_with(
    stats: &Arc<GrpcStats>,
    large: Option<crate::large_reply::LargeUnary>,
) -> ClientServer {
    #[cfg(not(madsim))]
    {
        tonic::transport::Server::builder()
            .layer(stats.layer())
            .layer(crate::large_reply::LargeUnaryLayer::new(large))
    }
    #[cfg(madsim)]
    {
        let _ = (stats, large);
        tonic::transport::Server::builder()
    }
}

/// The tower layer over a gRPC router (see the module header).
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    stats: Arc<GrpcStats>,
}

/// One call in flight: records its status once.
#[derive(Debug)]
struct Call {
    stats: Arc<GrpcStats>,
    method: usize,
    started: std::time::Instant,
    done: AtomicBool,
}

impl Call {
    fn start(stats: &Arc<GrpcStats>, path: &str) -> Option<Arc<Call>> {
        let method = stats.method_index(path)?;
        stats.methods[method]
            .started
            .fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(Call {
            stats: stats.clone(),
            method,
            started: std::time::Instant::now(),
            done: AtomicBool::new(false),
        }))
    }

    fn finish(&self, code: usize) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        let m = &self.stats.methods[self.method];
        m.handled[code.min(CODE_NAMES.len() - 1)].fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &m.handling {
            h.observe(self.started.elapsed());
        }
    }

    fn messages(&self, received: bool, n: u64) {
        let m = &self.stats.methods[self.method];
        let counter = if received {
            &m.msg_received
        } else {
            &m.msg_sent
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The reply went away before its status: the client canceled.
        self.finish(CANCELED);
    }
}

/// Follows gRPC's message framing (a flag byte, a 4-byte big-endian
/// length, the payload) across a body's chunks.
#[derive(Debug, Default)]
struct Framer {
    header: [u8; 5],
    have: usize,
    remaining: u64,
}

impl Framer {
    /// Feeds a chunk; returns the messages begun in it and its payload bytes.
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut payload) = (0, 0);
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                payload += n;
                self.remaining -= n;
                data = &data[n as usize..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                messages += 1;
                let mut len = [0u8; 4];
                len.copy_from_slice(&self.header[1..5]);
                self.remaining = u64::from(u32::from_be_bytes(len));
                self.have = 0;
            }
        }
        (messages, payload)
    }
}

/// The status code in a header map (`grpc-status`), if any.
fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

#[cfg(not(madsim))]
pub use imp::{CountedBody, GrpcMetricsService};

#[cfg(not(madsim))]
mod imp {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame, SizeHint};

    use super::*;

    impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
        type Service = GrpcMetricsService<S>;

        fn layer(&self, inner: S) -> Self::Service {
            GrpcMetricsService {
                inner,
                stats: self.stats.clone(),
            }
        }
    }

    /// The service `GrpcMetricsLayer` makes.
    #[derive(Debug, Clone)]
    pub struct GrpcMetricsService<S> {
        inner: S,
        stats: Arc<GrpcStats>,
    }

    /// A request or reply body whose frames are counted.
    #[derive(Debug)]
    pub struct CountedBody<B> {
        inner: B,
        stats: Arc<GrpcStats>,
        call: Option<Arc<Call>>,
        received: bool,
        framer: Framer,
    }

    impl<B> CountedBody<B> {
        fn new(inner: B, stats: Arc<GrpcStats>, call: Option<Arc<Call>>, received: bool) -> Self {
            CountedBody {
                inner,
                stats,
                call,
                received,
                framer: Framer::default(),
            }
        }

        fn count(&mut self, data: &[u8]) {
            let (messages, payload) = self.framer.feed(data);
            let bytes = if self.received {
                &self.stats.received_bytes
            } else {
                &self.stats.sent_bytes
            };
            bytes.fetch_add(payload, Ordering::Relaxed);
            if let Some(call) = &self.call {
                call.messages(self.received, messages);
            }
        }
    }

    impl<B> Body for CountedBody<B>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        type Data = Bytes;
        type Error = B::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
            let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(p) => p,
            };
            if let Some(Ok(frame)) = &polled {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.count(&data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let (false, Some(call), Some(code)) =
                        (self.received, &self.call, status_code(trailers))
                    {
                        call.finish(code);
                    }
                }
            }
            Poll::Ready(polled)
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }

    impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetricsService<S>
    where
        S: tower_service::Service<http::Request<CountedBody<B>>, Response = http::Response<R>>,
        S::Future: Send + 'static,
        S::Error: 'static,
        R: Body<Data = Bytes> + Unpin,
    {
        type Response = http::Response<CountedBody<R>>;
        type Error = S::Error;
        type Future =
            Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send + 'static>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let stats = self.stats.clone();
            let call = Call::start(&stats, req.uri().path());
            let req = req.map(|b| CountedBody::new(b, stats.clone(), call.clone(), true));
            let reply = self.inner.call(req);
            Box::pin(async move {
                let resp = reply.await?;
                if let (Some(call), Some(code)) = (&call, status_code(resp.headers())) {
                    call.finish(code);
                }
                Ok(resp.map(|b| CountedBody::new(b, stats, call, false)))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_counts_messages_and_payload_across_chunks() {
        let mut f = Framer::default();
        // Two messages: 3 bytes and 0 bytes, then a 2-byte one split oddly.
        let mut wire = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0];
        wire.extend_from_slice(&[0, 0, 0, 0, 2, b'x', b'y']);
        let (mut m, mut p) = (0, 0);
        for chunk in [&wire[..2], &wire[2..6], &wire[6..15], &wire[15..]] {
            let (a, b) = f.feed(chunk);
            m += a;
            p += b;
        }
        assert_eq!((m, p), (3, 5));
    }

    #[test]
    fn a_call_is_counted_once_and_canceled_when_dropped_unfinished() {
        let stats = GrpcStats::new(
            &[MethodSpec {
                service: "etcdserverpb.KV",
                method: "Range",
                kind: CallKind::Unary,
            }],
            true,
        );
        let call = Call::start(&stats, "/etcdserverpb.KV/Range").expect("known method");
        call.finish(0);
        call.finish(14);
        drop(call);
        let dropped = Call::start(&stats, "/etcdserverpb.KV/Range").expect("known method");
        drop(dropped);
        assert!(Call::start(&stats, "/etcdserverpb.KV/Nope").is_none());
        let m = &stats.methods()[0];
        assert_eq!(m.started.load(Ordering::Relaxed), 2);
        assert_eq!(m.handled[0].load(Ordering::Relaxed), 1);
        assert_eq!(m.handled[14].load(Ordering::Relaxed), 0);
        assert_eq!(m.handled[CANCELED].load(Ordering::Relaxed), 1);
        assert_eq!(m.handling.as_ref().map(Histogram::count), Some(2));
    }
}
