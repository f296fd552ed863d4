//! Process wiring: a whole member as the `cairn` binary runs it —
//! configuration → storage, peer transport, the server, and its peer and
//! client listeners. (Cluster membership itself is Raft's and the server's.)
//!
//! The binary calls `run` with RocksDB and the tokio clock; the simulation
//! suite calls the very same function inside a madsim node with SimStorage,
//! a skewed clock, a seeded RNG and a probe — so what is simulated is the
//! unmodified server, listeners and transport included.
//! Tests: `tests/` (the binary) and `sim-tests/` (simulation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::MemberRecord;
use cairn_runtime::client_port;
use cairn_runtime::transport::{GrpcTransport, TransportConfig};
use cairn_runtime::{Clock, NodeId, Storage};

use crate::config::Config;
use crate::server::{Probe, Server, ServerConfig};

/// What differs between a production member and a simulated one.
pub struct ProcessOptions {
    /// Seed of the member's RNG (election jitter).
    pub rng_seed: u64,
    /// A test harness's hooks; `None` in production.
    pub probe: Option<Arc<dyn Probe>>,
}

/// The server settings `config` asks for.
pub fn server_config(config: &Config, rng_seed: u64) -> ServerConfig {
    let member_id = config.member_id().0;
    let initial_members = config
        .initial_members()
        .into_iter()
        .map(|m| MemberRecord {
            id: m.id.0,
            name: m.name,
            peer_urls: m.peer_urls.iter().map(ToString::to_string).collect(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    // etcd's request timeout: 5 s plus twice the election timeout.
    let request_timeout = Duration::from_secs(5) + 2 * config.election_timeout;
    ServerConfig {
        name: config.name.clone(),
        member_id,
        cluster_id: config.cluster_id().0,
        initial_members,
        client_urls: config
            .advertise_client_urls
            .iter()
            .map(ToString::to_string)
            .collect(),
        heartbeat_interval: config.heartbeat_interval,
        election_ticks: config.election_ticks(),
        snapshot_count: config.snapshot_count,
        max_txn_ops: config.max_txn_ops,
        max_request_bytes: config.max_request_bytes,
        quota_backend_bytes: config.quota_backend_bytes,
        request_timeout,
        rng_seed,
        // etcd checkpoints long leases' remaining TTLs every 5 minutes.
        lease_checkpoint_interval: Duration::from_secs(300),
        watch_progress_notify_interval: config.watch_progress_notify_interval,
    }
}

/// Runs a member on `storage` until one of its listeners fails (it never
/// returns otherwise). Errors are one line, for the binary to print.
pub async fn run(
    config: &Config,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    options: ProcessOptions,
) -> Result<(), String> {
    let sc = server_config(config, options.rng_seed);
    let peers: BTreeMap<NodeId, String> = sc
        .initial_members
        .iter()
        .filter(|m| m.id != sc.member_id)
        .filter_map(|m| m.peer_urls.first().map(|u| (NodeId(m.id), u.clone())))
        .collect();
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(4096);
    let transport = Arc::new(GrpcTransport::new(
        NodeId(sc.member_id),
        sc.cluster_id,
        TransportConfig::default(),
        peers,
        inbound_tx.clone(),
    ));
    let server = Server::start_probed(
        sc.clone(),
        storage,
        transport,
        clock,
        inbound_rx,
        options.probe,
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(name = %sc.name, member = %NodeId(sc.member_id), cluster = %NodeId(sc.cluster_id), data_dir = %config.data_dir.display(), "cairn member started");

    // Each server task reports here when it ends (it only ends on an error).
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel::<String>(8);
    for addr in config.listen_peer_addrs() {
        let listener = bind(addr).await?;
        tracing::info!(%addr, "serving peers");
        let (cluster_id, inbound) = (sc.cluster_id, inbound_tx.clone());
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let r = client_port::serve_peers(listener, cluster_id, inbound).await;
            let _ = ended_tx
                .send(format!("peer server on {addr} stopped: {r:?}"))
                .await;
        });
    }
    for addr in config.listen_client_addrs() {
        let listener = bind(addr).await?;
        tracing::info!(%addr, "serving clients (gRPC and HTTP)");
        let (router, http) = (
            crate::api::client_router(&server),
            crate::api::http::handler(server.clone()),
        );
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let r = client_port::serve_client_port(listener, router, http).await;
            let _ = ended_tx
                .send(format!("client server on {addr} stopped: {r:?}"))
                .await;
        });
    }
    drop(ended_tx);
    let why = ended
        .recv()
        .await
        .unwrap_or_else(|| "no listeners configured".to_owned());
    server.shutdown();
    Err(why)
}

async fn bind(addr: std::net::SocketAddr) -> Result<client_port::Listener, String> {
    client_port::Listener::bind(addr)
        .await
        .map_err(|e| format!("listen tcp {addr}: bind: {e}"))
}
