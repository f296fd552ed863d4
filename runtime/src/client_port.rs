//! Serving a member's client port, and opening its data directory.
//!
//! etcd serves gRPC and plain HTTP (`/health`, `/version`, `/metrics`) on the
//! same client port. In the tokio world each accepted connection is sniffed:
//! one starting with the HTTP/2 preface (`PRI `) goes to the gRPC router, any
//! other is served as HTTP/1.1 by hyper (keep-alive, request bodies, chunked
//! streamed replies: the JSON gateway's watch) calling `http` for each
//! request. Under madsim only gRPC is served (the simulated network carries
//! no raw bytes).
//!
//! With TLS (`https://` URLs, `crate::tls::ServerTls`) the handshake comes
//! first, each in a task of its own under a deadline, so a client that
//! fails it (wrong CA, expired or missing client certificate, plaintext)
//! only loses its own connection. Then the same choice: ALPN `h2` goes to
//! gRPC; otherwise (curl is offered HTTP/1.1 first) the first decrypted
//! bytes are read and put back, `PRI ` going to gRPC, anything else to
//! `http`. The peer port over TLS serves only gRPC. Client gRPC connections
//! go through `crate::h2_authority::AuthorityFix` (etcdctl may send a URL as
//! the HTTP/2 authority, which the HTTP/2 library would refuse). Under madsim the
//! `*_secured` functions take no TLS (`ServerTls` cannot be made there).
//! Tests: the root package's integration tests (`tests/common/mod.rs` waits
//! on `/health` over this port; `tests/watch_interop.rs` reads `/metrics`),
//! and the TCP_NODELAY test at the bottom of this file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::metrics::grpc::ClientRouter;
use crate::metrics::peer::PeerStats;
use crate::tls::ServerTls;
use crate::{Storage, StorageError};

/// An HTTP/1.1 request as the handler sees it: the method, the target (the
/// path and its query, e.g. `/readyz?verbose`), the headers (names in lower
/// case) and the whole body.
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A GET of `target` without headers.
    pub fn get(target: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The body of an HTTP reply: whole (sent with its length), or a stream of
/// chunks each written as it comes (chunked), the reply ending with it.
pub enum HttpBody {
    Full(Vec<u8>),
    Stream(futures::stream::BoxStream<'static, Vec<u8>>),
}

/// An HTTP reply: status code, content type, more headers, body.
pub struct HttpReply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: HttpBody,
}

impl HttpReply {
    /// A reply with a whole body and no other header.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> HttpReply {
        HttpReply {
            status,
            content_type,
            headers: Vec::new(),
            body: HttpBody::Full(body.into()),
        }
    }
}

/// Answers a request; `None` means 404. Asynchronous: a probe may wait on
/// the cluster (a linearizable read), a gateway call on the server.
pub type HttpHandler = Arc<
    dyn Fn(HttpRequest) -> futures::future::BoxFuture<'static, Option<HttpReply>> + Send + Sync,
>;

/// The largest request body the HTTP side reads (larger: 413).
pub const MAX_HTTP_BODY: usize = 64 * 1024 * 1024;

/// Runs blocking `f` off the async threads (tokio's blocking pool) and
/// gives its result, `None` if it panicked; a simulation build, which has
/// no blocking pool, runs it in place.
pub async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f).await.ok()
    }
    #[cfg(madsim)]
    {
        Some(f())
    }
}

/// SIGINT and SIGTERM, caught from when this is made (cairnctl's `lock`
/// and `elect`: a signal right after the key is printed must release it,
/// not kill the process). Never fires in a simulation build (madsim has no
/// signals).
pub struct Interrupts {
    #[cfg(all(unix, not(madsim)))]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Interrupts {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Interrupts {
        #[cfg(all(unix, not(madsim)))]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Interrupts {
                signals: signal(SignalKind::interrupt())
                    .ok()
                    .zip(signal(SignalKind::terminate()).ok()),
            }
        }
        #[cfg(not(all(unix, not(madsim))))]
        Interrupts {}
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(all(unix, not(madsim)))]
        if let Some((i, t)) = self.signals.as_mut() {
            tokio::select! {
                biased;
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Resolves at the process's first SIGTERM or SIGINT, naming it; never
/// resolves when the handlers cannot be installed (`Err`) — nor in a
/// simulation build, which never runs the binary (madsim has no signals).
pub async fn termination_signal() -> Result<&'static str, std::io::Error> {
    #[cfg(not(madsim))]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let which = tokio::select! {
            biased;
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        Ok(which)
    }
    #[cfg(madsim)]
    {
        std::future::pending().await
    }
}

/// Opens the member's storage in `dir`: RocksDB in production; in a
/// simulation build (which never runs the binary) an in-memory SimStorage.
pub fn open_storage(dir: &Path, families: &[&str]) -> Result<Arc<dyn Storage>, StorageError> {
    open_storage_with(dir, families, true)
}

/// `open_storage` for a tool that fills a data dir and closes it (snapshot
/// restore): RocksDB without the WAL file a member writes for reuse.
pub fn open_storage_for_tool(
    dir: &Path,
    families: &[&str],
) -> Result<Arc<dyn Storage>, StorageError> {
    open_storage_with(dir, families, false)
}

fn open_storage_with(
    dir: &Path,
    families: &[&str],
    member: bool,
) -> Result<Arc<dyn Storage>, StorageError> {
    #[cfg(not(madsim))]
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", dir.display())))?;
        Ok(Arc::new(match member {
            true => crate::RocksStorage::open(dir, families)?,
            false => crate::RocksStorage::open_for_tool(dir, families)?,
        }))
    }
    #[cfg(madsim)]
    {
        let _ = (dir, member);
        Ok(Arc::new(crate::SimStorage::new(families)))
    }
}

/// A bound listening socket (so bind errors surface before serving starts,
/// and port 0 can be resolved). Under madsim, only the address: madsim-tonic
/// binds it itself.
pub struct Listener {
    #[cfg(not(madsim))]
    inner: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> Result<Listener, std::io::Error> {
        #[cfg(not(madsim))]
        {
            let inner = tokio::net::TcpListener::bind(addr).await?;
            let addr = inner.local_addr()?;
            Ok(Listener { inner, addr })
        }
        #[cfg(madsim)]
        Ok(Listener { addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves the Raft peer service on `listener`.
pub async fn serve_peers(
    listener: Listener,
    cluster_id: u64,
    inbound: tokio::sync::mpsc::Sender<crate::transport::Inbound>,
    directory: Option<std::sync::Arc<dyn crate::transport::PeerDirectory>>,
) -> Result<(), std::io::Error> {
    serve_peers_secured(listener, cluster_id, inbound, directory, None, None).await
}

/// `serve_peers`, over TLS when `tls` is given (`https://` peer URLs).
pub async fn serve_peers_secured(
    listener: Listener,
    cluster_id: u64,
    inbound: tokio::sync::mpsc::Sender<crate::transport::Inbound>,
    directory: Option<std::sync::Arc<dyn crate::transport::PeerDirectory>>,
    tls: Option<ServerTls>,
    stats: Option<Arc<PeerStats>>,
) -> Result<(), std::io::Error> {
    use crate::transport::{PeerService, RaftPeerServer};
    let mut service = PeerService::new(cluster_id, inbound);
    #[cfg(not(madsim))]
    let members_http = directory
        .clone()
        .map(|d| peer_members_handler(cluster_id, d));
    if let Some(d) = directory {
        service = service.with_directory(d);
    }
    if let Some(stats) = stats {
        service = service.with_stats(stats);
    }
    let router = tonic::transport::Server::builder().add_service(RaftPeerServer::new(service));
    #[cfg(not(madsim))]
    {
        if let Some(tls) = tls {
            let (tx, rx) = tokio::sync::mpsc::channel(128);
            let _acceptor = AbortOnDrop(tokio::spawn(accept_tls_peers(listener.inner, tls, tx)));
            return router
                .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(std::io::Error::other);
        }
        let Some(http) = members_http else {
            let incoming = accept_nodelay(listener.inner);
            return router
                .serve_with_incoming(incoming)
                .await
                .map_err(std::io::Error::other);
        };
        // Plain HTTP/1.1 beside gRPC: etcd's `/members` on the peer port.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<tokio::net::TcpStream, std::io::Error>>(128);
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
        let grpc = AbortOnDrop(tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        }));
        loop {
            if grpc.0.is_finished() {
                return Err(std::io::Error::other("peer gRPC server stopped"));
            }
            let (stream, _) = listener.inner.accept().await?;
            let _ = stream.set_nodelay(true);
            let (tx, http) = (tx.clone(), http.clone());
            tokio::spawn(async move {
                if is_http2(&stream).await {
                    let _ = tx.send(Ok(stream)).await;
                } else {
                    let _ = answer_http1(stream, &http).await;
                }
            });
        }
    }
    #[cfg(madsim)]
    {
        let _ = tls;
        router
            .serve(listener.addr)
            .await
            .map_err(std::io::Error::other)
    }
}

/// etcd's `/members` on the peer port: the members as applied, as a JSON
/// array in id order (`id` as a number, then `peerURLs`, `isLearner` when
/// set, `name` and `clientURLs` when known), with `X-Etcd-Cluster-Id`.
#[cfg(not(madsim))]
fn peer_members_handler(
    cluster_id: u64,
    directory: std::sync::Arc<dyn crate::transport::PeerDirectory>,
) -> HttpHandler {
    Arc::new(move |req: HttpRequest| {
        let directory = directory.clone();
        Box::pin(async move {
            let path = req.target.split('?').next().unwrap_or("");
            if path != "/members" {
                return None;
            }
            if req.method != "GET" {
                let mut r =
                    HttpReply::new(405, "text/plain; charset=utf-8", "Method Not Allowed\n");
                r.headers.push(("Allow", "GET".to_owned()));
                return Some(r);
            }
            // Go's encoding/json escaping (cairn's `gofmt::json_quote`;
            // the runtime does not import cairn).
            let quote = |s: &str| {
                let mut q = String::from("\"");
                for c in s.chars() {
                    match c {
                        '"' | '\\' => {
                            q.push('\\');
                            q.push(c);
                        }
                        '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                            q.push_str(&format!("\\u{:04x}", c as u32))
                        }
                        c if (c as u32) < 0x20 => q.push_str(&format!("\\u{:04x}", c as u32)),
                        c => q.push(c),
                    }
                }
                q.push('"');
                q
            };
            let list = |v: &[String]| v.iter().map(|u| quote(u)).collect::<Vec<_>>().join(",");
            let mut members = directory.members();
            members.sort_by_key(|m| m.id);
            let items: Vec<String> = members
                .iter()
                .map(|m| {
                    let mut o = format!("{{\"id\":{},\"peerURLs\":[{}]", m.id, list(&m.peer_urls));
                    if m.is_learner {
                        o.push_str(",\"isLearner\":true");
                    }
                    if !m.name.is_empty() {
                        o.push_str(&format!(",\"name\":{}", quote(&m.name)));
                    }
                    if !m.client_urls.is_empty() {
                        o.push_str(&format!(",\"clientURLs\":[{}]", list(&m.client_urls)));
                    }
                    o.push('}');
                    o
                })
                .collect();
            let mut r = HttpReply::new(200, "application/json", format!("[{}]\n", items.join(",")));
            r.headers
                .push(("X-Etcd-Cluster-Id", format!("{cluster_id:x}")));
            Some(r)
        })
    })
}

/// Aborts the task when dropped (the accept loop of a port whose server
/// future was dropped).
#[cfg(not(madsim))]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(not(madsim))]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts peer connections, runs each TLS handshake in a task of its own
/// and hands the connections that pass it to `tx`; ends when accepting
/// fails or the server is gone.
#[cfg(not(madsim))]
async fn accept_tls_peers(
    listener: tokio::net::TcpListener,
    tls: ServerTls,
    tx: tokio::sync::mpsc::Sender<Result<crate::tls::TlsConn, std::io::Error>>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if tx.is_closed() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let (tls, tx) = (tls.clone(), tx.clone());
        tokio::spawn(async move {
            match tls.accept(stream).await {
                Ok(s) => {
                    let info = tls.conn_info(&s);
                    let _ = tx
                        .send(Ok(crate::tls::TlsConn::new(s, Vec::new(), info)))
                        .await;
                }
                Err(e) => tracing::warn!(remote = %addr, error = %e, "rejected peer connection"),
            }
        });
    }
}

/// The connections accepted on `listener`, each with TCP_NODELAY set.
/// Without it a peer's reply written in two pieces waits for the sender's
/// delayed ACK (~40 ms on Linux), and the sender sends its next batch only
/// after the reply: replication to that peer would stall that long.
#[cfg(not(madsim))]
fn accept_nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    })
}

/// Serves `grpc` and `http` on `listener` until the task is dropped.
pub async fn serve_client_port(
    listener: Listener,
    grpc: ClientRouter,
    http: HttpHandler,
) -> Result<(), std::io::Error> {
    serve_client_port_secured(listener, grpc, http, None).await
}

/// `serve_client_port`, over TLS when `tls` is given (`https://` client URLs).
#[cfg(not(madsim))]
pub async fn serve_client_port_secured(
    listener: Listener,
    grpc: ClientRouter,
    http: HttpHandler,
    tls: Option<ServerTls>,
) -> Result<(), std::io::Error> {
    match tls {
        Some(tls) => serve_client_port_tls(listener.inner, grpc, http, tls).await,
        None => serve_client_port_plain(listener.inner, grpc, http).await,
    }
}

#[cfg(not(madsim))]
async fn serve_client_port_plain(
    listener: tokio::net::TcpListener,
    grpc: ClientRouter,
    http: HttpHandler,
) -> Result<(), std::io::Error> {
    use crate::h2_authority::AuthorityFix;
    use crate::write_batch::BatchedWrites;
    use tokio::sync::mpsc;
    type Conn = AuthorityFix<BatchedWrites<tokio::net::TcpStream>>;
    let (tx, rx) = mpsc::channel::<Result<Conn, std::io::Error>>(128);
    let grpc_task =
        tokio::spawn(grpc.serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (tx, http) = (tx.clone(), http.clone());
        tokio::spawn(async move {
            if is_http2(&stream).await {
                let _ = tx
                    .send(Ok(AuthorityFix::new(BatchedWrites::new(stream))))
                    .await;
            } else {
                let _ = answer_http1(stream, &http).await;
            }
        });
        if grpc_task.is_finished() {
            return Err(std::io::Error::other("gRPC server stopped"));
        }
    }
}

/// The TLS client port: handshake, then gRPC or HTTP (see the header).
#[cfg(not(madsim))]
async fn serve_client_port_tls(
    listener: tokio::net::TcpListener,
    grpc: ClientRouter,
    http: HttpHandler,
    tls: ServerTls,
) -> Result<(), std::io::Error> {
    use crate::h2_authority::AuthorityFix;
    use crate::tls::TlsConn;
    use crate::write_batch::BatchedWrites;
    use tokio::sync::mpsc;
    type Conn = AuthorityFix<BatchedWrites<TlsConn>>;
    let (tx, rx) = mpsc::channel::<Result<Conn, std::io::Error>>(128);
    let grpc_task =
        tokio::spawn(grpc.serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)));
    loop {
        let (stream, addr) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (tx, http, tls) = (tx.clone(), http.clone(), tls.clone());
        tokio::spawn(async move {
            let stream = match tls.accept(stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(remote = %addr, error = %e, "rejected client connection");
                    return;
                }
            };
            let info = tls.conn_info(&stream);
            if TlsConn::alpn(&stream).as_deref() == Some(b"h2") {
                let conn = TlsConn::new(stream, Vec::new(), info);
                let _ = tx
                    .send(Ok(AuthorityFix::new(BatchedWrites::new(conn))))
                    .await;
                return;
            }
            let (stream, prefix) = match read_prefix(stream, 4).await {
                Ok(read) => read,
                Err(_) => return,
            };
            let conn = TlsConn::new(stream, prefix.clone(), info);
            if prefix == b"PRI " {
                let _ = tx
                    .send(Ok(AuthorityFix::new(BatchedWrites::new(conn))))
                    .await;
            } else {
                let _ = answer_http1(conn, &http).await;
            }
        });
        if grpc_task.is_finished() {
            return Err(std::io::Error::other("gRPC server stopped"));
        }
    }
}

/// Serves only `http` on `listener`, over TLS when `tls` is given: etcd's
/// `--listen-metrics-urls` (metrics and health, no gRPC), over HTTP/1.1.
#[cfg(not(madsim))]
pub async fn serve_http_secured(
    listener: Listener,
    http: HttpHandler,
    tls: Option<ServerTls>,
) -> Result<(), std::io::Error> {
    loop {
        let (stream, addr) = listener.inner.accept().await?;
        let (http, tls) = (http.clone(), tls.clone());
        tokio::spawn(async move {
            let _ = match tls {
                None => answer_http1(stream, &http).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(s) => answer_http1(s, &http).await,
                    Err(e) => {
                        tracing::warn!(remote = %addr, error = %e, "rejected metrics connection");
                        return;
                    }
                },
            };
        });
    }
}

/// Under madsim there is no HTTP to serve: waits forever.
#[cfg(madsim)]
pub async fn serve_http_secured(
    _listener: Listener,
    _http: HttpHandler,
    _tls: Option<ServerTls>,
) -> Result<(), std::io::Error> {
    std::future::pending().await
}

/// Reads the first `n` bytes of `stream` (fewer at its end), within the
/// handshake deadline.
#[cfg(not(madsim))]
async fn read_prefix<S: tokio::io::AsyncRead + Unpin>(
    mut stream: S,
    n: usize,
) -> std::io::Result<(S, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    let mut prefix = vec![0u8; n];
    let mut filled = 0;
    let read = async {
        while filled < n {
            match stream.read(&mut prefix[filled..]).await? {
                0 => break,
                k => filled += k,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    crate::timer::timeout(crate::tls::HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    prefix.truncate(filled);
    Ok((stream, prefix))
}

#[cfg(madsim)]
pub async fn serve_client_port_secured(
    listener: Listener,
    grpc: ClientRouter,
    _http: HttpHandler,
    _tls: Option<ServerTls>,
) -> Result<(), std::io::Error> {
    grpc.serve(listener.addr)
        .await
        .map_err(std::io::Error::other)
}

/// Waits for the first bytes of a connection: `PRI ` opens HTTP/2.
#[cfg(not(madsim))]
async fn is_http2(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4];
    for _ in 0..200 {
        match stream.peek(&mut buf).await {
            Ok(n) if n >= 4 => return &buf == b"PRI ",
            Ok(0) | Err(_) => return false,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    false
}

/// Serves HTTP/1.1 on one connection (keep-alive: many requests) until the
/// client closes it, calling `http` for each request.
#[cfg(not(madsim))]
async fn answer_http1<S>(stream: S, http: &HttpHandler) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = http.clone();
    let service = hyper::service::service_fn(move |req| serve_request(http.clone(), req));
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
        .map_err(std::io::Error::other)
}

#[cfg(not(madsim))]
type ReplyBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>;

/// One request: its body read whole (up to `MAX_HTTP_BODY`), the handler's
/// reply turned into hyper's (404 when it has none).
#[cfg(not(madsim))]
async fn serve_request(
    http: HttpHandler,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<ReplyBody>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_HTTP_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => {
            let reply = match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => HttpReply::new(
                    413,
                    "text/plain; charset=utf-8",
                    "Request Entity Too Large\n",
                ),
                None => HttpReply::new(400, "text/plain; charset=utf-8", "Bad Request\n"),
            };
            return Ok(to_hyper(reply));
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let headers = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        target,
        headers,
        body,
    };
    let reply = http(request).await.unwrap_or_else(|| {
        HttpReply::new(404, "text/plain; charset=utf-8", "404 page not found\n")
    });
    Ok(to_hyper(reply))
}

#[cfg(not(madsim))]
fn to_hyper(reply: HttpReply) -> hyper::Response<ReplyBody> {
    use http_body_util::BodyExt as _;
    use tokio_stream::StreamExt as _;
    let body: ReplyBody = match reply.body {
        HttpBody::Full(bytes) => {
            http_body_util::Full::new(bytes::Bytes::from(bytes)).boxed_unsync()
        }
        HttpBody::Stream(chunks) => http_body_util::StreamBody::new(
            chunks.map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::from(c)))),
        )
        .boxed_unsync(),
    };
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if !reply.content_type.is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(reply.content_type) {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
    }
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.append(n, v);
        }
    }
    response
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn accepted_peer_connections_have_nagle_disabled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(super::accept_nodelay(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY not set on an accepted connection"
        );
    }
}
