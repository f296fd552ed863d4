//! The fault scheduler: every choice drawn from the run's seed.
//!
//! Faults (member ↔ member network unless noted; clients always reach every
//! member, so a client may talk to a member cut off from the rest):
//! - partitions: random halves, the leader isolated, a bridge (two sides
//!   that share one member: overlapping majorities), one-way links;
//! - kill and restart, losing unsynced writes (sometimes tearing the last
//!   unsynced batch);
//! - pause and resume (a stopped process);
//! - packet loss and latency spikes (the whole network, clients included);
//! - clock drift changes (±5 %) and backward offset jumps per member (a
//!   monotonic clock never jumps forward);
//! - disk: a failed fsync (the member must halt; the scheduler restarts it
//!   later, as an operator would), slow fsyncs;
//! - buggify points inside the server (delayed apply, early log compaction),
//!   switched on for part of the run.
//! Every fault is written to the timeline with its simulated time, and logged
//! (target `cairn_sim::fault`) beside the members' logs.
//! `heal` undoes everything, so the final phase runs on a healthy cluster.
//! Tests: `tests/sim.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_runtime::Skew;
use madsim::net::NetSim;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::cluster::SimCluster;
use super::oracle::Buggify;

pub struct FaultScheduler {
    rng: StdRng,
    /// Simulated time each down member comes back (killed, paused, halted).
    comeback: BTreeMap<usize, tokio::time::Instant>,
    start: tokio::time::Instant,
    pub timeline: Vec<String>,
    /// Faults allowed (the deliberately weak schedule used to compare).
    pub kinds: Vec<FaultKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Partition,
    IsolateLeader,
    Bridge,
    OneWay,
    Kill,
    Pause,
    NetworkDegrade,
    Clock,
    DiskFailSync,
    DiskSlow,
    Buggify,
    Heal,
}

pub const ALL_FAULTS: &[FaultKind] = &[
    FaultKind::Partition,
    FaultKind::IsolateLeader,
    FaultKind::Bridge,
    FaultKind::OneWay,
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::NetworkDegrade,
    FaultKind::Clock,
    FaultKind::DiskFailSync,
    FaultKind::DiskSlow,
    FaultKind::Buggify,
    FaultKind::Heal,
];

impl FaultScheduler {
    pub fn new(rng: StdRng) -> FaultScheduler {
        FaultScheduler {
            rng,
            comeback: BTreeMap::new(),
            start: tokio::time::Instant::now(),
            timeline: Vec::new(),
            kinds: ALL_FAULTS.to_vec(),
        }
    }

    fn log(&mut self, what: String) {
        let t = self.start.elapsed().as_secs_f64();
        // Also in the member logs (`CAIRN_SIM_LOG=info`), so a run that
        // panics — and leaves no failure file — still shows its faults.
        tracing::info!(target: "cairn_sim::fault", "{what}");
        self.timeline.push(format!("{t:9.3}s  {what}"));
    }

    /// Injects faults until `duration` of simulated time has passed.
    pub async fn run(&mut self, cluster: &mut SimCluster, duration: Duration) {
        let end = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < end {
            let wait = self.rng.random_range(300..2500);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.bring_back_due(cluster);
            let kind = *self
                .kinds
                .choose(&mut self.rng)
                .expect("at least one fault kind");
            self.inject(cluster, kind);
        }
    }

    fn bring_back_due(&mut self, cluster: &mut SimCluster) {
        let now = tokio::time::Instant::now();
        let due: Vec<usize> = self
            .comeback
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            self.comeback.remove(&i);
            let m = &cluster.members[i];
            if m.paused {
                cluster.resume(i);
                self.log(format!("resume m{}", i + 1));
            } else if !m.alive || m.halted {
                cluster.restart(i);
                self.log(format!("restart m{}", i + 1));
            }
        }
    }

    fn member_nodes(cluster: &SimCluster) -> Vec<madsim::task::NodeId> {
        (0..cluster.members.len())
            .map(|i| cluster.node_id(i))
            .collect()
    }

    fn cut(cluster: &SimCluster, a: &[usize], b: &[usize]) {
        let net = NetSim::current();
        for &x in a {
            for &y in b {
                net.clog_link(cluster.node_id(x), cluster.node_id(y));
                net.clog_link(cluster.node_id(y), cluster.node_id(x));
            }
        }
    }

    fn heal_network(cluster: &SimCluster) {
        let net = NetSim::current();
        let nodes = Self::member_nodes(cluster);
        for &x in &nodes {
            for &y in &nodes {
                if x != y {
                    net.unclog_link(x, y);
                }
            }
        }
        net.update_config(|c| *c = madsim::net::Config::default());
    }

    fn random_member(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    fn inject(&mut self, cluster: &mut SimCluster, kind: FaultKind) {
        let n = cluster.members.len();
        match kind {
            FaultKind::Partition => {
                let mut ids: Vec<usize> = (0..n).collect();
                ids.shuffle(&mut self.rng);
                let k = self.rng.random_range(1..n);
                let (a, b) = ids.split_at(k);
                Self::heal_network(cluster);
                Self::cut(cluster, a, b);
                self.log(format!("partition {} | {}", names(a), names(b)));
            }
            FaultKind::IsolateLeader => {
                let Some(leader) = cluster
                    .oracle
                    .latest_leader()
                    .and_then(|(_, id)| cluster.index_of_member_id(id))
                else {
                    return;
                };
                let others: Vec<usize> = (0..n).filter(|i| *i != leader).collect();
                Self::heal_network(cluster);
                Self::cut(cluster, &[leader], &others);
                self.log(format!("isolate leader m{}", leader + 1));
            }
            FaultKind::Bridge => {
                let mut ids: Vec<usize> = (0..n).collect();
                ids.shuffle(&mut self.rng);
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                Self::heal_network(cluster);
                Self::cut(cluster, a, b);
                self.log(format!(
                    "bridge: {} | {} joined only through m{}",
                    names(a),
                    names(b),
                    bridge + 1
                ));
            }
            FaultKind::OneWay => {
                let (x, y) = (self.random_member(n), self.random_member(n));
                if x != y {
                    NetSim::current().clog_link(cluster.node_id(x), cluster.node_id(y));
                    self.log(format!("one-way: m{} -> m{} dropped", x + 1, y + 1));
                }
            }
            FaultKind::Kill => {
                let i = self.random_member(n);
                if !cluster.members[i].alive {
                    return;
                }
                let lose = self.rng.random_bool(0.8);
                let tear = lose && self.rng.random_bool(0.3);
                cluster.kill(i, lose, tear);
                let back = self.rng.random_range(500..5000);
                self.comeback
                    .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
                self.log(format!(
                    "kill m{} (lose unsynced: {lose}, torn batch: {tear}), back in {back} ms",
                    i + 1
                ));
            }
            FaultKind::Pause => {
                let i = self.random_member(n);
                if !cluster.members[i].alive || cluster.members[i].paused {
                    return;
                }
                cluster.pause(i);
                let back = self.rng.random_range(300..4000);
                self.comeback
                    .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
                self.log(format!("pause m{} for {back} ms", i + 1));
            }
            FaultKind::NetworkDegrade => {
                let loss = [0.0, 0.02, 0.1][self.rng.random_range(0..3)];
                let max_ms = [10, 100, 400][self.rng.random_range(0..3)];
                NetSim::current().update_config(|c| {
                    c.packet_loss_rate = loss;
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(max_ms);
                });
                self.log(format!(
                    "network: packet loss {loss}, latency up to {max_ms} ms"
                ));
            }
            FaultKind::Clock => {
                let i = self.random_member(n);
                // A monotonic clock never jumps forward (a forward jump would
                // be time really passing); backward jumps stall it instead.
                let before = cluster.members[i].clock.skew();
                let skew = Skew {
                    offset_nanos: before.offset_nanos - self.rng.random_range(0..2_000_000_000i64),
                    drift_ppm: self.rng.random_range(-50_000i64..50_000),
                };
                cluster.set_skew(i, skew);
                self.log(format!(
                    "clock m{}: offset {} ms, drift {} ppm",
                    i + 1,
                    skew.offset_nanos / 1_000_000,
                    skew.drift_ppm
                ));
            }
            FaultKind::DiskFailSync => {
                let i = self.random_member(n);
                if !cluster.members[i].alive || cluster.members[i].halted {
                    return;
                }
                cluster.members[i].disk.fail_next_sync();
                cluster.members[i].halted = true;
                let back = self.rng.random_range(1000..5000);
                self.comeback
                    .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
                self.log(format!(
                    "disk m{}: next fsync fails (EIO), restart in {back} ms",
                    i + 1
                ));
            }
            FaultKind::DiskSlow => {
                let i = self.random_member(n);
                let ms = self.rng.random_range(5..80);
                cluster.members[i]
                    .disk
                    .set_sync_latency(Duration::from_millis(ms));
                self.log(format!("disk m{}: fsync takes {ms} ms", i + 1));
            }
            FaultKind::Buggify => {
                let on = self.rng.random_bool(0.6);
                let b = if on {
                    Buggify {
                        delay_apply: 0.05,
                        compact_early: 0.02,
                    }
                } else {
                    Buggify::default()
                };
                cluster.oracle.set_buggify(b);
                self.log(format!("buggify {}", if on { "on" } else { "off" }));
            }
            FaultKind::Heal => {
                Self::heal_network(cluster);
                self.log("heal network".into());
            }
        }
    }

    /// Ends every fault: network healed, every member running, buggify off.
    pub fn heal(&mut self, cluster: &mut SimCluster) {
        Self::heal_network(cluster);
        cluster.oracle.set_buggify(Buggify::default());
        for i in 0..cluster.members.len() {
            cluster.members[i].disk.clear_faults();
            let m = &cluster.members[i];
            if m.paused {
                cluster.resume(i);
            }
            let m = &cluster.members[i];
            if !m.alive || m.halted {
                cluster.restart(i);
            }
            cluster.members[i].disk.clear_faults();
        }
        self.comeback.clear();
        self.log("heal everything: network, paused, killed and halted members".into());
    }
}

fn names(ids: &[usize]) -> String {
    let v: Vec<String> = ids.iter().map(|i| format!("m{}", i + 1)).collect();
    format!("{{{}}}", v.join(","))
}
