//! Server tests on tokio: members on SimStorage talking over the real gRPC
//! peer transport on loopback.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::MemberRecord;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    request_op, AlarmRequest, AlarmType, DeleteRangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::etcdserverpb::{
    CompactionRequest, LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, RangeRequest, WatchCreateRequest, WatchResponse,
};
use cairn_runtime::client_port::{serve_client_port, serve_peers, Listener};
use cairn_runtime::transport::{GrpcTransport, TransportConfig};
use cairn_runtime::{NodeId, SimDisk, SimStorage, TokioClock};

use super::apply::all_column_families;
use super::{Server, ServerConfig, ServerError, WatchSession};
use crate::mvcc::MvccError;

struct Member {
    server: Server,
    peer_task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    /// The client port (gRPC), where followers forward lease keep-alives.
    client_task: Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.server.shutdown();
        self.peer_task.abort();
        if let Some(t) = &self.client_task {
            t.abort();
        }
    }
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        ..Default::default()
    }
}

async fn start_member(config: ServerConfig, disk: &SimDisk, listener: Listener) -> Member {
    let storage = Arc::new(SimStorage::open(disk, &all_column_families()).expect("open storage"));
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let peers: BTreeMap<NodeId, String> = config
        .initial_members
        .iter()
        .filter(|m| m.id != config.member_id)
        .map(|m| (NodeId(m.id), m.peer_urls[0].clone()))
        .collect();
    let transport = Arc::new(GrpcTransport::new(
        NodeId(config.member_id),
        config.cluster_id,
        TransportConfig::default(),
        peers,
        tx.clone(),
    ));
    let cluster_id = config.cluster_id;
    let server =
        Server::start(config, storage, transport, Arc::new(TokioClock::new()), rx).expect("start");
    let peer_task = tokio::spawn(serve_peers(
        listener,
        cluster_id,
        tx,
        Some(server.peer_directory()),
    ));
    Member {
        server,
        peer_task,
        client_task: None,
    }
}

/// A member that also serves its client port on `client` (its published client URL).
async fn start_serving_member(
    config: ServerConfig,
    disk: &SimDisk,
    peer: Listener,
    client: Listener,
) -> Member {
    let mut m = start_member(config, disk, peer).await;
    let router = crate::api::client_router(&m.server);
    let http = crate::api::http::handler(m.server.clone());
    m.client_task = Some(tokio::spawn(serve_client_port(client, router, http)));
    m
}

fn fast(mut c: ServerConfig) -> ServerConfig {
    c.heartbeat_interval = Duration::from_millis(20);
    c.health_interval = Duration::from_millis(200);
    c.election_ticks = 10;
    c.request_timeout = Duration::from_secs(3);
    c
}

async fn wait_leader(servers: &[&Server]) -> u64 {
    wait_leader_except(servers, 0).await
}

/// Waits until all `servers` agree on one leader that is not `dead`.
async fn wait_leader_except(servers: &[&Server], dead: u64) -> u64 {
    for _ in 0..500 {
        let leaders: Vec<Option<u64>> = servers.iter().map(|s| s.leader()).collect();
        if let Some(Some(l)) = leaders.first() {
            if *l != dead && leaders.iter().all(|x| *x == Some(*l)) {
                return *l;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no common leader elected");
}

async fn value(s: &Server, k: &str, serializable: bool) -> Option<Vec<u8>> {
    let resp = s
        .range(RangeRequest {
            serializable,
            ..get(k)
        })
        .await
        .expect("range");
    resp.kvs.first().map(|kv| kv.value.clone())
}

/// etcd makes a new member's id from its peer URLs and the wall clock's
/// second (so adding the same URLs twice within one second of the calendar
/// repeats the id: `member ID already exist`). cairn used its monotonic
/// clock, seconds since the process started, so whether two adds fell in
/// one "second" depended on when the member started: cairnctl's member
/// session (tests/membership_interop.rs) found it.
#[tokio::test]
async fn a_new_member_id_hashes_its_peer_urls_with_the_wall_clocks_second() {
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let cfg = fast(ServerConfig::single("one", 1));
    let cluster_id = cfg.cluster_id;
    let m = start_member(cfg, &SimDisk::new(), listener).await;
    wait_leader(&[&m.server]).await;
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let urls = vec!["http://127.0.0.1:1".to_owned()];
    let before = wall();
    let added = m
        .server
        .member_add(
            MemberAddRequest {
                peer_ur_ls: urls.clone(),
                is_learner: true,
            },
            false,
        )
        .await
        .expect("add a learner");
    let after = wall();
    let id = added.member.expect("the new member").id;
    assert!(
        (before..=after).any(|s| super::members::new_member_id(&urls, cluster_id, s) == id),
        "id {id:x} is not the hash of the URLs with a wall-clock second in {before}..={after}"
    );
}

#[tokio::test]
async fn single_member_serves_kv_and_recovers_acknowledged_writes_after_crash() {
    let disk = SimDisk::new();
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let cfg = fast(ServerConfig::single("one", 1));
    let m = start_member(cfg.clone(), &disk, listener).await;
    wait_leader(&[&m.server]).await;

    for i in 0..20 {
        let resp = m
            .server
            .put(put(&format!("k{i}"), &format!("v{i}")))
            .await
            .expect("put");
        assert_eq!(resp.header.expect("header").revision, i + 2);
    }
    assert_eq!(value(&m.server, "k7", false).await, Some(b"v7".to_vec()));
    assert_eq!(value(&m.server, "k7", true).await, Some(b"v7".to_vec()));
    let err = m
        .server
        .range(RangeRequest {
            revision: 100,
            ..get("k1")
        })
        .await
        .expect_err("future revision");
    assert_eq!(err, ServerError::Mvcc(MvccError::FutureRevision));
    m.server
        .compact(CompactionRequest {
            revision: 5,
            physical: true,
        })
        .await
        .expect("compact");
    let err = m
        .server
        .range(RangeRequest {
            revision: 4,
            ..get("k1")
        })
        .await
        .expect_err("compacted");
    assert_eq!(err, ServerError::Mvcc(MvccError::Compacted));
    let hash_before = m.server.hash_kv(0).await.expect("hash").hash;

    // Power loss: every acknowledged write was synced through the Raft log.
    disk.crash();
    drop(m);
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let m = start_member(cfg, &disk, listener).await;
    wait_leader(&[&m.server]).await;
    for i in 0..20 {
        assert_eq!(
            value(&m.server, &format!("k{i}"), false).await,
            Some(format!("v{i}").into_bytes())
        );
    }
    assert_eq!(m.server.hash_kv(0).await.expect("hash").hash, hash_before);
    let resp = m
        .server
        .put(put("after", "crash"))
        .await
        .expect("put after restart");
    assert_eq!(resp.header.expect("header").revision, 22);
}

/// Large requests compact the Raft log by its bytes, not only every
/// `snapshot_count` entries: 80 puts of 1 MiB under a snapshot count of
/// 100 000 leave a log that a restart loads in far less than 80 MiB.
#[tokio::test]
async fn large_requests_compact_the_log_by_bytes_before_snapshot_count_entries() {
    let disk = SimDisk::new();
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let mut cfg = fast(ServerConfig::single("one", 1));
    cfg.snapshot_count = 100_000;
    let m = start_member(cfg, &disk, listener).await;
    wait_leader(&[&m.server]).await;
    let value = "v".repeat(1 << 20);
    for i in 0..80 {
        m.server
            .put(put(&format!("big{i}"), &value))
            .await
            .expect("put 1 MiB");
    }
    drop(m);
    let storage = SimStorage::open(&disk, &all_column_families()).expect("open storage");
    let state = crate::raft::storage::load(&storage).expect("load the log");
    let (snapshot_index, _) = crate::raft::snapshot_index_term(&state.snapshot);
    let log_bytes: usize = state.entries.iter().map(|e| e.data.len()).sum();
    assert!(
        snapshot_index > 60,
        "the log was not compacted by bytes (snapshot index {snapshot_index})"
    );
    assert!(
        log_bytes < (super::node::LOG_COMPACT_BYTES as usize) + (2 << 20),
        "{log_bytes} bytes of log would be loaded at start"
    );
}

/// A record whose bytes flipped on disk is never served: the read that meets
/// it fails, and the member stops (its reads and writes then answer
/// `server stopped`) instead of serving from corrupt storage.
#[tokio::test]
async fn a_member_that_reads_a_flipped_record_stops_instead_of_serving_it() {
    let disk = SimDisk::new();
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let m = start_member(fast(ServerConfig::single("one", 1)), &disk, listener).await;
    wait_leader(&[&m.server]).await;
    for i in 0..5 {
        m.server.put(put(&format!("k{i}"), "v")).await.expect("put");
    }
    // The kv family holds one record per revision: flip k2's (revision 4).
    let key = disk
        .flip_stored_record(crate::mvcc::CF_KV, 2)
        .expect("a kv record");
    assert_eq!(
        crate::mvcc::KeyRevision::from_key(&key).map(|(r, _)| r.main.0),
        Some(4)
    );
    let err = m.server.range(get("k2")).await.expect_err("a corrupt read");
    assert!(
        matches!(err, ServerError::Mvcc(MvccError::Storage(_))),
        "{err:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), m.server.corrupt_halt())
        .await
        .expect("the member stops after reading corrupt storage");
    assert_eq!(
        m.server.range(get("k1")).await.expect_err("stopped"),
        ServerError::Stopped
    );
}

/// A member's proposals are matched to their waiters by request id. Entries
/// proposed before a crash can still be applied after the restart (the
/// leader committed them), so the ids of one start must never repeat those
/// of an earlier one: otherwise an old entry answers a new request (the
/// simulation's lock3 seed 15 saw a lease grant answered with a Txn's result).
#[tokio::test]
async fn request_ids_of_a_restarted_member_never_repeat_those_of_an_earlier_start() {
    let disk = SimDisk::new();
    let cfg = fast(ServerConfig::single("one", 1));
    let mut used_up_to = 0;
    for start in 0..3 {
        let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let m = start_member(cfg.clone(), &disk, listener).await;
        let first = m.server.next_request_id.load(Ordering::SeqCst);
        assert!(
            first > used_up_to,
            "start {start}: first request id {first} is not above the {used_up_to} used before"
        );
        wait_leader(&[&m.server]).await;
        for i in 0..3 {
            m.server
                .put(put(&format!("k{start}-{i}"), "v"))
                .await
                .expect("put");
        }
        used_up_to = m.server.next_request_id.load(Ordering::SeqCst) - 1;
        // Power loss: only what was synced survives.
        disk.crash();
        drop(m);
    }
}

/// ReadIndex contexts, like request ids, never repeat across starts: a
/// leader may still hold a read of the member's previous start (pending
/// while it could not confirm leadership) and ignores a new read with the
/// same context; its eventual answer, with the older read index, would then
/// complete the new read — a stale read (issue 19, item 8).
#[tokio::test]
async fn read_contexts_of_a_restarted_member_never_repeat_those_of_an_earlier_start() {
    let disk = SimDisk::new();
    let cfg = fast(ServerConfig::single("one", 1));
    let mut used_up_to = 0;
    for start in 0..3 {
        let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let m = start_member(cfg.clone(), &disk, listener).await;
        wait_leader(&[&m.server]).await;
        for _ in 0..3 {
            m.server.range(get("k")).await.expect("linearizable read");
        }
        let next = m.server.shared.read_ctx_next.load(Ordering::SeqCst);
        let first = next - 3;
        assert!(
            first > used_up_to,
            "start {start}: first read context {first} is not above the {used_up_to} used before"
        );
        used_up_to = next - 1;
        drop(m);
    }
}

async fn three_members(snapshot_count: u64) -> (Vec<ServerConfig>, Vec<SimDisk>, Vec<Member>) {
    three_members_with(|c| c.snapshot_count = snapshot_count).await
}

/// Three members whose configs `adjust` changes before they start.
async fn three_members_with(
    adjust: impl Fn(&mut ServerConfig),
) -> (Vec<ServerConfig>, Vec<SimDisk>, Vec<Member>) {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(
            Listener::bind("127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("bind"),
        );
    }
    let members: Vec<MemberRecord> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| MemberRecord {
            id: i as u64 + 1,
            name: format!("m{}", i + 1),
            peer_urls: vec![format!("http://{}", l.local_addr())],
            client_urls: vec![],
            is_learner: false,
        })
        .collect();
    let configs: Vec<ServerConfig> = (1..=3u64)
        .map(|id| {
            let mut c = fast(ServerConfig::single(&format!("m{id}"), id));
            c.cluster_id = 77;
            c.initial_members = members.clone();
            adjust(&mut c);
            c
        })
        .collect();
    let disks: Vec<SimDisk> = (0..3).map(|_| SimDisk::new()).collect();
    let mut running = Vec::new();
    for ((c, d), l) in configs.iter().zip(&disks).zip(listeners) {
        running.push(start_member(c.clone(), d, l).await);
    }
    (configs, disks, running)
}

#[tokio::test]
async fn three_members_replicate_and_survive_the_loss_of_the_leader() {
    let (configs, disks, mut members) = three_members(1000).await;
    let servers: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    let leader = wait_leader(&servers).await;
    for i in 0..10 {
        // Writes through any member (followers forward to the leader).
        let via = &members[i % 3].server;
        via.put(put(&format!("k{i}"), "v")).await.expect("put");
    }
    // Every member answers a linearizable read with the latest write.
    for m in &members {
        assert_eq!(value(&m.server, "k9", false).await, Some(b"v".to_vec()));
    }

    // Kill the leader: its disk loses what it had not synced, its peer port goes away.
    let li = (leader - 1) as usize;
    disks[li].crash();
    let dead = members.remove(li);
    drop(dead);
    let survivors: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    let new_leader = wait_leader_except(&survivors, leader).await;
    assert_ne!(new_leader, leader);
    for i in 10..20 {
        members[i % 2]
            .server
            .put(put(&format!("k{i}"), "v"))
            .await
            .expect("put after failover");
    }
    for i in 0..20 {
        assert_eq!(
            value(&members[0].server, &format!("k{i}"), false).await,
            Some(b"v".to_vec()),
            "k{i}"
        );
    }
    let _ = configs;
}

/// Crashes a follower of `leader` (its disk loses what it had not synced);
/// returns its index, its peer address (to restart it on) and a live member.
fn crash_a_follower(
    configs: &[ServerConfig],
    disks: &[SimDisk],
    members: &mut [Option<Member>],
    leader: u64,
) -> (usize, std::net::SocketAddr, Server) {
    let fi = (0..3)
        .find(|i| *i as u64 + 1 != leader)
        .expect("a follower");
    let addr = configs[fi].initial_members[fi].peer_urls[0]
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    disks[fi].crash();
    drop(members[fi].take());
    let live = members[(fi + 1) % 3]
        .as_ref()
        .expect("live member")
        .server
        .clone();
    (fi, addr, live)
}

#[tokio::test]
async fn lagging_member_catches_up_by_snapshot_and_all_hashes_agree() {
    let (configs, disks, members) = three_members(5).await;
    let mut members: Vec<Option<Member>> = members.into_iter().map(Some).collect();
    let servers: Vec<&Server> = members.iter().flatten().map(|m| &m.server).collect();
    let leader = wait_leader(&servers).await;
    // Crash a follower, write past several log compactions, restart it.
    let (fi, addr, live) = crash_a_follower(&configs, &disks, &mut members, leader);
    // A lease and its key travel in the snapshot too.
    let lease = grant(&live, 600).await;
    live.put(put_leased("leased", lease)).await.expect("put");
    for i in 0..40 {
        live.put(put(&format!("k{i}"), &format!("v{i}")))
            .await
            .expect("put");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listener = Listener::bind(addr)
        .await
        .expect("rebind the follower's peer port");
    let restarted = start_member(configs[fi].clone(), &disks[fi], listener).await;
    let target = live.hash_kv(0).await.expect("hash");
    let mut caught_up = false;
    for _ in 0..300 {
        if let Ok(h) = restarted.server.hash_kv(0).await {
            if h.hash == target.hash
                && h.header.as_ref().map(|x| x.revision)
                    == target.header.as_ref().map(|x| x.revision)
            {
                caught_up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = restarted.server.status().await.expect("status");
    assert!(
        caught_up,
        "the restarted member reaches the same revision and HashKV: target {target:?}, restarted status {st:?}, hash {:?}",
        restarted.server.hash_kv(0).await
    );
    assert_eq!(
        value(&restarted.server, "k39", true).await,
        Some(b"v39".to_vec())
    );
    let lessor = restarted.server.shared.lessor.read().expect("lessor lock");
    assert_eq!(lessor.record(crate::lease::LeaseId(lease)), Some((600, 0)));
    assert_eq!(
        lessor.keys(crate::lease::LeaseId(lease)),
        Ok(vec![b"leased".to_vec()])
    );
}

// ---- leases ----

async fn bind_local() -> Listener {
    Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
}

/// Three members serving their client ports (published client URLs), with
/// leases checkpointed every `checkpoint_interval`.
async fn three_serving_members(
    checkpoint_interval: Duration,
) -> (Vec<ServerConfig>, Vec<SimDisk>, Vec<Option<Member>>) {
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        peers.push(bind_local().await);
        clients.push(bind_local().await);
    }
    let members: Vec<MemberRecord> = peers
        .iter()
        .enumerate()
        .map(|(i, l)| MemberRecord {
            id: i as u64 + 1,
            name: format!("m{}", i + 1),
            peer_urls: vec![format!("http://{}", l.local_addr())],
            client_urls: vec![],
            is_learner: false,
        })
        .collect();
    let configs: Vec<ServerConfig> = (1..=3u64)
        .zip(&clients)
        .map(|(id, client)| {
            let mut c = fast(ServerConfig::single(&format!("m{id}"), id));
            c.cluster_id = 78;
            c.initial_members = members.clone();
            c.client_urls = vec![format!("http://{}", client.local_addr())];
            c.lease_checkpoint_interval = checkpoint_interval;
            c
        })
        .collect();
    let disks: Vec<SimDisk> = (0..3).map(|_| SimDisk::new()).collect();
    let mut running = Vec::new();
    for ((c, d), (p, l)) in configs
        .iter()
        .zip(&disks)
        .zip(peers.into_iter().zip(clients))
    {
        running.push(Some(start_serving_member(c.clone(), d, p, l).await));
    }
    (configs, disks, running)
}

/// Waits for a leader and for every member to publish itself: the
/// leader's id and a follower's handle.
async fn leader_and_a_follower(members: &[Option<Member>]) -> (u64, Server) {
    let leader = wait_leader(&live(members)).await;
    wait_published(&live(members)).await;
    let follower = members[leader as usize % 3]
        .as_ref()
        .expect("member")
        .server
        .clone();
    (leader, follower)
}

fn live(members: &[Option<Member>]) -> Vec<&Server> {
    members.iter().flatten().map(|m| &m.server).collect()
}

/// Waits until every live member is published (followers forward lease
/// calls to the leader's published client URL).
async fn wait_published(servers: &[&Server]) {
    for _ in 0..500 {
        if servers.iter().all(|s| s.is_published()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("members not published");
}

fn put_leased(k: &str, lease: i64) -> PutRequest {
    PutRequest {
        lease,
        ..put(k, "v")
    }
}

async fn grant(s: &Server, ttl: i64) -> i64 {
    let resp = s
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant");
    assert_eq!(resp.ttl, ttl);
    resp.id
}

async fn time_to_live(s: &Server, id: i64) -> LeaseTimeToLiveResponse {
    s.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true }, false)
        .await
        .expect("time to live")
}

#[tokio::test]
async fn leases_survive_a_leader_change_without_expiring_early_and_expire_in_one_revision() {
    const TTL: i64 = 4;
    let (configs, disks, mut members) = three_serving_members(Duration::from_secs(300)).await;
    let leader = wait_leader(&live(&members)).await;
    wait_published(&live(&members)).await;
    let li = (leader - 1) as usize;
    let fi = (li + 1) % 3;
    let follower = members[fi].as_ref().expect("follower").server.clone();

    // Granted, written and kept alive through a follower.
    let id = grant(&follower, TTL).await;
    for k in ["svc/a", "svc/b", "svc/c"] {
        follower
            .put(put_leased(k, id))
            .await
            .expect("put with lease");
    }
    let ka = follower
        .lease_keep_alive(id, false)
        .await
        .expect("keep-alive");
    assert_eq!((ka.id, ka.ttl), (id, TTL));
    let ttl = time_to_live(&follower, id).await;
    assert_eq!(ttl.granted_ttl, TTL);
    assert!(ttl.ttl > 0 && ttl.ttl <= TTL, "{ttl:?}");
    assert_eq!(
        ttl.keys,
        vec![b"svc/a".to_vec(), b"svc/b".to_vec(), b"svc/c".to_vec()]
    );
    // The last keep-alive, then the leader dies.
    follower
        .lease_keep_alive(id, false)
        .await
        .expect("keep-alive");
    let last_keep_alive = tokio::time::Instant::now();
    disks[li].crash();
    drop(members[li].take());
    let new_leader = wait_leader_except(&live(&members), leader).await;
    assert_ne!(new_leader, leader);
    let revision_before = follower
        .range(get("svc/a"))
        .await
        .expect("range")
        .header
        .expect("header")
        .revision;

    // The new leader extended the lease: it lives at least TTL after the
    // last keep-alive, and then goes away with all its keys at once.
    let vanished_at = loop {
        let resp = follower
            .range(RangeRequest {
                range_end: b"svc0".to_vec(),
                ..get("svc/")
            })
            .await
            .expect("range");
        if resp.kvs.is_empty() {
            break tokio::time::Instant::now();
        }
        assert_eq!(resp.kvs.len(), 3, "keys expire together");
        assert!(
            last_keep_alive.elapsed() < Duration::from_secs(TTL as u64 + 5),
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        vanished_at >= last_keep_alive + Duration::from_secs(TTL as u64),
        "expired {:?} after the last keep-alive, before its TTL",
        vanished_at - last_keep_alive
    );
    let after = follower
        .range(get("svc/a"))
        .await
        .expect("range")
        .header
        .expect("header")
        .revision;
    assert_eq!(after, revision_before + 1, "one revision deletes every key");
    let at_before = follower
        .range(RangeRequest {
            range_end: b"svc0".to_vec(),
            revision: revision_before,
            ..get("svc/")
        })
        .await
        .expect("range at the revision before");
    assert_eq!(at_before.kvs.len(), 3);

    // Revoked for good: gone everywhere, keep-alives answer TTL 0.
    let survivors = live(&members);
    for s in &survivors {
        assert_eq!(time_to_live(s, id).await.ttl, -1);
        assert_eq!(
            s.lease_keep_alive(id, false).await.expect("keep-alive").ttl,
            0
        );
        assert!(s.lease_leases().await.expect("leases").leases.is_empty());
    }
    // The old leader comes back with the lease in its storage: it learns
    // the revoke and the lease never returns.
    let addr = |url: &str| {
        url.trim_start_matches("http://")
            .parse::<std::net::SocketAddr>()
            .expect("addr")
    };
    let peer = Listener::bind(addr(&configs[li].initial_members[li].peer_urls[0]))
        .await
        .expect("rebind peer port");
    let client = Listener::bind(addr(&configs[li].client_urls[0]))
        .await
        .expect("rebind client port");
    members[li] = Some(start_serving_member(configs[li].clone(), &disks[li], peer, client).await);
    let back = members[li].as_ref().expect("restarted").server.clone();
    let mut caught_up = false;
    for _ in 0..300 {
        let applied = back.status().await.expect("status").raft_applied_index;
        if applied >= follower.commit_index() {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "the old leader catches up");
    assert!(back.lease_leases().await.expect("leases").leases.is_empty());
    assert_eq!(time_to_live(&back, id).await.ttl, -1);
    assert_eq!(value(&back, "svc/a", true).await, None);
}

/// A follower forwards its clients' keep-alives on one stream and the
/// leader renews them in batches (`server/lease/forward.rs`): under many concurrent
/// renewals every answer still belongs to its own lease — each lease has its
/// own TTL, so an answer matched to the wrong renewal shows — and an unknown
/// lease still answers TTL 0.
#[tokio::test]
async fn concurrent_keep_alives_through_a_follower_each_get_their_own_lease_ttl() {
    let (_configs, _disks, members) = three_serving_members(Duration::from_secs(300)).await;
    let (_, follower) = leader_and_a_follower(&members).await;
    let mut leases = Vec::new();
    for ttl in 10..50 {
        leases.push((grant(&follower, ttl).await, ttl));
    }
    let unknown = 0x7eed_0000_0000_0001;
    leases.push((unknown, 0));
    let mut tasks = Vec::new();
    for round in 0..10 {
        for &(id, ttl) in &leases {
            let f = follower.clone();
            tasks.push(tokio::spawn(async move {
                let ka = f.lease_keep_alive(id, false).await.expect("keep-alive");
                (round, id, ttl, ka)
            }));
        }
    }
    let mut answered = 0;
    for task in tasks {
        let (round, id, ttl, ka) = task.await.expect("task");
        assert_eq!((ka.id, ka.ttl), (id, ttl), "round {round}: lease {id:x}");
        answered += 1;
    }
    assert_eq!(answered, 10 * leases.len());
}

#[tokio::test]
async fn checkpointed_remaining_ttl_survives_a_failover_so_long_leases_do_not_restart() {
    const TTL: i64 = 60;
    let (_configs, disks, mut members) = three_serving_members(Duration::from_secs(1)).await;
    let (leader, follower) = leader_and_a_follower(&members).await;
    let li = (leader - 1) as usize;
    let id = grant(&follower, TTL).await;
    // Several checkpoints go through Raft while the lease runs down.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    disks[li].crash();
    drop(members[li].take());
    wait_leader_except(&live(&members), leader).await;
    let ttl = time_to_live(&follower, id).await;
    assert_eq!(ttl.granted_ttl, TTL);
    // Without checkpoints the new leader would start over at 60 s (+0.2 s).
    assert!(
        ttl.ttl <= TTL - 2 && ttl.ttl >= TTL - 10,
        "remaining {} after a failover 3.5 s into a {TTL} s lease",
        ttl.ttl
    );
    // A keep-alive clears the checkpoint on every member (through Raft), so
    // the next leader would start from the full TTL again.
    let ka = follower
        .lease_keep_alive(id, false)
        .await
        .expect("keep-alive");
    assert_eq!(ka.ttl, TTL);
    assert!(time_to_live(&follower, id).await.ttl >= TTL - 1);
    for m in members.iter().flatten() {
        m.server.linearizable_barrier().await.expect("barrier");
        let record = m
            .server
            .shared
            .lessor
            .read()
            .expect("lessor lock")
            .record(crate::lease::LeaseId(id));
        assert_eq!(record, Some((TTL, 0)), "checkpoint cleared");
    }
}

#[tokio::test]
async fn without_a_leader_keep_alives_fail_and_a_read_counts_one_failed_read_index() {
    let (_configs, disks, mut members) = three_serving_members(Duration::from_secs(300)).await;
    wait_leader(&live(&members)).await;
    wait_published(&live(&members)).await;
    let id = grant(&members[0].as_ref().expect("member").server, 10).await;
    for i in 1..3 {
        disks[i].crash();
        drop(members[i].take());
    }
    let alone = members[0].as_ref().expect("member").server.clone();
    let err = alone
        .lease_keep_alive(id, false)
        .await
        .expect_err("no quorum");
    assert_eq!(err, ServerError::NoLeader);
    let err = alone
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false }, false)
        .await
        .expect_err("no quorum");
    assert_eq!(err, ServerError::NoLeader);
    // A linearizable read whose ReadIndex cannot be had counts as a failed
    // read index (etcd_server_read_indexes_failed_total); a refused one, by
    // a stopped member, does not.
    let failed = || {
        alone
            .shared
            .metrics
            .read_indexes_failed
            .load(Ordering::Relaxed)
    };
    let before = failed();
    alone.range(get("k")).await.expect_err("no quorum");
    assert_eq!(failed(), before + 1);
    alone.shutdown();
    alone.stopped().await;
    alone.range(get("k")).await.expect_err("stopped");
    assert_eq!(failed(), before + 1);
}

#[tokio::test]
async fn leases_and_attachments_survive_a_crash_and_restart() {
    let disk = SimDisk::new();
    let cfg = fast(ServerConfig::single("one", 1));
    let m = start_member(cfg.clone(), &disk, bind_local().await).await;
    wait_leader(&[&m.server]).await;
    let id = grant(&m.server, 600).await;
    let revoked = grant(&m.server, 600).await;
    m.server.put(put_leased("a", id)).await.expect("put");
    m.server.put(put_leased("b", id)).await.expect("put");
    m.server.put(put_leased("c", revoked)).await.expect("put");
    m.server.put(put("b", "no lease")).await.expect("put"); // detaches b
    m.server
        .lease_revoke(LeaseRevokeRequest { id: revoked })
        .await
        .expect("revoke");
    let err = m
        .server
        .put(put_leased("d", revoked))
        .await
        .expect_err("revoked lease");
    assert_eq!(err, ServerError::Mvcc(MvccError::LeaseNotFound));

    disk.crash();
    drop(m);
    let m = start_member(cfg, &disk, bind_local().await).await;
    wait_leader(&[&m.server]).await;
    let ttl = time_to_live(&m.server, id).await;
    assert_eq!(ttl.granted_ttl, 600);
    assert!(ttl.ttl > 590 && ttl.ttl <= 600, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"a".to_vec()]);
    assert_eq!(time_to_live(&m.server, revoked).await.ttl, -1);
    let listed: Vec<i64> = m
        .server
        .lease_leases()
        .await
        .expect("leases")
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(listed, vec![id]);
    // Granting the same id again is refused; the attachment still revokes.
    let err = m
        .server
        .lease_grant(LeaseGrantRequest { ttl: 5, id })
        .await
        .expect_err("duplicate id");
    assert_eq!(
        err,
        ServerError::Lease(crate::lease::LeaseError::AlreadyExists)
    );
    m.server
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("revoke");
    assert_eq!(value(&m.server, "a", false).await, None);
    assert_eq!(
        value(&m.server, "b", false).await,
        Some(b"no lease".to_vec())
    );
}

/// Regression (found by the benchmarks): every member numbered its ReadIndex
/// contexts from 1, and the leader ignores a context already pending, so
/// concurrent linearizable reads on two followers left one of them waiting
/// until `request timed out`.
#[tokio::test]
async fn concurrent_linearizable_reads_on_every_member_are_all_answered_promptly() {
    let (_configs, _disks, members) = three_members(1000).await;
    let servers: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    wait_leader(&servers).await;
    members[0].server.put(put("k", "v")).await.expect("put");
    for round in 0..20 {
        let reads: Vec<_> = members
            .iter()
            .map(|m| {
                let s = m.server.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(2), s.range(get("k")))
                        .await
                        .map_err(|_| "no answer within 2 s")
                        .and_then(|r| r.map_err(|_| "read failed"))
                })
            })
            .collect();
        for (i, r) in reads.into_iter().enumerate() {
            let r = r.await.expect("read task");
            let resp = r.unwrap_or_else(|e| panic!("round {round}, member {}: {e}", i + 1));
            assert_eq!(resp.kvs[0].value, b"v".to_vec());
        }
    }
}

// ---- watch ----

fn watch_prefix(prefix: &str, start_revision: i64, prev_kv: bool) -> WatchCreateRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    WatchCreateRequest {
        key: prefix.into(),
        range_end: end,
        start_revision,
        prev_kv,
        ..Default::default()
    }
}

/// Drains `session` as the gRPC stream task does until `done` holds for
/// everything received.
async fn watch_until(
    session: &WatchSession,
    received: &mut Vec<WatchResponse>,
    done: impl Fn(&[WatchResponse]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        received.extend(session.take());
        if done(received) {
            return;
        }
        if session.catch_up().expect("catch-up read") || session.has_output() {
            continue;
        }
        tokio::select! {
            _ = session.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                panic!("the watch did not deliver in time; received {received:?}")
            }
        }
    }
}

/// (value, revision, prev value) of every event of watcher `id`.
fn watch_events(received: &[WatchResponse], id: i64) -> Vec<(String, i64, Option<String>)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    received
        .iter()
        .filter(|r| r.watch_id == id)
        .flat_map(|r| &r.events)
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            (
                text(&kv.value),
                kv.mod_revision,
                e.prev_kv.as_ref().map(|p| text(&p.value)),
            )
        })
        .collect()
}

fn count_events(id: i64, n: usize) -> impl Fn(&[WatchResponse]) -> bool {
    move |received| watch_events(received, id).len() >= n
}

/// Values `v{first}..v{last}` in order at consecutive revisions: no gap, no duplicate.
fn assert_complete(events: &[(String, i64, Option<String>)], first: usize, last: usize) {
    let values: Vec<String> = events.iter().map(|e| e.0.clone()).collect();
    let expected: Vec<String> = (first..=last).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected, "every write once, in order");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].1,
            pair[0].1 + 1,
            "consecutive revisions: {events:?}"
        );
    }
}

#[tokio::test]
async fn watch_on_a_follower_keeps_delivering_across_a_leader_change_without_gaps_or_duplicates() {
    let (_configs, disks, mut members) = three_members(1000).await;
    let servers: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    let leader = wait_leader(&servers).await;
    let fi = (0..3)
        .find(|i| *i as u64 + 1 != leader)
        .expect("a follower");
    let follower = members[fi].server.clone();
    let session = follower.watch_session();
    session.create(&watch_prefix("k", 0, true));
    let mut received = Vec::new();
    watch_until(&session, &mut received, |r| r.iter().any(|r| r.created)).await;
    let id = received[0].watch_id;
    for i in 0..10 {
        members[i % 3]
            .server
            .put(put(&format!("k{}", i % 4), &format!("v{i}")))
            .await
            .expect("put");
    }
    // Kill the leader; write through the survivors after the election.
    let li = (leader - 1) as usize;
    disks[li].crash();
    drop(members.remove(li));
    let survivors: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    wait_leader_except(&survivors, leader).await;
    for i in 10..20 {
        members[i % 2]
            .server
            .put(put(&format!("k{}", i % 4), &format!("v{i}")))
            .await
            .expect("put after failover");
    }
    watch_until(&session, &mut received, count_events(id, 20)).await;
    let events = watch_events(&received, id);
    assert_complete(&events, 0, 19);
    for (i, e) in events.iter().enumerate() {
        let prev = (i >= 4).then(|| format!("v{}", i - 4));
        assert_eq!(e.2, prev, "prev_kv of v{i}");
    }
    // A watcher created now replays the same history from revision 1.
    let replay = follower.watch_session();
    replay.create(&watch_prefix("k", 1, false));
    let mut again = Vec::new();
    watch_until(&replay, &mut again, |r| {
        r.first()
            .is_some_and(|c| watch_events(r, c.watch_id).len() >= 20)
    })
    .await;
    let replayed = watch_events(&again, again[0].watch_id);
    assert_complete(&replayed, 0, 19);
    assert_eq!(
        replayed.iter().map(|e| e.1).collect::<Vec<_>>(),
        events.iter().map(|e| e.1).collect::<Vec<_>>()
    );
    drop(session);
    drop(replay);
    assert_eq!(
        follower.watch_counts().watchers,
        0,
        "closed sessions leave no watchers"
    );
}

#[tokio::test]
async fn watchers_on_a_follower_that_installs_a_snapshot_miss_nothing() {
    let (configs, disks, members) = three_members(5).await;
    let mut members: Vec<Option<Member>> = members.into_iter().map(Some).collect();
    let servers: Vec<&Server> = members.iter().flatten().map(|m| &m.server).collect();
    let leader = wait_leader(&servers).await;
    let (fi, addr, live) = crash_a_follower(&configs, &disks, &mut members, leader);
    // Past several log compactions: the follower can only catch up by snapshot.
    for i in 0..40 {
        live.put(put(&format!("k{}", i % 10), &format!("v{i}")))
            .await
            .expect("put");
    }
    let listener = Listener::bind(addr)
        .await
        .expect("rebind the follower's peer port");
    let restarted = start_member(configs[fi].clone(), &disks[fi], listener).await;
    // Created before the member runs (this test's runtime is single-threaded):
    // one watcher synced at the member's old revision, one replaying from 1.
    let session = restarted.server.watch_session();
    session.create(&watch_prefix("k", 0, false));
    session.create(&watch_prefix("k", 1, true));
    let mut received = Vec::new();
    watch_until(&session, &mut received, |r| {
        r.iter().filter(|r| r.created).count() == 2
    })
    .await;
    let (live_id, replay_id) = (received[0].watch_id, received[1].watch_id);
    let created_at = received[0].header.as_ref().map_or(0, |h| h.revision);
    for i in 40..45 {
        live.put(put(&format!("k{}", i % 10), &format!("v{i}")))
            .await
            .expect("put");
    }
    watch_until(&session, &mut received, |r| {
        watch_events(r, replay_id).len() >= 45
            && watch_events(r, live_id)
                .last()
                .is_some_and(|e| e.0 == "v44")
    })
    .await;
    assert!(
        restarted
            .server
            .metrics()
            .snapshots_installed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "the follower caught up by snapshot"
    );
    let replayed = watch_events(&received, replay_id);
    assert_complete(&replayed, 0, 44);
    for (i, e) in replayed.iter().enumerate() {
        let prev = (i >= 10).then(|| format!("v{}", i - 10));
        assert_eq!(e.2, prev, "prev_kv of v{i}");
    }
    // The watcher that was synced when the snapshot replaced the store got
    // every write after its creation revision, from history then live.
    let synced = watch_events(&received, live_id);
    let first = replayed
        .iter()
        .position(|e| e.1 > created_at)
        .expect("writes after the watcher's creation");
    assert!(created_at < replayed[40].1, "created before catching up");
    assert_complete(&synced, first, 44);
}

/// The restart invariant the simulation checks after every write: a member
/// whose applied state is ahead of its log fails it (such a member could not
/// restart: simulation kv5 seed 7037), a freshly founded one passes, and a
/// received state applied at another index than its Raft snapshot is refused
/// before anything is written.
#[test]
fn applied_state_ahead_of_the_log_fails_the_restart_check_and_is_refused_at_install() {
    use super::apply::{
        applied_batch, bootstrap_batch, check_restartable, encode_state_snapshot,
        install_state_snapshot_batch,
    };
    use crate::raft::{self, HardState, RaftState, Snapshot, SnapshotMetadata};
    use cairn_runtime::Storage as _;

    let storage = SimStorage::new(&all_column_families());
    let founding = RaftState {
        hard_state: HardState {
            term: 1,
            vote: 0,
            commit: 1,
        },
        snapshot: Snapshot {
            metadata: Some(SnapshotMetadata {
                conf_state: Some(raft::ConfState {
                    voters: vec![1],
                    learners: vec![],
                }),
                index: 1,
                term: 1,
            }),
            data: Vec::new(),
        },
        entries: Vec::new(),
    };
    let mut b = raft::storage::bootstrap_batch(&founding);
    b.extend(bootstrap_batch(1, 1, &[]));
    storage.write(b).expect("write");
    check_restartable(storage.snapshot().as_ref()).expect("a founded member can restart");

    storage.write(applied_batch(5)).expect("write");
    let err =
        check_restartable(storage.snapshot().as_ref()).expect_err("applied 5 over a log at 1");
    assert_eq!(err, "applied 5 beyond last index 1 (snapshot at 1)");

    let state = encode_state_snapshot(storage.snapshot().as_ref(), 5).expect("encode");
    let refused = install_state_snapshot_batch(&storage, &state, 3).expect_err("5 is not 3");
    assert_eq!(
        refused.to_string(),
        "storage corruption: state snapshot applied at 5 under raft snapshot 3"
    );
    install_state_snapshot_batch(&storage, &state, 5).expect("state and metadata agree");
}

// ---- membership ----

use cairn_proto::etcdserverpb::{
    Member as ApiMember, MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest,
};

fn records(members: &[ApiMember]) -> Vec<MemberRecord> {
    members
        .iter()
        .map(|m| MemberRecord {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_ur_ls.clone(),
            client_urls: m.client_ur_ls.clone(),
            is_learner: m.is_learner,
        })
        .collect()
}

/// Polls `f` every 20 ms for up to 10 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

fn member_ids(s: &Server) -> Vec<(u64, bool)> {
    s.member_list_now()
        .iter()
        .map(|m| (m.id, m.is_learner))
        .collect()
}

#[tokio::test]
async fn a_learner_joins_by_snapshot_serves_only_serializable_reads_and_is_promoted_to_a_voter() {
    let (_configs, _disks, members) = three_serving_members(Duration::from_secs(300)).await;
    let (_leader, follower) = leader_and_a_follower(&members).await;
    // Peers count as connected for membership checks after `health_interval`.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..20 {
        follower.put(put(&format!("k{i}"), "v")).await.expect("put");
    }
    let (peer, client) = (bind_local().await, bind_local().await);
    let peer_url = format!("http://{}", peer.local_addr());
    // Asked of a follower: forwarded to the leader.
    let added = follower
        .member_add(
            MemberAddRequest {
                peer_ur_ls: vec![peer_url.clone()],
                is_learner: true,
            },
            false,
        )
        .await
        .expect("add learner");
    let new_id = added.member.as_ref().expect("the new member").id;
    assert!(added
        .members
        .iter()
        .any(|m| m.id == new_id && m.is_learner && m.name.is_empty()));
    assert_eq!(added.members.len(), 4);
    // The same URLs again, and a second learner: etcd's errors.
    let again = follower
        .member_add(
            MemberAddRequest {
                peer_ur_ls: vec![peer_url.clone()],
                is_learner: false,
            },
            false,
        )
        .await;
    // etcd's words: within the same second the URLs hash to the same id.
    assert!(
        matches!(
            again.err(),
            Some(ServerError::MemberExists | ServerError::PeerUrlExists)
        ),
        "the same peer URLs twice"
    );
    let second = follower
        .member_add(
            MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: true,
            },
            false,
        )
        .await;
    assert_eq!(second.err(), Some(ServerError::TooManyLearners));

    let mut c = fast(ServerConfig::single("m4", new_id));
    c.cluster_id = 78;
    c.joining = true;
    c.initial_members = records(&added.members);
    c.client_urls = vec![format!("http://{}", client.local_addr())];
    let learner = start_serving_member(c, &SimDisk::new(), peer, client).await;
    let l = learner.server.clone();
    for _ in 0..500 {
        if value(&l, "k19", true).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(&l, "k19", true).await,
        Some(b"v".to_vec()),
        "the learner caught up"
    );
    assert!(
        l.metrics().snapshots_installed.load(Ordering::Relaxed) >= 1,
        "by snapshot"
    );
    assert_eq!(
        l.put(put("x", "y")).await.err(),
        Some(ServerError::NotSupportedForLearner)
    );
    assert_eq!(
        l.range(get("k1")).await.err(),
        Some(ServerError::NotSupportedForLearner),
        "a learner refuses linearizable reads"
    );
    assert!(l.status().await.expect("status").is_learner);

    let mut promoted = None;
    for _ in 0..100 {
        match follower
            .member_promote(MemberPromoteRequest { id: new_id }, false)
            .await
        {
            Ok(r) => {
                promoted = Some(r);
                break;
            }
            Err(ServerError::LearnerNotReady) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("promote: {e}"),
        }
    }
    let promoted = promoted.expect("promoted once in sync");
    assert!(promoted.members.iter().all(|m| !m.is_learner));
    eventually("the new voter knows it votes", || !l.status_is_learner()).await;
    l.put(put("from-new-voter", "1"))
        .await
        .expect("a voter writes");
    let again = follower
        .member_promote(MemberPromoteRequest { id: new_id }, false)
        .await;
    assert_eq!(again.err(), Some(ServerError::MemberNotLearner));
    let missing = follower
        .member_promote(MemberPromoteRequest { id: 4242 }, false)
        .await;
    assert_eq!(missing.err(), Some(ServerError::MemberNotFound));
    // Every member applied the same membership.
    let mut all = live(&members);
    all.push(&l);
    let expected = member_ids(all[0]);
    eventually("every member lists the same members", || {
        all.iter().all(|s| member_ids(s) == expected)
    })
    .await;
    assert_eq!(expected.len(), 4);
}

#[tokio::test]
async fn removing_the_leader_stops_it_for_good_and_the_rest_elect_a_new_one() {
    let (_configs, disks, mut members) = three_serving_members(Duration::from_secs(300)).await;
    let (leader, follower) = leader_and_a_follower(&members).await;
    // Peers count as connected for membership checks after `health_interval`.
    tokio::time::sleep(Duration::from_millis(400)).await;
    follower.put(put("before", "1")).await.expect("put");
    let resp = follower
        .member_remove(MemberRemoveRequest { id: leader }, false)
        .await
        .expect("remove the leader");
    assert!(resp.members.iter().all(|m| m.id != leader));
    assert_eq!(resp.members.len(), 2);
    let old = members[leader as usize - 1].take().expect("the leader");
    eventually("the removed leader stops", || old.server.is_removed()).await;
    let rest = live(&members);
    let new_leader = wait_leader_except(&rest, leader).await;
    assert_ne!(new_leader, leader);
    follower.put(put("after", "2")).await.expect("writes go on");
    assert_eq!(
        follower
            .member_remove(MemberRemoveRequest { id: leader }, false)
            .await
            .err(),
        Some(ServerError::MemberNotFound),
        "a removed member is gone for good"
    );
    drop(old);
    // Its data refuses to start again.
    let mut c = fast(ServerConfig::single(&format!("m{leader}"), leader));
    c.cluster_id = 78;
    let storage = Arc::new(
        SimStorage::open(&disks[leader as usize - 1], &all_column_families()).expect("open"),
    );
    let (_tx, rx) = tokio::sync::mpsc::channel(16);
    let transport = Arc::new(GrpcTransport::new(
        NodeId(leader),
        78,
        TransportConfig::default(),
        BTreeMap::new(),
        _tx.clone(),
    ));
    let restarted = Server::start(c, storage, transport, Arc::new(TokioClock::new()), rx);
    assert!(
        matches!(restarted, Err(super::StartError::Removed)),
        "a removed member's data must not start"
    );
}

#[tokio::test]
async fn move_leader_hands_leadership_to_the_target_and_only_the_leader_takes_it() {
    let (_configs, _disks, members) = three_serving_members(Duration::from_secs(300)).await;
    let (leader, follower) = leader_and_a_follower(&members).await;
    let target = follower.member_id();
    assert_eq!(
        follower.move_leader(leader).await.err(),
        Some(ServerError::NotLeader)
    );
    let l = members[leader as usize - 1]
        .as_ref()
        .expect("leader")
        .server
        .clone();
    assert_eq!(
        l.move_leader(4242).await.err(),
        Some(ServerError::BadLeaderTransferee)
    );
    l.move_leader(target).await.expect("moved");
    assert_eq!(wait_leader(&live(&members)).await, target);
    follower
        .put(put("k", "v"))
        .await
        .expect("the new leader writes");
    // A peer-URL update is applied everywhere.
    let new_url = "http://127.0.0.1:1".to_owned();
    follower
        .member_update(MemberUpdateRequest {
            id: leader,
            peer_ur_ls: vec![new_url.clone()],
        })
        .await
        .expect("update");
    let taken = follower
        .member_update(MemberUpdateRequest {
            id: target,
            peer_ur_ls: vec![new_url.clone()],
        })
        .await;
    assert_eq!(taken.err(), Some(ServerError::PeerUrlExists));
}

#[tokio::test]
async fn concurrent_membership_changes_through_different_members_apply_one_at_a_time() {
    let (_configs, _disks, members) = three_serving_members(Duration::from_secs(300)).await;
    let (leader, follower) = leader_and_a_follower(&members).await;
    // Peers count as connected for membership checks after `health_interval`.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let other = live(&members)
        .into_iter()
        .find(|s| s.member_id() != leader && s.member_id() != follower.member_id())
        .expect("the third member")
        .clone();
    let victim = other.member_id();
    let add = follower.member_add(
        MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:9".into()],
            is_learner: true,
        },
        false,
    );
    let remove = follower.member_remove(MemberRemoveRequest { id: victim }, false);
    let update = other.member_update(MemberUpdateRequest {
        id: leader,
        peer_ur_ls: vec![format!("http://127.0.0.1:{}", 10)],
    });
    let (added, removed, _updated) = tokio::join!(add, remove, update);
    let added = added.expect("the learner is added");
    removed.expect("the voter is removed");
    let new_id = added.member.expect("member").id;
    let l = members[leader as usize - 1]
        .as_ref()
        .expect("leader")
        .server
        .clone();
    let expected = {
        let mut v = vec![
            (leader, false),
            (follower.member_id(), false),
            (new_id, true),
        ];
        v.sort();
        v
    };
    eventually(
        "the leader and the follower list the same three members",
        || member_ids(&l) == expected && member_ids(&follower) == expected,
    )
    .await;
}

// ---- Quota, alarms, defragment ----

fn alarm_req(action: AlarmAction, member_id: u64) -> AlarmRequest {
    AlarmRequest {
        action: action as i32,
        member_id,
        alarm: AlarmType::Nospace as i32,
    }
}

/// Members 1 and 2 have a small quota, member 3 a large one: a put through
/// member 3 passes its own size check, so only the replicated alarm (the
/// capped apply) can refuse it.
#[tokio::test]
async fn passing_the_quota_raises_nospace_cluster_wide_until_space_is_reclaimed_and_disarmed() {
    const QUOTA: u64 = 64 * 1024;
    let (_configs, _disks, members) = three_members_with(|c| {
        c.snapshot_count = 5;
        c.quota_backend_bytes = if c.member_id == 3 { 1 << 30 } else { QUOTA };
    })
    .await;
    let servers: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    let leader = wait_leader(&servers).await;
    let small = servers[if leader == 3 { 0 } else { leader as usize - 1 }];
    let roomy = servers[2];
    let value = "v".repeat(2048);

    let mut refused = None;
    for i in 0..200 {
        match small.put(put(&format!("big{i}"), &value)).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (written, err) = refused.expect("the quota was never reached");
    assert_eq!(err, ServerError::NoSpace);
    assert!(written >= 5, "refused after only {written} puts");
    let me = small.member_id();
    for s in &servers {
        eventually("every member applies the alarm", || {
            s.alarm_names() == vec![(me, "NOSPACE")]
        })
        .await;
    }

    // The capped cluster: puts, txns that put and lease grants are refused
    // at apply, even through a member under its own quota.
    assert_eq!(
        roomy.put(put("small", "x")).await,
        Err(ServerError::NoSpace)
    );
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("t", "x"))),
        }],
        ..Default::default()
    };
    assert_eq!(
        roomy.txn(txn.clone()).await.err(),
        Some(ServerError::NoSpace)
    );
    let grant = roomy
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
        .await;
    assert_eq!(grant.err(), Some(ServerError::NoSpace));
    // Everything else goes on.
    assert_eq!(value_of(roomy, "big0").await.len(), 2048);
    let status = roomy.status().await.expect("status");
    assert_eq!(status.errors, vec![format!("memberID:{me} alarm:NOSPACE ")]);
    let listed = roomy
        .alarm(alarm_req(AlarmAction::Get, 0))
        .await
        .expect("alarm list");
    assert_eq!(listed.alarms.len(), 1);
    assert_eq!(listed.alarms[0].member_id, me);

    // Reclaim: delete, compact, defragment every member, then disarm.
    let deleted = roomy
        .delete_range(DeleteRangeRequest {
            key: b"big".to_vec(),
            range_end: b"bih".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete under NOSPACE");
    assert_eq!(deleted.deleted, written as i64);
    let rev = deleted.header.expect("header").revision;
    roomy
        .compact(CompactionRequest {
            revision: rev,
            physical: true,
        })
        .await
        .expect("compact under NOSPACE");
    for s in &servers {
        s.defragment().await.expect("defragment");
    }
    let disarmed = roomy
        .alarm(alarm_req(AlarmAction::Deactivate, me))
        .await
        .expect("disarm");
    assert_eq!(disarmed.alarms.len(), 1);
    for s in &servers {
        eventually("every member applies the disarm", || {
            s.alarm_names().is_empty()
        })
        .await;
    }
    small
        .put(put("after", "disarm"))
        .await
        .expect("put after disarm");
    roomy.txn(txn).await.expect("txn after disarm");
    assert!(roomy.status().await.expect("status").errors.is_empty());
}

async fn value_of(s: &Server, k: &str) -> Vec<u8> {
    value(s, k, false).await.unwrap_or_default()
}

/// A stopping leader hands over to its best voter. Raft clears every
/// peer's `recent_active` at each check-quorum tick (every election
/// timeout), so the target is also chosen among peers heard from within an
/// election timeout: transfers asked at many phases of the check-quorum
/// cycle must all find a target and complete.
#[tokio::test]
async fn transfer_to_best_finds_a_target_whatever_the_check_quorum_phase() {
    let (_configs, _disks, members) = three_members(1000).await;
    let servers: Vec<&Server> = members.iter().map(|m| &m.server).collect();
    let mut leader = wait_leader(&servers).await;
    for trial in 0..30u64 {
        // Phases spread over the 200 ms election timeout of `fast`.
        tokio::time::sleep(Duration::from_millis(50 + (trial * 37) % 200)).await;
        let target = servers[leader as usize - 1]
            .transfer_to_best()
            .await
            .unwrap_or_else(|| panic!("trial {trial}: leader {leader} found no transfer target"));
        assert_ne!(target, leader);
        for _ in 0..200 {
            if servers.iter().all(|s| s.leader() == Some(target)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        leader = wait_leader(&servers).await;
        assert_eq!(
            leader, target,
            "trial {trial}: the transfer did not complete"
        );
    }
}
