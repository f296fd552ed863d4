//! Automatic compaction of the key-value history (`--auto-compaction-mode`
//! and `--auto-compaction-retention`), with etcd 3.4's schedule.
//!
//! Every member runs the schedule on its node loop's ticks, but only the
//! leader proposes: a compaction is an ordinary `Compaction` entry through
//! Raft, so every member compacts at the same revision. Because followers
//! keep sampling too, a new leader already holds the history the schedule
//! needs, and compaction survives leader changes without a restart of the
//! retention window.
//!
//! - **periodic** (retention `R`, a duration): the current revision is
//!   sampled every `min(R, 1 h) / 10`; the samples reach back `R`. The first
//!   compaction comes `R` after the start, later ones every `min(R, 1 h)`,
//!   each at the oldest sample — the revision of about `R` ago — so the last
//!   `R` of history is always kept.
//! - **revision** (retention `N`): every 5 minutes, compact at `current − N`
//!   unless that is not positive or the same as last time.
//!
//! A proposal counts as done when it is made (its entry may fail to commit
//! when leadership changes; the next turn of the schedule proposes again),
//! and a revision already compacted is skipped, as etcd treats
//! `ErrCompacted` as success.
//!
//! Tests: unit tests below (the schedule, time driven by hand),
//! `tests/compaction.rs` (the real binary).

use std::collections::VecDeque;
use std::time::Duration;

use cairn_runtime::MonoTime;

/// etcd's revision-mode interval.
pub const REVISION_INTERVAL: Duration = Duration::from_secs(300);

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(u64),
}

#[derive(Debug)]
pub(crate) struct AutoCompactor {
    policy: Policy,
    /// Periodic: sampled revisions, oldest first (at most `retentions`).
    samples: VecDeque<i64>,
    next_turn: MonoTime,
    /// Periodic: when the last compaction was proposed (or the start).
    last_done: MonoTime,
    /// Periodic: the wait before the next compaction (`R` for the first).
    wait: Duration,
    /// Revision: the last revision proposed.
    prev: i64,
}

impl AutoCompactor {
    pub fn new(policy: Policy, now: MonoTime) -> AutoCompactor {
        let (wait, next_turn) = match policy {
            Policy::Periodic(r) => (r, now),
            // etcd's revision compactor first looks after one interval.
            Policy::Revision(_) => (REVISION_INTERVAL, now + REVISION_INTERVAL),
        };
        AutoCompactor {
            policy,
            samples: VecDeque::new(),
            next_turn,
            last_done: now,
            wait,
            prev: 0,
        }
    }

    /// etcd's compaction interval for a periodic retention.
    fn compact_interval(retention: Duration) -> Duration {
        retention.min(Duration::from_secs(3600))
    }

    /// etcd's sampling interval for a periodic retention.
    fn sample_interval(retention: Duration) -> Duration {
        (Self::compact_interval(retention) / 10).max(Duration::from_millis(1))
    }

    /// One turn of the schedule at `now`, with the store's current and
    /// compacted revisions: the revision to propose a compaction at, if this
    /// member leads and one is due.
    pub fn tick(
        &mut self,
        now: MonoTime,
        current: i64,
        compacted: i64,
        leader: bool,
    ) -> Option<i64> {
        if now < self.next_turn {
            return None;
        }
        match self.policy {
            Policy::Periodic(retention) => {
                let every = Self::sample_interval(retention);
                self.next_turn = now + every;
                let keep = (retention.as_nanos() / every.as_nanos()) as usize + 1;
                self.samples.push_back(current);
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                if !leader || now.saturating_duration_since(self.last_done) < self.wait {
                    return None;
                }
                self.wait = Self::compact_interval(retention);
                self.last_done = now;
                let rev = *self.samples.front()?;
                (rev > compacted).then_some(rev)
            }
            Policy::Revision(retention) => {
                self.next_turn = now + REVISION_INTERVAL;
                let rev = current - i64::try_from(retention).unwrap_or(i64::MAX);
                if !leader || rev <= 0 || rev == self.prev {
                    return None;
                }
                self.prev = rev;
                (rev > compacted).then_some(rev)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> MonoTime {
        MonoTime(Duration::from_secs_f64(secs))
    }

    /// Drives `c` every `step` seconds up to `until`, the revision growing by
    /// one per second; returns (time, revision) of each proposal.
    fn drive(
        c: &mut AutoCompactor,
        step: f64,
        until: f64,
        leader: impl Fn(f64) -> bool,
    ) -> Vec<(f64, i64)> {
        let mut out = Vec::new();
        let mut compacted = 0;
        let mut t = 0.0;
        while t <= until {
            let current = 1 + t as i64;
            if let Some(rev) = c.tick(at(t), current, compacted, leader(t)) {
                out.push((t, rev));
                compacted = rev;
            }
            t += step;
        }
        out
    }

    #[test]
    fn periodic_waits_one_retention_then_compacts_every_retention_keeping_that_much_history() {
        // 10 s retention: samples every 1 s, first compaction at 10 s, then every 10 s.
        let mut c = AutoCompactor::new(Policy::Periodic(Duration::from_secs(10)), at(0.0));
        let done = drive(&mut c, 0.5, 35.0, |_| true);
        let times: Vec<f64> = done.iter().map(|d| d.0).collect();
        assert_eq!(times, vec![10.0, 20.0, 30.0]);
        for (t, rev) in done {
            // The oldest sample is from about one retention ago.
            let kept = (1 + t as i64) - rev;
            assert!((9..=11).contains(&kept), "at {t}s kept {kept} s of history");
        }
    }

    #[test]
    fn periodic_over_an_hour_compacts_hourly_keeping_the_whole_retention() {
        let mut c = AutoCompactor::new(Policy::Periodic(Duration::from_secs(3 * 3600)), at(0.0));
        let done = drive(&mut c, 60.0, 6.0 * 3600.0, |_| true);
        let times: Vec<f64> = done.iter().map(|d| d.0 / 3600.0).collect();
        assert_eq!(times, vec![3.0, 4.0, 5.0, 6.0]);
        for (t, rev) in done {
            let kept = (1 + t as i64) - rev;
            assert!(
                (3 * 3600 - 400..=3 * 3600 + 400).contains(&kept),
                "at {t}s kept {kept} s"
            );
        }
    }

    #[test]
    fn only_the_leader_proposes_and_a_new_leader_has_the_history_at_once() {
        let mut c = AutoCompactor::new(Policy::Periodic(Duration::from_secs(10)), at(0.0));
        // Follower until 25 s, then leader: it compacts at once, a retention back.
        let done = drive(&mut c, 0.5, 26.0, |t| t >= 25.0);
        assert_eq!(done.len(), 1, "{done:?}");
        let (t, rev) = done[0];
        assert_eq!(t, 25.0);
        assert!((1 + 25 - rev) >= 9, "kept {} s", 1 + 25 - rev);
    }

    #[test]
    fn revision_mode_keeps_n_revisions_every_five_minutes_and_never_repeats() {
        let mut c = AutoCompactor::new(Policy::Revision(100), at(0.0));
        assert_eq!(c.tick(at(0.0), 50, 0, true), None, "nothing to compact yet");
        assert_eq!(
            c.tick(at(100.0), 500, 0, true),
            None,
            "not due before 5 minutes"
        );
        assert_eq!(c.tick(at(300.0), 500, 0, true), Some(400));
        assert_eq!(
            c.tick(at(600.0), 500, 400, true),
            None,
            "same revision again"
        );
        assert_eq!(
            c.tick(at(900.0), 1000, 400, false),
            None,
            "a follower never proposes"
        );
        assert_eq!(c.tick(at(1200.0), 1000, 400, true), Some(900));
    }

    #[test]
    fn a_revision_already_compacted_is_skipped() {
        let mut c = AutoCompactor::new(Policy::Revision(10), at(0.0));
        assert_eq!(c.tick(at(0.0), 100, 95, true), None);
    }
}
