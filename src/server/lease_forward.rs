//! A follower's keep-alives, forwarded to the leader over one stream.
//!
//! Every renewal a follower receives is answered by the leader. Rather than
//! a call per renewal, the follower keeps one LeaseKeepAlive stream open to
//! the leader's client port, marked forwarded, and sends each renewal on it;
//! the leader answers a forwarded stream in order, renewing everything that
//! queued up while it confirmed its leadership for the previous batch
//! (`Server::lease_keep_alive_batch`). The answers are matched to the
//! renewals in order.
//!
//! Any failure of the stream — an error from the leader (not the leader any
//! more), the stream ending, no answer within the forward timeout to the
//! oldest renewal, another leader URL — fails every renewal in flight on it
//! as "retry" (the caller asks again with its own view of the leader) and
//! the next renewal opens a new stream. Deadlines matter: in simulation a
//! partition is unbounded latency, not an error.
//!
//! Tests: `src/server/tests.rs` (keep-alives through a follower, leader
//! failover).

use std::collections::VecDeque;
use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Streaming;

use super::lease::{lazy_channel, mark_forwarded};

/// The leader's answer to one forwarded renewal: its TTL (0: no such
/// lease), or `None`: not answered, ask again.
pub(super) type ForwardReply = oneshot::Sender<Option<i64>>;

/// Renewals queued for the forwarding task before callers wait for room.
const QUEUE_LEN: usize = 1024;

/// Requests buffered towards the leader on the open stream.
const STREAM_BUFFER: usize = 1024;

/// The follower's handle on its forwarding task (started on first use).
pub(super) struct Forwarder {
    timeout: Duration,
    tx: std::sync::Mutex<Option<mpsc::Sender<(String, i64, ForwardReply)>>>,
}

impl Forwarder {
    /// `timeout`: how long the oldest renewal on a stream may wait for its
    /// answer before the stream is given up.
    pub(super) fn new(timeout: Duration) -> Forwarder {
        Forwarder {
            timeout,
            tx: std::sync::Mutex::new(None),
        }
    }

    /// Renews `id` through the leader at client URL `url`: its TTL (0 if
    /// the leader does not know the lease), or `None` to retry.
    pub(super) async fn renew(&self, url: &str, id: i64) -> Option<i64> {
        let (reply, rx) = oneshot::channel();
        let tx = self.sender();
        tx.send((url.to_owned(), id, reply)).await.ok()?;
        rx.await.ok().flatten()
    }

    fn sender(&self) -> mpsc::Sender<(String, i64, ForwardReply)> {
        let mut tx = self.tx.lock().expect("forwarder lock poisoned");
        match tx.as_ref() {
            Some(t) if !t.is_closed() => t.clone(),
            _ => {
                let (t, rx) = mpsc::channel(QUEUE_LEN);
                tokio::spawn(run(rx, self.timeout));
                *tx = Some(t.clone());
                t
            }
        }
    }
}

/// The open stream to one leader and the renewals awaiting its answers, in
/// the order they were sent.
struct Stream {
    url: String,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    in_flight: VecDeque<(Instant, ForwardReply)>,
    /// Kept so the stream's connection is reused while it is open.
    _channel: Channel,
}

impl Stream {
    /// Fails everything in flight as "retry".
    fn fail(self) {
        for (_, reply) in self.in_flight {
            let _ = reply.send(None);
        }
    }
}

async fn open(url: &str, timeout: Duration) -> Option<Stream> {
    let channel = lazy_channel(url, timeout.min(Duration::from_secs(1)))?;
    let (requests, rx) = mpsc::channel(STREAM_BUFFER);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    mark_forwarded(&mut req);
    let mut client = LeaseClient::new(channel.clone());
    let responses = tokio::time::timeout(timeout, client.lease_keep_alive(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some(Stream {
        url: url.to_owned(),
        requests,
        responses,
        in_flight: VecDeque::new(),
        _channel: channel,
    })
}

async fn run(mut rx: mpsc::Receiver<(String, i64, ForwardReply)>, timeout: Duration) {
    let mut stream: Option<Stream> = None;
    loop {
        let deadline = stream
            .as_ref()
            .and_then(|s| s.in_flight.front())
            .map(|(sent, _)| *sent + timeout);
        // Fixed priorities (answers, then the deadline, then new renewals)
        // keep the simulation deterministic.
        tokio::select! {
            biased;
            answer = async { stream.as_mut().expect("guarded").responses.message().await },
                if stream.as_ref().is_some_and(|s| !s.in_flight.is_empty()) =>
            {
                match answer {
                    Ok(Some(resp)) => {
                        let s = stream.as_mut().expect("guarded");
                        if let Some((_, reply)) = s.in_flight.pop_front() {
                            let _ = reply.send(Some(resp.ttl.max(0)));
                        }
                    }
                    // The leader failed the stream (not the leader any more)
                    // or it ended: everything in flight asks again.
                    Ok(None) | Err(_) => stream.take().expect("guarded").fail(),
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                tracing::debug!("forwarded keep-alives unanswered; reopening the stream");
                stream.take().expect("guarded").fail();
            }
            next = rx.recv() => {
                let Some((url, id, reply)) = next else { break };
                if reply.is_closed() {
                    continue;
                }
                if stream.as_ref().is_some_and(|s| s.url != url) {
                    stream.take().expect("checked").fail();
                }
                if stream.is_none() {
                    stream = open(&url, timeout).await;
                }
                let Some(s) = stream.as_mut() else {
                    let _ = reply.send(None);
                    continue;
                };
                // A full buffer means the leader stopped reading (a stalled
                // connection): give the stream up rather than wait on it.
                if s.requests.try_send(LeaseKeepAliveRequest { id }).is_err() {
                    let _ = reply.send(None);
                    stream.take().expect("checked").fail();
                    continue;
                }
                s.in_flight.push_back((Instant::now(), reply));
            }
        }
    }
    if let Some(s) = stream {
        s.fail();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}
