//! The server: one member of a cairn cluster (DESIGN §4).
//!
//! `Server::start` recovers (or bootstraps) the member's state from Storage
//! and spawns the node loop (`node.rs`), which owns the Raft `RawNode`. The
//! returned `Server` handle is what the gRPC API calls: writes are proposed
//! through Raft and answered when applied; linearizable reads wait for a
//! ReadIndex and for the applied index to reach it; serializable reads are
//! served from local state at once.
//!
//! Shared state (`Shared`) is read by request handlers and written only by
//! the node loop: the MVCC store and the lessor (`RwLock`s, never held
//! across an await; taken in that order), the member list, and Raft's
//! progress as atomics. The one exception: a keep-alive renews a lease's
//! expiry in the leader's lessor directly (member-local state, not Raft's).
//! Leasing is in `lease/`; the request path to the node loop (proposals,
//! the ReadIndex barrier, the one request deadline) in `propose.rs`; the
//! apply path in `apply.rs`.
//! Tests: `src/server/tests.rs` (single node and clusters over SimStorage on
//! tokio) and the integration tests in `tests/` (real binary, etcdctl).

pub mod apply;
mod auth;
pub mod compactor;
mod corruption;
mod lease;
mod maintenance;
pub mod members;
pub mod metrics;
pub(crate) mod node;
pub mod probe;
mod propose;
#[cfg(test)]
mod tests;
pub mod v2;
pub mod waiters;
mod watchers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cairn_proto::cairnpb::{InternalRequest, MemberRecord};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvResponse,
    HashResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    StatusResponse, TxnRequest, TxnResponse,
};
use cairn_runtime::transport::{Inbound, Transport};
use cairn_runtime::{Clock, Storage};
use tokio::sync::{mpsc, oneshot, watch};

use crate::mvcc::{self, MvccError, MvccStore};
use apply::Applied;
pub use auth::{caller_of, check_request, is_auth_change, Caller, Credentials};
pub use lease::{serve_forwarded_keep_alives, FORWARDED_HEADER as LEASE_FORWARDED_HEADER};
pub use maintenance::SnapshotError;
pub use metrics::Metrics;
pub use probe::{AppliedEntry, ConfAfter, Probe};
pub use watchers::{WatchCounts, WatchSession};

/// The etcd API version cairn implements (what `Status.version` reports;
/// clients use it to decide which features a server has).
pub const ETCD_API_VERSION: &str = "3.5.0";

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// etcd refuses proposals when applying falls this far behind committing.
const MAX_APPLY_GAP: u64 = 5000;

/// How a member runs. Built by the binary from `config::Config`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    /// The founding members (id, name, peer URLs), this one included; for a
    /// joining member, the cluster's members as its peers listed them.
    pub initial_members: Vec<MemberRecord>,
    /// How long a peer must have been connected without a break to count
    /// as healthy for membership changes (etcd's 5 s).
    pub health_interval: Duration,
    /// This member joins a running cluster (`--initial-cluster-state
    /// existing` on an empty data directory): it starts with no log and no
    /// configuration and catches up from the leader's snapshot.
    pub joining: bool,
    /// This member's advertised client URLs.
    pub client_urls: Vec<String>,
    pub heartbeat_interval: Duration,
    pub election_ticks: usize,
    /// Raft pre-vote (`--pre-vote`).
    pub pre_vote: bool,
    /// `--enable-v2`: the v2 keys API is served (and its TTLs swept).
    pub enable_v2: bool,
    /// Raft check-quorum (`--check-quorum`, on unless testing).
    pub check_quorum: bool,
    /// `--auto-compaction-*`; `None`: off.
    pub auto_compaction: Option<compactor::Policy>,
    pub snapshot_count: u64,
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    /// 0: etcd's default of 2 GiB.
    pub quota_backend_bytes: u64,
    /// How long a request may wait for Raft before `request timed out`.
    pub request_timeout: Duration,
    /// Seed of the member's RNG (election jitter, lease ids).
    pub rng_seed: u64,
    /// How often the leader records long leases' remaining TTLs through Raft
    /// (etcd's lease checkpoint interval, 5 minutes).
    pub lease_checkpoint_interval: Duration,
    /// How often watchers created with `progress_notify` get an empty
    /// response when idle (etcd's `--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: Duration,
    /// Before serving, a restarted member compares its HashKV with its
    /// peers' and refuses to start on a mismatch.
    pub initial_corrupt_check: bool,
    /// How often the leader compares the members' HashKVs (None: never).
    pub corrupt_check_interval: Option<Duration>,
    /// How long a simple token lives without use (`--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// The bcrypt cost of new passwords (`--bcrypt-cost`).
    pub bcrypt_cost: u32,
    /// `--auth-token jwt,…`: the JWT signer and verifier (`None`: simple
    /// tokens).
    pub jwt: Option<Arc<crate::auth::jwt::JwtTokens>>,
    /// Dials other members' client URLs (lease and membership forwarding,
    /// the corruption checks): TLS for `https://` ones.
    pub client_dialer: cairn_runtime::tls::Dialer,
    /// Dials other members' peer URLs outside the transport (asking a peer
    /// for the members): TLS for `https://` ones.
    pub peer_dialer: cairn_runtime::tls::Dialer,
    /// `--metrics extensive`: client RPC handling-time histograms too.
    pub metrics_extensive: bool,
    /// Where the member's Raft transport counts its traffic
    /// (`GrpcTransport::stats`), for `/metrics`.
    pub peer_stats: Arc<cairn_runtime::metrics::peer::PeerStats>,
}

impl ServerConfig {
    /// A single-member cluster with etcd's defaults, for tests.
    pub fn single(name: &str, member_id: u64) -> ServerConfig {
        ServerConfig {
            name: name.to_owned(),
            member_id,
            cluster_id: member_id ^ 0x5eed,
            initial_members: vec![MemberRecord {
                id: member_id,
                name: name.to_owned(),
                peer_urls: vec!["http://localhost:2380".into()],
                client_urls: vec![],
                is_learner: false,
            }],
            client_urls: vec!["http://localhost:2379".into()],
            joining: false,
            health_interval: members::HEALTH_INTERVAL,
            heartbeat_interval: Duration::from_millis(100),
            election_ticks: 10,
            pre_vote: true,
            enable_v2: false,
            check_quorum: true,
            auto_compaction: None,
            snapshot_count: 100_000,
            max_txn_ops: mvcc::DEFAULT_MAX_TXN_OPS,
            max_request_bytes: 1536 * 1024,
            quota_backend_bytes: 0,
            request_timeout: Duration::from_secs(7),
            rng_seed: member_id,
            lease_checkpoint_interval: Duration::from_secs(300),
            watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            initial_corrupt_check: false,
            corrupt_check_interval: None,
            auth_token_ttl: crate::auth::tokens::DEFAULT_TTL,
            // The cheapest cost bcrypt allows: tests add users quickly.
            bcrypt_cost: 4,
            jwt: None,
            client_dialer: cairn_runtime::tls::Dialer::plain(),
            peer_dialer: cairn_runtime::tls::Dialer::plain(),
            metrics_extensive: false,
            peer_stats: cairn_runtime::metrics::peer::PeerStats::new(),
        }
    }
}

/// Expected failures of a request, each one of etcd's errors (mapped to gRPC
/// codes and messages in `api/`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is active: the cluster refuses writes.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
}

/// Raft progress as the handlers see it (written by the node loop).
#[derive(Debug, Default)]
pub(crate) struct RaftProgress {
    pub leader: AtomicU64,
    pub term: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub is_learner: AtomicBool,
}

/// State shared by the node loop (writer) and the request handlers (readers).
pub(crate) struct Shared {
    pub config: ServerConfig,
    mvcc: RwLock<MvccStore>,
    lessor: RwLock<crate::lease::Lessor>,
    members: RwLock<BTreeMap<u64, MemberRecord>>,
    /// Ids removed from the cluster (never members again).
    removed: RwLock<BTreeSet<u64>>,
    /// The cluster's active alarms, as applied.
    alarms: RwLock<apply::Alarms>,
    /// Users, roles and permissions, as applied.
    auth: RwLock<crate::auth::AuthStore>,
    /// The v2 keys store, as applied (`--enable-v2`; empty otherwise).
    v2: RwLock<crate::v2store::Store>,
    /// This member's v2 watchers (`wait=true`), fed after each apply.
    pub v2_watchers: v2::Hub,
    /// This member's simple tokens (member-local, in memory).
    tokens: std::sync::Mutex<crate::auth::tokens::SimpleTokens>,
    /// Draws simple-token prefixes (from the OS's randomness).
    token_rng: std::sync::Mutex<rand::rngs::StdRng>,
    pub raft: RaftProgress,
    pub metrics: Metrics,
    pub storage: Arc<dyn Storage>,
    /// The member's clock (lease expiries are measured on it).
    pub clock: Arc<dyn Clock>,
    pub stopped: AtomicBool,
    /// This member's name and client URLs are applied (it is ready to serve, as etcd's publish).
    pub published: AtomicBool,
    /// The applied index, for readers waiting to catch up.
    pub applied: waiters::IndexWaiters,
    /// Set by `Server::shutdown`; the node loop exits when it changes.
    pub shutdown: watch::Sender<bool>,
    /// Set when the node loop stops (shutdown, storage failure, removal).
    pub halted: watch::Sender<bool>,
    /// The member stopped because the cluster removed it.
    pub removed_self: AtomicBool,
    /// Why the member stopped when it found its own storage corrupt.
    pub corrupt_halt: std::sync::Mutex<Option<String>>,
    /// The next ReadIndex context the node loop will use (0 before the first).
    pub read_ctx_next: AtomicU64,
    /// A test harness's hooks (`Server::start_probed`); `None` in production.
    pub probe: Option<Arc<dyn Probe>>,
    /// The watchers of this member (fed by the node loop after each apply).
    pub watch: watchers::WatchShared,
    /// This start's number (`apply::next_incarnation`); request ids carry it.
    pub incarnation: u64,
    /// The quota check's reading of the storage's size (`maintenance.rs`).
    quota_size: std::sync::Mutex<maintenance::QuotaSize>,
}

/// The locks handlers and the node loop share, each behind one
/// accessor (a poisoned lock means a panic while holding it: the member is
/// broken and every later access panics with the lock's name). Order when
/// holding more than one: mvcc, then members, then lessor, then alarms, then
/// auth, then tokens, then v2; never
/// across an await.
impl Shared {
    pub(crate) fn quota_size(&self) -> std::sync::MutexGuard<'_, maintenance::QuotaSize> {
        self.quota_size.lock().expect("quota size lock poisoned")
    }

    pub(crate) fn mvcc(&self) -> RwLockReadGuard<'_, MvccStore> {
        self.mvcc.read().expect("mvcc lock poisoned")
    }

    pub(crate) fn mvcc_mut(&self) -> RwLockWriteGuard<'_, MvccStore> {
        self.mvcc.write().expect("mvcc lock poisoned")
    }

    pub(crate) fn lessor(&self) -> RwLockReadGuard<'_, crate::lease::Lessor> {
        self.lessor.read().expect("lessor lock poisoned")
    }

    pub(crate) fn lessor_mut(&self) -> RwLockWriteGuard<'_, crate::lease::Lessor> {
        self.lessor.write().expect("lessor lock poisoned")
    }

    pub(crate) fn members(&self) -> RwLockReadGuard<'_, BTreeMap<u64, MemberRecord>> {
        self.members.read().expect("members lock poisoned")
    }

    pub(crate) fn members_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, MemberRecord>> {
        self.members.write().expect("members lock poisoned")
    }

    pub(crate) fn removed(&self) -> RwLockReadGuard<'_, BTreeSet<u64>> {
        self.removed.read().expect("removed lock poisoned")
    }

    pub(crate) fn removed_mut(&self) -> RwLockWriteGuard<'_, BTreeSet<u64>> {
        self.removed.write().expect("removed lock poisoned")
    }

    pub(crate) fn alarms(&self) -> RwLockReadGuard<'_, apply::Alarms> {
        self.alarms.read().expect("alarms lock poisoned")
    }

    pub(crate) fn alarms_mut(&self) -> RwLockWriteGuard<'_, apply::Alarms> {
        self.alarms.write().expect("alarms lock poisoned")
    }

    pub(crate) fn auth(&self) -> RwLockReadGuard<'_, crate::auth::AuthStore> {
        self.auth.read().expect("auth lock poisoned")
    }

    pub(crate) fn auth_mut(&self) -> RwLockWriteGuard<'_, crate::auth::AuthStore> {
        self.auth.write().expect("auth lock poisoned")
    }

    pub(crate) fn v2(&self) -> RwLockReadGuard<'_, crate::v2store::Store> {
        self.v2.read().expect("v2 lock poisoned")
    }

    pub(crate) fn v2_mut(&self) -> RwLockWriteGuard<'_, crate::v2store::Store> {
        self.v2.write().expect("v2 lock poisoned")
    }

    pub(crate) fn tokens(&self) -> std::sync::MutexGuard<'_, crate::auth::tokens::SimpleTokens> {
        self.tokens.lock().expect("tokens lock poisoned")
    }

    pub(crate) fn token_rng(&self) -> std::sync::MutexGuard<'_, rand::rngs::StdRng> {
        self.token_rng.lock().expect("token rng lock poisoned")
    }
}

/// What handlers ask of the node loop.
pub(crate) enum Command {
    Propose {
        request: InternalRequest,
        done: oneshot::Sender<Result<(Applied, i64), ServerError>>,
    },
    ReadIndex {
        done: oneshot::Sender<Result<u64, ServerError>>,
    },
    /// A membership change for the leader; answered with the member's id
    /// once applied here.
    ConfChange {
        change: members::MemberChange,
        done: oneshot::Sender<Result<u64, ServerError>>,
    },
    /// Start moving leadership to the most up-to-date connected voter; the
    /// answer names it (`None`: not the leader, or no other voter).
    TransferToBest { done: oneshot::Sender<Option<u64>> },
    /// Start moving leadership to `to` (answered at once).
    TransferLeader {
        to: u64,
        done: oneshot::Sender<Result<(), ServerError>>,
    },
    /// A read found the member's own storage corrupt (a checksum failure,
    /// an undecodable record; the reason is in `Shared::corrupt_halt`):
    /// stop rather than serve from it.
    Halt,
}

/// A handle on a running member. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    next_request_id: Arc<AtomicU64>,
    leases: Arc<lease::Frontend>,
    member_forward: Arc<members::LeaderChannel>,
}

impl Server {
    /// Recovers or bootstraps the member on `storage` and starts its node loop.
    /// `inbound` is where the peer service delivers messages from other members.
    pub fn start(
        config: ServerConfig,
        storage: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        inbound: mpsc::Receiver<Inbound>,
    ) -> Result<Server, StartError> {
        Server::start_probed(config, storage, transport, clock, inbound, None)
    }

    /// `start`, with a test harness's `probe` watching the member.
    pub fn start_probed(
        config: ServerConfig,
        storage: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        inbound: mpsc::Receiver<Inbound>,
        probe: Option<Arc<dyn Probe>>,
    ) -> Result<Server, StartError> {
        let (mut shared, raw) = node::recover(config, storage, clock.clone())?;
        shared.probe = probe;
        let (commands, command_rx) = mpsc::channel(node::COMMAND_QUEUE_LEN);
        let shared = Arc::new(shared);
        let leases = Arc::new(lease::Frontend::new(&shared.config));
        let first_id = apply::first_request_id(shared.incarnation);
        node::spawn(raw, shared.clone(), transport, clock, command_rx, inbound);
        let server = Server {
            shared,
            commands,
            next_request_id: Arc::new(AtomicU64::new(first_id)),
            leases,
            member_forward: Arc::default(),
        };
        if server.shared.config.enable_v2 {
            server.spawn_v2_sweeper();
        }
        if let Some(p) = &server.shared.probe {
            p.on_started(&server);
        }
        Ok(server)
    }

    /// Stops the node loop: the member stops ticking, sending and applying,
    /// and every request fails with `server stopped`.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    pub fn member_id(&self) -> u64 {
        self.shared.config.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.shared.config.cluster_id
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.shared.raft.leader.load(Ordering::SeqCst)).filter(|l| *l != 0)
    }

    /// Whether this member has published its client URLs through Raft, as
    /// etcd members do before they report ready.
    pub fn is_published(&self) -> bool {
        self.shared.published.load(Ordering::SeqCst)
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Why the member stopped on finding its own storage corrupt, once it has.
    pub async fn corrupt_halt(&self) -> String {
        self.stopped().await;
        let why = self.shared.corrupt_halt.lock().ok().and_then(|w| w.clone());
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    /// Whether the member stopped because the cluster removed it.
    pub fn is_removed(&self) -> bool {
        self.shared.removed_self.load(Ordering::SeqCst)
    }

    /// Resolves once the node loop has stopped (for any reason).
    pub async fn stopped(&self) {
        let mut rx = self.shared.halted.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The Raft commit index this member knows.
    pub fn commit_index(&self) -> u64 {
        self.shared.raft.commit_index.load(Ordering::SeqCst)
    }

    /// Approximate bytes of the member's storage.
    pub fn db_size(&self) -> u64 {
        // The applied state only, as etcd's backend size (its WAL is apart).
        self.shared
            .storage
            .approximate_size(&apply::state_column_families())
    }

    /// Approximate bytes of live data in the member's storage (etcd's size
    /// in use: less than `db_size` by what compaction freed and a
    /// defragment would reclaim).
    pub fn db_size_in_use(&self) -> u64 {
        self.shared
            .storage
            .live_data_size(&apply::state_column_families())
            .min(self.db_size())
    }

    /// Whether this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.shared.raft.is_learner.load(Ordering::SeqCst)
    }

    /// The backend quota in bytes.
    pub fn quota_backend_bytes(&self) -> u64 {
        match self.shared.config.quota_backend_bytes {
            0 => 2 << 30,
            q => q,
        }
    }

    /// Keys alive at the current revision, and the compact revision (0
    /// before any compaction).
    pub fn key_stats(&self) -> (usize, i64) {
        let store = self.shared.mvcc();
        (
            store.live_keys(),
            store.compact_revision().map_or(0, |c| c.0),
        )
    }

    pub fn max_request_bytes(&self) -> usize {
        self.shared.config.max_request_bytes
    }

    /// The header of a response at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.shared.config.cluster_id,
            member_id: self.shared.config.member_id,
            revision,
            raft_term: self.shared.raft.term.load(Ordering::SeqCst),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.current_revision()
    }

    fn current_revision(&self) -> i64 {
        self.shared.mvcc().current_revision().0
    }

    /// Passes `r` on; when it says the member's own storage is corrupt (a
    /// checksum failure in RocksDB, a record that does not decode), the
    /// member stops instead of serving from that storage: the error is
    /// answered, and the node loop halts (the process exits with an error).
    pub(crate) fn halt_if_corrupt<T>(
        &self,
        r: Result<T, mvcc::MvccError>,
    ) -> Result<T, ServerError> {
        use cairn_runtime::StorageError;
        if let Err(
            e @ (mvcc::MvccError::Corrupt(_)
            | mvcc::MvccError::Storage(StorageError::Corruption(_))),
        ) = &r
        {
            tracing::error!(error = %e, "this member's storage is corrupt: stopping");
            if let Ok(mut why) = self.shared.corrupt_halt.lock() {
                why.get_or_insert_with(|| e.to_string());
            }
            let _ = self.commands.try_send(Command::Halt);
        }
        Ok(r?)
    }

    // ---- KV ----

    /// A read the member makes for itself (the `/livez` and `/readyz`
    /// probes): linearizable unless `serializable`, never checked against
    /// auth, within the request timeout.
    pub async fn probe_read(&self, req: RangeRequest) -> Result<RangeResponse, ServerError> {
        self.within_request_timeout(async {
            if !req.serializable {
                self.linearizable_barrier().await?;
            }
            let store = self.shared.mvcc();
            self.halt_if_corrupt(store.range(&req))
        })
        .await
    }

    // Each request of a client comes with its `Caller`; the forms without
    // are a client without credentials (tests, and auth off).

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ServerError> {
        self.range_as(&Caller::default(), req).await
    }

    /// What every client Range does before it reads (`range_as` and
    /// `range_read_as`): the request's checks, ReadIndex unless
    /// serializable, the caller's read permission.
    async fn before_range(&self, who: &Caller, req: &RangeRequest) -> Result<(), ServerError> {
        mvcc::check_range_request(req)?;
        if !req.serializable {
            self.linearizable_barrier().await?;
        }
        self.check_read(who, &req.key, &req.range_end)
    }

    pub async fn range_as(
        &self,
        who: &Caller,
        req: RangeRequest,
    ) -> Result<RangeResponse, ServerError> {
        self.before_range(who, &req).await?;
        let resp = {
            let store = self.shared.mvcc();
            // Counted whether it succeeds or not, as etcd counts its ranges.
            self.shared.metrics.mvcc.ranged();
            let mut resp = self.halt_if_corrupt(store.range(&req))?;
            resp.header = Some(self.header(store.current_revision().0));
            resp
        };
        self.check_still_current(who)?;
        Ok(resp)
    }

    /// `range_as` for a response that may be large (the client port's
    /// Range, `api/range_stream.rs`): the same checks, barrier, auth and
    /// metrics, but a response whose kvs encode to more than `whole_up_to`
    /// bytes comes as `RangePieces` to read after the store's lock is
    /// released, with the header to send before them
    /// (`mvcc::MvccStore::range_read`).
    pub async fn range_read_as(
        &self,
        who: &Caller,
        req: RangeRequest,
        whole_up_to: usize,
    ) -> Result<(ResponseHeader, mvcc::RangeRead), ServerError> {
        self.before_range(who, &req).await?;
        let read = {
            let store = self.shared.mvcc();
            self.shared.metrics.mvcc.ranged();
            let read = self.halt_if_corrupt(store.range_read(&req, whole_up_to))?;
            (self.header(store.current_revision().0), read)
        };
        self.check_still_current(who)?;
        Ok(read)
    }

    /// `halt_if_corrupt` for a kv of `RangePieces` read after the lock.
    pub fn read_piece(
        &self,
        pieces: &mvcc::RangePieces,
        i: usize,
    ) -> Result<cairn_proto::mvccpb::KeyValue, ServerError> {
        self.halt_if_corrupt(pieces.kv(i))
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, ServerError> {
        self.put_as(&Caller::default(), req).await
    }

    pub async fn put_as(&self, who: &Caller, req: PutRequest) -> Result<PutResponse, ServerError> {
        mvcc::check_put_request(&req)?;
        self.refuse_learner()?;
        self.check_quota(prost::Message::encoded_len(&req))?;
        self.propose_for_as(who, req).await
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError> {
        self.delete_range_as(&Caller::default(), req).await
    }

    pub async fn delete_range_as(
        &self,
        who: &Caller,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError> {
        mvcc::check_delete_request(&req)?;
        self.propose_for_as(who, req).await
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ServerError> {
        self.txn_as(&Caller::default(), req).await
    }

    pub async fn txn_as(&self, who: &Caller, req: TxnRequest) -> Result<TxnResponse, ServerError> {
        self.refuse_learner()?;
        mvcc::check_txn_request(&req, self.shared.config.max_txn_ops)?;
        if mvcc::is_read_only_txn(&req) {
            if !txn_is_serializable(&req) {
                self.linearizable_barrier().await?;
            }
            self.check_read_txn(who, &req)?;
            let resp = {
                let store = self.shared.mvcc();
                let mut resp = self.halt_if_corrupt(store.read_txn(&req))?;
                let rev = store.current_revision().0;
                fill_nested_headers(&mut resp, rev);
                resp.header = Some(self.header(rev));
                resp
            };
            self.shared.metrics.mvcc.txn_done(&req, &resp);
            self.check_still_current(who)?;
            return Ok(resp);
        }
        if apply::txn_puts(&req) {
            self.check_quota(prost::Message::encoded_len(&req))?;
        }
        self.propose_for_as(who, req).await
    }

    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, ServerError> {
        self.compact_as(&Caller::default(), req).await
    }

    pub async fn compact_as(
        &self,
        who: &Caller,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, ServerError> {
        let (resp, physical) = self.propose_for_as(who, req).await?;
        if physical {
            // The deletion is durable once storage has synced past it.
            self.shared
                .storage
                .sync()
                .await
                .map_err(|_| ServerError::Stopped)?;
        }
        Ok(resp)
    }

    // ---- Maintenance and Cluster ----

    pub async fn status(&self) -> Result<StatusResponse, ServerError> {
        let raft = &self.shared.raft;
        let db_size = self.db_size() as i64;
        Ok(StatusResponse {
            header: Some(self.header(self.current_revision())),
            version: ETCD_API_VERSION.to_owned(),
            db_size,
            leader: raft.leader.load(Ordering::SeqCst),
            raft_index: raft.commit_index.load(Ordering::SeqCst),
            raft_term: raft.term.load(Ordering::SeqCst),
            raft_applied_index: raft.applied_index.load(Ordering::SeqCst),
            errors: self
                .alarm_names()
                .into_iter()
                .map(|(member, name)| format!("memberID:{member} alarm:{name} "))
                .collect(),
            db_size_in_use: self.db_size_in_use() as i64,
            is_learner: raft.is_learner.load(Ordering::SeqCst),
        })
    }

    pub async fn hash(&self) -> Result<HashResponse, ServerError> {
        self.refuse_learner()?;
        let store = self.shared.mvcc();
        let hash = self.halt_if_corrupt(store.hash())?;
        Ok(HashResponse {
            header: Some(self.header(store.current_revision().0)),
            hash,
        })
    }

    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, ServerError> {
        self.refuse_learner()?;
        // The scan runs on a storage snapshot, without holding the store.
        let job = self.shared.mvcc().hash_kv_job(revision)?;
        let h = self.halt_if_corrupt(job.run())?;
        Ok(HashKvResponse {
            header: Some(self.header(h.revision.0)),
            hash: h.hash,
            compact_revision: h.compact_revision,
        })
    }
}

/// etcd gives every response inside a txn a header carrying only the revision.
fn fill_nested_headers(resp: &mut TxnResponse, revision: i64) {
    use cairn_proto::etcdserverpb::response_op::Response as Op;
    let header = || {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    for op in &mut resp.responses {
        match &mut op.response {
            Some(Op::ResponseRange(r)) => r.header = header(),
            Some(Op::ResponsePut(r)) => r.header = header(),
            Some(Op::ResponseDeleteRange(r)) => r.header = header(),
            Some(Op::ResponseTxn(t)) => {
                fill_nested_headers(t, revision);
                t.header = header();
            }
            None => {}
        }
    }
}

/// A read-only txn is served without ReadIndex only if all its ranges are serializable.
fn txn_is_serializable(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request as Op;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(t)) => txn_is_serializable(t),
            _ => true,
        })
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the data directory: {0}")]
    Storage(#[from] cairn_runtime::StorageError),
    #[error("cannot recover the raft log: {0}")]
    RaftStorage(#[from] crate::raft::storage::RaftStorageError),
    #[error("cannot recover the key-value store: {0}")]
    Mvcc(#[from] MvccError),
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::RaftError),
    #[error("the data directory belongs to member {found:x}, but this member is {expected:x} (check --name and --initial-cluster)")]
    MemberMismatch { found: u64, expected: u64 },
    #[error("{}; its data directory cannot be used again: start with an empty --data-dir and add the member again (etcdctl member add)", cairn_runtime::transport::MEMBER_REMOVED)]
    Removed,
}
