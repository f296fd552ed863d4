//! The fault scheduler: every choice drawn from the run's seed.
//!
//! Faults (member ↔ member network unless noted; clients always reach every
//! member, so a client may talk to a member cut off from the rest):
//! - partitions: random halves, the leader isolated, a bridge (two sides
//!   that share one member: overlapping majorities), one-way links;
//! - kill and restart, losing unsynced writes (sometimes tearing the next
//!   unsynced batch; in swarm seeds keeping a random prefix of them first);
//! - pause and resume (a stopped process);
//! - packet loss and latency spikes (the whole network, clients included);
//! - clock drift changes (±5 %) and backward offset jumps per member (a
//!   monotonic clock never jumps forward);
//! - disk: a failed fsync (the member must halt; the scheduler restarts it
//!   later, as an operator would), slow fsyncs; in a share of the seeds
//!   (`flips`, a stream of its own) bytes of a stored record flip silently
//!   (`SimDisk::flip_stored_record`): block checksums must catch it, so the
//!   member that reads it stops instead of serving it, and the histories'
//!   checkers see no wrong value; the scheduler restarts the member later on
//!   a repaired disk (a good copy re-read, or the disk replaced);
//! - buggify points inside the server (delayed apply, early log compaction),
//!   switched on for part of the run.
//! Every fault is written to the timeline with its simulated time, and logged
//! (target `cairn_sim::fault`) beside the members' logs.
//! `heal` undoes everything, so the final phase runs on a healthy cluster.
//! Each fault the scheduler draws has a number (`#7`, its slot); a shrink
//! (`CAIRN_SIM_SKIP_FAULTS`, see `runner`) leaves chosen slots out: their
//! draws are made (so the later slots draw what they drew before, as far as
//! the cluster's state allows) but nothing is injected. Every fault that
//! fired is counted in the cluster's `Coverage` (`fault Kill`, …).
//! Faults hit only the current members (`SimCluster::current`): a member the
//! cluster removed is never killed, paused or restarted again, even if it
//! was down when it was removed.
//! Tests: `tests/sim.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runtime::Skew;
use madsim::net::NetSim;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::cluster::SimCluster;
use super::oracle::Buggify;

/// The run's timeline: faults and membership changes with their simulated
/// time, in the order they happened. Shared by the fault scheduler and the
/// membership driver; also logged (`CAIRN_SIM_LOG=info`), so a run that
/// panics — and leaves no failure file — still shows what led up to it.
#[derive(Clone)]
pub struct Timeline {
    start: tokio::time::Instant,
    entries: Arc<Mutex<Vec<String>>>,
    /// Also print each fault on stdout as it happens (`FAULT …`), for the
    /// shrinker: a run that panics leaves no failure file.
    echo: bool,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            start: tokio::time::Instant::now(),
            entries: Arc::default(),
            echo: std::env::var_os("CAIRN_SIM_ECHO_FAULTS").is_some(),
        }
    }

    fn push(&self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        self.entries
            .lock()
            .expect("timeline lock")
            .push(format!("{t:9.3}s  {what}"));
    }

    /// A fault (log target `cairn_sim::fault`).
    pub fn fault(&self, what: String) {
        tracing::info!(target: "cairn_sim::fault", "{what}");
        if self.echo {
            let t = self.start.elapsed().as_secs_f64();
            println!("FAULT {t:9.3}s  {what}");
        }
        self.push(&what);
    }

    /// A membership change (log target `cairn_sim::membership`).
    pub fn membership(&self, what: String) {
        tracing::info!(target: "cairn_sim::membership", "{what}");
        self.push(&format!("membership: {what}"));
    }

    /// A space event: an alarm seen or disarmed (log target `cairn_sim::space`).
    pub fn space(&self, what: String) {
        tracing::info!(target: "cairn_sim::space", "{what}");
        self.push(&format!("space: {what}"));
    }

    /// A complete snapshot save (log target `cairn_sim::backup`).
    pub fn backup(&self, what: String) {
        tracing::info!(target: "cairn_sim::backup", "{what}");
        self.push(&format!("backup: {what}"));
    }

    pub fn entries(&self) -> Vec<String> {
        self.entries.lock().expect("timeline lock").clone()
    }

    /// When the timeline began: the zero of its times (and of the report's
    /// time axis).
    pub fn start(&self) -> tokio::time::Instant {
        self.start
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

pub struct FaultScheduler {
    rng: StdRng,
    /// Simulated time each down member comes back (killed, paused, halted).
    comeback: BTreeMap<usize, tokio::time::Instant>,
    pub timeline: Timeline,
    /// Faults allowed (the deliberately weak schedule used to compare).
    pub kinds: Vec<FaultKind>,
    /// Flipped-record faults: their own random stream (so the draws of
    /// the other faults do not move), in a share of the seeds.
    pub flips: Option<StdRng>,
    /// How many records were flipped.
    pub flipped: usize,
    /// Milliseconds between faults, drawn in this range (the swarm's rate).
    pub interval_ms: (u64, u64),
    /// When set (the swarm's choice), a crash keeps a random prefix of the
    /// unsynced writes, drawn from this stream of its own.
    pub crash_prefix: Option<StdRng>,
    /// Slots (fault numbers, from 0) drawn but not injected (shrinking).
    pub skip: std::collections::BTreeSet<usize>,
    /// When set, only these slots are injected (shrinking).
    pub only: Option<std::collections::BTreeSet<usize>>,
    /// The next fault's slot.
    slot: usize,
}

/// The share of seeds whose disks flip bytes.
pub const FLIP_SEED_SHARE: f64 = 0.25;

/// Which seeds flip bytes, drawn from a stream of their own.
pub fn draw_flips(master_seed: u64) -> Option<StdRng> {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(master_seed ^ 0xbb67_ae85_84ca_a73b);
    rng.random_bool(FLIP_SEED_SHARE).then_some(rng)
}

pub use crate::swarm::{FaultKind, ALL_FAULTS};

impl FaultScheduler {
    pub fn new(rng: StdRng, timeline: Timeline) -> FaultScheduler {
        FaultScheduler {
            rng,
            comeback: BTreeMap::new(),
            timeline,
            kinds: ALL_FAULTS.to_vec(),
            flips: None,
            flipped: 0,
            interval_ms: (300, 2500),
            crash_prefix: None,
            skip: Default::default(),
            only: None,
            slot: 0,
        }
    }

    fn log(&mut self, what: String) {
        self.timeline.fault(what);
    }

    /// Injects faults until `duration` of simulated time has passed. The
    /// cluster is locked only while a fault is injected (the membership
    /// driver changes it too).
    pub async fn run(&mut self, cluster: &Mutex<SimCluster>, duration: Duration) {
        let end = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < end {
            let wait = self
                .rng
                .random_range(self.interval_ms.0..self.interval_ms.1);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let mut cluster = cluster.lock().expect("cluster lock");
            self.bring_back_due(&mut cluster);
            let kind = *self
                .kinds
                .choose(&mut self.rng)
                .expect("at least one fault kind");
            let slot = self.slot;
            self.slot += 1;
            let live =
                !self.skip.contains(&slot) && self.only.as_ref().is_none_or(|o| o.contains(&slot));
            if self.inject(&mut cluster, kind, slot, live) {
                cluster.coverage.add(&format!("fault {kind:?}"), 1);
            }
            self.maybe_flip(&mut cluster, slot, live);
        }
    }

    /// How many fault slots were drawn.
    pub fn slots(&self) -> usize {
        self.slot
    }

    /// Now and then (own stream), flips a stored record of a running member.
    fn maybe_flip(&mut self, cluster: &mut SimCluster, slot: usize, live: bool) {
        let Some(rng) = &mut self.flips else {
            return;
        };
        if !rng.random_bool(0.15) {
            return;
        }
        let running: Vec<usize> = cluster
            .current()
            .into_iter()
            .filter(|i| {
                let m = &cluster.members[*i];
                m.alive && !m.halted && !m.paused
            })
            .collect();
        let Some(&i) = running.choose(rng) else {
            return;
        };
        let cf = *["kv", "kv", "kv", "lease", "raft_log"]
            .choose(rng)
            .expect("families");
        // Mostly among the newest records (the current values reads and
        // txn compares meet), sometimes anywhere.
        let pick: u64 = if rng.random_bool(0.7) {
            rng.random_range(0..24)
        } else {
            rng.random()
        };
        let back = rng.random_range(1000..5000);
        if !live {
            return;
        }
        let Some(key) = cluster.members[i].disk.flip_stored_record(cf, pick) else {
            return;
        };
        cluster.coverage.add("fault record flipped", 1);
        // It stops once it reads the record (or not, if it never does);
        // either way the scheduler restarts it on a repaired disk.
        cluster.members[i].halted = true;
        self.flipped += 1;
        self.comeback
            .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
        self.log(format!(
            "#{slot} disk {}: bytes of {cf} record {} flipped; repaired and restarted in {back} ms",
            cluster.members[i].name,
            hex(&key)
        ));
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
            if m.removed {
                continue;
            }
            if m.paused {
                cluster.resume(i);
                self.log(format!("resume {}", cluster.members[i].name));
            } else if !m.alive || m.halted {
                cluster.members[i].disk.repair_flips();
                cluster.restart(i);
                self.log(format!("restart {}", cluster.members[i].name));
            }
        }
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
        cluster.coverage.set_split(false);
        let net = NetSim::current();
        let nodes = cluster.nodes();
        for &x in &nodes {
            for &y in &nodes {
                if x != y {
                    net.unclog_link(x, y);
                }
            }
        }
        net.update_config(|c| *c = madsim::net::Config::default());
    }

    /// One of `current` (one draw, as indexing `0..n` did before churn).
    fn random_member(&mut self, current: &[usize]) -> usize {
        current[self.rng.random_range(0..current.len())]
    }

    /// Injects one fault of `kind` (fault number `slot`); with `live` off,
    /// makes the same draws and injects nothing. Returns whether a fault
    /// was injected (a kill of a dead member, say, is not).
    fn inject(
        &mut self,
        cluster: &mut SimCluster,
        kind: FaultKind,
        slot: usize,
        live: bool,
    ) -> bool {
        let current = cluster.current();
        let n = current.len();
        if n < 2 {
            return false;
        }
        let what = match kind {
            FaultKind::Partition => {
                let mut ids = current.clone();
                ids.shuffle(&mut self.rng);
                let k = self.rng.random_range(1..n);
                let (a, b) = ids.split_at(k);
                if live {
                    Self::heal_network(cluster);
                    Self::cut(cluster, a, b);
                    cluster.coverage.set_split(true);
                }
                format!("partition {} | {}", names(cluster, a), names(cluster, b))
            }
            FaultKind::IsolateLeader => {
                let Some(leader) = cluster
                    .oracle
                    .latest_leader()
                    .and_then(|(_, id)| cluster.index_of_member_id(id))
                else {
                    return false;
                };
                let others: Vec<usize> = current.iter().copied().filter(|i| *i != leader).collect();
                if live {
                    Self::heal_network(cluster);
                    Self::cut(cluster, &[leader], &others);
                    cluster.coverage.set_split(true);
                }
                format!("isolate leader {}", cluster.members[leader].name)
            }
            FaultKind::Bridge => {
                let mut ids = current.clone();
                ids.shuffle(&mut self.rng);
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                if live {
                    Self::heal_network(cluster);
                    Self::cut(cluster, a, b);
                    cluster.coverage.set_split(true);
                }
                format!(
                    "bridge: {} | {} joined only through {}",
                    names(cluster, a),
                    names(cluster, b),
                    cluster.members[bridge].name
                )
            }
            FaultKind::OneWay => {
                let (x, y) = (self.random_member(&current), self.random_member(&current));
                if x == y {
                    return false;
                }
                if live {
                    NetSim::current().clog_link(cluster.node_id(x), cluster.node_id(y));
                    cluster.coverage.set_split(true);
                }
                format!(
                    "one-way: {} -> {} dropped",
                    cluster.members[x].name, cluster.members[y].name
                )
            }
            FaultKind::Kill => {
                let i = self.random_member(&current);
                if !cluster.members[i].alive {
                    return false;
                }
                let lose = self.rng.random_bool(0.8);
                let tear = lose && self.rng.random_bool(0.3);
                let keep = match (&mut self.crash_prefix, lose) {
                    (Some(rng), true) => Some(rng.random::<f64>()),
                    _ => None,
                };
                let kept = match live {
                    true => cluster.kill(i, lose, tear, keep),
                    false => 0,
                };
                let back = self.rng.random_range(500..5000);
                if live {
                    self.comeback
                        .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
                    if tear {
                        cluster
                            .coverage
                            .add("fault kill tearing the next unsynced batch", 1);
                    }
                    if kept > 0 {
                        cluster
                            .coverage
                            .add("fault kill keeping a prefix of unsynced writes", 1);
                    }
                }
                format!(
                    "kill {} (lose unsynced: {lose}, kept {kept} unsynced batches first, torn batch: {tear}), back in {back} ms",
                    cluster.members[i].name
                )
            }
            FaultKind::Pause => {
                let i = self.random_member(&current);
                if !cluster.members[i].alive || cluster.members[i].paused {
                    return false;
                }
                let back = if live {
                    cluster.pause(i);
                    let back = self.rng.random_range(300..4000);
                    self.comeback
                        .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
                    back
                } else {
                    self.rng.random_range(300..4000)
                };
                format!("pause {} for {back} ms", cluster.members[i].name)
            }
            FaultKind::NetworkDegrade => {
                let loss = [0.0, 0.02, 0.1][self.rng.random_range(0..3)];
                let max_ms = [10, 100, 400][self.rng.random_range(0..3)];
                if live {
                    NetSim::current().update_config(|c| {
                        c.packet_loss_rate = loss;
                        c.send_latency = Duration::from_millis(1)..Duration::from_millis(max_ms);
                    });
                }
                format!("network: packet loss {loss}, latency up to {max_ms} ms")
            }
            FaultKind::Clock => {
                let i = self.random_member(&current);
                // A monotonic clock never jumps forward (a forward jump would
                // be time really passing); backward jumps stall it instead.
                let before = cluster.members[i].clock.skew();
                let skew = Skew {
                    offset_nanos: before.offset_nanos - self.rng.random_range(0..2_000_000_000i64),
                    drift_ppm: self.rng.random_range(-50_000i64..50_000),
                };
                if live {
                    cluster.set_skew(i, skew);
                }
                format!(
                    "clock {}: offset {} ms, drift {} ppm",
                    cluster.members[i].name,
                    skew.offset_nanos / 1_000_000,
                    skew.drift_ppm
                )
            }
            FaultKind::DiskFailSync => {
                let i = self.random_member(&current);
                if !cluster.members[i].alive || cluster.members[i].halted {
                    return false;
                }
                let back = self.rng.random_range(1000..5000);
                if live {
                    cluster.members[i].disk.fail_next_sync();
                    cluster.members[i].halted = true;
                    self.comeback
                        .insert(i, tokio::time::Instant::now() + Duration::from_millis(back));
                }
                format!(
                    "disk {}: next fsync fails (EIO), restart in {back} ms",
                    cluster.members[i].name
                )
            }
            FaultKind::DiskSlow => {
                let i = self.random_member(&current);
                let ms = self.rng.random_range(5..80);
                if live {
                    cluster.members[i]
                        .disk
                        .set_sync_latency(Duration::from_millis(ms));
                }
                format!("disk {}: fsync takes {ms} ms", cluster.members[i].name)
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
                if live {
                    cluster.oracle.set_buggify(b);
                }
                format!("buggify {}", if on { "on" } else { "off" })
            }
            FaultKind::Heal => {
                if live {
                    Self::heal_network(cluster);
                }
                "heal network".to_string()
            }
        };
        if live {
            self.log(format!("#{slot} {what}"));
        } else {
            self.log(format!("#{slot} left out: {what}"));
        }
        live
    }

    /// Ends every fault: network healed, every member running, buggify off.
    pub fn heal(&mut self, cluster: &mut SimCluster) {
        Self::heal_network(cluster);
        cluster.oracle.set_buggify(Buggify::default());
        for i in cluster.current() {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn names(cluster: &SimCluster, ids: &[usize]) -> String {
    let v: Vec<String> = ids
        .iter()
        .map(|i| cluster.members[*i].name.clone())
        .collect();
    format!("{{{}}}", v.join(","))
}
