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
use cairn_runtime::tls::{Dialer, ServerTls, TlsInfo};
use cairn_runtime::transport::{GrpcTransport, TransportConfig};
use cairn_runtime::{Clock, NodeId, Storage};

use crate::config::{Config, TlsSettings};
use crate::server::{Probe, Server, ServerConfig};

/// What differs between a production member and a simulated one.
pub struct ProcessOptions {
    /// Seed of the member's RNG (election jitter).
    pub rng_seed: u64,
    /// A test harness's hooks; `None` in production.
    pub probe: Option<Arc<dyn Probe>>,
}

/// `--auth-token jwt,…`: the keys, loaded (an unreadable or mismatched key
/// stops the member at start, as etcd).
fn jwt_tokens(config: &Config) -> Result<Option<Arc<crate::auth::jwt::JwtTokens>>, String> {
    match &config.auth_token {
        crate::config::AuthToken::Simple => Ok(None),
        crate::config::AuthToken::Jwt {
            pub_key,
            priv_key,
            sign_method,
            ttl,
        } => {
            let read = |path: &std::path::Path, what: &str| {
                std::fs::read(path).map_err(|e| {
                    format!(
                        "failed to create auth token provider: cannot read the JWT {what} {}: {e}",
                        path.display()
                    )
                })
            };
            let public = read(pub_key, "public key")?;
            let private = priv_key
                .as_deref()
                .map(|p| read(p, "private key"))
                .transpose()?;
            crate::auth::jwt::JwtTokens::new(&public, private.as_deref(), sign_method, *ttl)
                .map(|t| Some(Arc::new(t)))
                .map_err(|e| format!("failed to create auth token provider: {e}"))
        }
    }
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
        joining: false,
        health_interval: crate::server::members::HEALTH_INTERVAL,
        cluster_id: config.cluster_id().0,
        initial_members,
        client_urls: config
            .advertise_client_urls
            .iter()
            .map(ToString::to_string)
            .collect(),
        heartbeat_interval: config.heartbeat_interval,
        election_ticks: config.election_ticks(),
        pre_vote: config.pre_vote,
        enable_v2: config.enable_v2,
        check_quorum: config.check_quorum,
        auto_compaction: match config.auto_compaction {
            crate::config::AutoCompaction::Disabled => None,
            crate::config::AutoCompaction::Periodic(d) => {
                Some(crate::server::compactor::Policy::Periodic(d))
            }
            crate::config::AutoCompaction::Revision(n) => {
                Some(crate::server::compactor::Policy::Revision(n))
            }
        },
        snapshot_count: config.snapshot_count,
        max_txn_ops: config.max_txn_ops,
        max_request_bytes: config.max_request_bytes,
        quota_backend_bytes: config.quota_backend_bytes,
        request_timeout,
        rng_seed,
        // etcd checkpoints long leases' remaining TTLs every 5 minutes.
        lease_checkpoint_interval: Duration::from_secs(300),
        watch_progress_notify_interval: config.watch_progress_notify_interval,
        initial_corrupt_check: config.initial_corrupt_check,
        corrupt_check_interval: Some(config.corrupt_check_time).filter(|d| !d.is_zero()),
        auth_token_ttl: Duration::from_secs(config.auth_token_ttl_secs),
        bcrypt_cost: config.bcrypt_cost,
        jwt: None,
        client_dialer: Dialer::plain(),
        peer_dialer: Dialer::plain(),
        metrics_extensive: config.metrics_extensive,
        peer_stats: cairn_runtime::metrics::peer::PeerStats::new(),
    }
}

/// The member's TLS, made from the configuration before it serves: a
/// certificate file that cannot be used is a startup error here.
struct MemberTls {
    /// For the `https://` client listeners.
    client: Option<ServerTls>,
    /// For the `https://` peer listeners.
    peer: Option<ServerTls>,
    /// Dials peer URLs (TLS with the peer certificate for `https://`).
    peer_dialer: Dialer,
    /// Dials other members' client URLs (TLS with the client-port
    /// certificate for `https://`), for the server's calls to the leader's
    /// and the peers' client ports.
    client_dialer: Dialer,
}

/// One side's TLS files: the given certificate, or a self-signed one made
/// under `<data-dir>/fixtures/<side>` for auto TLS; `None` without either.
fn tls_info(
    settings: &TlsSettings,
    config: &Config,
    side: &str,
    hosts: Vec<String>,
) -> Result<Option<TlsInfo>, String> {
    let (cert_file, key_file, self_signed) = if settings.uses_auto_tls() {
        let dir = cairn_runtime::tls::self_cert_dir(&config.data_dir, side);
        let (cert, key) = cairn_runtime::tls::self_cert(&dir, &hosts)?;
        tracing::info!(cert = %cert.display(), "{side} auto TLS: using a self-signed certificate");
        (cert, key, true)
    } else {
        match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
            _ => return Ok(None),
        }
    };
    Ok(Some(TlsInfo {
        cert_file,
        key_file,
        trusted_ca_file: settings.trusted_ca_file.clone(),
        client_cert_auth: settings.client_cert_auth,
        self_signed,
        cipher_suites: config.cipher_suites.clone(),
        server_name: None,
    }))
}

fn member_tls(config: &Config) -> Result<MemberTls, String> {
    let mut tls = MemberTls {
        client: None,
        peer: None,
        peer_dialer: Dialer::plain(),
        client_dialer: Dialer::plain(),
    };
    if config.serves_client_tls() {
        if let Some(info) = tls_info(&config.client_tls, config, "client", config.client_hosts())? {
            tls.client = Some(ServerTls::new(&info)?);
            tls.client_dialer = Dialer::client(&info)?;
        }
    }
    // As etcd, peer certificates are used only with https:// peer URLs.
    if config.serves_peer_tls() {
        if let Some(info) = tls_info(&config.peer_tls, config, "peer", config.peer_hosts())? {
            tls.peer = Some(ServerTls::new_peer(&info)?);
            tls.peer_dialer = Dialer::peer(&info)?;
        }
    }
    Ok(tls)
}

/// How long a joining member waits for each peer's member list.
const JOIN_ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds of asking every peer, and the pause between them.
const JOIN_ROUNDS: u32 = 3;
const JOIN_ROUND_PAUSE: Duration = Duration::from_secs(1);

/// The identity of a member that has data: its data directory says who it
/// is, whatever the flags say (as etcd, which ignores `--initial-cluster*`
/// once the member has data).
fn stored_identity(sc: &mut ServerConfig, storage: &dyn Storage) -> Result<bool, String> {
    let read = |e: cairn_runtime::StorageError| format!("cannot read the data directory: {e}");
    let Some(member_id) = crate::server::apply::read_member_id(storage).map_err(read)? else {
        return Ok(false);
    };
    if member_id != sc.member_id {
        tracing::info!(member = %NodeId(member_id), "the data directory names this member; --initial-cluster is not used");
    }
    sc.member_id = member_id;
    if let Some(cluster_id) = crate::server::apply::read_cluster_id(storage).map_err(read)? {
        sc.cluster_id = cluster_id;
    }
    Ok(true)
}

/// A member with `--initial-cluster-state existing` and no data joins a
/// running cluster (after `etcdctl member add`): it asks the other members
/// listed in `--initial-cluster` for the cluster, and takes the id of the
/// member whose peer URLs are its own `--initial-advertise-peer-urls`.
async fn join_cluster(
    config: &Config,
    sc: &mut ServerConfig,
    dialer: &Dialer,
) -> Result<(), String> {
    let mine: std::collections::BTreeSet<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(ToString::to_string)
        .collect();
    let peers: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(name, _)| **name != config.name)
        .flat_map(|(_, urls)| urls.iter().map(ToString::to_string))
        .collect();
    if peers.is_empty() {
        return Err("cannot join: --initial-cluster names no other member".to_owned());
    }
    let mut last = Vec::new();
    // A peer that has not applied the `member add` yet does not list us:
    // ask every peer, a few rounds apart, before giving up.
    for round in 0..JOIN_ROUNDS {
        if round > 0 {
            tokio::time::sleep(JOIN_ROUND_PAUSE).await;
        }
        last.clear();
        for url in &peers {
            let listed =
                match cairn_runtime::transport::fetch_members_with(dialer, url, JOIN_ASK_TIMEOUT)
                    .await
                {
                    Ok(listed) => listed,
                    Err(e) => {
                        last.push(format!("{url}: {e}"));
                        continue;
                    }
                };
            let me = listed.members.iter().find(|m| {
                let theirs: std::collections::BTreeSet<String> =
                    m.peer_urls.iter().cloned().collect();
                theirs == mine
            });
            let Some(me) = me else {
                last.push(format!(
                    "{url}: no member has peer URLs {} (add it first with etcdctl member add)",
                    mine.iter().cloned().collect::<Vec<_>>().join(",")
                ));
                continue;
            };
            sc.member_id = me.id;
            sc.cluster_id = listed.cluster_id;
            sc.joining = true;
            sc.initial_members = listed
                .members
                .iter()
                .map(|m| MemberRecord {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: m.is_learner,
                })
                .collect();
            tracing::info!(member = %NodeId(me.id), cluster = %NodeId(listed.cluster_id), from = %url, "joining a running cluster");
            return Ok(());
        }
    }
    Err(format!(
        "cannot join the cluster in --initial-cluster: {}",
        last.join("; ")
    ))
}

/// How a member's run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The cluster removed this member.
    Removed,
    /// Asked to stop (`stop` resolved): it handed leadership over if it led,
    /// and its storage is synced.
    Stopped,
}

/// Runs a member on `storage` until one of its listeners fails, or until the
/// cluster removes it: then it returns `Ok` (the member stopped as asked;
/// etcd's process exits with status 0 too). Errors are one line, for the
/// binary to print.
pub async fn run(
    config: &Config,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    options: ProcessOptions,
) -> Result<(), String> {
    run_until(config, storage, clock, options, std::future::pending())
        .await
        .map(|_| ())
}

/// `run`, which also stops gracefully once `stop` resolves (the binary's
/// SIGTERM / SIGINT): a leader first hands leadership to its most
/// up-to-date voter, then the node loop stops (requests in flight get
/// `etcdserver: server stopped`) and storage is synced.
pub async fn run_until(
    config: &Config,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    options: ProcessOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Ended, String> {
    // Discovery finds the initial cluster on a member's first start only.
    let discovered;
    let config = if (config.discovery.is_some() || config.discovery_srv.is_some())
        && crate::server::apply::read_member_id(storage.as_ref())
            .map_err(|e| e.to_string())?
            .is_none()
    {
        discovered = crate::discovery::bootstrap(config).await?;
        &discovered
    } else {
        config
    };
    let mut sc = server_config(config, options.rng_seed);
    sc.jwt = jwt_tokens(config)?;
    let tls = member_tls(config)?;
    // The server's own calls to other members' client ports use TLS too.
    sc.client_dialer = tls.client_dialer.clone();
    sc.peer_dialer = tls.peer_dialer.clone();
    let has_data = stored_identity(&mut sc, storage.as_ref())?;
    if !has_data && !config.is_new_cluster() {
        join_cluster(config, &mut sc, &tls.peer_dialer).await?;
    }
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(4096);
    // The server adds the peers: the members as applied.
    let transport = Arc::new(GrpcTransport::with_dialer(
        NodeId(sc.member_id),
        sc.cluster_id,
        TransportConfig::default(),
        BTreeMap::new(),
        inbound_tx.clone(),
        tls.peer_dialer.clone(),
    ));
    // One count of the peer traffic: what the transport sends, what the peer
    // service receives.
    sc.peer_stats = transport.stats();
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
    if has_data && sc.initial_corrupt_check {
        if let Err(e) = server.initial_corruption_check().await {
            server.shutdown();
            return Err(e);
        }
    }
    if let Some(interval) = sc.corrupt_check_interval {
        server.spawn_corruption_checker(interval);
    }

    // Each server task reports here when it ends (it only ends on an error).
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel::<String>(8);
    for url in &config.listen_peer_urls {
        let addr = listen_addr(url);
        let listener = bind(addr).await?;
        let tls = tls.peer.clone().filter(|_| url.is_tls());
        tracing::info!(%addr, tls = tls.is_some(), "serving peers");
        let (cluster_id, inbound) = (sc.cluster_id, inbound_tx.clone());
        let directory = server.peer_directory();
        let stats = sc.peer_stats.clone();
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let r = client_port::serve_peers_secured(
                listener,
                cluster_id,
                inbound,
                Some(directory),
                tls,
                Some(stats),
            )
            .await;
            let _ = ended_tx
                .send(format!("peer server on {addr} stopped: {r:?}"))
                .await;
        });
    }
    for url in &config.listen_client_urls {
        let addr = listen_addr(url);
        let listener = bind(addr).await?;
        let tls = tls.client.clone().filter(|_| url.is_tls());
        tracing::info!(%addr, tls = tls.is_some(), "serving clients (gRPC and HTTP)");
        let (router, http) = (
            crate::api::client_router(&server),
            crate::api::http::handler(server.clone()),
        );
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let r = client_port::serve_client_port_secured(listener, router, http, tls).await;
            let _ = ended_tx
                .send(format!("client server on {addr} stopped: {r:?}"))
                .await;
        });
    }
    for url in &config.listen_metrics_urls {
        let addr = listen_addr(url);
        let listener = bind(addr).await?;
        let tls = tls.client.clone().filter(|_| url.is_tls());
        tracing::info!(%addr, tls = tls.is_some(), "serving metrics and health (HTTP)");
        let http = crate::api::http::metrics_handler(server.clone());
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let r = client_port::serve_http_secured(listener, http, tls).await;
            let _ = ended_tx
                .send(format!("metrics server on {addr} stopped: {r:?}"))
                .await;
        });
    }
    // Listeners are bound: tell systemd (Type=notify) once the member has published.
    crate::notify::ready_when_published(&server);
    drop(ended_tx);
    let why = tokio::select! {
        biased;
        why = ended.recv() => why.unwrap_or_else(|| "no listeners configured".to_owned()),
        () = removed(&server) => {
            server.shutdown();
            return Ok(Ended::Removed);
        }
        why = server.corrupt_halt() => {
            server.shutdown();
            return Err(format!("stopped: this member's storage is corrupt ({why})"));
        }
        () = stop => {
            server.stop_gracefully().await;
            return Ok(Ended::Stopped);
        }
    };
    server.shutdown();
    Err(why)
}

/// Resolves when the member stopped because the cluster removed it.
async fn removed(server: &Server) {
    server.stopped().await;
    if !server.is_removed() {
        // Stopped for another reason (storage failure): keep answering
        // `server stopped` until the listeners end.
        std::future::pending::<()>().await;
    }
}

/// The address a listen URL binds (validated: an IP or localhost).
fn listen_addr(url: &crate::config::Url) -> std::net::SocketAddr {
    url.socket_addr()
        .expect("validated: listen URL hosts are IPs or localhost")
}

async fn bind(addr: std::net::SocketAddr) -> Result<client_port::Listener, String> {
    client_port::Listener::bind(addr)
        .await
        .map_err(|e| format!("listen tcp {addr}: bind: {e}"))
}
