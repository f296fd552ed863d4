//! The nemesis: faults drawn from the run's seed, one at a time, each held a
//! few seconds then healed, every one logged with wall-clock and run times.
//! Kinds (`--nemesis`, comma-separated, or `all`) are drawn in rounds: each
//! round every kind once, in an order the seed shuffles.
//! - `kill`: kill -9 a member (the leader half the time), restart it on heal;
//! - `pause`: SIGSTOP a member (the leader half the time), SIGCONT on heal;
//! - `partition`: random halves, an isolated leader, a bridge (two sides
//!   that do not hear each other, one member hearing both), or one-way (a
//!   member hears no one; the others still hear it) — nftables rules inside
//!   the members' namespaces;
//! - `net`: a slow, lossy link: delay / jitter / reorder / duplicate / loss
//!   on one or two members' outgoing packets, by netem where the kernel has
//!   it, else by the harness's user-space wire (`wire`), plus 20 % random
//!   drops between members by nftables;
//! - `clock`: one member's clock jumps by ±1–60 s (libfaketime, see
//!   `cluster`), back to true time on heal;
//! - `lose`: kill -9 a member and drop every write its data directory's
//!   file system (`lazyfs`) holds unsynced, as a power loss would; restart
//!   it on heal;
//! - `member`: membership churn through the Cluster API: remove a member
//!   (the leader half the time; a majority of the original members always
//!   stays), kill it and wipe its data; on heal add it back — as a learner
//!   then promoted once in sync, or straight as a voter — and start it
//!   empty with `--initial-cluster-state existing`.
//!
//! Tests: `tests` below (the schedule is the seed's); runs in `jepsen/smoke.sh`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::cluster::Cluster;
use crate::net::Net;

pub const KINDS: [&str; 7] = [
    "kill",
    "pause",
    "partition",
    "net",
    "clock",
    "lose",
    "member",
];

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultLog {
    pub kind: &'static str,
    pub detail: String,
    pub members: Vec<usize>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub wall_start: String,
    pub wall_end: String,
    /// `clock`: the offset applied, in seconds (the lease check allows for it).
    pub offset_s: Option<i64>,
}

impl FaultLog {
    /// The fault as the HTML report draws it.
    pub fn span(&self) -> cairn_check::report::FaultSpan {
        cairn_check::report::FaultSpan {
            kind: self.kind.to_owned(),
            detail: self.detail.clone(),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            start: self.wall_start.clone(),
            end: self.wall_end.clone(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        json!({"fault": {
            "kind": self.kind,
            "detail": self.detail,
            "members": self.members.iter().map(|m| format!("n{}", m + 1)).collect::<Vec<_>>(),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "wall_start": self.wall_start,
            "wall_end": self.wall_end,
            "offset_s": self.offset_s,
        }})
    }
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn wall_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// What the nemesis will do next: drawn from the seed alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: &'static str,
    /// Which variant (partition shape, leader or random victim, …).
    pub variant: u32,
    pub hold: Duration,
    pub rest: Duration,
}

pub struct Nemesis {
    rng: SmallRng,
    kinds: Vec<&'static str>,
    /// What is left of the current round.
    round: Vec<&'static str>,
    pub log: Vec<FaultLog>,
    /// Members the current fault touches, for heal.
    active: Option<Active>,
}

struct Active {
    kind: &'static str,
    variant: u32,
    offset_s: Option<i64>,
    members: Vec<usize>,
    detail: String,
    start_ns: u64,
    wall_start: String,
}

impl Nemesis {
    pub fn new(seed: u64, kinds: Vec<&'static str>) -> Nemesis {
        Nemesis {
            rng: SmallRng::seed_from_u64(seed ^ 0x6e656d),
            kinds,
            round: Vec::new(),
            log: Vec::new(),
            active: None,
        }
    }

    /// The next step of the schedule.
    pub fn next_step(&mut self) -> Option<Step> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.round.shuffle(&mut self.rng);
        }
        let kind = self.round.pop()?;
        Some(Step {
            kind,
            variant: self.rng.random_range(0..4),
            hold: Duration::from_millis(self.rng.random_range(2_000..6_000)),
            rest: Duration::from_millis(self.rng.random_range(1_000..3_000)),
        })
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// Applies `step`; `leader` is the current leader if known.
    pub async fn apply(
        &mut self,
        step: &Step,
        cluster: &mut Cluster,
        net: &Net,
        leader: Option<usize>,
        now_ns: u64,
    ) -> Result<(), String> {
        let n = cluster.members.len();
        let victim = match (step.variant % 2, leader) {
            (0, Some(l)) => l,
            _ => self.pick(n),
        };
        let who = |v: usize| {
            if Some(v) == leader {
                format!("n{} (leader)", v + 1)
            } else {
                format!("n{}", v + 1)
            }
        };
        let mut offset_s = None;
        let (members, detail) = match step.kind {
            "kill" => {
                cluster.kill(victim).await?;
                (vec![victim], format!("kill -9 {}", who(victim)))
            }
            "lose" => {
                let (bytes, files) = cluster.crash_losing_writes(victim).await?;
                (
                    vec![victim],
                    format!(
                        "kill -9 {} and drop its unsynced writes ({bytes} bytes in {files} files)",
                        who(victim)
                    ),
                )
            }
            "member" => {
                let what = cluster.remove_member(victim).await?;
                (vec![victim], format!("member {}: {what}", who(victim)))
            }
            "pause" => {
                cluster.pause(victim)?;
                (vec![victim], format!("SIGSTOP {}", who(victim)))
            }
            "partition" => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let (shape, cut): (&str, Vec<(usize, usize)>) = match step.variant {
                    0 => {
                        let (a, b) = order.split_at(n / 2);
                        ("halves", both_ways(a, b))
                    }
                    1 => {
                        let l = leader.unwrap_or(order[0]);
                        let rest: Vec<usize> = (0..n).filter(|m| *m != l).collect();
                        ("isolated leader", both_ways(&[l], &rest))
                    }
                    2 => {
                        let rest = &order[1..];
                        let (a, b) = rest.split_at(rest.len() / 2);
                        ("bridge", both_ways(a, b))
                    }
                    _ => {
                        let v = order[0];
                        let cut = (0..n).filter(|m| *m != v).map(|m| (v, m)).collect();
                        ("one-way", cut)
                    }
                };
                for (at, from) in &cut {
                    net.drop_from(*at, *from)?;
                }
                let mut touched: Vec<usize> = cut.iter().map(|c| c.0).collect();
                touched.sort_unstable();
                touched.dedup();
                let pairs: Vec<String> = cut
                    .iter()
                    .map(|(a, f)| format!("n{}<-n{}", a + 1, f + 1))
                    .collect();
                (
                    touched,
                    format!("partition {shape}: dropped {}", pairs.join(" ")),
                )
            }
            "net" => {
                let mut slowed = vec![victim];
                if step.variant >= 2 {
                    slowed.push((victim + 1) % n);
                }
                let mut how = Vec::new();
                for m in &slowed {
                    let delay = self.rng.random_range(50..300);
                    let q = net.slow(*m, delay, self.rng.random())?;
                    how.push(format!("n{} {q} {delay}ms", m + 1));
                }
                for m in 0..n {
                    net.lossy(m, 20)?;
                }
                (
                    (0..n).collect(),
                    format!("slow link {}; 20% loss between members", how.join(", ")),
                )
            }
            _ => {
                let sign = if self.rng.random_bool(0.5) { 1 } else { -1 };
                let offset = sign * self.rng.random_range(1..60i64);
                cluster.set_clock(victim, offset)?;
                offset_s = Some(offset);
                (
                    vec![victim],
                    format!("clock of {} {offset:+}s", who(victim)),
                )
            }
        };
        println!(
            "{} nemesis: {detail} (for {:.1}s)",
            wall_now(),
            step.hold.as_secs_f64()
        );
        self.active = Some(Active {
            kind: step.kind,
            variant: step.variant,
            offset_s,
            members,
            detail,
            start_ns: now_ns,
            wall_start: wall_now(),
        });
        Ok(())
    }

    /// Undoes the active fault (restart, SIGCONT, rules and qdiscs removed,
    /// clock back).
    pub async fn heal(
        &mut self,
        cluster: &mut Cluster,
        net: &Net,
        now_ns: u64,
    ) -> Result<(), String> {
        let Some(a) = self.active.take() else {
            return Ok(());
        };
        let mut detail = a.detail;
        let result = match a.kind {
            "kill" | "lose" => a.members.iter().try_for_each(|m| cluster.start(*m)),
            "member" => {
                // Variants 0 and 1 pick the victim; 2 and 3 add it as a voter.
                let learner = a.variant < 2;
                let mut r = Ok(());
                for m in &a.members {
                    match cluster.readd_member(*m, learner).await {
                        Ok(what) => detail = format!("{detail}; {what}"),
                        Err(e) => r = Err(e),
                    }
                }
                r
            }
            "pause" => a.members.iter().try_for_each(|m| cluster.resume(*m)),
            "partition" => net.heal(),
            "net" => net.heal().and_then(|()| {
                for m in &a.members {
                    if let Some(said) = net.unslow(*m)? {
                        detail = format!("{detail}; {said}");
                    }
                }
                Ok(())
            }),
            _ => a.members.iter().try_for_each(|m| cluster.set_clock(*m, 0)),
        };
        println!("{} nemesis: healed {detail}", wall_now());
        self.log.push(FaultLog {
            kind: a.kind,
            detail,
            offset_s: a.offset_s,
            members: a.members,
            start_ns: a.start_ns,
            end_ns: now_ns,
            wall_start: a.wall_start,
            wall_end: wall_now(),
        });
        result
    }
}

/// Every member of `a` drops `b`'s packets and the other way round.
fn both_ways(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut cut = Vec::new();
    for x in a {
        for y in b {
            cut.push((*x, *y));
            cut.push((*y, *x));
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_seeds() {
        let steps = |seed| {
            let mut n = Nemesis::new(seed, KINDS.to_vec());
            (0..20).filter_map(|_| n.next_step()).collect::<Vec<_>>()
        };
        assert_eq!(steps(7), steps(7));
        assert_ne!(steps(7), steps(8));
        // Every kind once in each round.
        for round in steps(7).chunks(KINDS.len()) {
            let kinds: std::collections::BTreeSet<_> = round.iter().map(|s| s.kind).collect();
            assert_eq!(kinds.len(), round.len().min(KINDS.len()), "{round:?}");
            assert_eq!(round.len(), kinds.len(), "{round:?}");
        }
        assert!(Nemesis::new(1, vec![]).next_step().is_none());
    }

    #[test]
    fn both_ways_cuts_every_cross_pair_in_each_direction() {
        let cut = both_ways(&[0], &[1, 2]);
        assert_eq!(cut, vec![(0, 1), (1, 0), (0, 2), (2, 0)]);
    }

    #[test]
    fn wall_clock_is_iso_8601() {
        let w = wall_now();
        assert_eq!(w.len(), 24, "{w}");
        assert!(w.ends_with('Z') && w.as_bytes()[10] == b'T', "{w}");
    }
}
