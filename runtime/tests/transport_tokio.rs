//! The gRPC Transport on real TCP (tokio world): delivery, snapshot streaming,
//! reconnect after the peer restarts, deadlines, and refusal of another cluster.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cairn_proto::raftpb::{Message, MessageType, Snapshot, SnapshotMetadata};
use cairn_runtime::transport::{
    GrpcTransport, Inbound, PeerService, RaftPeerServer, Transport, TransportConfig,
};
use cairn_runtime::NodeId;
use tokio::sync::{mpsc, oneshot};

const CLUSTER: u64 = 7;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Serves the peer service on `addr` until the returned sender is dropped or fired.
async fn serve(addr: SocketAddr, cluster: u64, tx: mpsc::Sender<Inbound>) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(PeerService::new(cluster, tx)))
            .serve_with_shutdown(addr, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
    });
    // Wait until the port accepts connections.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop
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
    match tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("a report")
    {
        Some(Inbound::Unreachable(NodeId(2))) => {}
        other => panic!("expected Unreachable(2), got {other:?}"),
    }

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
    match tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("a report")
    {
        Some(Inbound::Unreachable(NodeId(2))) => {}
        other => panic!("expected the call to fail, got {other:?}"),
    }
    assert!(
        inbox.try_recv().is_err(),
        "nothing from another cluster reaches the node"
    );
}
