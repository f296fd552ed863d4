//! The Range RPC in bounded memory (issue 24 item 5): the client port's
//! Range served through `cairn_runtime::large_reply` (which owns the gRPC
//! framing and the HTTP/2 body), so a large response is never held whole.
//!
//! 1. `range` plans the Range under the store's lock
//!    (`Server::range_read_as`, `mvcc::MvccStore::range_read`): the same
//!    checks, ReadIndex barrier, auth, errors and metrics as
//!    `Server::range_as`. A response whose kvs encode to at most
//!    `WHOLE_UP_TO` bytes is built whole there and sent encoded; a larger
//!    one comes back as `RangePieces` (its kvs' revisions and a storage
//!    snapshot) wrapped in `RangeParts`;
//! 2. `RangeParts::encoded_len` reads every kv from the snapshot once, only
//!    to add up its encoded length (`kv_len`);
//! 3. `RangeParts::next_bytes` produces the message: the header field, the
//!    kvs read again, `more` and `count`, a chunk at a time.
//!
//! The bytes are prost's encoding of the same `RangeResponse` (fields in
//! number order: header 1, kvs 2, more 3, count 4): `head`, `put_kv` and
//! `tail` are prost's own field encoders, tested against the whole
//! message's encoding. A read failing midway (a corrupt record) halts the
//! member as any read of corrupt data does, and ends the reply with its
//! status.
//!
//! Memory per Range (the bound): 32 bytes per kv considered (its revision,
//! kept while the response is planned and sent: every kv of the range when
//! it sorts or filters, else at most `limit + 1`), at most `WHOLE_UP_TO`
//! (1 MiB) of kvs while deciding whether to answer whole, the kv being
//! read, one chunk (`cairn_runtime::large_reply::CHUNK`, 256 KiB) and what
//! HTTP/2 flow control lets hyper buffer (its send buffer, 400 KiB). For
//! 1 M keys: 32 MiB + ~2 MiB, whatever the values' size. Ranges sorted by
//! value, the gateway's JSON Range and Range inside a txn still build
//! their response whole. In the simulation
//! world the layer does not exist and `KvService::range` answers.
//! Tests: the unit tests below (the encoding, quickcheck against prost),
//! `tests/large_range.rs` (peak RSS of a real server, responses equal to
//! the whole path's and to etcd 3.4's), `mvcc/model_tests.rs`
//! (`range_read` vs `range`).

use std::sync::Arc;

use cairn_proto::etcdserverpb::{RangeRequest, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;
use cairn_runtime::large_reply::{LargeReply, LargeUnary, MessagePieces};
use futures::future::BoxFuture;
use prost::encoding::{bool as pb_bool, int64 as pb_int64, message as pb_message};
use prost::Message;
use tonic::Status;

use super::{auth, status_of};
use crate::mvcc::{RangePieces, RangeRead};
use crate::server::Server;

/// The method served here.
pub const RANGE_PATH: &str = "/etcdserverpb.KV/Range";
/// Responses whose kvs encode to at most this many bytes are built whole.
pub const WHOLE_UP_TO: usize = 1 << 20;

/// The client port's Range, for `counted_server_with`; requests up to
/// `max_request` bytes (as the generated KV service's limit).
pub fn large_ranges(server: &Server, max_request: usize) -> LargeUnary {
    let server = server.clone();
    LargeUnary {
        path: RANGE_PATH,
        handler: Arc::new(
            move |request: tonic::Request<Vec<u8>>| -> BoxFuture<'static, Result<LargeReply, Status>> {
                Box::pin(range(server.clone(), request))
            },
        ),
        max_request,
    }
}

async fn range(server: Server, request: tonic::Request<Vec<u8>>) -> Result<LargeReply, Status> {
    let req = RangeRequest::decode(request.get_ref().as_slice())
        .map_err(|e| Status::internal(e.to_string()))?;
    let who = auth::caller(&server, &request).await?;
    let (header, read) = server
        .range_read_as(&who, req, WHOLE_UP_TO)
        .await
        .map_err(status_of)?;
    Ok(match read {
        RangeRead::Whole(mut resp) => {
            resp.header = Some(header);
            LargeReply::Whole(resp.encode_to_vec())
        }
        RangeRead::Pieces(pieces) => LargeReply::Pieces(Box::new(RangeParts {
            head: Some(head(&header)),
            tail: Some(tail(pieces.more, pieces.count)),
            next: 0,
            server,
            pieces,
        })),
    })
}

/// A large RangeResponse, produced from its `RangePieces`.
struct RangeParts {
    server: Server,
    pieces: RangePieces,
    /// The header field, until sent.
    head: Option<Vec<u8>>,
    /// `more` and `count`, until sent.
    tail: Option<Vec<u8>>,
    /// The next kv to send.
    next: usize,
}

impl MessagePieces for RangeParts {
    fn encoded_len(&mut self) -> Result<usize, Status> {
        let mut len =
            self.head.as_ref().map_or(0, Vec::len) + self.tail.as_ref().map_or(0, Vec::len);
        for i in 0..self.pieces.len() {
            len += kv_len(&self.server.read_piece(&self.pieces, i).map_err(status_of)?);
        }
        Ok(len)
    }

    fn next_bytes(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<(), Status> {
        let until = buf.len() + want;
        buf.extend(self.head.take().unwrap_or_default());
        while buf.len() < until && self.next < self.pieces.len() {
            let kv = self
                .server
                .read_piece(&self.pieces, self.next)
                .map_err(status_of)?;
            put_kv(&kv, buf);
            self.next += 1;
        }
        if self.next == self.pieces.len() {
            buf.extend(self.tail.take().unwrap_or_default());
        }
        Ok(())
    }
}

/// A RangeResponse's bytes before its kvs: the header field.
fn head(header: &ResponseHeader) -> Vec<u8> {
    let mut buf = Vec::new();
    pb_message::encode(1, header, &mut buf);
    buf
}

/// The bytes one kv adds to a RangeResponse.
fn kv_len(kv: &KeyValue) -> usize {
    pb_message::encoded_len(2, kv)
}

fn put_kv(kv: &KeyValue, buf: &mut Vec<u8>) {
    pb_message::encode(2, kv, buf);
}

/// A RangeResponse's bytes after its kvs: `more` and `count` (proto3: a
/// field at its default is not sent).
fn tail(more: bool, count: i64) -> Vec<u8> {
    let mut buf = Vec::new();
    if more {
        pb_bool::encode(3, &more, &mut buf);
    }
    if count != 0 {
        pb_int64::encode(4, &count, &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::RangeResponse;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    fn bytes(g: &mut Gen, max: usize) -> Vec<u8> {
        let n = usize::arbitrary(g) % (max + 1);
        (0..n).map(|_| u8::arbitrary(g)).collect()
    }

    /// Any int64, the small ones (one-byte varints, zero: not sent) often.
    fn int(g: &mut Gen) -> i64 {
        match u8::arbitrary(g) % 4 {
            0 => 0,
            1 => i64::from(u8::arbitrary(g)),
            _ => i64::arbitrary(g),
        }
    }

    fn response(g: &mut Gen) -> RangeResponse {
        let n = usize::arbitrary(g) % 20;
        RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: u64::arbitrary(g),
                member_id: u64::arbitrary(g),
                revision: int(g),
                raft_term: u64::arbitrary(g) % 1000,
            }),
            kvs: (0..n)
                .map(|_| KeyValue {
                    key: bytes(g, 40),
                    create_revision: int(g),
                    mod_revision: int(g),
                    version: int(g),
                    // Some values need a multi-byte length.
                    value: {
                        let max = if bool::arbitrary(g) { 300 } else { 5 };
                        bytes(g, max)
                    },
                    lease: int(g),
                })
                .collect(),
            more: bool::arbitrary(g),
            count: int(g),
        }
    }

    #[derive(Clone, Debug)]
    struct Resp(RangeResponse);

    impl Arbitrary for Resp {
        fn arbitrary(g: &mut Gen) -> Self {
            Resp(response(g))
        }
    }

    /// The sized length is prost's, and head + kvs + tail is prost's
    /// encoding of the whole response, byte for byte.
    fn pieces_encode_as_prost(Resp(resp): Resp) -> bool {
        let header = resp.header.clone().expect("set");
        let (head, tail) = (head(&header), tail(resp.more, resp.count));
        let sized = head.len() + resp.kvs.iter().map(kv_len).sum::<usize>() + tail.len();
        let mut streamed = head;
        for kv in &resp.kvs {
            put_kv(kv, &mut streamed);
        }
        streamed.extend(tail);
        sized == resp.encoded_len() && streamed == resp.encode_to_vec()
    }

    #[test]
    fn sized_and_streamed_bytes_are_prosts() {
        QuickCheck::new()
            .tests(2000)
            .quickcheck(pieces_encode_as_prost as fn(Resp) -> bool);
    }
}
