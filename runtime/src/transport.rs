//! The Transport seam: Raft messages and snapshots between members.
//!
//! As far as the core is concerned delivery is unreliable and unordered: Raft
//! tolerates loss, duplication and reordering, so the transport drops rather
//! than blocks. One implementation, `GrpcTransport`, over the `RaftPeer` gRPC
//! service of `cairn-proto`; under `--cfg madsim` the same code runs on
//! madsim-tonic's simulated network.
//!
//! Sending: one worker task per peer owns a bounded queue (`PEER_QUEUE_LEN`
//! messages; when full, new messages are dropped and counted) and sends what
//! it drains as one `MessageBatch` on a long-lived `Stream` call to the peer
//! (one DATA frame per batch; etcd's rafthttp keeps a stream per peer too).
//! The receiver acknowledges the count of batches it took, at most every
//! `STREAM_ACK_INTERVAL`; a batch unacknowledged for the call deadline means
//! the stream is dead — a partition in simulation is unbounded latency, not
//! an error, and a killed peer's new incarnation never answers its old
//! stream. A stream that fails, ends or misses its deadline is reported upward
//! as `Inbound::Unreachable` so Raft can probe again; the next batch opens a
//! new stream on a fresh connection (tonic's lazy channel; madsim-tonic
//! connects per call). A peer that answers `Stream` with Unimplemented (an
//! older cairn) gets each batch as a unary `Send` call under the deadline,
//! until a call fails.
//! Snapshots are streamed in `SNAPSHOT_CHUNK_BYTES` chunks on their own call.
//!
//! Receiving: `PeerService` implements the gRPC service and forwards to the
//! node's bounded inbound channel; a member of another cluster is refused,
//! and so is a member removed from this one (`PeerDirectory`): the sender's
//! worker reports `Inbound::Removed` and that member stops. `Members` tells a
//! member joining a running cluster who is in it (`fetch_members`).
//! Peers are dialed through a `crate::tls::Dialer`: plain for `http://`
//! peer URLs, TLS with the peer certificates for `https://` ones.
//! Both sides count their traffic per peer into a shared
//! `crate::metrics::peer::PeerStats` (etcd's `etcd_network_peer_*`).
//! Tests: `runtime/tests/transport_tokio.rs` (real TCP) and
//! `runtime/tests/sim_transport.rs` (two simulated nodes under madsim).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::raft_peer_server::RaftPeer;
pub use cairn_proto::raftpb::raft_peer_server::RaftPeerServer;
use cairn_proto::raftpb::{
    MembersRequest, MembersResponse, Message, MessageBatch, MessageBatchResponse, MessageType,
    PeerMember, SnapshotChunk, SnapshotResponse, StreamAck,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::peer::{PeerStats, RTT_MAX_REQUEST_BYTES};
use crate::tls::Dialer;
use crate::NodeId;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_LEN: usize = 4096;
/// Most messages sent in one `MessageBatch`.
pub const MAX_BATCH_MESSAGES: usize = 256;
/// Bytes of application state per snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How often at most the receiver of a `Stream` acknowledges it; well under
/// any call deadline, so a live stream never looks dead.
pub const STREAM_ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Batches handed to a stream and not yet taken by the connection; past it
/// new batches are dropped (the connection is slower than Raft).
const STREAM_BUFFER_BATCHES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    #[error("peer {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    #[error("call to peer {0} timed out")]
    Timeout(NodeId),
}

/// What the transport hands to the node.
#[derive(Debug)]
pub enum Inbound {
    /// Raft messages received from a peer.
    Messages(Vec<Message>),
    /// A complete snapshot received from the leader: the MsgSnap message and
    /// the application state it describes.
    Snapshot { message: Message, data: Vec<u8> },
    /// A send to this peer failed; Raft should fall back to probing it.
    Unreachable(NodeId),
    /// A peer refused our messages because this member was removed from the
    /// cluster (`MEMBER_REMOVED`): the member must stop for good.
    Removed,
}

/// Why a peer refuses a removed member's messages; etcd's words.
pub const MEMBER_REMOVED: &str = "the member has been permanently removed from the cluster";

/// What the peer service asks of the member it serves.
pub trait PeerDirectory: Send + Sync + 'static {
    /// Whether `id` was removed from the cluster (its messages are refused).
    fn is_removed(&self, id: u64) -> bool;
    /// The members as this member has applied them.
    fn members(&self) -> Vec<PeerMember>;
}

/// Asks the member at peer URL `url` for its cluster id and members (what a
/// member joining a running cluster does first).
pub async fn fetch_members(url: &str, timeout: Duration) -> Result<MembersResponse, String> {
    fetch_members_with(&Dialer::plain(), url, timeout).await
}

/// `fetch_members`, dialing through `dialer` (TLS for `https://` peer URLs).
pub async fn fetch_members_with(
    dialer: &Dialer,
    url: &str,
    timeout: Duration,
) -> Result<MembersResponse, String> {
    let call = async {
        let channel = dialer.connect(url, timeout).await?;
        RaftPeerClient::new(channel)
            .members(MembersRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_owned())
    };
    crate::timer::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer from {url} within {timeout:?}"))?
}

pub type SnapshotFuture =
    Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + 'static>>;

/// The Transport seam.
pub trait Transport: Send + Sync + 'static {
    /// Queues each message for its `to`; never blocks, may drop.
    fn send(&self, msgs: Vec<Message>);
    /// Streams a snapshot to `message.to`. Resolves when the peer has it all.
    fn send_snapshot(&self, message: Message, data: Vec<u8>) -> SnapshotFuture;
    /// Adds or replaces a peer's address (membership change).
    fn add_peer(&self, id: NodeId, url: String);
    fn remove_peer(&self, id: NodeId);
}

/// Deadlines for peer calls.
#[derive(Debug, Clone, Copy)]
pub struct TransportConfig {
    pub call_timeout: Duration,
    pub snapshot_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(2),
            snapshot_timeout: Duration::from_secs(60),
        }
    }
}

struct Peer {
    url: String,
    queue: mpsc::Sender<Message>,
    /// Dropping the handle stops the worker.
    _worker: tokio::task::JoinHandle<()>,
}

/// The gRPC peer transport.
pub struct GrpcTransport {
    me: NodeId,
    cluster_id: u64,
    config: TransportConfig,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    inbound: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
    dialer: Dialer,
    stats: Arc<PeerStats>,
}

impl GrpcTransport {
    /// `inbound` receives `Unreachable` reports; `peers` are the other members.
    pub fn new(
        me: NodeId,
        cluster_id: u64,
        config: TransportConfig,
        peers: BTreeMap<NodeId, String>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Self {
        Self::with_dialer(me, cluster_id, config, peers, inbound, Dialer::plain())
    }

    /// `new`, dialing peers through `dialer` (`https://` peer URLs).
    pub fn with_dialer(
        me: NodeId,
        cluster_id: u64,
        config: TransportConfig,
        peers: BTreeMap<NodeId, String>,
        inbound: mpsc::Sender<Inbound>,
        dialer: Dialer,
    ) -> Self {
        let t = GrpcTransport {
            me,
            cluster_id,
            config,
            peers: Mutex::new(BTreeMap::new()),
            inbound,
            dropped: Arc::new(AtomicU64::new(0)),
            dialer,
            stats: PeerStats::new(),
        };
        for (id, url) in peers {
            t.add_peer(id, url);
        }
        t
    }

    /// Messages dropped because a peer's queue was full.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// What this transport counts per peer; give the same to the peer
    /// service (`PeerService::with_stats`) so one place has both directions.
    pub fn stats(&self) -> Arc<PeerStats> {
        self.stats.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        self.peers.lock().expect("transport peers lock poisoned")
    }
}

/// A channel to a peer URL that connects on first use; `None` (logged) for
/// a URL that cannot be dialed.
fn lazy_channel(dialer: &Dialer, url: &str) -> Option<Channel> {
    dialer
        .lazy_channel(url, Duration::from_secs(1))
        .inspect_err(|e| tracing::warn!(%url, error = %e, "cannot dial peer"))
        .ok()
}

impl Transport for GrpcTransport {
    fn send(&self, msgs: Vec<Message>) {
        let peers = self.lock();
        for m in msgs {
            let Some(peer) = peers.get(&NodeId(m.to)) else {
                continue;
            };
            if peer.queue.try_send(m).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn send_snapshot(&self, message: Message, data: Vec<u8>) -> SnapshotFuture {
        let to = NodeId(message.to);
        // A fresh connection per snapshot: they are rare, and a stale
        // connection could lead to a dead incarnation of the peer.
        let channel = self
            .lock()
            .get(&to)
            .and_then(|p| lazy_channel(&self.dialer, &p.url));
        let (cluster_id, deadline) = (self.cluster_id, self.config.snapshot_timeout);
        let stats = self.stats.clone();
        Box::pin(async move {
            let channel = channel.ok_or(TransportError::UnknownPeer(to))?;
            let bytes = data.len();
            let chunks = snapshot_chunks(cluster_id, message, data);
            let mut client = RaftPeerClient::new(channel);
            let call = client.send_snapshot(tokio_stream::iter(chunks));
            let outcome = match crate::timer::timeout(deadline, call).await {
                Err(_) => Err(TransportError::Timeout(to)),
                Ok(Err(status)) => {
                    Err(TransportError::Unreachable(to, status.message().to_owned()))
                }
                Ok(Ok(_)) => Ok(()),
            };
            match outcome {
                Ok(()) => stats.sent(to.0, bytes, None),
                Err(_) => stats.send_failed(to.0, 1),
            }
            outcome
        })
    }

    fn add_peer(&self, id: NodeId, url: String) {
        if id == self.me {
            return;
        }
        let mut peers = self.lock();
        if peers.get(&id).is_some_and(|p| p.url == url) {
            return;
        }
        let Some(channel) = lazy_channel(&self.dialer, &url) else {
            tracing::warn!(peer = %id, %url, "invalid peer url; peer ignored");
            return;
        };
        let (queue, rx) = mpsc::channel(PEER_QUEUE_LEN);
        let worker = PeerWorker {
            url: url.clone(),
            dialer: self.dialer.clone(),
            me: self.me,
            to: id,
            cluster_id: self.cluster_id,
            client: RaftPeerClient::new(channel.clone()),
            call_timeout: self.config.call_timeout,
            inbound: self.inbound.clone(),
            stats: self.stats.clone(),
        };
        let handle = tokio::spawn(worker.run(rx));
        peers.insert(
            id,
            Peer {
                url,
                queue,
                _worker: handle,
            },
        );
    }

    fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = self.lock().remove(&id) {
            peer._worker.abort();
        }
    }
}

fn snapshot_chunks(cluster_id: u64, message: Message, data: Vec<u8>) -> Vec<SnapshotChunk> {
    let mut chunks: Vec<SnapshotChunk> = data
        .chunks(SNAPSHOT_CHUNK_BYTES)
        .scan(0u64, |offset, c| {
            let chunk = SnapshotChunk {
                cluster_id,
                message: None,
                offset: *offset,
                data: c.to_vec(),
                last: false,
            };
            *offset += c.len() as u64;
            Some(chunk)
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(SnapshotChunk {
            cluster_id,
            message: None,
            offset: 0,
            data: Vec::new(),
            last: false,
        });
    }
    chunks[0].message = Some(message);
    chunks.last_mut().expect("at least one chunk").last = true;
    chunks
}

/// What a worker remembers of a batch it handed to a stream until the peer
/// acknowledges it.
struct InFlight {
    seq: u64,
    at: tokio::time::Instant,
    messages: usize,
    bytes: usize,
    /// Small enough to time as a round trip (etcd's RTT histogram).
    small: bool,
}

type StreamCall =
    Pin<Box<dyn Future<Output = Result<Response<Streaming<StreamAck>>, Status>> + Send + 'static>>;

/// One peer's `Stream` call as the worker holds it: the batches go into
/// `batches`; `call` resolves to the acknowledgements once the peer answers.
struct PeerStream {
    batches: mpsc::Sender<MessageBatch>,
    call: Option<StreamCall>,
    acks: Option<Streaming<StreamAck>>,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
}

enum StreamEvent {
    Batch(Vec<Message>),
    Closed,
    Opened(Result<Response<Streaming<StreamAck>>, Status>),
    Ack(Result<Option<StreamAck>, Status>),
    Deadline,
}

struct PeerWorker {
    url: String,
    dialer: Dialer,
    me: NodeId,
    to: NodeId,
    cluster_id: u64,
    client: RaftPeerClient<Channel>,
    call_timeout: Duration,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<PeerStats>,
}

impl PeerWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(MAX_BATCH_MESSAGES);
        let mut stream: Option<PeerStream> = None;
        // Set once the peer answers `Stream` with Unimplemented (an older
        // version): batches go by `Send` until a call fails and the worker
        // reconnects (the peer may have been upgraded by then).
        let mut unary = false;
        loop {
            let event = {
                let (call, acks, deadline) = match stream.as_mut() {
                    Some(s) => (
                        s.call.as_mut(),
                        s.acks.as_mut(),
                        s.in_flight.front().map(|f| f.at + self.call_timeout),
                    ),
                    None => (None, None, None),
                };
                let has_call = call.is_some();
                let has_acks = acks.is_some();
                // Fixed priorities keep the simulation deterministic; an
                // answer that came in time wins over its deadline.
                tokio::select! {
                    biased;
                    r = async { call.expect("guarded").await }, if has_call => StreamEvent::Opened(r),
                    a = async { acks.expect("guarded").message().await }, if has_acks => StreamEvent::Ack(a),
                    () = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => StreamEvent::Deadline,
                    n = rx.recv_many(&mut batch, MAX_BATCH_MESSAGES) => {
                        if n == 0 { StreamEvent::Closed } else { StreamEvent::Batch(std::mem::take(&mut batch)) }
                    }
                }
            };
            match event {
                StreamEvent::Closed => return,
                StreamEvent::Batch(messages) if unary => {
                    if !self.send_unary(messages).await {
                        unary = false;
                    }
                }
                StreamEvent::Batch(messages) => {
                    let s = stream.get_or_insert_with(|| self.open_stream());
                    let req = MessageBatch {
                        cluster_id: self.cluster_id,
                        from: self.me.0,
                        messages,
                    };
                    let (count, bytes) = (req.messages.len(), req.encoded_len());
                    let small = bytes <= RTT_MAX_REQUEST_BYTES
                        && req.messages.iter().all(|m| m.entries.is_empty());
                    match s.batches.try_send(req) {
                        Ok(()) => {
                            s.next_seq += 1;
                            s.in_flight.push_back(InFlight {
                                seq: s.next_seq,
                                at: crate::timer::now(),
                                messages: count,
                                bytes,
                                small,
                            });
                        }
                        // The connection takes batches slower than Raft makes
                        // them: drop this one, as a full queue does.
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.stats.send_failed(self.to.0, count)
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.stats.send_failed(self.to.0, count);
                            self.stream_failed(stream.take(), None);
                        }
                    }
                }
                StreamEvent::Opened(Ok(response)) => {
                    if let Some(s) = stream.as_mut() {
                        s.call = None;
                        s.acks = Some(response.into_inner());
                    }
                }
                StreamEvent::Opened(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    tracing::info!(peer = %self.to, "peer has no Raft stream; sending by unary calls");
                    if let Some(s) = stream.take() {
                        let lost = s.in_flight.iter().map(|f| f.messages).sum();
                        self.stats.send_failed(self.to.0, lost);
                    }
                    unary = true;
                }
                StreamEvent::Opened(Err(status)) | StreamEvent::Ack(Err(status)) => {
                    self.stream_failed(stream.take(), Some(status))
                }
                StreamEvent::Ack(Ok(Some(ack))) => {
                    if let Some(s) = stream.as_mut() {
                        while s.in_flight.front().is_some_and(|f| f.seq <= ack.received) {
                            let f = s.in_flight.pop_front().expect("front");
                            let rtt = (f.small && ack.immediate && f.seq == ack.received)
                                .then(|| f.at.elapsed());
                            self.stats.sent(self.to.0, f.bytes, rtt);
                        }
                    }
                }
                StreamEvent::Ack(Ok(None)) | StreamEvent::Deadline => {
                    self.stream_failed(stream.take(), None)
                }
            }
        }
    }

    /// Starts a `Stream` call; batches can be handed to it at once (they are
    /// sent as the connection comes up).
    fn open_stream(&mut self) -> PeerStream {
        let (batches, rx) = mpsc::channel(STREAM_BUFFER_BATCHES);
        let mut client = self.client.clone();
        let call: StreamCall = Box::pin(async move {
            client
                .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        PeerStream {
            batches,
            call: Some(call),
            acks: None,
            next_seq: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// A stream broke, ended, or left a batch unanswered past the call
    /// deadline: what it carried is lost (Raft resends), Raft hears the peer
    /// is unreachable, and the next batch opens a stream on a fresh connection.
    fn stream_failed(&mut self, stream: Option<PeerStream>, status: Option<Status>) {
        if let Some(s) = stream {
            let lost = s.in_flight.iter().map(|f| f.messages).sum();
            if lost > 0 {
                self.stats.send_failed(self.to.0, lost);
            }
        }
        tracing::debug!(peer = %self.to, ?status, "peer stream failed");
        self.after_failure(status.as_ref());
    }

    /// What a failed call or stream leads to: a member the peer says was
    /// removed stops; anything else reconnects and reports the peer
    /// unreachable.
    fn after_failure(&mut self, status: Option<&Status>) {
        if let Some(status) = status {
            if status.code() == tonic::Code::PermissionDenied && status.message() == MEMBER_REMOVED
            {
                tracing::warn!(peer = %self.to, "peer refused us: {MEMBER_REMOVED}");
                let _ = self.inbound.try_send(Inbound::Removed);
                return;
            }
        }
        // Start over with a fresh connection: the old one may lead to a dead
        // incarnation of the peer that still holds the socket.
        if let Some(channel) = lazy_channel(&self.dialer, &self.url) {
            self.client = RaftPeerClient::new(channel);
        }
        // Raft re-probes an unreachable peer; losing this report under load is
        // harmless, the next failure reports again.
        let _ = self.inbound.try_send(Inbound::Unreachable(self.to));
    }

    /// One batch by a unary `Send` call (a peer without `Stream`); false when
    /// the call failed.
    async fn send_unary(&mut self, messages: Vec<Message>) -> bool {
        let req = MessageBatch {
            cluster_id: self.cluster_id,
            from: self.me.0,
            messages,
        };
        let (count, bytes) = (req.messages.len(), req.encoded_len());
        let small =
            bytes <= RTT_MAX_REQUEST_BYTES && req.messages.iter().all(|m| m.entries.is_empty());
        let began = tokio::time::Instant::now();
        let outcome = crate::timer::timeout(self.call_timeout, self.client.send(req)).await;
        match outcome {
            Ok(Ok(_)) => {
                self.stats
                    .sent(self.to.0, bytes, small.then(|| began.elapsed()));
                true
            }
            Ok(Err(status)) => {
                self.stats.send_failed(self.to.0, count);
                tracing::debug!(peer = %self.to, ?status, "peer send failed");
                self.after_failure(Some(&status));
                false
            }
            Err(_) => {
                self.stats.send_failed(self.to.0, count);
                tracing::debug!(peer = %self.to, "peer send timed out");
                self.after_failure(None);
                false
            }
        }
    }
}

/// The receiving side: the `RaftPeer` gRPC service; serve it with
/// `RaftPeerServer::new(PeerService::new(..))` (the server type's generics
/// differ between the two worlds, so it is not named here).
#[derive(Clone)]
pub struct PeerService {
    cluster_id: u64,
    inbound: mpsc::Sender<Inbound>,
    max_snapshot_bytes: u64,
    directory: Option<Arc<dyn PeerDirectory>>,
    stats: Arc<PeerStats>,
}

impl PeerService {
    pub fn new(cluster_id: u64, inbound: mpsc::Sender<Inbound>) -> Self {
        Self {
            cluster_id,
            inbound,
            max_snapshot_bytes: 8 << 30,
            directory: None,
            stats: PeerStats::new(),
        }
    }

    /// Counts what peers send into `stats` (the transport's, see
    /// `GrpcTransport::stats`).
    pub fn with_stats(mut self, stats: Arc<PeerStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Refuses removed members and answers `Members` from `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn PeerDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    fn check_sender(&self, from: u64) -> Result<(), Status> {
        if self.directory.as_ref().is_some_and(|d| d.is_removed(from)) {
            return Err(Status::permission_denied(MEMBER_REMOVED));
        }
        Ok(())
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: request from cluster {cluster_id:x}, this is cluster {:x}",
                self.cluster_id
            )));
        }
        Ok(())
    }
}

impl PeerService {
    /// Takes one peer's `Stream`: every batch is checked as a `Send` is and
    /// handed to the node (dropped and counted when the node's queue is
    /// full; Raft resends); the count taken so far is acknowledged at once
    /// when the last acknowledgement is `STREAM_ACK_INTERVAL` old, else when
    /// it becomes so. A refused batch ends the stream with the refusal.
    async fn take_stream(
        self,
        mut incoming: Streaming<MessageBatch>,
        acks: mpsc::Sender<Result<StreamAck, Status>>,
    ) {
        let (mut received, mut acked) = (0u64, 0u64);
        let mut last_ack: Option<tokio::time::Instant> = None;
        loop {
            let due = (received > acked).then(|| {
                last_ack.map_or_else(tokio::time::Instant::now, |t| t + STREAM_ACK_INTERVAL)
            });
            let next = tokio::select! {
                biased;
                m = incoming.message() => Some(m),
                () = async {
                    match due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => None,
                () = acks.closed() => return,
            };
            let batch = match next {
                // An acknowledgement held back is due.
                None => {
                    if acks
                        .try_send(Ok(StreamAck {
                            received,
                            immediate: false,
                        }))
                        .is_ok()
                    {
                        acked = received;
                    }
                    last_ack = Some(tokio::time::Instant::now());
                    continue;
                }
                Some(Ok(Some(batch))) => batch,
                // The sender ended the stream, or it broke.
                Some(Ok(None)) | Some(Err(_)) => return,
            };
            let (from, bytes) = (batch.from, batch.encoded_len());
            if let Err(status) = self
                .check_cluster(batch.cluster_id)
                .and_then(|()| self.check_sender(batch.from))
            {
                self.stats.receive_failed(from);
                let _ = acks.send(Err(status)).await;
                return;
            }
            match self.inbound.try_send(Inbound::Messages(batch.messages)) {
                Ok(()) => self.stats.received(from, bytes),
                Err(mpsc::error::TrySendError::Full(_)) => self.stats.receive_failed(from),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let _ = acks.send(Err(Status::unavailable("node stopped"))).await;
                    return;
                }
            }
            received += 1;
            if last_ack.is_none_or(|t| t.elapsed() >= STREAM_ACK_INTERVAL) {
                let ack = StreamAck {
                    received,
                    immediate: true,
                };
                if acks.try_send(Ok(ack)).is_ok() {
                    acked = received;
                }
                last_ack = Some(tokio::time::Instant::now());
            }
        }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn send(
        &self,
        request: Request<MessageBatch>,
    ) -> Result<Response<MessageBatchResponse>, Status> {
        let batch = request.into_inner();
        let (from, bytes) = (batch.from, batch.encoded_len());
        let accepted = self
            .check_cluster(batch.cluster_id)
            .and_then(|()| self.check_sender(batch.from))
            .and_then(|()| {
                self.inbound
                    .try_send(Inbound::Messages(batch.messages))
                    .map_err(|_| Status::resource_exhausted("raft inbound queue full"))
            });
        match accepted {
            Ok(()) => self.stats.received(from, bytes),
            Err(_) => self.stats.receive_failed(from),
        }
        accepted.map(|()| Response::new(MessageBatchResponse {}))
    }

    type StreamStream = tokio_stream::wrappers::ReceiverStream<Result<StreamAck, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let incoming = request.into_inner();
        let (acks, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().take_stream(incoming, acks));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut stream = request.into_inner();
        let mut message: Option<Message> = None;
        let mut data = Vec::new();
        loop {
            let chunk = stream
                .message()
                .await?
                .ok_or_else(|| Status::invalid_argument("snapshot stream ended early"))?;
            self.check_cluster(chunk.cluster_id)?;
            if chunk.offset != data.len() as u64 {
                return Err(Status::invalid_argument("snapshot chunk out of order"));
            }
            if data.len() as u64 + chunk.data.len() as u64 > self.max_snapshot_bytes {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            if message.is_none() {
                message = chunk.message;
            }
            data.extend_from_slice(&chunk.data);
            if chunk.last {
                break;
            }
        }
        let message = message
            .ok_or_else(|| Status::invalid_argument("snapshot stream without its message"))?;
        if message.msg_type() != MessageType::MsgSnap {
            return Err(Status::invalid_argument(
                "snapshot stream must carry a MsgSnap",
            ));
        }
        self.check_sender(message.from)?;
        let received_bytes = data.len() as u64;
        self.stats.received(message.from, data.len());
        self.inbound
            .send(Inbound::Snapshot { message, data })
            .await
            .map_err(|_| Status::unavailable("node stopped"))?;
        Ok(Response::new(SnapshotResponse { received_bytes }))
    }

    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let directory = self
            .directory
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this peer does not list members"))?;
        Ok(Response::new(MembersResponse {
            cluster_id: self.cluster_id,
            members: directory.members(),
        }))
    }
}
