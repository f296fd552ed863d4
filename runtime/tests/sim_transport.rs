//! Under madsim: the gRPC Transport between two simulated nodes, and a
//! SimStorage crash (node killed, disk loses what was not synced).
//! Build and run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p cairn-runtime --test sim_transport`.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cairn_proto::raftpb::{Entry, Message, MessageType, Snapshot, SnapshotMetadata};
use cairn_runtime::transport::{
    GrpcTransport, Inbound, PeerService, RaftPeerServer, Transport, TransportConfig,
};
use cairn_runtime::{NodeId, SimDisk, SimStorage, Storage, WriteBatch};
use madsim::runtime::Handle;
use tokio::sync::mpsc;

const CLUSTER: u64 = 0xc0ffee;

fn msg(from: u64, to: u64, index: u64) -> Message {
    let mut m = Message {
        from,
        to,
        term: 3,
        index,
        ..Default::default()
    };
    m.set_msg_type(MessageType::MsgApp);
    m.entries.push(Entry {
        term: 3,
        index: index + 1,
        data: b"hello".to_vec(),
        ..Default::default()
    });
    m
}

/// Starts a peer server on `node` and returns what it receives.
fn serve_peer(handle: &Handle, name: &str, ip: &str) -> mpsc::Receiver<Inbound> {
    let (tx, rx) = mpsc::channel(64);
    let addr: SocketAddr = format!("{ip}:2380").parse().expect("addr");
    let node = handle.create_node().name(name).ip(addr.ip()).build();
    node.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(PeerService::new(CLUSTER, tx)))
            .serve(addr)
            .await
            .expect("peer server");
    });
    rx
}

#[madsim::test]
async fn transport_round_trip_between_two_simulated_nodes() {
    let handle = Handle::current();
    let mut inbox2 = serve_peer(&handle, "n2", "10.0.0.2");
    let client = handle
        .create_node()
        .name("n1")
        .ip("10.0.0.1".parse().expect("ip"))
        .build();
    let sent = client
        .spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await; // let the server bind
            let (tx, _rx) = mpsc::channel(16);
            let peers = BTreeMap::from([(NodeId(2), "http://10.0.0.2:2380".to_owned())]);
            let t = GrpcTransport::new(NodeId(1), CLUSTER, TransportConfig::default(), peers, tx);
            t.send(vec![msg(1, 2, 10), msg(1, 2, 11)]);
            let mut snap = Message {
                from: 1,
                to: 2,
                term: 3,
                ..Default::default()
            };
            snap.set_msg_type(MessageType::MsgSnap);
            snap.snapshot = Some(Snapshot {
                metadata: Some(SnapshotMetadata {
                    index: 100,
                    term: 3,
                    conf_state: None,
                }),
                data: Vec::new(),
            });
            let state: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
            t.send_snapshot(snap, state).await.expect("snapshot stream");
            t
        })
        .await
        .expect("client task");

    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), inbox2.recv())
            .await
            .expect("messages arrive")
        {
            Some(Inbound::Messages(ms)) => got.extend(ms),
            Some(Inbound::Snapshot { message, data }) => {
                assert_eq!(
                    message.snapshot.and_then(|s| s.metadata).map(|m| m.index),
                    Some(100)
                );
                assert_eq!(data.len(), 3_000_000);
                assert!(
                    data.iter().enumerate().all(|(i, b)| *b == i as u8),
                    "chunks reassembled in order"
                );
            }
            other => panic!("unexpected inbound {other:?}"),
        }
    }
    assert_eq!(
        got.iter().map(|m| m.index).collect::<Vec<_>>(),
        vec![10, 11]
    );
    assert_eq!(got[0].entries[0].data, b"hello".to_vec());
    drop(sent);
}

#[madsim::test]
async fn transport_reports_unreachable_peer_and_recovers_after_partition() {
    let handle = Handle::current();
    let mut inbox2 = serve_peer(&handle, "n2", "10.0.0.2");
    let client = handle
        .create_node()
        .name("n1")
        .ip("10.0.0.1".parse().expect("ip"))
        .build();
    let (c_id, s_id) = (client.id(), handle.get_node("n2").expect("n2").id());
    let (tx, mut reports) = mpsc::channel(16);
    let t = client
        .spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let peers = BTreeMap::from([(NodeId(2), "http://10.0.0.2:2380".to_owned())]);
            let cfg = TransportConfig {
                call_timeout: Duration::from_millis(500),
                ..Default::default()
            };
            GrpcTransport::new(NodeId(1), CLUSTER, cfg, peers, tx)
        })
        .await
        .expect("client task");
    let net = madsim::net::NetSim::current();
    net.clog_link(c_id, s_id);
    t.send(vec![msg(1, 2, 1)]);
    match tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("a report")
    {
        Some(Inbound::Unreachable(NodeId(2))) => {}
        other => panic!("expected Unreachable(2), got {other:?}"),
    }
    net.unclog_link(c_id, s_id);
    // After the partition heals, new sends get through.
    let mut delivered = false;
    for i in 0..20 {
        t.send(vec![msg(1, 2, 100 + i)]);
        if let Ok(Some(Inbound::Messages(ms))) =
            tokio::time::timeout(Duration::from_millis(500), inbox2.recv()).await
        {
            delivered = ms.iter().any(|m| m.index >= 100);
            if delivered {
                break;
            }
        }
    }
    assert!(delivered, "messages flow again once the link heals");
}

#[madsim::test]
async fn sim_storage_crash_of_a_simulated_node_loses_unsynced_data() {
    let handle = Handle::current();
    let disk = SimDisk::new();
    let node = handle
        .create_node()
        .name("db")
        .ip("10.0.0.9".parse().expect("ip"))
        .build();
    let d = disk.clone();
    node.spawn(async move {
        let s = SimStorage::open(&d, &["kv"]).expect("open");
        let mut synced = WriteBatch::new();
        synced.put("kv", b"synced".to_vec(), b"1".to_vec());
        s.write_sync(synced).await.expect("sync");
        let mut unsynced = WriteBatch::new();
        unsynced.put("kv", b"unsynced".to_vec(), b"2".to_vec());
        s.write(unsynced).expect("write");
        // The node keeps running (holding the storage) until it is killed.
        std::future::pending::<()>().await;
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.kill(node.id());
    disk.crash();
    handle.restart(node.id());
    let s = SimStorage::open(&disk, &["kv"]).expect("reopen after crash");
    assert_eq!(s.get("kv", b"synced").expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.get("kv", b"unsynced").expect("get"), None);
}
