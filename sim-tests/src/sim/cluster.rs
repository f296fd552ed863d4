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
//! Tests: `tests/sim.rs`.

use std::net::IpAddr;
use std::sync::Arc;

use cairn::process::{self, ProcessOptions};
use cairn_runtime::{SimDisk, SimStorage, Skew, SkewedClock, TokioClock};
use madsim::runtime::{Handle, NodeHandle};

use super::oracle::Oracle;

/// How the members are configured.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub members: usize,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Small, so snapshots and log compaction happen in every run.
    pub snapshot_count: u64,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            members: 3,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 300,
        }
    }
}

pub struct SimMember {
    pub name: String,
    pub ip: IpAddr,
    pub node: NodeHandle,
    pub disk: SimDisk,
    pub clock: SkewedClock,
    /// The member's client URL (`http://ip:2379`).
    pub client_url: String,
    pub alive: bool,
    pub paused: bool,
    /// A sync failure was injected: the member has halted until restarted.
    pub halted: bool,
}

pub struct SimCluster {
    pub members: Vec<SimMember>,
    pub oracle: Arc<Oracle>,
    pub spec: ClusterSpec,
    handle: Handle,
}

pub fn member_ip(i: usize) -> IpAddr {
    format!("10.0.0.{}", i + 1).parse().expect("valid ip")
}

fn member_args(spec: &ClusterSpec, i: usize) -> Vec<String> {
    let initial: Vec<String> = (0..spec.members)
        .map(|j| format!("m{}=http://{}:2380", j + 1, member_ip(j)))
        .collect();
    let ip = member_ip(i);
    [
        "--name".to_owned(),
        format!("m{}", i + 1),
        "--data-dir".to_owned(),
        format!("/sim/m{}", i + 1),
        "--listen-client-urls".to_owned(),
        format!("http://{ip}:2379"),
        "--advertise-client-urls".to_owned(),
        format!("http://{ip}:2379"),
        "--listen-peer-urls".to_owned(),
        format!("http://{ip}:2380"),
        "--initial-advertise-peer-urls".to_owned(),
        format!("http://{ip}:2380"),
        "--initial-cluster".to_owned(),
        initial.join(","),
        "--initial-cluster-token".to_owned(),
        "sim".to_owned(),
        "--heartbeat-interval".to_owned(),
        spec.heartbeat_ms.to_string(),
        "--election-timeout".to_owned(),
        spec.election_ms.to_string(),
        "--snapshot-count".to_owned(),
        spec.snapshot_count.to_string(),
        // Frequent progress notifications, so watchers vouch for revisions.
        "--experimental-watch-progress-notify-interval".to_owned(),
        "1s".to_owned(),
    ]
    .into()
}

impl SimCluster {
    /// Builds and starts every member (call inside a madsim runtime).
    pub fn start(spec: ClusterSpec, oracle: Arc<Oracle>) -> SimCluster {
        let handle = Handle::current();
        let members = (0..spec.members)
            .map(|i| start_member(&handle, &spec, i, oracle.clone()))
            .collect();
        SimCluster {
            members,
            oracle,
            spec,
            handle,
        }
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn node_id(&self, i: usize) -> madsim::task::NodeId {
        self.members[i].node.id()
    }

    /// Index of the member with this Raft id.
    pub fn index_of_member_id(&self, id: u64) -> Option<usize> {
        (0..self.members.len()).find(|i| member_raft_id(&self.spec, *i) == id)
    }

    /// Process crash: the node stops at once; with `lose_unsynced` the disk
    /// also loses (or with `tear`, half-writes) what was not synced.
    pub fn kill(&mut self, i: usize, lose_unsynced: bool, tear: bool) {
        let m = &mut self.members[i];
        self.handle.kill(m.node.id());
        if lose_unsynced {
            m.disk.set_tear_on_crash(tear);
            m.disk.crash();
        }
        m.alive = false;
        m.paused = false;
    }

    /// Starts a killed (or halted) member again on its disk.
    pub fn restart(&mut self, i: usize) {
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

    pub fn pause(&mut self, i: usize) {
        let m = &mut self.members[i];
        if m.alive && !m.paused {
            self.handle.pause(m.node.id());
            m.paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
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

/// The Raft id a member gets (etcd's derivation from its peer URLs and token).
pub fn member_raft_id(spec: &ClusterSpec, i: usize) -> u64 {
    let args = member_args(spec, i);
    cairn::config::parse_args(args, &|_| None)
        .expect("the harness's member flags are valid")
        .member_id()
        .0
}

fn start_member(handle: &Handle, spec: &ClusterSpec, i: usize, oracle: Arc<Oracle>) -> SimMember {
    let ip = member_ip(i);
    let disk = SimDisk::new();
    // Every write must leave a state the member can restart from (any prefix
    // of the writes may survive a power loss): fail at the write that breaks
    // it, not at a later restart.
    let name = format!("m{}", i + 1);
    disk.set_write_check(Arc::new(move |view| {
        cairn::server::apply::check_restartable(view).map_err(|e| format!("member {name}: {e}"))
    }));
    let clock = SkewedClock::new(TokioClock::new());
    let args = member_args(spec, i);
    let (d, c) = (disk.clone(), clock.clone());
    let node = handle
        .create_node()
        .name(format!("m{}", i + 1))
        .ip(ip)
        .init(move || {
            let (disk, clock, args, oracle) = (d.clone(), c.clone(), args.clone(), oracle.clone());
            async move {
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
                    probe: Some(oracle as Arc<dyn cairn::server::Probe>),
                };
                if let Err(e) =
                    process::run(&config, Arc::new(storage), Arc::new(clock), options).await
                {
                    tracing::warn!("member stopped: {e}");
                }
            }
        })
        .build();
    SimMember {
        name: format!("m{}", i + 1),
        ip,
        node,
        disk,
        clock,
        client_url: format!("http://{ip}:2379"),
        alive: true,
        paused: false,
        halted: false,
    }
}
