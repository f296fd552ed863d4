//! Leases: the lessor (etcd's `lease` package, DESIGN §5).
//!
//! A lease is granted with a TTL; keys written with it are attached to it;
//! when it is revoked — by a client or because it expired — its keys are
//! deleted (in one revision, by the server's apply). Only the primary lessor
//! (on the Raft leader) tracks expiries and accepts keep-alives; a follower's
//! leases never expire locally. Expiry is turned into a revoke proposed
//! through Raft, so every member deletes the same keys at the same revision.
//!
//! - `lessor`: `Lessor`, pure — time is passed in (`MonoTime`), no clocks,
//!   no I/O: grant, revoke, renew, time-to-live, list, key attachment from
//!   MVCC events, expiry scan, promote/demote, checkpoints.
//! - `persist`: the `lease` column family (one `LeaseRecord` per lease) and
//!   recovery of the records.
//!
//! etcd's rules kept here: the minimum TTL derives from the election timeout
//! (`min_lease_ttl_secs`); a shorter TTL is raised to it; a TTL above
//! `MAX_LEASE_TTL_SECS` is refused; a new leader gives every lease its
//! remaining TTL (checkpointed) or full TTL plus the election timeout, so no
//! lease expires early after a failover.
//!
//! Tests: unit tests in `tests.rs`, quickcheck against a simple model in
//! `model_tests.rs`; the server-level behaviour (failover, restart, expiry in
//! one revision) in `src/server/tests.rs`; etcdctl interop in
//! `tests/lease_interop.rs`.

mod lessor;
pub mod persist;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};

pub use lessor::{Lessor, LessorConfig, RenewOutcome, TimeToLive};

/// A lease's id (etcd's LeaseID, an int64 on the wire). 0 is "no lease".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaseId(pub i64);

impl LeaseId {
    pub const NONE: LeaseId = LeaseId(0);
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// etcd's MaxLeaseTTL: a longer TTL is refused with `too large lease TTL`.
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// Most leases a primary revokes per second (etcd's leaseRevokeRate).
pub const REVOKE_RATE_PER_SEC: usize = 1000;

/// Most checkpoints proposed in one Raft entry (etcd's maxLeaseCheckpointBatchSize).
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// Expected failures of lease operations; Display strings are etcd's gRPC
/// messages (the codes are chosen in `api/`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// gRPC: NotFound.
    #[error("etcdserver: requested lease not found")]
    NotFound,
    /// A grant with the id of an existing lease. gRPC: FailedPrecondition.
    #[error("etcdserver: lease already exists")]
    AlreadyExists,
    /// A grant with a TTL above `MAX_LEASE_TTL_SECS`. gRPC: OutOfRange.
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
    /// A keep-alive reached a member whose lessor is not primary (the server
    /// forwards to the leader; seen by a client only if that keeps failing).
    /// gRPC: Unavailable.
    #[error("etcdserver: not leader")]
    NotPrimary,
}

/// etcd's minimum lease TTL: `ceil(((3 * election_ticks) / 2) * heartbeat)`
/// in seconds (the division is an integer one, as etcd's). With the default
/// 10 ticks of 100 ms that is ceil(1.5 s) = 2 s.
pub fn min_lease_ttl_secs(election_ticks: usize, heartbeat: Duration) -> i64 {
    let min = heartbeat.saturating_mul(((3 * election_ticks) / 2) as u32);
    let secs = min.as_secs() + u64::from(min.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Generates lease ids for grants proposed by one member, as etcd's request
/// id generator lays them out: the member id's low 16 bits, then a 48-bit
/// counter that starts at a point drawn from the member's seeded RNG (etcd
/// starts it from the wall clock, which would break determinism). Ids are
/// positive. A clash with an existing lease (possible after a restart with
/// the same seed) is skipped by the caller, which asks again.
#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    counter: AtomicU64,
}

const COUNTER_BITS: u32 = 48;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

impl IdGenerator {
    pub fn new(member_id: u64, seed: u64) -> IdGenerator {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1ea5_e1d5_0000_0000);
        // 40 random bits shifted by 8, as etcd's suffix (time in ms << 8).
        let start = (rng.random::<u64>() & ((1 << 40) - 1)) << 8;
        IdGenerator {
            prefix: (member_id & 0xffff) << COUNTER_BITS,
            counter: AtomicU64::new(start),
        }
    }

    pub fn next(&self) -> LeaseId {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id = (self.prefix | (n & COUNTER_MASK)) & (i64::MAX as u64);
            if id != 0 {
                return LeaseId(id as i64);
            }
        }
    }
}
