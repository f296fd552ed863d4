//! The cairn server: a member of a cairn cluster, started like etcd.
//!
//! `cargo run --release --bin cairn` starts a single member named `default`
//! serving clients on 127.0.0.1:2379 with its data in `default.cairn`.
//! Flags, `CAIRN_*` variables and `--config-file` are etcd's (see
//! `cairn::config`). Bad configuration prints one line and exits 1.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cairn::config::{Config, ConfigError};
use cairn::server::{Server, ServerConfig};
use cairn_proto::cairnpb::MemberRecord;
use cairn_runtime::client_port;
use cairn_runtime::transport::{GrpcTransport, TransportConfig};
use cairn_runtime::{NodeId, TokioClock};

fn main() -> ExitCode {
    let config = match Config::from_env_and_args() {
        Ok(c) => c,
        Err(e) => return report_config_error(&e),
    };
    init_logging(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if config.auto_compaction != cairn::config::AutoCompaction::Disabled {
        tracing::warn!("--auto-compaction-* is accepted but not implemented yet: nothing is compacted automatically");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(1)
        }
    }
}

fn report_config_error(e: &ConfigError) -> ExitCode {
    if e.is_informational() {
        println!("{e}");
    } else {
        eprintln!("{e}");
    }
    ExitCode::from(e.exit_code() as u8)
}

fn init_logging(config: &Config) {
    let level = config.log_level.tracing_level();
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn server_config(config: &Config) -> ServerConfig {
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
        rng_seed: member_id ^ std::process::id() as u64,
        watch_progress_notify_interval: config.watch_progress_notify_interval,
    }
}

async fn run(config: Config) -> Result<(), String> {
    let sc = server_config(&config);
    let storage = client_port::open_storage(
        &config.data_dir,
        &cairn::server::state::all_column_families(),
    )
    .map_err(|e| format!("cannot open data dir {}: {e}", config.data_dir.display()))?;
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
    let server = Server::start(
        sc.clone(),
        storage,
        transport,
        Arc::new(TokioClock::new()),
        inbound_rx,
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
            cairn::api::client_router(&server),
            cairn::api::http::handler(server.clone()),
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
    Err(ended
        .recv()
        .await
        .unwrap_or_else(|| "no listeners configured".to_owned()))
}

async fn bind(addr: std::net::SocketAddr) -> Result<client_port::Listener, String> {
    client_port::Listener::bind(addr)
        .await
        .map_err(|e| format!("listen tcp {addr}: bind: {e}"))
}
