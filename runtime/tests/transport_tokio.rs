//! The gRPC Transport on real TCP (tokio world): delivery, snapshot streaming,
//! reconnect after the peer restarts, deadlines, refusal of another cluster,
//! a stream left unacknowledged, and unary calls to a peer without streams.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::raftpb::raft_peer_server::RaftPeer;
use cairn_proto::raftpb::{
    MembersRequest, MembersResponse, Message, MessageBatch, MessageBatchResponse, MessageType,
    Snapshot, SnapshotChunk, SnapshotMetadata, SnapshotResponse, StreamAck,
};
use cairn_runtime::transport::{
    GrpcTransport, Inbound, PeerService, RaftPeerServer, Transport, TransportConfig,
};
use cairn_runtime::NodeId;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

const CLUSTER: u64 = 7;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Serves the peer service on `addr` until the returned sender is dropped or
/// fired, in a runtime of its own: stopping it ends every task and closes
/// every connection, as a process that exits does (a graceful shutdown would
/// keep serving the streams already open).
async fn serve(addr: SocketAddr, cluster: u64, tx: mpsc::Sender<Inbound>) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let server = tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(PeerService::new(cluster, tx)))
                .serve(addr);
            tokio::select! {
                r = server => r.expect("serve"),
                _ = stopped => {}
            }
        });
        rt.shutdown_background();
    });
    wait_for_port(addr).await;
    stop
}

/// Waits until `addr` accepts connections (at most 2 s).
async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat(to: u64, term: u64) -> Message {
    let mut m = Message {
        from: 1,
        to,
        term,
        ..Default::default()
    };
    m.set_msg_type(MessageType::MsgHeartbeat);
    m
}

/// Waits (at most 5 s) for the transport to report peer 2 unreachable.
async fn expect_unreachable(reports: &mut mpsc::Receiver<Inbound>) {
    match tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("a report")
    {
        Some(Inbound::Unreachable(NodeId(2))) => {}
        other => panic!("expected Unreachable(2), got {other:?}"),
    }
}

async fn next_messages(rx: &mut mpsc::Receiver<Inbound>) -> Vec<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("inbound within 5 s")
        {
            Some(Inbound::Messages(ms)) => return ms,
            Some(_) => continue,
            None => panic!("inbound closed"),
        }
    }
}

fn transport(addr: SocketAddr, reports: mpsc::Sender<Inbound>) -> GrpcTransport {
    let peers = BTreeMap::from([(NodeId(2), format!("http://{addr}"))]);
    let cfg = TransportConfig {
        call_timeout: Duration::from_millis(500),
        snapshot_timeout: Duration::from_secs(10),
    };
    GrpcTransport::new(NodeId(1), CLUSTER, cfg, peers, reports)
}

#[tokio::test]
async fn transport_delivers_messages_and_streams_snapshots_over_tcp() {
    let addr = free_addr();
    let (tx, mut inbox) = mpsc::channel(64);
    let _server = serve(addr, CLUSTER, tx).await;
    let (rtx, _reports) = mpsc::channel(64);
    let t = transport(addr, rtx);

    t.send(vec![
        heartbeat(2, 1),
        heartbeat(2, 2),
        heartbeat(3, 9), /* unknown peer: dropped */
    ]);
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next_messages(&mut inbox).await);
    }
    assert_eq!(got.iter().map(|m| m.term).collect::<Vec<_>>(), vec![1, 2]);

    let mut snap = heartbeat(2, 5);
    snap.set_msg_type(MessageType::MsgSnap);
    snap.snapshot = Some(Snapshot {
        metadata: Some(SnapshotMetadata {
            index: 42,
            term: 5,
            conf_state: None,
        }),
        data: vec![],
    });
    let state: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    t.send_snapshot(snap, state.clone())
        .await
        .expect("snapshot");
    match tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("snapshot arrives")
    {
        Some(Inbound::Snapshot { message, data }) => {
            assert_eq!(
                message.snapshot.and_then(|s| s.metadata).map(|m| m.index),
                Some(42)
            );
            assert_eq!(data, state);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn transport_reports_unreachable_and_reconnects_after_peer_restart() {
    let addr = free_addr();
    let (tx, mut inbox) = mpsc::channel(64);
    let stop = serve(addr, CLUSTER, tx.clone()).await;
    let (rtx, mut reports) = mpsc::channel(64);
    let t = transport(addr, rtx);
    t.send(vec![heartbeat(2, 1)]);
    assert_eq!(next_messages(&mut inbox).await[0].term, 1);

    stop.send(()).expect("stop server");
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.send(vec![heartbeat(2, 2)]);
    expect_unreachable(&mut reports).await;

    let _server = serve(addr, CLUSTER, tx).await;
    let mut delivered = false;
    for term in 3..40 {
        t.send(vec![heartbeat(2, term)]);
        if let Ok(Some(Inbound::Messages(ms))) =
            tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await
        {
            if ms.iter().any(|m| m.term >= 3) {
                delivered = true;
                break;
            }
        }
    }
    assert!(delivered, "the transport reconnects to the restarted peer");
}

#[tokio::test]
async fn transport_refuses_messages_from_another_cluster() {
    let addr = free_addr();
    let (tx, mut inbox) = mpsc::channel(64);
    let _server = serve(addr, CLUSTER + 1, tx).await;
    let (rtx, mut reports) = mpsc::channel(64);
    let t = transport(addr, rtx);
    t.send(vec![heartbeat(2, 1)]);
    expect_unreachable(&mut reports).await;
    assert!(
        inbox.try_recv().is_err(),
        "nothing from another cluster reaches the node"
    );
}

/// A peer whose `Stream` takes batches and never acknowledges them (a dead
/// incarnation still holding the socket looks like this to the sender), and
/// whose other calls a real `PeerService` answers; it counts the streams
/// opened to it.
struct NeverAcks {
    inner: PeerService,
    streams: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl RaftPeer for NeverAcks {
    async fn send(
        &self,
        request: Request<MessageBatch>,
    ) -> Result<Response<MessageBatchResponse>, Status> {
        self.inner.send(request).await
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        self.inner.send_snapshot(request).await
    }

    type StreamStream = futures::stream::Pending<Result<StreamAck, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.streams.fetch_add(1, AtomicOrdering::SeqCst);
        let mut incoming = request.into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = incoming.message().await {} });
        Ok(Response::new(futures::stream::pending()))
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        self.inner.members(request).await
    }
}

/// A peer of an older version: no `Stream`, batches by `Send` only.
struct NoStream(PeerService);

#[tonic::async_trait]
impl RaftPeer for NoStream {
    async fn send(
        &self,
        request: Request<MessageBatch>,
    ) -> Result<Response<MessageBatchResponse>, Status> {
        self.0.send(request).await
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        self.0.send_snapshot(request).await
    }

    type StreamStream = futures::stream::Pending<Result<StreamAck, Status>>;

    async fn stream(
        &self,
        _: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("unknown method Stream"))
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        self.0.members(request).await
    }
}

async fn serve_service<S: RaftPeer>(addr: SocketAddr, service: S) {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(service))
            .serve(addr)
            .await
            .expect("serve");
    });
    wait_for_port(addr).await;
}

#[tokio::test]
async fn transport_gives_up_on_a_stream_left_unacknowledged_past_the_deadline_and_opens_another() {
    let addr = free_addr();
    let (tx, _inbox) = mpsc::channel(64);
    let streams = Arc::new(AtomicUsize::new(0));
    serve_service(
        addr,
        NeverAcks {
            inner: PeerService::new(CLUSTER, tx),
            streams: streams.clone(),
        },
    )
    .await;
    let (rtx, mut reports) = mpsc::channel(64);
    let t = transport(addr, rtx);
    let began = std::time::Instant::now();
    t.send(vec![heartbeat(2, 1)]);
    expect_unreachable(&mut reports).await;
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "not before the 500 ms deadline: {waited:?}"
    );
    t.send(vec![heartbeat(2, 2)]);
    for _ in 0..100 {
        if streams.load(AtomicOrdering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        streams.load(AtomicOrdering::SeqCst),
        2,
        "the next batch opens a new stream"
    );
    let stats = t.stats().peer(2);
    assert_eq!(
        stats.sent_failures.load(AtomicOrdering::SeqCst),
        1,
        "the unacknowledged message counts as not sent"
    );
}

#[tokio::test]
async fn transport_sends_by_unary_calls_to_a_peer_without_streams() {
    let addr = free_addr();
    let (tx, mut inbox) = mpsc::channel(64);
    serve_service(addr, NoStream(PeerService::new(CLUSTER, tx))).await;
    let (rtx, mut reports) = mpsc::channel(64);
    let t = transport(addr, rtx);
    // The first batch meets the Unimplemented answer and is lost (Raft
    // resends); the ones after it go by `Send`.
    let mut got = Vec::new();
    for term in 1..40 {
        t.send(vec![heartbeat(2, term)]);
        if let Ok(Some(Inbound::Messages(ms))) =
            tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await
        {
            got.extend(ms.iter().map(|m| m.term));
            if got.len() >= 3 {
                break;
            }
        }
    }
    assert!(got.len() >= 3, "batches reach the older peer: {got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!(
        reports.try_recv().is_err(),
        "an older peer is not reported unreachable"
    );
}

#[tokio::test]
async fn transport_stream_acknowledgements_count_every_batch_sent_and_time_round_trips() {
    let addr = free_addr();
    let (tx, mut inbox) = mpsc::channel(4096);
    let _server = serve(addr, CLUSTER, tx).await;
    let (rtx, mut reports) = mpsc::channel(64);
    let t = transport(addr, rtx);
    let mut got = Vec::new();
    for term in 1..=300 {
        t.send(vec![heartbeat(2, term)]);
        if term % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    while got.len() < 300 {
        got.extend(next_messages(&mut inbox).await.iter().map(|m| m.term));
    }
    assert_eq!(got, (1..=300).collect::<Vec<_>>(), "all, once, in order");
    // Every batch is acknowledged within the ack interval.
    let stats = t.stats().peer(2);
    let want = 300 * heartbeat_bytes();
    for _ in 0..100 {
        if stats.sent_bytes.load(AtomicOrdering::SeqCst) >= want as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stats.sent_bytes.load(AtomicOrdering::SeqCst) >= want as u64,
        "every batch is acknowledged and counted as sent"
    );
    assert_eq!(stats.sent_failures.load(AtomicOrdering::SeqCst), 0);
    assert!(
        stats.round_trip.count() >= 1,
        "an immediate acknowledgement times a round trip"
    );
    assert!(reports.try_recv().is_err(), "nothing reported unreachable");
}

/// The encoded size of `heartbeat(2, 1)`, a lower bound for what each
/// heartbeat adds to a batch.
fn heartbeat_bytes() -> usize {
    use prost::Message as _;
    heartbeat(2, 1).encoded_len()
}
