//! quickcheck properties of the Raft core over random schedules on the
//! `testkit` cluster: random ticks, Ready processing, delivery in random
//! order, drops, duplicates, partitions, restarts that lose unsynced writes
//! (also in the middle of a Ready whose early messages went out),
//! compactions, proposals, reads and leader transfers.
//!
//! Checked after every step of every schedule:
//! - `check_invariants()` of every running node (and one vote per term per
//!   node across restarts, by the testkit);
//! - election safety: at most one leader per term over the whole run;
//! - log matching: two logs with an entry of the same index and term are
//!   identical up to it;
//! - leader completeness: a leader elected in a term above every term seen
//!   when an entry was known committed holds that entry;
//! - state-machine safety: no two nodes apply different entries at one index;
//! - read linearizability: a ReadIndex answer is at least every commit index
//!   known when the read was requested.
//! And at the end, liveness: once the network heals and every node runs, a
//! leader is elected and a new proposal is applied within a bounded number of
//! ticks; nodes at the same applied index have the same application state.
//!
//! Case counts keep `cargo test -p cairn --lib raft` within seconds in debug.

use std::collections::BTreeMap;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::testkit::Cluster;
use super::{Config, Role};

#[derive(Debug, Clone)]
struct Schedule {
    seed: u64,
    nodes: u64,
    steps: usize,
    pre_vote: bool,
}

impl Arbitrary for Schedule {
    fn arbitrary(g: &mut Gen) -> Self {
        Schedule {
            seed: u64::arbitrary(g),
            nodes: 1 + u64::arbitrary(g) % 5,
            steps: 100 + usize::arbitrary(g) % 500,
            pre_vote: bool::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let s = self.clone();
        Box::new(
            (1..=4)
                .map(move |k| Schedule {
                    steps: s.steps * k / 5,
                    ..s.clone()
                })
                .filter(|x| x.steps >= 10),
        )
    }
}

/// The property one test checks (the invariants are checked by all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Property {
    ElectionSafety,
    LogMatching,
    LeaderCompleteness,
    StateMachineSafety,
    ReadIndexLinearizable,
    LivenessAfterHeal,
}

/// Everything observed so far, to check properties across the whole run.
struct Checker {
    property: Property,
    /// term -> the leader seen in it.
    leaders: BTreeMap<u64, u64>,
    /// index -> (term, data, highest term any node had when first seen applied).
    committed: BTreeMap<u64, (u64, Vec<u8>, u64)>,
    /// read ctx -> highest commit index known when it was requested.
    reads: BTreeMap<Vec<u8>, u64>,
    /// Per node: how many of its applied entries / read states were checked.
    applied_seen: BTreeMap<u64, usize>,
    reads_seen: BTreeMap<u64, usize>,
}

impl Checker {
    fn max_term(c: &Cluster) -> u64 {
        c.ids()
            .into_iter()
            .filter(|&id| c.is_up(id))
            .map(|id| c.node(id).hard_state().term)
            .max()
            .unwrap_or(0)
    }

    fn max_commit(c: &Cluster) -> u64 {
        c.ids()
            .into_iter()
            .filter(|&id| c.is_up(id))
            .map(|id| c.node(id).hard_state().commit)
            .max()
            .unwrap_or(0)
    }

    fn new(property: Property) -> Self {
        Checker {
            property,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            reads: BTreeMap::new(),
            applied_seen: BTreeMap::new(),
            reads_seen: BTreeMap::new(),
        }
    }

    fn observe(&mut self, c: &Cluster) {
        // Committed entries are recorded for every property (leader
        // completeness needs them); the other checks run for their own test.
        self.check_applied(c);
        match self.property {
            Property::ElectionSafety | Property::LeaderCompleteness => self.check_leaders(c),
            Property::LogMatching => self.check_log_matching(c),
            Property::ReadIndexLinearizable => self.check_reads(c),
            Property::StateMachineSafety | Property::LivenessAfterHeal => {}
        }
    }

    fn check_applied(&mut self, c: &Cluster) {
        let max_term = Self::max_term(c);
        for (&id, sn) in &c.nodes {
            let seen = self.applied_seen.entry(id).or_insert(0);
            if sn.app.applied.len() < *seen {
                *seen = 0; // a snapshot install reset the application
            }
            for e in &sn.app.applied[*seen..] {
                let prev =
                    self.committed
                        .entry(e.index)
                        .or_insert((e.term, e.data.clone(), max_term));
                assert!(
                    self.property != Property::StateMachineSafety || (prev.0 == e.term && prev.1 == e.data),
                    "state-machine safety: node {id} applied {}/{} {:?}, another node applied term {} {:?}",
                    e.term,
                    e.index,
                    e.data,
                    prev.0,
                    prev.1
                );
            }
            *seen = sn.app.applied.len();
        }
    }

    fn check_leaders(&mut self, c: &Cluster) {
        for id in c.ids().into_iter().filter(|&id| c.is_up(id)) {
            let n = c.node(id);
            if n.raft().role != Role::Leader {
                continue;
            }
            let term = n.raft().term;
            let first_time = !self.leaders.contains_key(&term);
            let prev = *self.leaders.entry(term).or_insert(id);
            assert_eq!(
                prev, id,
                "election safety: {prev} and {id} both led term {term}"
            );
            if first_time && self.property == Property::LeaderCompleteness {
                self.check_completeness(c, id, term);
            }
        }
    }

    fn check_completeness(&self, c: &Cluster, id: u64, term: u64) {
        let log = &c.node(id).raft().log;
        for (&index, (t, data, seen_term)) in &self.committed {
            if *seen_term >= term || index < log.first_index() {
                continue;
            }
            let e = log.entry(index);
            assert!(
                e.is_some_and(|e| e.term == *t && e.data == *data),
                "leader completeness: leader {id} of term {term} lacks committed {t}/{index}"
            );
        }
    }

    fn check_log_matching(&self, c: &Cluster) {
        let up: Vec<u64> = c.ids().into_iter().filter(|&id| c.is_up(id)).collect();
        for (k, &a) in up.iter().enumerate() {
            for &b in &up[k + 1..] {
                let (la, lb) = (&c.node(a).raft().log, &c.node(b).raft().log);
                let lo = la.first_index().max(lb.first_index());
                let hi = la.last_index().min(lb.last_index());
                let Some(top) = (lo..=hi).rev().find(|&i| la.term(i) == lb.term(i)) else {
                    continue;
                };
                for i in lo..=top {
                    assert_eq!(
                        la.entry(i),
                        lb.entry(i),
                        "log matching: nodes {a} and {b} differ at {i} below {top}"
                    );
                }
            }
        }
    }

    fn check_reads(&mut self, c: &Cluster) {
        for (&id, sn) in &c.nodes {
            let seen = self.reads_seen.entry(id).or_insert(0);
            for rs in &sn.app.read_states[*seen..] {
                if let Some(&floor) = self.reads.get(&rs.request_ctx) {
                    assert!(
                        rs.index >= floor,
                        "read {:?} answered at {} below commit {floor}",
                        rs.request_ctx,
                        rs.index
                    );
                }
            }
            *seen = sn.app.read_states.len();
        }
    }
}

fn config(pre_vote: bool) -> Config {
    Config {
        election_tick: 10,
        heartbeat_tick: 2,
        max_inflight_msgs: 4,
        max_size_per_msg: 64,
        pre_vote,
        check_quorum: pre_vote,
        ..Config::new(1)
    }
}

fn random_step(c: &mut Cluster, rng: &mut StdRng, checker: &mut Checker, step: usize) {
    let ids = c.ids();
    let id = ids[rng.random_range(0..ids.len())];
    let net = c.network.len();
    match rng.random_range(0..100) {
        0..30 => c.tick(id),
        30..55 => {
            c.handle_ready(id);
        }
        55..75 if net > 0 => {
            c.deliver_at(rng.random_range(0..net));
        }
        75..80 if net > 0 => {
            c.drop_at(rng.random_range(0..net));
        }
        80..83 if net > 0 => {
            let m = c.network[rng.random_range(0..net)].clone();
            c.deliver(m);
        }
        83..90 if c.is_up(id) => {
            let _ = c.node_mut(id).propose(format!("p{step}").into_bytes());
        }
        90..92 => {
            let (a, b): (Vec<u64>, Vec<u64>) = ids.iter().partition(|_| rng.random_bool(0.5));
            c.partition(&[a, b]);
        }
        92..94 => c.heal(),
        94..96 => c.restart(id),
        96 => {
            c.compact(id);
        }
        97 => c.send_then_crash(id),
        98 if c.is_up(id) => {
            let ctx = format!("r{step}").into_bytes();
            checker.reads.insert(ctx.clone(), Checker::max_commit(c));
            let _ = c.node_mut(id).read_index(ctx);
        }
        99 if c.is_up(id) => {
            let to = ids[rng.random_range(0..ids.len())];
            let _ = c.node_mut(id).transfer_leader(to);
        }
        _ => {}
    }
}

/// After healing: a leader is elected and a proposal applied within a bound.
fn check_liveness(c: &mut Cluster, checker: &mut Checker) -> Result<(), String> {
    c.heal();
    for id in c.ids() {
        c.recover(id);
    }
    let bound_ticks = 30 * c.config().election_tick;
    let data = b"final".to_vec();
    for tick in 0..bound_ticks {
        for id in c.ids() {
            c.tick(id);
        }
        c.stabilize();
        checker.observe(c);
        if let Some(leader) = c.leader() {
            let applied = c.nodes[&leader].app.applied.iter().any(|e| e.data == data);
            if applied {
                return check_convergence(c, tick);
            }
            let _ = c.node_mut(leader).propose(data.clone());
            c.stabilize();
            checker.observe(c);
        }
    }
    Err(format!(
        "no leader committed a proposal within {bound_ticks} ticks after healing"
    ))
}

/// Nodes at the same applied index have the same application state.
fn check_convergence(c: &mut Cluster, _tick: usize) -> Result<(), String> {
    for _ in 0..3 * c.config().heartbeat_tick {
        for id in c.ids() {
            c.tick(id);
        }
        c.stabilize();
    }
    let mut by_index: BTreeMap<u64, u64> = BTreeMap::new();
    for (id, sn) in &c.nodes {
        let prev = *by_index.entry(sn.app.applied_index).or_insert(sn.app.hash);
        if prev != sn.app.hash {
            return Err(format!(
                "node {id} diverged at applied index {}",
                sn.app.applied_index
            ));
        }
    }
    Ok(())
}

fn run_schedule(s: Schedule, property: Property) -> TestResult {
    let ids: Vec<u64> = (1..=s.nodes).collect();
    let mut c = Cluster::new(&ids, &ids, &[], 5, config(s.pre_vote), s.seed);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut checker = Checker::new(property);
    for step in 0..s.steps {
        random_step(&mut c, &mut rng, &mut checker, step);
        c.check_invariants();
        checker.observe(&c);
    }
    if property != Property::LivenessAfterHeal {
        return TestResult::passed();
    }
    match check_liveness(&mut c, &mut checker) {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(format!("{e} (schedule {s:?})")),
    }
}

/// Cases per property: six properties, so the whole module stays fast in debug.
const CASES: u64 = 25;

fn check(property: Property, prop: fn(Schedule) -> TestResult) {
    QuickCheck::new()
        .tests(CASES)
        .max_tests(CASES)
        .quickcheck(prop);
    // Plus a fixed sweep, so every run also covers the same schedules.
    for seed in 0..10u64 {
        let s = Schedule {
            seed,
            nodes: 1 + seed % 5,
            steps: 400,
            pre_vote: seed % 2 == 0,
        };
        assert!(
            !run_schedule(s.clone(), property).is_failure(),
            "{property:?} failed for {s:?}"
        );
    }
}

#[test]
fn election_safety() {
    check(Property::ElectionSafety, |s| {
        run_schedule(s, Property::ElectionSafety)
    });
}

#[test]
fn log_matching() {
    check(Property::LogMatching, |s| {
        run_schedule(s, Property::LogMatching)
    });
}

#[test]
fn leader_completeness() {
    check(Property::LeaderCompleteness, |s| {
        run_schedule(s, Property::LeaderCompleteness)
    });
}

#[test]
fn state_machine_safety() {
    check(Property::StateMachineSafety, |s| {
        run_schedule(s, Property::StateMachineSafety)
    });
}

#[test]
fn read_index_linearizable() {
    check(Property::ReadIndexLinearizable, |s| {
        run_schedule(s, Property::ReadIndexLinearizable)
    });
}

#[test]
fn liveness_after_heal() {
    check(Property::LivenessAfterHeal, |s| {
        run_schedule(s, Property::LivenessAfterHeal)
    });
}
