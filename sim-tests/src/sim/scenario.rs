//! One simulation run: start a cluster, run the workload under faults, heal,
//! run a final phase that must succeed, then check everything.
//!
//! Phases: warm-up (no faults) → faults for `fault_time` → heal → the clients
//! stop and each must get a write and a linearizable read through (retrying
//! for up to 30 s of simulated time) → every member must reach the same
//! revision, compact revision and HashKV → checks:
//! - the raft oracle's invariants (election safety, committed entries never
//!   change, equal effects at equal indexes);
//! - linearizability of all linearizable operations, against the order the
//!   raft oracle saw committed (`checker::linearizability`; an inconclusive
//!   check — step budget exhausted — is reported, not failed). The child
//!   runs this one after the simulation (`check_linearizability`);
//! - serializable reads returned committed states;
//! - durability of every acknowledged write against the committed history;
//! - list-append: no lost, duplicated or half-applied appends; every read
//!   list is a prefix of the final list;
//! - the final state read from the cluster equals the oracle's history.
//!
//! In `churn` (`RunConfig::churn`) the cluster starts with 3 to 5 members
//! and a membership driver (`membership.rs`) changes it during the fault
//! phase; after healing it settles (learners promoted), and the end checks
//! run on the members the cluster has then. Every member's own member list
//! must name exactly those members (no removed one), equal to the Raft
//! configuration the oracle saw applied last, and every member must reach
//! the same applied index as well as the same revision and HashKV.
//! Tests: `tests/sim.rs`.

use crate::swarm::Swarm;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, HashKvRequest, RangeRequest,
    StatusRequest,
};
use madsim::runtime::Handle;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::auth;
use super::backup;
use super::cluster::{ClusterSpec, SimCluster};
use super::faults::{FaultKind, FaultScheduler, Timeline, ALL_FAULTS};
use super::leases::{check_leases, run_lease_client, LeaseLife, LeaseLog};
use super::locks::{final_lock, run_lock_client, LockLog};
use super::membership::{self, Membership};
use super::oracle::Oracle;
use super::space;
use super::watchers::{check_segments, run_watcher, SeenResponse, Segment, WatchLog};
use super::workload::{self, Client, Endpoints, Recorder, Shared, LIST_KEYS};
use crate::checker::fencing::{check_fencing, Hold, WriteOutcome, FENCED_KEY, LOCK_NAME};
use crate::checker::linearizability::check_linearizable_against;
use crate::checker::{
    acknowledged_writes, check_durability, check_serializable_reads, possibly_written_values,
    CheckOptions, CheckResult, CommittedHistory, Operation, Outcome, Request, Response, Revision,
    TxnOp,
};

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub cluster: ClusterSpec,
    pub clients: usize,
    pub warmup: Duration,
    pub fault_time: Duration,
    pub faults: Vec<FaultKind>,
    /// Model steps the linearizability search may take.
    pub check_steps: u64,
    /// Run a watcher beside every client (see `watchers`).
    pub watchers: bool,
    /// Run a lease client beside every client (see `leases`).
    pub leases: bool,
    /// Run a lock client beside every client (see `locks`).
    pub locks: bool,
    /// Check linearizability (every scenario does; off only by hand).
    pub check_linearizability: bool,
    /// Start with 3 to 5 members (drawn from the seed, replacing
    /// `cluster.members`) and change the membership during the fault phase
    /// (see `membership`).
    pub churn: bool,
    /// Run the auth workload (an operator changing users, roles and
    /// permissions, users reading and writing; see `auth`).
    pub auth: bool,
    /// Draw the seed's fault mix and member configuration (`crate::swarm`);
    /// off: every fault at the usual rate, the usual configuration (the
    /// regression seeds, which replay the schedule that found their bug).
    pub swarm: bool,
    /// What a shrink leaves out of the seed's schedule (`runner`).
    pub shrink: Shrink,
}

/// Parts of a seed's schedule left out while shrinking a failure: the draws
/// are still made (the rest of the schedule stays as it was, as far as the
/// cluster's state allows), the fault or task is not run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shrink {
    /// Fault slots (numbers in the timeline, `#7`) drawn but not injected.
    pub skip_faults: BTreeSet<usize>,
    /// When set, only these fault slots are injected.
    pub only_faults: Option<BTreeSet<usize>>,
    /// Only the first this many clients (and their watchers, lease and lock
    /// clients) run; `None`: all.
    pub clients: Option<usize>,
    /// No watchers.
    pub no_watchers: bool,
}

impl RunConfig {
    pub fn kv(members: usize) -> RunConfig {
        RunConfig {
            cluster: ClusterSpec {
                members,
                ..ClusterSpec::default()
            },
            clients: 4,
            warmup: Duration::from_secs(3),
            fault_time: Duration::from_secs(20),
            faults: ALL_FAULTS.to_vec(),
            check_steps: 3_000_000,
            watchers: true,
            leases: false,
            locks: false,
            check_linearizability: true,
            churn: false,
            auth: false,
            swarm: true,
            shrink: Shrink::default(),
        }
    }

    /// The auth workload beside the KV mix, under the usual faults; every
    /// check of `kv`, and the auth checker on the committed log.
    pub fn auth(members: usize) -> RunConfig {
        RunConfig {
            auth: true,
            // A refused watch is canceled: the watch checker has no model
            // of auth, so watchers stay out.
            watchers: false,
            ..RunConfig::kv(members)
        }
    }

    /// Leases with short TTLs beside the KV mix, watchers and faults; every
    /// check of `kv` (the revokes' deletions are replayed from the committed
    /// history where they committed).
    pub fn lease(members: usize) -> RunConfig {
        RunConfig {
            leases: true,
            ..RunConfig::kv(members)
        }
    }
}

impl RunConfig {
    /// Membership changes under the usual faults, with the KV mix and
    /// watchers and every check of `kv`.
    pub fn churn() -> RunConfig {
        RunConfig {
            churn: true,
            ..RunConfig::kv(3)
        }
    }

    /// Lock clients (fenced writes) beside the KV mix, watchers and faults;
    /// every check of `kv` (the lock service's writes are replayed from the
    /// committed history where they committed).
    pub fn lock(members: usize) -> RunConfig {
        RunConfig {
            locks: true,
            ..RunConfig::kv(members)
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct RunReport {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub timeline: Vec<String>,
    pub history: Vec<Operation>,
    pub serializable: Vec<Operation>,
    pub committed: CommittedHistory,
    pub watch_segments: Vec<Segment>,
    pub lease_lives: Vec<LeaseLife>,
    pub lock_holds: Vec<Hold>,
    /// A hash of everything observable: equal for two runs of one seed.
    pub trace_hash: u64,
    pub simulated_secs: f64,
    /// The simulated time of each tick of the history's logical clock
    /// (`Operation::call` / `ret`; tick `t` at index `t - 1`), in
    /// nanoseconds after the timeline's start, and the run's end on that
    /// axis: the HTML report's time axis.
    pub tick_ns: Vec<u64>,
    pub end_ns: u64,
    /// How often each fault fired and each interesting event happened
    /// (`fault Kill`, `event election won`, …; the coverage report).
    pub counts: BTreeMap<String, u64>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The history, committed changes and fault timeline, for a failure file.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        out.push_str("# failures\n");
        for f in &self.failures {
            out.push_str(&format!("{f}\n"));
        }
        out.push_str("\n# notes\n");
        for n in &self.notes {
            out.push_str(&format!("{n}\n"));
        }
        out.push_str("\n# fault timeline (simulated time)\n");
        for t in &self.timeline {
            out.push_str(&format!("{t}\n"));
        }
        out.push_str("\n# linearizable operations (client, call, ret, request, outcome)\n");
        for op in &self.history {
            out.push_str(&format!("{op:?}\n"));
        }
        out.push_str("\n# serializable reads\n");
        for op in &self.serializable {
            out.push_str(&format!("{op:?}\n"));
        }
        out.push_str("\n# watch segments\n");
        for seg in &self.watch_segments {
            out.push_str(&format!("{seg:?}\n"));
        }
        out.push_str("\n# leases\n");
        for l in &self.lease_lives {
            out.push_str(&format!("{l:?}\n"));
        }
        out.push_str("\n# lock holds\n");
        for h in &self.lock_holds {
            out.push_str(&format!("{h:?}\n"));
        }
        out.push_str("\n# committed history\n");
        for c in &self.committed.changes {
            out.push_str(&format!("{c}\n"));
        }
        out
    }
}

/// The share of seeds whose members compact automatically.
const AUTO_COMPACTION_SHARE: f64 = 0.25;

/// The client id of the compactions the members' auto-compactors make.
pub const AUTO_COMPACTOR_CLIENT: u64 = 101;

/// `--auto-compaction-retention` in seconds (periodic mode) for a seed; 0: off.
fn draw_auto_compaction(master_seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(master_seed ^ 0x3c6e_f372_fe94_f82b);
    if rng.random_bool(AUTO_COMPACTION_SHARE) {
        rng.random_range(2..=8)
    } else {
        0
    }
}

/// Adds to `history` the compactions that took effect (the raft oracle's
/// `revisions`) which no recorded client made (none asked for them, or
/// those that did were refused): the leader's automatic ones. Each is an operation of unknown outcome called at the start, so
/// the checkers may place it anywhere (or nowhere). Returns how many.
/// Compactions whose outcome no client learned, resolved from what the
/// raft oracle saw applied (every compaction that compacted anything, on
/// any member): one to a revision that never compacted, or that another
/// compaction compacted (an acknowledged one, or an earlier one of unknown
/// outcome kept here), had no effect and is recorded as failed. Left
/// uncertain, each may or may not have happened anywhere after its call,
/// and a crash-heavy run's 31 of them made the linearizability search give
/// up (churn seed 5175). Returns how many were resolved.
fn resolve_unknown_compactions(history: &mut [Operation], applied: &[i64]) -> usize {
    let applied: std::collections::BTreeSet<u64> = applied.iter().map(|r| *r as u64).collect();
    let mut taken = acknowledged_compactions(history);
    // In call order: of several to one revision, the earliest called stays
    // (it may have taken effect whenever any of them could).
    let mut unknown: Vec<usize> = (0..history.len())
        .filter(|&i| {
            matches!(history[i].input, Request::Compact { .. })
                && history[i].output == Outcome::Unknown
        })
        .collect();
    unknown.sort_by_key(|&i| history[i].call);
    let mut resolved = 0;
    for i in unknown {
        let Request::Compact { revision } = &history[i].input else {
            continue;
        };
        if applied.contains(&revision.0) && taken.insert(revision.0) {
            continue; // the one that may have compacted it: stays uncertain
        }
        history[i].output = Outcome::Failed;
        resolved += 1;
    }
    resolved
}

/// The revisions a client's compaction was acknowledged to.
fn acknowledged_compactions(history: &[Operation]) -> std::collections::BTreeSet<u64> {
    history
        .iter()
        .filter_map(|op| match (&op.input, &op.output) {
            (Request::Compact { revision }, Outcome::Ok(Response::Compact { .. })) => {
                Some(revision.0)
            }
            _ => None,
        })
        .collect()
}

fn add_auto_compactions(history: &mut Vec<Operation>, revisions: &[i64]) -> usize {
    // A revision compacts once: where a client's compaction to it
    // succeeded, that was the one. Any other (a client's that failed or
    // timed out, say because the auto-compactor got there first) is added.
    let asked = acknowledged_compactions(history);
    let mut added = 0;
    for r in revisions {
        let r = *r as u64;
        if asked.contains(&r) {
            continue;
        }
        history.push(Operation {
            client: AUTO_COMPACTOR_CLIENT,
            call: 0,
            ret: None,
            input: Request::Compact {
                revision: Revision(r),
            },
            output: Outcome::Unknown,
        });
        added += 1;
    }
    added
}

/// Runs one simulation (inside a madsim runtime whose seed drives everything).
pub async fn run(cfg: RunConfig) -> RunReport {
    let started = tokio::time::Instant::now();
    let master_seed = madsim::rand::random::<u64>();
    let mut master = StdRng::seed_from_u64(master_seed);
    let oracle = Arc::new(Oracle::new(master.random()));
    let mut spec = cfg.cluster.clone();
    // Drawn from a stream of its own, so the seed's other draws stay as
    // they were before quotas were drawn (regression seeds replay).
    let small_quota = space::draw_small_quota(&mut StdRng::seed_from_u64(
        master_seed ^ 0x9e37_79b9_7f4a_7c15,
    ));
    if small_quota {
        spec.quota_backend_bytes = space::SMALL_QUOTA;
    }
    // Automatic compaction (periodic, every 2–8 s) in a share of the seeds,
    // from a stream of its own too.
    spec.auto_compaction_secs = draw_auto_compaction(master_seed);
    // v2 clients (and `--enable-v2`) in a share of the seeds, drawn from a
    // stream of their own as well.
    let v2_on = super::v2::draw_v2(master_seed);
    spec.enable_v2 = v2_on;
    if cfg.churn {
        spec.members = master.random_range(membership::MIN_VOTERS..=membership::MAX_MEMBERS);
    }
    let spec_auto_compaction = spec.auto_compaction_secs;
    // The seed's fault mix and configuration, from a stream of its own.
    // Lease expiry timing rests on check-quorum (etcd always runs it).
    let swarm = match cfg.swarm {
        true => Swarm::draw(master_seed, !cfg.leases && !cfg.locks),
        false => Swarm::classic(),
    };
    spec.heartbeat_ms = swarm.heartbeat_ms;
    spec.election_ms = swarm.election_ms;
    spec.snapshot_count = swarm.snapshot_count;
    spec.pre_vote = swarm.pre_vote;
    spec.check_quorum = swarm.check_quorum;
    let fault_kinds: Vec<FaultKind> = cfg
        .faults
        .iter()
        .copied()
        .filter(|k| swarm.kinds.contains(k))
        .collect();
    let cluster = Arc::new(Mutex::new(SimCluster::start(spec, oracle.clone())));
    let endpoints = Endpoints::new(cluster.lock().expect("cluster lock").client_urls());
    let recorder = Arc::new(Recorder::default());
    let shared = Arc::new(Shared::default());
    let stop = Arc::new(AtomicBool::new(false));
    // A semaphore, not a watch channel: tokio's watch picks among its
    // internal notifiers with a per-process RNG, which madsim's in-process
    // determinism check sees as nondeterminism.
    let final_go = Arc::new(tokio::sync::Semaphore::new(0));
    let handle = Handle::current();

    let watch_log = Arc::new(WatchLog::default());
    // The users' passwords, as the auth operator sets them (`auth3`).
    let passwords = Arc::new(auth::Passwords::default());
    let lease_log = Arc::new(LeaseLog::default());
    let lock_log = Arc::new(LockLog::default());
    let mut lock_tasks = Vec::new();
    let mut lease_tasks = Vec::new();
    let mut watcher_tasks = Vec::new();
    let mut client_tasks = Vec::new();
    for c in 0..cfg.clients {
        // A shrink may leave clients out: their draws are made all the same.
        let active = cfg.shrink.clients.is_none_or(|n| c < n);
        let node = handle
            .create_node()
            .name(format!("client{c}"))
            .ip(format!("10.0.1.{}", c + 1).parse().expect("ip"))
            .build();
        if cfg.watchers {
            let (urls, seed, shared, log, stop) = (
                endpoints.clone(),
                master.random(),
                shared.clone(),
                watch_log.clone(),
                stop.clone(),
            );
            if active && !cfg.shrink.no_watchers {
                watcher_tasks.push(node.spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    run_watcher(c as u64 + 1, urls, seed, shared, log, stop).await
                }));
            }
        }
        if cfg.leases {
            let (urls, seed, recorder, log, stop) = (
                endpoints.clone(),
                master.random(),
                recorder.clone(),
                lease_log.clone(),
                stop.clone(),
            );
            if active {
                lease_tasks.push(node.spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    run_lease_client(c as u64 + 1, urls, seed, started, recorder, log, stop).await
                }));
            }
        }
        if cfg.locks {
            let (urls, seed, log, stop) = (
                endpoints.clone(),
                master.random(),
                lock_log.clone(),
                stop.clone(),
            );
            if active {
                lock_tasks.push(node.spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    run_lock_client(c as u64 + 1, urls, seed, started, log, stop).await
                }));
            }
        }
        let mut client = Client::new(
            c as u64 + 1,
            endpoints.clone(),
            master.random(),
            recorder.clone(),
            shared.clone(),
        );
        if cfg.auth && c < auth::USERS {
            client = client.as_user(format!("u{}", c + 1), passwords.clone());
        }
        if !active {
            continue;
        }
        let (stop, final_go) = (stop.clone(), final_go.clone());
        client_tasks.push(node.spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await; // first election
            let mut client = workload::run_until(client, stop).await;
            final_go.acquire().await.expect("never closed").forget();
            let ok = final_write_and_read(&mut client).await;
            (client.id, ok)
        }));
    }

    let timeline = Timeline::new();
    let space_stop = Arc::new(AtomicBool::new(false));
    let space_task = small_quota.then(|| {
        let node = handle
            .create_node()
            .name("space-operator")
            .ip("10.0.2.3".parse().expect("ip"))
            .build();
        let (urls, timeline, stop) = (endpoints.clone(), timeline.clone(), space_stop.clone());
        let rng = StdRng::seed_from_u64(master_seed.rotate_left(29));
        let client = Client::new(
            space::OPERATOR_CLIENT,
            endpoints.clone(),
            master_seed.rotate_left(31),
            recorder.clone(),
            shared.clone(),
        );
        node.spawn(async move { space::run(client, urls, timeline, rng, stop).await })
    });
    // Snapshot saves under the faults, in a share of the seeds drawn from a
    // stream of their own (as the quota above).
    let backups = backup::draw_backups(&mut StdRng::seed_from_u64(
        master_seed ^ 0x6a09_e667_f3bc_c908,
    ));
    let backup_stop = Arc::new(AtomicBool::new(false));
    let backup_task = backups.then(|| {
        let node = handle
            .create_node()
            .name("backup-operator")
            .ip("10.0.2.4".parse().expect("ip"))
            .build();
        let (urls, timeline, stop) = (endpoints.clone(), timeline.clone(), backup_stop.clone());
        let rng = StdRng::seed_from_u64(master_seed.rotate_left(41));
        node.spawn(async move { backup::run(urls, timeline, rng, stop).await })
    });
    // v2 clients, on a node of their own, calling the members' servers.
    let v2_log: super::v2::Log = Arc::default();
    let v2_tasks: Vec<_> = if v2_on {
        let node = handle
            .create_node()
            .name("v2-clients")
            .ip("10.0.2.9".parse().expect("ip"))
            .build();
        let servers = cluster.lock().expect("cluster lock").servers.clone();
        (0..2u64)
            .map(|c| {
                let (servers, log, stop) = (servers.clone(), v2_log.clone(), stop.clone());
                let rng = StdRng::seed_from_u64(master_seed.rotate_left(47 + c as u32));
                node.spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    super::v2::run(200 + c, servers, rng, started, log, stop).await
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    // The auth workload's operator (the users are KV clients, above).
    let auth_stop = Arc::new(AtomicBool::new(false));
    let auth_tasks: Vec<_> = if cfg.auth {
        let operator = handle
            .create_node()
            .name("auth-operator")
            .ip("10.0.2.5".parse().expect("ip"))
            .build();
        let mut tasks = Vec::new();
        let (urls, stop, pw) = (endpoints.clone(), auth_stop.clone(), passwords.clone());
        let rng = StdRng::seed_from_u64(master_seed.rotate_left(17));
        tasks.push(operator.spawn(async move { auth::run_operator(urls, rng, pw, stop).await }));
        let prober = handle
            .create_node()
            .name("auth-prober")
            .ip("10.0.2.6".parse().expect("ip"))
            .build();
        let (urls, stop, pw) = (endpoints.clone(), auth_stop.clone(), passwords.clone());
        let rng = StdRng::seed_from_u64(master_seed.rotate_left(23));
        tasks.push(prober.spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            auth::run_prober(urls, rng, pw, stop).await
        }));
        tasks
    } else {
        Vec::new()
    };
    let mut faults = FaultScheduler::new(StdRng::seed_from_u64(master.random()), timeline.clone());
    faults.kinds = match fault_kinds.is_empty() {
        true => vec![FaultKind::Heal],
        false => fault_kinds.clone(),
    };
    faults.interval_ms = swarm.interval_ms;
    faults.skip = cfg.shrink.skip_faults.clone();
    faults.only = cfg.shrink.only_faults.clone();
    if swarm.crash_keeps_prefix {
        faults.crash_prefix = Some(StdRng::seed_from_u64(master_seed ^ 0x1f83_d9ab_fb41_bd6b));
    }
    if fault_kinds.contains(&FaultKind::DiskFailSync) {
        faults.flips = super::faults::draw_flips(master_seed);
    }
    // The membership driver, on a node of its own (its calls need an address).
    let churn = cfg.churn.then(|| {
        let operator = handle
            .create_node()
            .name("operator")
            .ip("10.0.2.2".parse().expect("ip"))
            .build();
        let driver = Membership::new(
            cluster.clone(),
            endpoints.clone(),
            timeline.clone(),
            StdRng::seed_from_u64(master.random()),
        );
        (operator, driver)
    });
    tokio::time::sleep(cfg.warmup).await;
    let churn = churn.map(|(operator, mut driver)| {
        let duration = cfg.fault_time;
        let task = operator.spawn(async move {
            driver.run(duration).await;
            driver
        });
        (operator, task)
    });
    faults.run(&cluster, cfg.fault_time).await;
    faults.heal(&mut cluster.lock().expect("cluster lock"));
    let fault_slots = faults.slots();
    let mut churn = match churn {
        // The driver's last action may still be under way: let it finish on
        // the healed cluster, then promote every learner.
        Some((operator, task)) => {
            let mut driver = task.await.expect("membership driver");
            let settled = operator.spawn(async move {
                driver.settle().await;
                driver.finish().await;
                driver
            });
            Some(settled.await.expect("membership driver"))
        }
        None => None,
    };

    // Give the healed cluster a moment under load, then stop the random mix.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The auth operator turns auth off before the clients' final phase.
    auth_stop.store(true, Ordering::SeqCst);
    let mut auth_reports = Vec::new();
    for t in auth_tasks {
        match tokio::time::timeout(Duration::from_secs(90), t).await {
            Ok(Ok(r)) => auth_reports.push(r),
            Ok(Err(e)) => panic!("an auth task failed: {e}"),
            Err(_) => panic!("an auth task did not stop within 90 s (a call without deadline?)"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    // Let every client finish its current request, then run the final phase.
    tokio::time::sleep(Duration::from_secs(3)).await;
    final_go.add_permits(cfg.clients);
    tracing::info!("final phase: every client writes and reads");
    let mut report = RunReport::default();
    for t in client_tasks {
        match tokio::time::timeout(Duration::from_secs(60), t).await {
            Ok(Ok((_, true))) => {}
            Ok(Ok((id, false))) => report.failures.push(format!(
                "liveness: client {id} could not write and read within 30 s after healing"
            )),
            Ok(Err(e)) => panic!("a client task failed: {e}"),
            Err(_) => panic!("a client did not finish within 60 s (an RPC without deadline?)"),
        }
    }
    join_stopped(lease_tasks, "a lease client", "a call").await;
    join_stopped(lock_tasks, "a lock client", "a call").await;
    join_stopped(watcher_tasks, "a watcher", "a stream read").await;
    join_stopped(v2_tasks, "a v2 client", "a call").await;
    // The convergence check runs from a node of its own (it needs an IP).
    let observer = handle
        .create_node()
        .name("observer")
        .ip("10.0.2.1".parse().expect("ip"))
        .build();
    if cfg.locks {
        tracing::info!("final phase: a fresh client takes the lock");
        let (urls, seed, log) = (endpoints.clone(), master.random(), lock_log.clone());
        let client = cfg.clients as u64 + 1;
        let got = observer
            .spawn(async move { final_lock(client, urls, seed, started, log).await })
            .await
            .expect("final lock task");
        if !got {
            report.failures.push(
                "liveness: no fresh client could take the lock and write within 30 s after healing"
                    .into(),
            );
        }
    }
    space_stop.store(true, Ordering::SeqCst);
    backup_stop.store(true, Ordering::SeqCst);
    let backup_report = match backup_task {
        Some(task) => Some(task.await.expect("backup operator")),
        None => None,
    };
    if let Some(task) = space_task {
        let space = task.await.expect("space operator");
        report.notes.push(format!(
            "space: quota {} bytes; NOSPACE seen {} times, {} disarms; {} writes refused for space",
            space::SMALL_QUOTA,
            space.seen,
            space.disarmed,
            shared.nospace_ops.load(Ordering::Relaxed)
        ));
    }
    let urls = cluster.lock().expect("cluster lock").client_urls();
    tracing::info!("final phase: waiting for the members to converge");
    let (finals, failures) = observer
        .spawn({
            let urls = urls.clone();
            async move { converge(urls).await }
        })
        .await
        .expect("observer task");
    report.failures.extend(failures);
    if let Some(driver) = churn.take() {
        report.failures.extend(driver.failures.iter().cloned());
        report.notes.push(driver.summary());
        report.notes.extend(driver.notes.iter().cloned());
        let (expected, removed) = {
            let cluster = cluster.lock().expect("cluster lock");
            let removed: BTreeMap<u64, String> = cluster
                .members
                .iter()
                .filter(|m| m.removed)
                .map(|m| (m.id, m.name.clone()))
                .collect();
            (final_members(&cluster), removed)
        };
        let conf = oracle.last_conf();
        report.notes.push(format!(
            "membership: {} conf changes applied; final members {}",
            oracle.conf_change_count(),
            expected
                .iter()
                .map(|(_, (name, learner))| format!(
                    "{name}{}",
                    if *learner { " (learner)" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let failures = observer
            .spawn(async move { check_member_lists(urls, expected, removed, conf).await })
            .await
            .expect("observer task");
        report.failures.extend(failures);
    }

    if v2_on {
        let (servers, live) = {
            let c = cluster.lock().expect("cluster lock");
            let live = c
                .members
                .iter()
                .filter(|m| m.alive && !m.removed)
                .map(|m| m.id)
                .collect();
            (c.servers.clone(), live)
        };
        let (trees, finals) = observer
            .spawn(async move { super::v2::final_reads(servers, live).await })
            .await
            .expect("v2 final reads");
        let ops = v2_log.lock().expect("v2 log").clone();
        let (failures, note) = super::v2::check(&ops, &trees, &finals);
        report.failures.extend(failures);
        report.notes.push(note);
    }
    report.timeline = timeline.entries();
    report.history = recorder.history.lock().expect("history lock").clone();
    if spec_auto_compaction > 0 {
        let added = add_auto_compactions(&mut report.history, &oracle.compaction_revisions());
        report.notes.push(format!(
            "auto-compaction every {spec_auto_compaction} s: {added} compactions no client asked for"
        ));
    }
    let resolved = resolve_unknown_compactions(&mut report.history, &oracle.compaction_revisions());
    if resolved > 0 {
        report.notes.push(format!(
            "compactions of unknown outcome that the oracle shows had no effect: {resolved}"
        ));
    }
    report.serializable = recorder.serializable.lock().expect("history lock").clone();
    report.committed = oracle.committed_history();
    report.notes.push(oracle.stats());
    report.notes.push(swarm.describe());
    if cfg.shrink != Shrink::default() {
        report.notes.push(format!(
            "shrink: {fault_slots} fault slots, left out {:?}, only {:?}; clients {:?}, watchers off {}, fault phase {} s",
            cfg.shrink.skip_faults,
            cfg.shrink.only_faults,
            cfg.shrink.clients,
            cfg.shrink.no_watchers,
            cfg.fault_time.as_secs()
        ));
    }
    if cfg.auth {
        let (failures, note) = crate::checker::auth::check_auth(&oracle.auth_log());
        report.failures.extend(failures);
        report.notes.push(note);
        let sum = |f: fn(&auth::AuthReport) -> u64| auth_reports.iter().map(f).sum::<u64>();
        report.notes.push(format!(
            "auth workload: {} changes and range probes made, {} failed, {} logins; {} client operations refused by auth",
            sum(|r| r.changes_ok),
            sum(|r| r.changes_failed),
            sum(|r| r.logins),
            shared.refused_ops.load(Ordering::Relaxed),
        ));
        if !auth_reports.first().is_some_and(|r| r.disabled_at_end) {
            report
                .failures
                .push("liveness: the auth operator could not turn auth off after healing".into());
        }
    }
    if let Some(b) = &backup_report {
        let (failures, note) = backup::check(&oracle, b);
        report.failures.extend(failures);
        report.notes.push(note);
    }
    report.notes.push(format!(
        "operations: {} linearizable, {} serializable; {} acknowledged, {} unknown",
        report.history.len(),
        report.serializable.len(),
        shared.acked_ops.load(Ordering::Relaxed),
        shared.unknown_ops.load(Ordering::Relaxed)
    ));
    let segments = watch_log.segments.lock().expect("watch log lock").clone();
    let events: usize = segments
        .iter()
        .flat_map(|s| &s.responses)
        .map(|r| match r {
            SeenResponse::Events(e) => e.len(),
            SeenResponse::Progress(_) => 0,
        })
        .sum();
    report.notes.push(format!(
        "watch: {} segments ({} created, {} cancelled), {events} events",
        segments.len(),
        segments.iter().filter(|s| s.created).count(),
        segments.iter().filter(|s| s.canceled.is_some()).count()
    ));
    check(&oracle, finals, &mut report);
    let max_compaction = report
        .history
        .iter()
        .filter_map(|op| match op.input {
            Request::Compact { revision } => Some(revision.0 as i64),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    report
        .failures
        .extend(check_segments(&segments, &report.committed, max_compaction));
    {
        let coverage = cluster.lock().expect("cluster lock").coverage.clone();
        let cancels = segments
            .iter()
            .filter(|s| s.canceled.is_some_and(|r| r > 0))
            .count();
        coverage.add("event watch canceled by a compaction", cancels as u64);
        coverage.add(
            "event compaction",
            oracle.compaction_revisions().len() as u64,
        );
        report.counts = coverage.counts();
    }
    report.watch_segments = segments;
    let lives = lease_log.lives.lock().expect("lease log lock").clone();
    let deletions = oracle.deletions();
    report.notes.push(format!(
        "leases: {} granted, {} renewals, {} with keys deleted",
        lives.len(),
        lives.iter().map(|l| l.renewals.len()).sum::<usize>(),
        lives
            .iter()
            .filter(|l| l.acked.iter().any(|k| deletions.contains_key(k)))
            .count()
    ));
    report.failures.extend(check_leases(
        &lives,
        &deletions,
        oracle.last_leader_change(),
        Duration::from_millis(swarm.election_ms),
        started.elapsed(),
    ));
    report.lease_lives = lives;
    let holds = lock_log.holds.lock().expect("lock log lock").clone();
    if cfg.locks {
        let writes = holds.iter().flat_map(|h| &h.writes);
        let count = |o: WriteOutcome| writes.clone().filter(|w| w.outcome == o).count();
        report.notes.push(format!(
            "locks: {} holds, {} lock calls failed or timed out; fenced writes {} written, {} guard failed, {} unknown",
            holds.len(),
            *lock_log.failed_locks.lock().expect("lock log lock"),
            count(WriteOutcome::Written),
            count(WriteOutcome::GuardFailed),
            count(WriteOutcome::Unknown)
        ));
        report
            .failures
            .extend(check_fencing(&holds, &report.committed));
    }
    report.lock_holds = holds;
    report.simulated_secs = started.elapsed().as_secs_f64();
    report.tick_ns = recorder.tick_times(timeline.start());
    report.end_ns = u64::try_from(timeline.start().elapsed().as_nanos()).unwrap_or(u64::MAX);
    report.trace_hash = trace_hash(&report);
    report
}

/// Waits for background tasks that end once `stop` is set; one still
/// running after 30 s is a harness bug (`unbounded` without a deadline).
async fn join_stopped<T>(tasks: Vec<madsim::task::JoinHandle<T>>, what: &str, unbounded: &str) {
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .is_err()
        {
            panic!("{what} did not stop within 30 s ({unbounded} without deadline?)");
        }
    }
}

/// After healing, a client must get a write and a linearizable read through
/// (retrying for up to 30 s).
async fn final_write_and_read(c: &mut Client) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let key = "final".to_owned();
    let (mut wrote, mut read) = (false, false);
    while tokio::time::Instant::now() < deadline && !(wrote && read) {
        if !wrote {
            let value = c.next_value();
            wrote = matches!(
                c.call(Request::put(&key, &value), false).await,
                Some(Response::Put { .. })
            );
        } else {
            read = matches!(
                c.call(Request::get(&key), false).await,
                Some(Response::Get { .. })
            );
        }
        if !(wrote && read) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    wrote && read
}

/// One member's final state.
struct MemberFinal {
    url: String,
    revision: i64,
    compact_revision: i64,
    hash: u32,
    /// Status's raft applied index.
    applied: u64,
    kvs: BTreeMap<String, String>,
}

type FinalState = Vec<MemberFinal>;

/// Waits until every member reports the same revision and applied index,
/// then compares hashes.
async fn converge(urls: Vec<String>) -> (FinalState, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut failures = Vec::new();
    loop {
        let mut states = Vec::new();
        for url in &urls {
            match tokio::time::timeout(Duration::from_secs(2), member_state(url)).await {
                Ok(Ok(s)) => states.push(s),
                _ => break,
            }
        }
        let complete = states.len() == urls.len();
        let same_rev = complete
            && states
                .windows(2)
                .all(|w| w[0].revision == w[1].revision && w[0].applied == w[1].applied);
        if same_rev {
            let same = states.windows(2).all(|w| {
                w[0].compact_revision == w[1].compact_revision
                    && w[0].hash == w[1].hash
                    && w[0].kvs == w[1].kvs
            });
            if !same {
                let summary: Vec<String> = states
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: rev {} compact {} hash {:08x}",
                            s.url, s.revision, s.compact_revision, s.hash
                        )
                    })
                    .collect();
                failures.push(format!(
                    "members disagree at equal revision: {}",
                    summary.join("; ")
                ));
            }
            return (states, failures);
        }
        if tokio::time::Instant::now() >= deadline {
            failures.push(format!(
                "members did not converge within 30 s: (revision, applied index) {:?}",
                states
                    .iter()
                    .map(|s| (s.url.clone(), s.revision, s.applied))
                    .collect::<Vec<_>>()
            ));
            return (states, failures);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn member_state(url: &str) -> Result<MemberFinal, tonic::Status> {
    let mut m = MaintenanceClient::connect(url.to_owned())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let applied = m
        .status(StatusRequest {})
        .await?
        .into_inner()
        .raft_applied_index;
    let h = m.hash_kv(HashKvRequest { revision: 0 }).await?.into_inner();
    let mut kv = KvClient::connect(url.to_owned())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let all = kv
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            serializable: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let rev = all.header.as_ref().map_or(0, |h| h.revision);
    let hrev = h.header.as_ref().map_or(0, |h| h.revision);
    // An entry applied between the reads — a periodic auto-compaction,
    // which changes no revision — must not pair one applied index with
    // another's state (kv3 seed 118: a compaction applied on one member
    // between its Status and its HashKV read as "members disagree").
    let applied_after = m
        .status(StatusRequest {})
        .await?
        .into_inner()
        .raft_applied_index;
    if rev != hrev || applied_after != applied {
        return Err(tonic::Status::unavailable("member still applying"));
    }
    let kvs = all
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    Ok(MemberFinal {
        url: url.to_owned(),
        revision: rev,
        compact_revision: h.compact_revision,
        hash: h.hash,
        applied,
        kvs,
    })
}

/// The current members at the end: id → (name, learner).
fn final_members(cluster: &SimCluster) -> BTreeMap<u64, (String, bool)> {
    cluster
        .current()
        .into_iter()
        .map(|i| {
            let m = &cluster.members[i];
            (m.id, (m.name.clone(), m.learner))
        })
        .collect()
}

/// Every member's own (serializable) member list names exactly the current
/// members, and the last configuration the oracle saw applied has them as
/// its voters and learners.
async fn check_member_lists(
    urls: Vec<String>,
    expected: BTreeMap<u64, (String, bool)>,
    removed: BTreeMap<u64, String>,
    conf: Option<(u64, cairn::server::ConfAfter)>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let want: BTreeMap<u64, bool> = expected.iter().map(|(id, (_, l))| (*id, *l)).collect();
    let name = |id: &u64| {
        expected
            .get(id)
            .map(|(n, _)| n.clone())
            .or_else(|| removed.get(id).map(|n| format!("removed {n}")))
            .unwrap_or_else(|| format!("unknown {id:x}"))
    };
    for url in &urls {
        let mut list = Err(String::new());
        for _ in 0..10 {
            list = membership::member_list(url, false).await;
            if list.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("final member list: {url} did not answer: {e}"));
                continue;
            }
        };
        let got: BTreeMap<u64, bool> = list.iter().map(|m| (m.id, m.is_learner)).collect();
        if got != want {
            let show = |m: &BTreeMap<u64, bool>| {
                m.iter()
                    .map(|(id, l)| format!("{}{}", name(id), if *l { " (learner)" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            failures.push(format!(
                "final member list of {url} is [{}], the cluster's members are [{}]",
                show(&got),
                show(&want)
            ));
        }
    }
    if let Some((index, conf)) = conf {
        let voters: Vec<u64> = want
            .iter()
            .filter(|(_, l)| !**l)
            .map(|(id, _)| *id)
            .collect();
        let learners: Vec<u64> = want
            .iter()
            .filter(|(_, l)| **l)
            .map(|(id, _)| *id)
            .collect();
        if conf.voters != voters || conf.learners != learners {
            failures.push(format!(
                "the Raft configuration after the last conf change (index {index}) is voters {:?} learners {:?}, but the members are voters {:?} learners {:?}",
                conf.voters.iter().map(&name).collect::<Vec<_>>(),
                conf.learners.iter().map(&name).collect::<Vec<_>>(),
                voters.iter().map(&name).collect::<Vec<_>>(),
                learners.iter().map(&name).collect::<Vec<_>>()
            ));
        }
    }
    failures
}

fn check(oracle: &Oracle, finals: FinalState, report: &mut RunReport) {
    for v in oracle.violations() {
        report.failures.push(format!("raft oracle: {v}"));
    }
    for v in oracle.conf_change_violations() {
        report.failures.push(format!("raft oracle: {v}"));
    }
    check_rest(finals, report)
}

/// Linearizability of the report's history, against the order the raft
/// oracle saw committed: every write placed at its revision, changes from
/// outside the history (lease expiries, the lock service) replayed where
/// they committed. Run by the child after the simulation, outside it (its
/// clock is then the wall clock, for the timing in the note; the verdict is
/// a function of the history, which the trace hash covers).
pub fn check_linearizability(cfg: &RunConfig, report: &mut RunReport) {
    if !cfg.check_linearizability {
        report
            .notes
            .push("linearizability: NOT CHECKED in this scenario".into());
        return;
    }
    let options = CheckOptions {
        max_steps: cfg.check_steps,
    };
    let started = std::time::Instant::now();
    let result = check_linearizable_against(&report.history, &report.committed, &options);
    let ms = started.elapsed().as_millis();
    match result {
        CheckResult::Ok => report
            .notes
            .push(format!("linearizability: ok (checked in {ms} ms wall)")),
        CheckResult::Inconclusive { reason } => report.notes.push(format!(
            "linearizability: NOT CHECKED (inconclusive: {reason}; checked in {ms} ms wall)"
        )),
        other => report.failures.push(format!("linearizability: {other}")),
    }
}

/// Every check but linearizability.
fn check_rest(finals: FinalState, report: &mut RunReport) {
    let committed = &report.committed;
    match check_serializable_reads(&report.serializable, committed) {
        Ok(v) if v.is_empty() => {}
        Ok(v) => report
            .failures
            .extend(v.iter().take(10).map(|r| format!("serializable read: {r}"))),
        Err(e) => report.failures.push(format!(
            "oracle history incomplete (serializable check): {e}"
        )),
    }
    let mut all_ops = report.history.clone();
    all_ops.extend(report.serializable.iter().cloned());
    let acked = acknowledged_writes(&all_ops);
    let mut possible = possibly_written_values(&all_ops);
    // The lock service's keys and the fenced resource have writers outside
    // the recorded history (`checker::fencing` checks them): their values
    // are not invented.
    possible.extend(
        committed
            .changes
            .iter()
            .filter(|c| c.key.starts_with(LOCK_NAME) || c.key == FENCED_KEY)
            .filter_map(|c| c.value.clone()),
    );
    match check_durability(&acked, &possible, committed) {
        Ok(v) if v.is_empty() => {}
        Ok(v) => report
            .failures
            .extend(v.iter().take(10).map(|d| format!("durability: {d}"))),
        Err(e) => report
            .failures
            .push(format!("oracle history incomplete (durability check): {e}")),
    }
    let final_state = final_values(committed);
    report
        .failures
        .extend(check_lists(&report.history, &final_state));
    if let Some(f) = finals.first() {
        // The state as of the revision it was read at: changes may commit
        // after the read (a lease expiring once the members had converged:
        // lease3 seeds 2069 and 2316, CI_SWARM_REGRESSION_SEEDS).
        let read_at = Revision(u64::try_from(f.revision).unwrap_or(0));
        let expected = final_values_up_to(committed, read_at);
        if f.kvs != expected {
            report.failures.push(format!(
                "final state read from {} at revision {} differs from the applied history: cluster {:?}, history {expected:?}",
                f.url, f.revision, f.kvs
            ));
        }
    }
}

/// The last value of every live key in a committed history.
fn final_values(h: &CommittedHistory) -> BTreeMap<String, String> {
    final_values_up_to(h, Revision(u64::MAX))
}

/// The last value of every key live at revision `at`.
fn final_values_up_to(h: &CommittedHistory, at: Revision) -> BTreeMap<String, String> {
    let mut last: BTreeMap<String, (Revision, Option<String>)> = BTreeMap::new();
    for c in h.changes.iter().filter(|c| c.revision <= at) {
        let e = last.entry(c.key.clone()).or_insert((Revision(0), None));
        if c.revision >= e.0 {
            *e = (c.revision, c.value.clone());
        }
    }
    last.into_iter()
        .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
        .collect()
}

/// The list-append checks: see the module header.
fn check_lists(history: &[Operation], finals: &BTreeMap<String, String>) -> Vec<String> {
    let mut failures = Vec::new();
    let tokens = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };
    let final_lists: BTreeMap<String, Vec<String>> = (0..LIST_KEYS)
        .map(|i| {
            let k = format!("l{i}");
            let list = finals.get(&k).map(|v| tokens(v)).unwrap_or_default();
            (k, list)
        })
        .collect();
    // Each token in each final list once.
    for (k, list) in &final_lists {
        let mut seen = BTreeSet::new();
        for t in list {
            if !seen.insert(t) {
                failures.push(format!("list-append: {t} appended twice to {k}"));
            }
        }
    }
    for op in history {
        match (&op.input, &op.output) {
            // Every list read is a prefix of the final list.
            (Request::Get { key, revision }, Outcome::Ok(Response::Get { kv: Some(kv), .. }))
                if key.starts_with('l') && revision.0 == 0 =>
            {
                let read = tokens(&kv.value);
                let fin = &final_lists[key];
                if !fin.starts_with(&read) {
                    failures.push(format!(
                        "list-append: read of {key} = {:?} is not a prefix of the final {:?}",
                        read, fin
                    ));
                }
            }
            // An acknowledged append is in both lists; a failed one in neither.
            (Request::Txn(t), outcome) if is_append(t) => {
                let token = append_token(t);
                let present: Vec<bool> = t
                    .success
                    .iter()
                    .map(|o| match o {
                        TxnOp::Put { key, .. } => final_lists[key].contains(&token),
                        _ => false,
                    })
                    .collect();
                let all = present.iter().all(|p| *p);
                let none = present.iter().all(|p| !*p);
                match outcome {
                    Outcome::Ok(Response::Txn {
                        succeeded: true, ..
                    }) if !all => failures.push(format!(
                        "list-append: acknowledged append {token} missing from a final list"
                    )),
                    Outcome::Ok(Response::Txn {
                        succeeded: false, ..
                    })
                    | Outcome::Failed
                        if !none =>
                    {
                        failures.push(format!(
                            "list-append: append {token} that did not succeed is in a final list"
                        ))
                    }
                    Outcome::Unknown if !all && !none => failures.push(format!(
                        "list-append: append {token} applied to one list only"
                    )),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    failures.truncate(10);
    failures
}

fn is_append(t: &crate::checker::Txn) -> bool {
    t.failure.is_empty()
        && !t.success.is_empty()
        && t.success
            .iter()
            .all(|o| matches!(o, TxnOp::Put { key, .. } if key.starts_with('l')))
}

fn append_token(t: &crate::checker::Txn) -> String {
    match &t.success[0] {
        TxnOp::Put { value, .. } => value.rsplit(' ').next().unwrap_or("").to_owned(),
        _ => String::new(),
    }
}

fn trace_hash(r: &RunReport) -> u64 {
    let mut h = DefaultHasher::new();
    r.history.hash(&mut h);
    r.serializable.hash(&mut h);
    r.timeline.hash(&mut h);
    r.committed.changes.hash(&mut h);
    r.failures.hash(&mut h);
    r.watch_segments.hash(&mut h);
    r.lease_lives.hash(&mut h);
    r.lock_holds.hash(&mut h);
    r.simulated_secs.to_bits().hash(&mut h);
    h.finish()
}
