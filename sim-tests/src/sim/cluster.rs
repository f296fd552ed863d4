//! A cluster of unmodified cairn members on madsim nodes.
//!
//! Each member runs `cairn::process::run` — the binary's own code path: config
//! parsed from etcd flags, gRPC peer transport, node loop, client listener —
//! on its own simulated node with its own IP, a `SimStorage` on a `SimDisk`
//! that outlives the node (so a restart finds what was synced), and a
//! `SkewedClock` the fault scheduler can move. Killing a node stops all its
//! tasks; `crash` also drops what the disk had not synced. After every write
//! the disk checks that a restart could recover from it
//! (`cairn::server::apply::check_restartable`).
//!
//! Membership can change while the cluster runs (the `churn` scenario,
//! `membership.rs`): `join` starts a member the cluster has just added, with
//! `--initial-cluster-state existing` and a fresh disk, and `retire` marks a
//! member the cluster removed. `members` holds every member that ever ran,
//! removed ones included; `current()` is the members not removed, the only
//! ones faults are injected into and clients talk to. A member's node is its
//! IP address: a replacement at the same address reuses the node (madsim
//! allows one node per IP), which then runs the new member's flags and disk
//! (`Launch`). Operations on a member whose node another member has taken
//! over do nothing.
//!
//! Every member's probe is the raft oracle wrapped in a `Counted`, which
//! also feeds the run's `Coverage`: how often each fault fired and each
//! interesting event happened (elections, pre-vote rejections, leadership
//! regained, leader transfers, snapshots, lease expiries during network
//! splits, ReadIndex retries …). The runner sums them over a seed range and
//! fails CI when a fault kind never fired.
//! Tests: `tests/sim.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn::process::{self, ProcessOptions};
use cairn::server::{AppliedEntry, Probe};
use cairn_proto::cairnpb::{internal_request, InternalRequest};
use cairn_runtime::{SimDisk, SimStorage, Skew, SkewedClock, TokioClock};
use madsim::runtime::{Handle, NodeHandle};
use prost::Message as _;

use super::oracle::Oracle;

/// How the members are configured.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Members at the start.
    pub members: usize,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Small, so snapshots and log compaction happen in every run.
    pub snapshot_count: u64,
    /// `--quota-backend-bytes` (0: etcd's default, 2 GiB).
    pub quota_backend_bytes: u64,
    /// `--auto-compaction-mode periodic --auto-compaction-retention` this
    /// many seconds; 0: off.
    pub auto_compaction_secs: u64,
    /// `--pre-vote` and `--check-quorum` (the swarm turns them off in some seeds).
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// `--enable-v2` (the seeds that run v2 clients).
    pub enable_v2: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            members: 3,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 300,
            quota_backend_bytes: 0,
            auto_compaction_secs: 0,
            pre_vote: true,
            check_quorum: true,
            enable_v2: false,
        }
    }
}

/// How a member's process ended: `process::run`'s result, `None` while it
/// runs (or after its node was killed under it).
pub type ExitSlot = Arc<Mutex<Option<Result<(), String>>>>;

pub struct SimMember {
    /// Unique among all members of a run (`m1`, `m2`, …; a replacement gets
    /// a new name even at an old address).
    pub name: String,
    /// The Raft member id.
    pub id: u64,
    pub ip: IpAddr,
    pub node: NodeHandle,
    pub disk: SimDisk,
    pub clock: SkewedClock,
    /// The member's client URL (`http://ip:2379`).
    pub client_url: String,
    /// The member's peer URL (`http://ip:2380`).
    pub peer_url: String,
    pub alive: bool,
    pub paused: bool,
    /// A sync failure was injected: the member has halted until restarted.
    pub halted: bool,
    /// A learner, as far as the harness knows (the member lists say).
    pub learner: bool,
    /// The cluster removed it: no fault or heal starts it again.
    pub removed: bool,
    pub exit: ExitSlot,
}

/// What a node runs when it starts: the flags and disk of the member that
/// owns its address now.
struct Launch {
    name: String,
    args: Vec<String>,
    disk: SimDisk,
    exit: ExitSlot,
}

/// One simulated node (one IP address) and whose member it runs.
struct Host {
    node: NodeHandle,
    clock: SkewedClock,
    launch: Arc<Mutex<Launch>>,
}

pub struct SimCluster {
    /// Every member that ever ran, in the order they started.
    pub members: Vec<SimMember>,
    hosts: BTreeMap<IpAddr, Host>,
    pub oracle: Arc<Oracle>,
    /// What happened in this run, counted (the coverage report).
    pub coverage: Arc<Coverage>,
    /// Each member's server as it last started (the v2 clients call it
    /// directly: the simulated network carries no plain HTTP).
    pub servers: Servers,
    pub spec: ClusterSpec,
    handle: Handle,
}

/// The members' servers by member id, as they last started.
pub type Servers = Arc<Mutex<BTreeMap<u64, cairn::server::Server>>>;

/// Counts of faults and events over one run, by name (`fault Kill`,
/// `event election won`, …). Shared by the fault scheduler and every
/// member's probe.
#[derive(Default)]
pub struct Coverage {
    counts: Mutex<BTreeMap<String, u64>>,
    /// A network split is in force (partition, isolated leader, bridge,
    /// one-way link), set by the fault scheduler until it heals the network.
    split: AtomicBool,
    leaders: Mutex<LeaderTrack>,
    /// Indexes of lease revocations by expiry already counted (every
    /// member applies each).
    expiries: Mutex<BTreeSet<u64>>,
}

#[derive(Default)]
struct LeaderTrack {
    last: Option<u64>,
    led: BTreeSet<u64>,
}

impl Coverage {
    pub fn add(&self, what: &str, n: u64) {
        *self
            .counts
            .lock()
            .expect("coverage lock")
            .entry(what.to_owned())
            .or_default() += n;
    }

    pub fn set_split(&self, on: bool) {
        self.split.store(on, Ordering::SeqCst);
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("coverage lock").clone()
    }

    fn on_leader(&self, member: u64) {
        self.add("event election won", 1);
        let regained = {
            let mut t = self.leaders.lock().expect("coverage lock");
            let regained = t.last.is_some_and(|l| l != member) && t.led.contains(&member);
            t.last = Some(member);
            t.led.insert(member);
            regained
        };
        if regained {
            self.add("event leadership regained after others led", 1);
        }
    }

    fn on_apply(&self, e: &AppliedEntry<'_>) {
        if e.data.is_empty() || e.conf.is_some() {
            return;
        }
        let Ok(req) = InternalRequest::decode(e.data) else {
            return;
        };
        // The leader's own revocation of an expired lease (request id 0;
        // a client's revoke carries its request id).
        if req.id == 0
            && matches!(req.request, Some(internal_request::Request::LeaseRevoke(_)))
            && self.expiries.lock().expect("coverage lock").insert(e.index)
        {
            self.add("event lease expired", 1);
            if self.split.load(Ordering::SeqCst) {
                self.add("event lease expired during a network split", 1);
            }
        }
    }
}

/// A member's probe: the raft oracle, counting into `Coverage` on the way.
struct Counted {
    oracle: Arc<Oracle>,
    coverage: Arc<Coverage>,
    servers: Servers,
}

impl Probe for Counted {
    fn on_leader(&self, member: u64, term: u64) {
        self.coverage.on_leader(member);
        self.oracle.on_leader(member, term);
    }

    fn on_apply(&self, entry: &AppliedEntry<'_>) {
        self.coverage.on_apply(entry);
        self.oracle.on_apply(entry);
    }

    fn on_snapshot_installed(&self, member: u64, index: u64) {
        self.coverage.add("event snapshot installed", 1);
        self.oracle.on_snapshot_installed(member, index);
    }

    fn delay_apply(&self, member: u64) -> Option<std::time::Duration> {
        self.oracle.delay_apply(member)
    }

    fn compact_log_early(&self, member: u64) -> bool {
        self.oracle.compact_log_early(member)
    }

    fn check_invariants(&self, member: u64) -> bool {
        self.oracle.check_invariants(member)
    }

    fn on_invariant_broken(&self, member: u64, what: &str, message: &str) {
        self.oracle.on_invariant_broken(member, what, message);
    }

    fn on_event(&self, _member: u64, event: &'static str) {
        self.coverage.add(&format!("event {event}"), 1);
    }

    fn on_started(&self, server: &cairn::server::Server) {
        self.servers
            .lock()
            .expect("servers lock")
            .insert(server.member_id(), server.clone());
    }
}

/// The `k`-th member address (`10.0.0.k+1`).
pub fn member_ip(k: usize) -> IpAddr {
    assert!(k < 250, "member address {k} out of range");
    format!("10.0.0.{}", k + 1).parse().expect("valid ip")
}

pub fn peer_url(ip: IpAddr) -> String {
    format!("http://{ip}:2380")
}

pub fn client_url(ip: IpAddr) -> String {
    format!("http://{ip}:2379")
}

/// A member's etcd flags. `initial` is `--initial-cluster` as (name, peer
/// URL); `existing` joins a running cluster instead of bootstrapping one.
fn member_args(
    spec: &ClusterSpec,
    name: &str,
    ip: IpAddr,
    initial: &[(String, String)],
    existing: bool,
) -> Vec<String> {
    let initial: Vec<String> = initial.iter().map(|(n, u)| format!("{n}={u}")).collect();
    [
        "--name".to_owned(),
        name.to_owned(),
        "--data-dir".to_owned(),
        format!("/sim/{name}"),
        "--listen-client-urls".to_owned(),
        client_url(ip),
        "--advertise-client-urls".to_owned(),
        client_url(ip),
        "--listen-peer-urls".to_owned(),
        peer_url(ip),
        "--initial-advertise-peer-urls".to_owned(),
        peer_url(ip),
        "--initial-cluster".to_owned(),
        initial.join(","),
        "--initial-cluster-state".to_owned(),
        if existing { "existing" } else { "new" }.to_owned(),
        "--initial-cluster-token".to_owned(),
        "sim".to_owned(),
        "--heartbeat-interval".to_owned(),
        spec.heartbeat_ms.to_string(),
        "--election-timeout".to_owned(),
        spec.election_ms.to_string(),
        "--snapshot-count".to_owned(),
        spec.snapshot_count.to_string(),
        format!("--pre-vote={}", spec.pre_vote),
        format!("--check-quorum={}", spec.check_quorum),
        "--quota-backend-bytes".to_owned(),
        spec.quota_backend_bytes.to_string(),
        // Frequent progress notifications, so watchers vouch for revisions.
        "--experimental-watch-progress-notify-interval".to_owned(),
        "1s".to_owned(),
        // bcrypt's cheapest cost: hashing runs inline in simulation, and a
        // debug build at etcd's cost 10 spends wall seconds per password.
        "--bcrypt-cost".to_owned(),
        "4".to_owned(),
        // The v2 API, in the seeds that run v2 clients (`v2.rs`).
        format!("--enable-v2={}", spec.enable_v2),
    ]
    .into_iter()
    .chain(
        (spec.auto_compaction_secs > 0)
            .then(|| {
                [
                    "--auto-compaction-mode".to_owned(),
                    "periodic".to_owned(),
                    "--auto-compaction-retention".to_owned(),
                    format!("{}s", spec.auto_compaction_secs),
                ]
            })
            .into_iter()
            .flatten(),
    )
    .collect()
}

/// The Raft id a bootstrapping member gets (etcd's derivation from its peer
/// URLs and the cluster token).
fn bootstrap_member_id(args: &[String]) -> u64 {
    cairn::config::parse_args(args.to_vec(), &|_| None)
        .expect("the harness's member flags are valid")
        .member_id()
        .0
}

/// A fresh disk whose every write must leave a state the member can restart
/// from (any prefix of the writes may survive a power loss): fail at the
/// write that breaks it, not at a later restart.
fn fresh_disk(name: &str) -> SimDisk {
    let disk = SimDisk::new();
    let name = name.to_owned();
    disk.set_write_check(Arc::new(move |view| {
        cairn::server::apply::check_restartable(view).map_err(|e| format!("member {name}: {e}"))
    }));
    disk
}

impl SimCluster {
    /// Builds and starts the initial members (call inside a madsim runtime).
    pub fn start(spec: ClusterSpec, oracle: Arc<Oracle>) -> SimCluster {
        let mut cluster = SimCluster {
            members: Vec::new(),
            hosts: BTreeMap::new(),
            oracle,
            coverage: Arc::default(),
            servers: Arc::default(),
            spec,
            handle: Handle::current(),
        };
        let initial: Vec<(String, String)> = (0..cluster.spec.members)
            .map(|k| (format!("m{}", k + 1), peer_url(member_ip(k))))
            .collect();
        for k in 0..cluster.spec.members {
            let args = member_args(&cluster.spec, &initial[k].0, member_ip(k), &initial, false);
            let id = bootstrap_member_id(&args);
            cluster.launch(initial[k].0.clone(), member_ip(k), id, args, false);
        }
        cluster
    }

    /// Starts a member the cluster has added (`id` from its MemberAdd) at
    /// `ip`, on a fresh disk, joining with `--initial-cluster-state
    /// existing`; `initial` lists every member (name, peer URL), this one
    /// included. If a removed member's node has this address, that node is
    /// stopped and runs the new member from now on. Returns its index.
    pub fn join(
        &mut self,
        name: &str,
        ip: IpAddr,
        id: u64,
        initial: &[(String, String)],
        learner: bool,
    ) -> usize {
        if let Some(i) = self.owner_of(ip) {
            assert!(
                self.members[i].removed,
                "{name} joins at {ip}, the address of {}, which is still a member",
                self.members[i].name
            );
        }
        let args = member_args(&self.spec, name, ip, initial, true);
        self.launch(name.to_owned(), ip, id, args, learner)
    }

    fn launch(
        &mut self,
        name: String,
        ip: IpAddr,
        id: u64,
        args: Vec<String>,
        learner: bool,
    ) -> usize {
        let disk = fresh_disk(&name);
        let exit: ExitSlot = Arc::new(Mutex::new(None));
        let launch = Launch {
            name: name.clone(),
            args,
            disk: disk.clone(),
            exit: exit.clone(),
        };
        if let Some(old) = self.owner_of(ip) {
            self.members[old].alive = false;
            self.members[old].paused = false;
        }
        let (node, clock) = match self.hosts.get(&ip) {
            Some(host) => {
                // A replacement at an old address: the node runs the new
                // member from its next start on.
                self.handle.kill(host.node.id());
                *host.launch.lock().expect("launch lock") = launch;
                self.handle.restart(host.node.id());
                (host.node.clone(), host.clock.clone())
            }
            None => {
                let host = self.create_host(&name, ip, launch);
                let pair = (host.node.clone(), host.clock.clone());
                self.hosts.insert(ip, host);
                pair
            }
        };
        self.members.push(SimMember {
            name,
            id,
            ip,
            node,
            disk,
            clock,
            client_url: client_url(ip),
            peer_url: peer_url(ip),
            alive: true,
            paused: false,
            halted: false,
            learner,
            removed: false,
            exit,
        });
        self.members.len() - 1
    }

    /// A node for `ip`, named after the first member it runs.
    fn create_host(&self, name: &str, ip: IpAddr, launch: Launch) -> Host {
        let clock = SkewedClock::new(TokioClock::new());
        let launch = Arc::new(Mutex::new(launch));
        let probe: Arc<dyn Probe> = Arc::new(Counted {
            oracle: self.oracle.clone(),
            coverage: self.coverage.clone(),
            servers: self.servers.clone(),
        });
        let (l, c, oracle) = (launch.clone(), clock.clone(), probe);
        let node = self
            .handle
            .create_node()
            .name(name)
            .ip(ip)
            .init(move || {
                let (args, disk, exit) = {
                    let l = l.lock().expect("launch lock");
                    (l.args.clone(), l.disk.clone(), l.exit.clone())
                };
                let (clock, oracle) = (c.clone(), oracle.clone());
                async move {
                    *exit.lock().expect("exit lock") = None;
                    let config = match cairn::config::parse_args(args, &|_| None) {
                        Ok(c) => c,
                        Err(e) => panic!("member flags rejected: {e}"),
                    };
                    let families = cairn::server::apply::all_column_families();
                    let storage = match SimStorage::open(&disk, &families) {
                        Ok(s) => s,
                        Err(e) => panic!("member storage does not reopen after a crash: {e}"),
                    };
                    let options = ProcessOptions {
                        rng_seed: madsim::rand::random::<u64>(),
                        probe: Some(oracle),
                    };
                    let result =
                        process::run(&config, Arc::new(storage), Arc::new(clock), options).await;
                    match &result {
                        Ok(()) => tracing::info!("member process returned"),
                        Err(e) => tracing::warn!("member stopped: {e}"),
                    }
                    *exit.lock().expect("exit lock") = Some(result);
                }
            })
            .build();
        Host {
            node,
            clock,
            launch,
        }
    }

    /// The member whose flags the node at `ip` runs now.
    fn owner_of(&self, ip: IpAddr) -> Option<usize> {
        let host = self.hosts.get(&ip)?;
        let name = host.launch.lock().expect("launch lock").name.clone();
        self.members.iter().position(|m| m.name == name)
    }

    /// Whether member `i`'s node still runs member `i` (not a replacement).
    pub fn owns_node(&self, i: usize) -> bool {
        self.owner_of(self.members[i].ip) == Some(i)
    }

    /// The members the cluster has not removed (as far as the harness knows).
    pub fn current(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| !self.members[*i].removed)
            .collect()
    }

    /// The client URLs of the current members.
    pub fn client_urls(&self) -> Vec<String> {
        self.current()
            .into_iter()
            .map(|i| self.members[i].client_url.clone())
            .collect()
    }

    /// Every node that ever ran a member, one per address.
    pub fn nodes(&self) -> Vec<madsim::task::NodeId> {
        self.hosts.values().map(|h| h.node.id()).collect()
    }

    pub fn node_id(&self, i: usize) -> madsim::task::NodeId {
        self.members[i].node.id()
    }

    /// Index of the current member with this Raft id.
    pub fn index_of_member_id(&self, id: u64) -> Option<usize> {
        self.current()
            .into_iter()
            .find(|i| self.members[*i].id == id)
    }

    /// Index of the member (current or removed) with this Raft id.
    pub fn index_of_any_member_id(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// Marks a member the cluster removed: nothing starts it again (its
    /// process is left to stop by itself).
    pub fn retire(&mut self, i: usize) {
        self.members[i].removed = true;
    }

    /// Process crash: the node stops at once; with `lose_unsynced` the disk
    /// also loses what was not synced, but for the first `keep` share of it
    /// (`None`: none, and `tear` half-writes the last unsynced batch)
    /// (a prefix, in order) and with `tear` the batch after that prefix
    /// half-written. Returns how many unsynced batches were kept.
    pub fn kill(&mut self, i: usize, lose_unsynced: bool, tear: bool, keep: Option<f64>) -> usize {
        if !self.owns_node(i) {
            return 0;
        }
        let m = &mut self.members[i];
        self.handle.kill(m.node.id());
        let mut kept = 0;
        if lose_unsynced {
            m.disk.set_tear_on_crash(tear);
            match keep {
                Some(share) => kept = m.disk.crash_keeping(share),
                None => m.disk.crash(),
            }
        }
        m.alive = false;
        m.paused = false;
        kept
    }

    /// Starts a killed (or halted, or exited) member again on its disk.
    pub fn restart(&mut self, i: usize) {
        if !self.owns_node(i) {
            return;
        }
        let m = &mut self.members[i];
        if m.alive {
            self.handle.kill(m.node.id());
        }
        // A fault armed for the previous incarnation does not outlive it.
        m.disk.clear_faults();
        self.handle.restart(m.node.id());
        m.alive = true;
        m.paused = false;
        m.halted = false;
    }

    /// Starts member `i` again on a fresh, empty disk: a join that went
    /// wrong, retried from scratch as an operator would.
    pub fn rejoin(&mut self, i: usize) {
        if !self.owns_node(i) {
            return;
        }
        let disk = fresh_disk(&self.members[i].name);
        if let Some(host) = self.hosts.get(&self.members[i].ip) {
            host.launch.lock().expect("launch lock").disk = disk.clone();
        }
        self.members[i].disk = disk;
        self.restart(i);
    }

    pub fn pause(&mut self, i: usize) {
        if !self.owns_node(i) {
            return;
        }
        let m = &mut self.members[i];
        if m.alive && !m.paused {
            self.handle.pause(m.node.id());
            m.paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if !self.owns_node(i) {
            return;
        }
        let m = &mut self.members[i];
        if m.paused {
            self.handle.resume(m.node.id());
            m.paused = false;
        }
    }

    pub fn set_skew(&self, i: usize, skew: Skew) {
        self.members[i].clock.set_skew(skew);
    }
}
