//! Membership and the leader's view of it: voters, learners, per-node
//! progress, the quorum-committed index and vote tallies.
//!
//! Invariants: `voters` and `learners` are disjoint; `progress` has exactly
//! one entry per voter and learner. Learners replicate but never count
//! towards a quorum, neither for commit nor for votes nor for check-quorum.
//! Tests: `raft::golden` (learner_*, conf_change_*), `raft::properties`.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::raftpb::ConfState;

use super::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

#[derive(Debug, Clone)]
pub struct ProgressTracker {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub progress: BTreeMap<u64, Progress>,
    /// Votes received in the current (pre-)election: id -> granted.
    votes: BTreeMap<u64, bool>,
    max_inflight_msgs: usize,
    max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub fn new(max_inflight_msgs: usize, max_inflight_bytes: u64) -> Self {
        ProgressTracker {
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight_msgs,
            max_inflight_bytes,
        }
    }

    /// Replaces the membership with `cs`; every progress starts over at `next`.
    pub fn reset_conf(&mut self, cs: &ConfState, next: u64) {
        self.voters = cs.voters.iter().copied().collect();
        self.learners = cs
            .learners
            .iter()
            .copied()
            .filter(|id| !self.voters.contains(id))
            .collect();
        self.progress.clear();
        for &id in self.voters.clone().iter() {
            self.insert_progress(id, next, false);
        }
        for &id in self.learners.clone().iter() {
            self.insert_progress(id, next, true);
        }
    }

    pub fn insert_progress(&mut self, id: u64, next: u64, is_learner: bool) {
        let mut pr = Progress::new(
            next,
            self.max_inflight_msgs,
            self.max_inflight_bytes,
            is_learner,
        );
        // A new member must not make check-quorum fail before it had a chance to answer.
        pr.recent_active = true;
        self.progress.insert(id, pr);
    }

    pub fn conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
        }
    }

    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    pub fn is_voter(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    /// The highest index replicated on a quorum of voters (0 with no voters).
    pub fn committed_index(&self) -> u64 {
        if self.voters.is_empty() {
            return 0;
        }
        let mut matched: Vec<u64> = self
            .voters
            .iter()
            .map(|id| self.progress.get(id).map_or(0, |p| p.matched))
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.quorum() - 1]
    }

    /// Whether a quorum of voters was heard from recently (`self_id` always counts).
    pub fn quorum_active(&self, self_id: u64) -> bool {
        let active = self
            .voters
            .iter()
            .filter(|&&id| id == self_id || self.progress.get(&id).is_some_and(|p| p.recent_active))
            .count();
        active >= self.quorum()
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records the first vote of `id` in this election (later ones are ignored).
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn tally_votes(&self) -> VoteResult {
        let granted = self
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&true))
            .count();
        let rejected = self
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&false))
            .count();
        let missing = self.voters.len() - granted - rejected;
        if granted >= self.quorum() {
            VoteResult::Won
        } else if granted + missing < self.quorum() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    pub fn votes(&self) -> &BTreeMap<u64, bool> {
        &self.votes
    }

    pub fn check_invariants(&self) {
        assert!(
            self.voters.is_disjoint(&self.learners),
            "voters {:?} and learners {:?} overlap",
            self.voters,
            self.learners
        );
        let members: BTreeSet<u64> = self.voters.union(&self.learners).copied().collect();
        let tracked: BTreeSet<u64> = self.progress.keys().copied().collect();
        assert_eq!(members, tracked, "progress does not match membership");
        for (id, pr) in &self.progress {
            assert!(
                pr.matched < pr.next,
                "progress of {id}: matched {} >= next {}",
                pr.matched,
                pr.next
            );
            assert_eq!(
                pr.is_learner,
                self.learners.contains(id),
                "learner flag of {id}"
            );
        }
    }
}
