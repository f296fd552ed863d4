//! Writes of a client connection gathered into fewer system calls.
//!
//! The HTTP/2 server under tonic flushes its connection every time it is
//! polled with something to send: a unary reply is usually two `writev`s
//! (HEADERS and DATA, then the trailers, each written as soon as the reply's
//! task hands them over), and 64 clients over 8 connections cost about 1.8
//! `writev` per request (measured, `perf stat -e syscalls:sys_enter_writev`).
//! On loopback a `writev` is also the receiver's TCP processing; together
//! they were 37 % of the server's CPU on serializable ranges.
//!
//! `BatchedWrites` sits under the gRPC server on each client connection
//! (`client_port.rs`) and under `cairn-bench`'s connections. It was taken
//! out once (`da6f291`) after a jepsen smoke failure it turned out not to
//! cause: a member's monotonic clock stepping back under libfaketime
//! (docs/jepsen.md, "A second one"). A
//! write is copied into its buffer; a flush with bytes buffered does not
//! write them at once but asks tokio to wake the connection's task once its
//! worker has run every other task that is ready (`tokio::task::yield_now`'s
//! deferral: the worker wakes deferred tasks when its queue is empty, and
//! at least every few dozen tasks it runs), and reports the flush done. The
//! replies other tasks finish meanwhile join the buffer; when the
//! deferred wake has come, the next flush (or read) writes everything in
//! one `writev`. The delay is bounded by the worker's queue, never by a
//! timer; a buffer past `HIGH_WATER` is written at once, and a large write
//! into an empty buffer goes straight to the socket.
//!
//! Why a flush may report done before the bytes are written: the HTTP/2
//! layer calls flush after every large DATA frame it queues as well as at
//! the end of each poll, and waits on a pending flush before it takes the
//! next frame; holding it there would write one frame per wake again. The
//! bytes are not lost: the deferred wake polls the connection, whose poll
//! always ends in a flush (h2's `Connection::poll`), and a read writes them
//! too; shutdown writes them before it closes.
//! Tests: the unit tests below; every gRPC integration test goes through it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes past which a write or flush goes to the socket at once.
pub const HIGH_WATER: usize = 64 * 1024;

/// A connection whose writes are batched (see the module header).
pub struct BatchedWrites<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// The deferred wake for what `buf` holds, once asked for.
    deferral: Option<Arc<Deferral>>,
}

/// Set when tokio runs the deferred wake; passes the wake on to the task.
struct Deferral {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Deferral {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl<S> BatchedWrites<S> {
    pub fn new(inner: S) -> Self {
        BatchedWrites {
            inner,
            buf: Vec::new(),
            pos: 0,
            deferral: None,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Asks for a wake once the worker has nothing else to run; false when
    /// that has already come (the bytes should be written now).
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(d) = &self.deferral {
            return !d.fired.load(Ordering::Acquire);
        }
        let deferral = Arc::new(Deferral {
            fired: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(deferral.clone());
        let mut deferred_cx = Context::from_waker(&waker);
        let mut yielding = std::pin::pin!(tokio::task::yield_now());
        // The first poll hands `waker` to the worker's deferred list (or,
        // outside a runtime's worker, wakes it at once) and is pending.
        let _ = yielding.as_mut().poll(&mut deferred_cx);
        let fired = deferral.fired.load(Ordering::Acquire);
        self.deferral = Some(deferral);
        !fired
    }
}

impl<S: AsyncWrite + Unpin> BatchedWrites<S> {
    /// Writes the buffer out (pending until the socket has taken it all).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.pos..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.buf.clear();
        self.pos = 0;
        self.deferral = None;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending() > 0 && !this.defer(cx) {
            // The deferred wake came: write what waits before reading. An
            // error here shows on the next write or flush too.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending() >= HIGH_WATER {
            std::task::ready!(this.poll_drain(cx))?;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.pending() == 0 && total >= HIGH_WATER {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending() == 0 {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if this.pending() < HIGH_WATER && this.defer(cx) {
            // Written when the deferred wake comes (see the header).
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Implements tonic's `Connected` for a connection wrapper `$wrapper<S>`
/// (a struct with an `inner: S` field) by asking `inner`.
macro_rules! connected_through_inner {
    ($wrapper:ident) => {
        impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
            for $wrapper<S>
        {
            type ConnectInfo = S::ConnectInfo;

            fn connect_info(&self) -> S::ConnectInfo {
                self.inner.connect_info()
            }
        }
    };
}
#[allow(unused_imports)] // only the server's crate has a second wrapper
pub(crate) use connected_through_inner;

connected_through_inner!(BatchedWrites);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket pair whose server half is batched.
    async fn pair() -> (BatchedWrites<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (BatchedWrites::new(server), client)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn flushed_bytes_reach_the_peer_once_the_task_is_polled_again() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"hello ").await.unwrap();
        server.flush().await.unwrap();
        // Held: the flush asked for a deferred wake.
        assert_eq!(server.pending(), 6);
        server.write_all(b"world").await.unwrap();
        // The next flush after the deferred wake writes both at once.
        tokio::task::yield_now().await;
        server.flush().await.unwrap();
        assert_eq!(server.pending(), 0);
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_that_flushes_and_waits_is_woken_to_write() {
        // The h2 pattern: write, flush (reported done), then wait on a read;
        // the deferred wake must get the bytes out without anything else
        // happening on the connection.
        let (mut server, mut client) = pair().await;
        let echo = tokio::spawn(async move {
            server.write_all(b"ping").await.unwrap();
            server.flush().await.unwrap();
            let mut b = [0u8; 4];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"pong");
            server
        });
        let mut got = [0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_exact(&mut got),
        )
        .await
        .expect("the held bytes were never written")
        .unwrap();
        assert_eq!(&got, b"ping");
        client.write_all(b"pong").await.unwrap();
        let server = echo.await.unwrap();
        assert_eq!(server.pending(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_writes_and_shutdown_lose_nothing() {
        let (mut server, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut expected = Vec::new();
        for i in 0..200u32 {
            // Small and large writes mixed, some past the high-water mark.
            let len = if i % 17 == 0 {
                HIGH_WATER + 123
            } else {
                (i as usize * 37) % 900
            };
            let chunk: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            server.write_all(&chunk).await.unwrap();
            if i % 3 == 0 {
                server.flush().await.unwrap();
            }
            expected.extend_from_slice(&chunk);
        }
        server.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
    }
}
