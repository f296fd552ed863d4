//! Unary gRPC replies too large to hold whole (issue 24 item 5: the
//! server's Range, `src/api/range_stream.rs`).
//!
//! A gRPC message goes out as a 5-byte prefix (compressed flag, big-endian
//! length) and the message, so its length must be known before its first
//! byte, but nothing says the message must exist whole. `LargeUnaryLayer`
//! sits on the client port's router (`metrics::grpc::counted_server`) and
//! serves one method, `LargeUnary::path`, itself: it reads the request's
//! one message (tonic's framing, limit and errors), hands its bytes with
//! the call's metadata and connection info to `LargeUnary::handler`, and
//! sends what that answers:
//! - `LargeReply::Whole`: the encoded message, as tonic would send it;
//! - `LargeReply::Pieces`: first `MessagePieces::encoded_len` (on a
//!   blocking thread: it may read a lot), then the prefix and the message
//!   produced about `CHUNK` bytes at a time, each when the connection asks
//!   for the next (HTTP/2 flow control), so only a chunk or so is held.
//!   A failure after the first byte ends the body with that status in the
//!   trailers; a message that turns out longer or shorter than announced
//!   ends it with `Internal` instead of a malformed message.
//! Every other call (and a compressed request, which the generated service
//! refuses as before) goes to the router. Responses end with
//! `grpc-status: 0` in the trailers, as tonic's.
//! Under madsim (whole messages on a simulated network) the layer does not
//! exist: the router's own service for `path` answers, so the handler is
//! never called there.
//! Tests: the unit tests at the bottom (framing of whole and piecewise
//! replies, failures mid-body, lengths that do not match), and
//! `tests/large_range.rs` in the root package (a real server's RSS).

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::Status;

/// A protobuf message produced piece by piece.
pub trait MessagePieces: Send + 'static {
    /// The length of the whole encoded message. Called once, before any
    /// `next_bytes`, on a thread that may block.
    fn encoded_len(&mut self) -> Result<usize, Status>;
    /// Appends the next bytes of the encoded message to `buf`: about
    /// `want` of them or more, fewer only at the end of the message.
    fn next_bytes(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<(), Status>;
}

/// What a `LargeUnary` handler answers.
pub enum LargeReply {
    /// The encoded message.
    Whole(Vec<u8>),
    /// A message to produce piece by piece.
    Pieces(Box<dyn MessagePieces>),
}

/// Answers a call given its request message's bytes.
pub type LargeHandler = Arc<
    dyn Fn(tonic::Request<Vec<u8>>) -> BoxFuture<'static, Result<LargeReply, Status>> + Send + Sync,
>;

/// A unary method served with `LargeReply`s (see the module header).
#[derive(Clone)]
pub struct LargeUnary {
    /// The method's path, e.g. `/etcdserverpb.KV/Range`.
    pub path: &'static str,
    pub handler: LargeHandler,
    /// The largest request message accepted (as the generated service's
    /// `max_decoding_message_size`).
    pub max_request: usize,
}

/// The layer serving a `LargeUnary`; with `None`, it passes everything on.
#[cfg(not(madsim))]
#[derive(Clone, Default)]
pub struct LargeUnaryLayer {
    route: Option<LargeUnary>,
}

#[cfg(not(madsim))]
impl LargeUnaryLayer {
    pub fn new(route: Option<LargeUnary>) -> Self {
        LargeUnaryLayer { route }
    }
}

/// Large replies are produced in chunks of about this many bytes.
pub const CHUNK: usize = 256 << 10;

/// The largest message a gRPC peer accepts (grpc-go's limit, etcd's too).
pub const MAX_MESSAGE: usize = i32::MAX as usize;

#[cfg(not(madsim))]
pub use imp::LargeUnaryService;

#[cfg(not(madsim))]
mod imp {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::{Buf, Bytes};
    use http_body::Frame;
    use tonic::body::Body;
    use tonic::codec::{DecodeBuf, Decoder, Streaming};

    use super::*;

    impl<S> tower_layer::Layer<S> for LargeUnaryLayer {
        type Service = LargeUnaryService<S>;

        fn layer(&self, inner: S) -> Self::Service {
            LargeUnaryService {
                inner,
                route: self.route.clone(),
            }
        }
    }

    /// The service `LargeUnaryLayer` makes.
    #[derive(Clone)]
    pub struct LargeUnaryService<S> {
        inner: S,
        route: Option<LargeUnary>,
    }

    impl<S, B> tower_service::Service<http::Request<B>> for LargeUnaryService<S>
    where
        S: tower_service::Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
        S::Error: 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        type Response = http::Response<Body>;
        type Error = S::Error;
        type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let plain = req
                .headers()
                .get("grpc-encoding")
                .is_none_or(|e| e == "identity");
            match &self.route {
                Some(route) if plain && req.uri().path() == route.path => {
                    let route = route.clone();
                    Box::pin(async move {
                        let reply = serve(route, req).await;
                        Ok::<_, S::Error>(reply.unwrap_or_else(|status| status.into_http()))
                    })
                }
                _ => Box::pin(self.inner.call(req)),
            }
        }
    }

    /// The request's message, as bytes.
    struct Raw;

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut message = vec![0; buf.remaining()];
            buf.copy_to_slice(&mut message);
            Ok(Some(message))
        }
    }

    async fn serve<B>(
        route: LargeUnary,
        req: http::Request<B>,
    ) -> Result<http::Response<Body>, Status>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let (parts, body) = req.into_parts();
        let mut messages = Streaming::new_request(Raw, body, None, Some(route.max_request));
        let message = messages
            .message()
            .await?
            .ok_or_else(|| Status::internal("Missing request message."))?;
        let request = tonic::Request::from_http(http::Request::from_parts(parts, message));
        let body = match (route.handler)(request).await? {
            LargeReply::Whole(message) => ReplyBody::new(message.len(), message, None)?,
            LargeReply::Pieces(mut pieces) => {
                let sized = tokio::task::spawn_blocking(move || {
                    pieces.encoded_len().map(|len| (len, pieces))
                });
                let (len, pieces) = sized
                    .await
                    .map_err(|e| Status::internal(format!("sizing a reply: {e}")))??;
                ReplyBody::new(len, Vec::new(), Some(pieces))?
            }
        };
        let mut resp = http::Response::new(Body::new(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok(resp)
    }

    /// A reply's body: the prefix and the message, then the trailers.
    pub(super) struct ReplyBody {
        /// Bytes to send before asking `pieces` for more.
        ready: Vec<u8>,
        pieces: Option<Box<dyn MessagePieces>>,
        /// Bytes of the message (prefix included) not yet sent.
        left: usize,
        done: bool,
    }

    impl ReplyBody {
        pub(super) fn new(
            len: usize,
            whole: Vec<u8>,
            pieces: Option<Box<dyn MessagePieces>>,
        ) -> Result<ReplyBody, Status> {
            let prefix_len = u32::try_from(len)
                .ok()
                .filter(|_| len <= MAX_MESSAGE)
                .ok_or_else(|| {
                    Status::resource_exhausted(format!(
                        "grpc: trying to send message larger than max ({len} vs. {MAX_MESSAGE})"
                    ))
                })?;
            let mut ready = Vec::with_capacity(5 + whole.len());
            ready.push(0);
            ready.extend_from_slice(&prefix_len.to_be_bytes());
            ready.extend(whole);
            Ok(ReplyBody {
                ready,
                pieces,
                left: 5 + len,
                done: false,
            })
        }

        pub(super) fn next_frame(&mut self) -> Option<Frame<Bytes>> {
            if self.done {
                return None;
            }
            let mut buf = std::mem::take(&mut self.ready);
            if let Some(pieces) = &mut self.pieces {
                // At least 1: once all is sent, one more ask must add nothing.
                let want = CHUNK.min(self.left).saturating_sub(buf.len()).max(1);
                if let Err(status) = pieces.next_bytes(&mut buf, want) {
                    return Some(self.end(status));
                }
            }
            if buf.len() > self.left {
                return Some(self.end(Status::internal(format!(
                    "reply {} bytes longer than announced",
                    buf.len() - self.left
                ))));
            }
            if buf.is_empty() {
                return Some(match self.left {
                    0 => self.end(Status::ok("")),
                    left => self.end(Status::internal(format!(
                        "reply {left} bytes shorter than announced"
                    ))),
                });
            }
            self.left -= buf.len();
            Some(Frame::data(Bytes::from(buf)))
        }

        fn end(&mut self, status: Status) -> Frame<Bytes> {
            self.done = true;
            self.pieces = None;
            let mut trailers = http::HeaderMap::new();
            if status.add_header(&mut trailers).is_err() {
                trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
            }
            Frame::trailers(trailers)
        }
    }

    impl http_body::Body for ReplyBody {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().next_frame().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.done
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::imp::ReplyBody;
    use super::*;

    /// Produces `total` bytes (0, 1, 2, ...), `step` at a time, failing
    /// with `fail_at` once that many are produced.
    struct Counting {
        total: usize,
        step: usize,
        made: usize,
        fail_at: Option<usize>,
    }

    impl MessagePieces for Counting {
        fn encoded_len(&mut self) -> Result<usize, Status> {
            Ok(self.total)
        }

        fn next_bytes(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<(), Status> {
            let until = self.made + want;
            while self.made < until && self.made < self.total {
                if self.fail_at.is_some_and(|f| self.made >= f) {
                    return Err(Status::data_loss("corrupt"));
                }
                buf.extend((self.made..self.total.min(self.made + self.step)).map(|b| b as u8));
                self.made = self.total.min(self.made + self.step);
            }
            Ok(())
        }
    }

    /// The data frames' bytes, their sizes, and the trailers' status.
    fn drain(mut body: ReplyBody) -> (Vec<u8>, Vec<usize>, String) {
        let (mut data, mut sizes, mut status) = (Vec::new(), Vec::new(), None);
        while let Some(frame) = body.next_frame() {
            match frame.into_data() {
                Ok(d) => {
                    sizes.push(d.len());
                    data.extend_from_slice(&d);
                }
                Err(f) => {
                    let t = f.into_trailers().ok().expect("a trailers frame");
                    status = t
                        .get("grpc-status")
                        .map(|v| v.to_str().expect("ascii").to_owned());
                }
            }
        }
        (data, sizes, status.expect("trailers"))
    }

    fn pieces(total: usize, announced: usize, fail_at: Option<usize>) -> ReplyBody {
        let counting = Counting {
            total,
            step: 1000,
            made: 0,
            fail_at,
        };
        ReplyBody::new(announced, Vec::new(), Some(Box::new(counting))).expect("body")
    }

    #[test]
    fn a_whole_reply_is_prefix_message_then_status_ok() {
        let (data, sizes, status) = drain(ReplyBody::new(3, vec![7, 8, 9], None).expect("body"));
        assert_eq!(data, [0, 0, 0, 0, 3, 7, 8, 9]);
        assert_eq!((sizes, status.as_str()), (vec![8], "0"));
    }

    #[test]
    fn pieces_come_in_chunks_after_the_prefix() {
        let total = 3 * CHUNK + 12_345;
        let (data, sizes, status) = drain(pieces(total, total, None));
        assert_eq!(status, "0");
        assert_eq!(
            data[..5],
            [
                0,
                ((total >> 24) as u8),
                (total >> 16) as u8,
                (total >> 8) as u8,
                total as u8
            ]
        );
        let want: Vec<u8> = (0..total).map(|b| b as u8).collect();
        assert_eq!(data[5..], want[..]);
        assert!(sizes.len() >= 4, "{sizes:?}");
        assert!(sizes.iter().all(|s| *s <= CHUNK + 1000), "{sizes:?}");
    }

    #[test]
    fn a_failure_mid_body_ends_it_with_that_status() {
        let total = 2 * CHUNK;
        let (data, _, status) = drain(pieces(total, total, Some(CHUNK + 1000)));
        assert_eq!(status, (tonic::Code::DataLoss as i32).to_string());
        assert!(data.len() < 5 + total);
    }

    #[test]
    fn a_message_of_another_length_than_announced_ends_with_internal() {
        let internal = (tonic::Code::Internal as i32).to_string();
        for (made, announced) in [
            (10_000, 9_000),
            (10_000, 11_000),
            (3 * CHUNK, 3 * CHUNK - 1),
        ] {
            let (data, _, status) = drain(pieces(made, announced, None));
            assert_eq!(status, internal, "{made} made, {announced} announced");
            assert!(data.len() <= 5 + announced);
        }
    }

    #[test]
    fn a_message_beyond_grpcs_limit_is_refused_before_any_byte() {
        let err = ReplyBody::new(MAX_MESSAGE + 1, Vec::new(), None)
            .err()
            .expect("refused");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }
}
