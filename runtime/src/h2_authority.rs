//! Accepting the `:authority` etcd's clients send.
//!
//! etcdctl 3.4 dials a single member by its URL for some calls (`endpoint
//! status`, `defrag`, `hashkv` with `http://` endpoints or `--cluster`), and
//! gRPC-Go then sends the whole URL — `http://127.0.0.1:2379` — as the
//! HTTP/2 `:authority` of each request. etcd's server does not look at it;
//! the HTTP/2 library under tonic (h2) resets such a stream with
//! PROTOCOL_ERROR, and etcdctl fails. `AuthorityFix` sits between a client
//! connection and the gRPC server and looks at the first header block (a
//! HEADERS frame and its CONTINUATIONs) the client sends, decoded with the
//! connection's HPACK state. If its `:authority` is valid — the usual case
//! — the block goes on as it came and the connection is passed through
//! untouched from then on (gRPC keeps one authority per connection).
//! Otherwise that block and every later one are sent on as blocks of literal
//! fields (so the server's decoder needs no table) with the `:authority`
//! reduced to the host and port it names (or dropped). Other frames pass
//! unchanged, and so does everything the server writes. A connection whose
//! header blocks cannot be decoded is passed on untouched from then on (the
//! server rejects it as it would have).
//! Tests: the unit tests below, and `tests/etcdctl_interop.rs`
//! (`endpoint status` with an `http://` endpoint and `--cluster`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts until told otherwise (HTTP/2's
/// initial SETTINGS_MAX_FRAME_SIZE): rewritten blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// A client may send at most this much in one header block here.
const MAX_BLOCK: usize = 1 << 20;

/// A client connection whose header blocks are rewritten (see the header).
pub struct AuthorityFix<S> {
    inner: S,
    /// Bytes read from the client, not yet processed.
    raw: Vec<u8>,
    /// Processed bytes, for the server to read.
    out: Vec<u8>,
    out_pos: usize,
    preface_left: usize,
    decoder: loona_hpack::Decoder<'static>,
    /// A header block being collected: its stream, flags, priority bytes
    /// and fragments so far.
    pending: Option<PendingBlock>,
    /// Pass everything on untouched from now on: the first header block
    /// needed no fix (a client keeps its authority for the connection), or
    /// decoding failed.
    passthrough: bool,
    /// Some header block was rewritten: every later one must be too (the
    /// server's HPACK table no longer matches the client's).
    rewriting: bool,
    eof: bool,
}

struct PendingBlock {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            preface_left: PREFACE_LEN,
            decoder: loona_hpack::Decoder::new(),
            pending: None,
            passthrough: false,
            rewriting: false,
            eof: false,
        }
    }

    /// Moves what can be processed from `raw` to `out`.
    fn process(&mut self) {
        loop {
            if self.passthrough {
                self.out.append(&mut self.raw);
                return;
            }
            if self.preface_left > 0 {
                let n = self.preface_left.min(self.raw.len());
                self.out.extend(self.raw.drain(..n));
                self.preface_left -= n;
                if self.preface_left > 0 {
                    return;
                }
                continue;
            }
            if self.raw.len() < FRAME_HEADER_LEN {
                return;
            }
            let len = usize::from(self.raw[0]) << 16
                | usize::from(self.raw[1]) << 8
                | usize::from(self.raw[2]);
            if self.raw.len() < FRAME_HEADER_LEN + len {
                return;
            }
            let kind = self.raw[3];
            let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER_LEN + len).collect();
            match (kind, self.pending.is_some()) {
                (HEADERS, false) => self.start_block(&frame),
                (CONTINUATION, true) => self.continue_block(&frame),
                // Anything else inside a header block is a protocol error
                // the server reports; so is a stray CONTINUATION.
                (_, true) => self.give_up(frame),
                (_, false) => self.out.extend_from_slice(&frame),
            }
        }
    }

    fn give_up(&mut self, frame: Vec<u8>) {
        // The block gathered so far cannot be re-sent as it came (it was
        // taken apart): the connection is broken either way; let the server
        // see the rest and close it.
        self.pending = None;
        self.passthrough = true;
        self.out.extend_from_slice(&frame);
    }

    fn start_block(&mut self, frame: &[u8]) {
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[FRAME_HEADER_LEN..];
        let mut pad = 0;
        if flags & PADDED != 0 {
            let Some((&p, rest)) = payload.split_first() else {
                return self.give_up(frame.to_vec());
            };
            pad = usize::from(p);
            payload = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            if payload.len() < 5 {
                return self.give_up(frame.to_vec());
            }
            let mut p = [0u8; 5];
            p.copy_from_slice(&payload[..5]);
            priority = Some(p);
            payload = &payload[5..];
        }
        if pad > payload.len() {
            return self.give_up(frame.to_vec());
        }
        let block = payload[..payload.len() - pad].to_vec();
        self.pending = Some(PendingBlock {
            stream,
            flags,
            priority,
            block,
        });
        if flags & END_HEADERS != 0 {
            self.finish_block();
        }
    }

    fn continue_block(&mut self, frame: &[u8]) {
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let Some(p) = self.pending.as_mut() else {
            return self.give_up(frame.to_vec());
        };
        if p.stream != stream || p.block.len() + frame.len() > MAX_BLOCK {
            return self.give_up(frame.to_vec());
        }
        p.block.extend_from_slice(&frame[FRAME_HEADER_LEN..]);
        if flags & END_HEADERS != 0 {
            self.finish_block();
        }
    }

    fn finish_block(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let fields = match self.decoder.decode(&p.block) {
            // The usual case: a valid authority. The block goes on as it
            // came (so the server's table follows the client's) and so does
            // the rest of the connection.
            Ok(fields)
                if !self.rewriting
                    && fields.iter().all(|(n, v)| {
                        n.as_slice() != b":authority" || fixed_authority(v).as_deref() == Some(v)
                    }) =>
            {
                self.passthrough = true;
                write_block(&mut self.out, p.stream, p.flags, p.priority, &p.block);
                return;
            }
            Ok(fields) => fields,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable header block; passing the connection through");
                self.passthrough = true;
                // The server's own decoder will reject the block as it came.
                write_block(&mut self.out, p.stream, p.flags, p.priority, &p.block);
                return;
            }
        };
        self.rewriting = true;
        let mut block = Vec::with_capacity(p.block.len() + 64);
        for (name, value) in &fields {
            if name.as_slice() == b":authority" {
                if let Some(a) = fixed_authority(value) {
                    encode_literal(&mut block, name, &a);
                }
                continue;
            }
            encode_literal(&mut block, name, value);
        }
        write_block(&mut self.out, p.stream, p.flags, p.priority, &block);
    }
}

/// An `:authority` the server accepts: `value` itself when it is a valid
/// authority; the host and port of a URL given instead; `None` (the field
/// is dropped) when neither.
pub fn fixed_authority(value: &[u8]) -> Option<Vec<u8>> {
    let valid = |v: &[u8]| http::uri::Authority::try_from(v).is_ok();
    if valid(value) {
        return Some(value.to_vec());
    }
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    valid(host.as_bytes()).then(|| host.as_bytes().to_vec())
}

/// Appends one header field as a literal without indexing, new name, no
/// Huffman coding (RFC 7541, 6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// HPACK's prefixed integer (RFC 7541, 5.1); `high` holds the bits above
/// the prefix in the first octet.
fn encode_integer(out: &mut Vec<u8>, mut n: usize, prefix_bits: u8, high: u8) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(high | n as u8);
        return;
    }
    out.push(high | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// Writes a header block as a HEADERS frame and as many CONTINUATIONs as
/// it needs, keeping END_STREAM and the priority (padding is dropped).
fn write_block(out: &mut Vec<u8>, stream: u32, flags: u8, priority: Option<[u8; 5]>, block: &[u8]) {
    let first_room = MAX_FRAME - priority.map_or(0, |_| 5);
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut head_flags = flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        head_flags |= END_HEADERS;
    }
    let mut payload = Vec::with_capacity(first.len() + 5);
    if let Some(p) = priority {
        payload.extend_from_slice(&p);
    }
    payload.extend_from_slice(first);
    write_frame(out, HEADERS, head_flags, stream, &payload);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = after;
        let f = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame(out, CONTINUATION, f, stream, chunk);
    }
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.passthrough && this.out_pos == this.out.len() && this.raw.is_empty() {
                // Nothing held back: read straight into the caller's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // What is left unprocessed (a partial frame) goes on as is.
                if !this.raw.is_empty() {
                    this.out.append(&mut this.raw);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        this.eof = true;
                        continue;
                    }
                    this.raw.extend_from_slice(got);
                    this.process();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

crate::write_batch::connected_through_inner!(AuthorityFix);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn urls_become_their_host_and_port() {
        let fix = |v: &str| fixed_authority(v.as_bytes()).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(fix("127.0.0.1:2379").as_deref(), Some("127.0.0.1:2379"));
        assert_eq!(
            fix("http://127.0.0.1:2379").as_deref(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(
            fix("https://m1.example:2379/x").as_deref(),
            Some("m1.example:2379")
        );
        assert_eq!(fix("unix:///run/etcd.sock"), None);
    }

    #[test]
    fn integers_use_hpack_prefix_encoding() {
        let mut out = Vec::new();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]); // RFC 7541, C.1.2
        out.clear();
        encode_integer(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
    }

    /// A client that sends a valid authority (every client but etcdctl's
    /// by-URL calls): its bytes reach the server exactly as sent, later
    /// header blocks (which refer to the client's HPACK table) included.
    #[tokio::test]
    async fn a_valid_authority_passes_the_connection_through_unchanged() {
        let mut enc = loona_hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.KV/Range"),
            (b":authority", b"127.0.0.1:2379"),
            (b"x-custom", b"one"),
        ];
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        write_frame(
            &mut wire,
            HEADERS,
            END_HEADERS,
            1,
            &enc.encode(fields.iter().copied()),
        );
        write_frame(&mut wire, 0x0, END_STREAM, 1, b"\0\0\0\0\0");
        write_frame(
            &mut wire,
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &enc.encode(fields.iter().copied()),
        );
        let sent = wire.clone();
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&wire).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, sent);
        assert!(fixed.passthrough && !fixed.rewriting);
    }

    /// A client's stream: the preface, a SETTINGS frame, a header block
    /// split over HEADERS + CONTINUATION with a bad `:authority` and
    /// indexed fields, a DATA frame, then a second block that refers to the
    /// first's dynamic-table entry.
    #[tokio::test]
    async fn header_blocks_are_rewritten_and_other_frames_pass() {
        let mut enc = loona_hpack::Encoder::new();
        let first: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"x-custom", b"one"),
        ];
        let block1 = enc.encode(first.iter().copied());
        let second: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.KV/Range"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"x-custom", b"one"),
        ];
        let block2 = enc.encode(second.iter().copied());
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        write_frame(&mut wire, 0x4, 0, 0, &[]); // SETTINGS
        let (a, b) = block1.split_at(block1.len() / 2);
        write_frame(&mut wire, HEADERS, 0, 1, a);
        write_frame(&mut wire, CONTINUATION, END_HEADERS, 1, b);
        write_frame(&mut wire, 0x0, END_STREAM, 1, b"\0\0\0\0\0"); // DATA
        write_frame(&mut wire, HEADERS, END_HEADERS | END_STREAM, 3, &block2);

        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&wire).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();

        assert_eq!(&got[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut frames = Vec::new();
        let mut rest = &got[PREFACE_LEN..];
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            frames.push((
                rest[3],
                rest[4],
                rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec(),
            ));
            rest = &rest[FRAME_HEADER_LEN + len..];
        }
        let kinds: Vec<(u8, u8)> = frames.iter().map(|(k, f, _)| (*k, *f)).collect();
        assert_eq!(
            kinds,
            [
                (0x4, 0),
                (HEADERS, END_HEADERS),
                (0x0, END_STREAM),
                (HEADERS, END_HEADERS | END_STREAM)
            ]
        );
        // The server's decoder starts empty and sees literals only.
        let mut dec = loona_hpack::Decoder::new();
        for (i, want) in [(1, &first), (3, &second)] {
            let fields = dec.decode(&frames[i].2).unwrap();
            let expect: Vec<(Vec<u8>, Vec<u8>)> = want
                .iter()
                .map(|(n, v)| {
                    let v = if *n == b":authority" {
                        &b"127.0.0.1:2379"[..]
                    } else {
                        v
                    };
                    (n.to_vec(), v.to_vec())
                })
                .collect();
            assert_eq!(fields, expect);
        }
    }
}
