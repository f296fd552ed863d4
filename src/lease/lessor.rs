//! `Lessor`: the in-memory lease table of one member.
//!
//! Replicated state (the same on every member, changed only by applying Raft
//! entries): the leases with their granted TTL and last checkpointed
//! remaining TTL, and which live keys are attached to which lease.
//! Member-local state (only meaningful on the primary, i.e. the leader once
//! it has applied its first entry of the term): expiry times and the two
//! schedules (expiry checks, checkpoints).
//!
//! Invariants (checked by `check_invariants`):
//! - `key_leases[k] == id` exactly when `leases[id].keys` contains `k`;
//! - when primary, every lease has an expiry and exactly one entry in
//!   `expiry_queue`, at its `check_at`; when not primary, no lease has an
//!   expiry and both schedules are empty;
//! - `checkpoint_queue` holds exactly the `(checkpoint_at, id)` of leases
//!   with a `checkpoint_at`.
//!
//! Time is passed in as `MonoTime` (the member's Clock), so the lessor is
//! deterministic and tested without a runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_proto::mvccpb::{event::EventType, Event};
use cairn_runtime::MonoTime;

use super::{LeaseError, LeaseId, MAX_LEASE_TTL_SECS, REVOKE_RATE_PER_SEC};

/// How the lessor behaves (from the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LessorConfig {
    /// Granted TTLs below this are raised to it (`min_lease_ttl_secs`).
    pub min_ttl_secs: i64,
    /// How often the primary checkpoints a long lease's remaining TTL
    /// (etcd: 5 minutes). Leases whose TTL is not longer are not checkpointed.
    pub checkpoint_interval: Duration,
    /// After reporting a lease as expired, how long before reporting it again
    /// if it is still there (its revoke may have been lost; etcd uses the
    /// request timeout).
    pub expired_retry_interval: Duration,
}

impl Default for LessorConfig {
    fn default() -> Self {
        LessorConfig {
            min_ttl_secs: 2,
            checkpoint_interval: Duration::from_secs(300),
            expired_retry_interval: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone)]
struct Lease {
    /// The granted TTL (≥ the minimum TTL).
    ttl_secs: i64,
    /// The last checkpointed remaining TTL; 0 when none (the full TTL counts).
    remaining_ttl_secs: i64,
    /// When it expires; `None` (forever) unless the lessor is primary.
    expiry: Option<MonoTime>,
    /// When the primary next checks whether it expired (its expiry, or a retry).
    check_at: Option<MonoTime>,
    /// When the primary next checkpoints its remaining TTL.
    checkpoint_at: Option<MonoTime>,
    /// Attached live keys.
    keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    /// The TTL a refresh starts from: the checkpointed remaining TTL if any.
    fn refresh_ttl_secs(&self) -> i64 {
        if self.remaining_ttl_secs > 0 {
            self.remaining_ttl_secs
        } else {
            self.ttl_secs
        }
    }
}

/// What `time_to_live` reports about a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    pub granted_ttl_secs: i64,
    /// Seconds left, truncated toward zero (negative once expired but not
    /// yet revoked); `i64::MAX` nanoseconds' worth when it never expires
    /// here (not primary), as etcd.
    pub remaining_secs: i64,
    /// Attached keys, sorted.
    pub keys: Vec<Vec<u8>>,
}

/// The result of a keep-alive on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Expires `ttl_secs` from now.
    Renewed { ttl_secs: i64 },
    /// Already expired: its revoke is on the way (or will be retried); the
    /// caller waits for it to disappear rather than resurrect it.
    Expired,
}

/// The lease table. See the module comment for its invariants.
#[derive(Debug, Clone)]
pub struct Lessor {
    config: LessorConfig,
    leases: BTreeMap<LeaseId, Lease>,
    key_leases: BTreeMap<Vec<u8>, LeaseId>,
    primary: bool,
    /// `(check_at, id)` of every lease when primary.
    expiry_queue: BTreeSet<(MonoTime, LeaseId)>,
    /// `(checkpoint_at, id)` of leases with a scheduled checkpoint.
    checkpoint_queue: BTreeSet<(MonoTime, LeaseId)>,
}

/// `now + secs + extra`, saturating instead of overflowing.
fn after(now: MonoTime, secs: i64, extra: Duration) -> MonoTime {
    let d = Duration::from_secs(secs.max(0) as u64).saturating_add(extra);
    MonoTime(now.0.saturating_add(d))
}

/// Signed nanoseconds from `now` to `t`.
fn nanos_until(t: MonoTime, now: MonoTime) -> i128 {
    t.0.as_nanos() as i128 - now.0.as_nanos() as i128
}

const NANOS_PER_SEC: i128 = 1_000_000_000;

impl Lessor {
    pub fn new(config: LessorConfig) -> Lessor {
        Lessor {
            config,
            leases: BTreeMap::new(),
            key_leases: BTreeMap::new(),
            primary: false,
            expiry_queue: BTreeSet::new(),
            checkpoint_queue: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &LessorConfig {
        &self.config
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The granted TTL and checkpointed remaining TTL of a lease (what is persisted).
    pub fn record(&self, id: LeaseId) -> Option<(i64, i64)> {
        self.leases
            .get(&id)
            .map(|l| (l.ttl_secs, l.remaining_ttl_secs))
    }

    /// The lease a live key is attached to.
    pub fn lease_of(&self, key: &[u8]) -> Option<LeaseId> {
        self.key_leases.get(key).copied()
    }

    /// The keys attached to a lease, sorted (the order revoke deletes them in).
    pub fn keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>, LeaseError> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .ok_or(LeaseError::NotFound)
    }

    // ---- replicated changes (applied from Raft entries) ----

    /// What a grant would do, without doing it: the TTL it would get, or
    /// etcd's error (checked in etcd's order: id, TTL, existence).
    pub fn check_grant(&self, id: LeaseId, ttl_secs: i64) -> Result<i64, LeaseError> {
        if id == LeaseId::NONE {
            return Err(LeaseError::NotFound);
        }
        if ttl_secs > MAX_LEASE_TTL_SECS {
            return Err(LeaseError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::AlreadyExists);
        }
        Ok(ttl_secs.max(self.config.min_ttl_secs))
    }

    /// Grants a lease; returns its TTL (raised to the minimum). On the
    /// primary it expires `ttl` from `now`; elsewhere never.
    pub fn grant(&mut self, id: LeaseId, ttl_secs: i64, now: MonoTime) -> Result<i64, LeaseError> {
        let ttl_secs = self.check_grant(id, ttl_secs)?;
        self.leases.insert(
            id,
            Lease {
                ttl_secs,
                remaining_ttl_secs: 0,
                expiry: None,
                check_at: None,
                checkpoint_at: None,
                keys: BTreeSet::new(),
            },
        );
        if self.primary {
            self.refresh(id, now, Duration::ZERO);
            self.schedule_checkpoint_if_needed(id, now);
        }
        Ok(ttl_secs)
    }

    /// Restores a persisted lease (recovery): as etcd, a TTL below the
    /// minimum is raised, and the expiry waits for a promotion.
    pub fn restore(&mut self, id: LeaseId, ttl_secs: i64, remaining_ttl_secs: i64) {
        let lease = Lease {
            ttl_secs: ttl_secs.max(self.config.min_ttl_secs),
            remaining_ttl_secs,
            expiry: None,
            check_at: None,
            checkpoint_at: None,
            keys: BTreeSet::new(),
        };
        if let Some(old) = self.leases.insert(id, lease) {
            for k in old.keys {
                self.key_leases.remove(&k);
            }
        }
    }

    /// Removes a revoked lease and detaches its keys; returns them sorted
    /// (the server deletes them in the same apply).
    pub fn revoke(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>, LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        if let Some(at) = lease.check_at {
            self.expiry_queue.remove(&(at, id));
        }
        if let Some(at) = lease.checkpoint_at {
            self.checkpoint_queue.remove(&(at, id));
        }
        for k in &lease.keys {
            self.key_leases.remove(k);
        }
        Ok(lease.keys.into_iter().collect())
    }

    /// Records a checkpointed remaining TTL (0 clears it). Returns whether
    /// the lease exists (a checkpoint of a revoked lease is ignored, as etcd).
    pub fn checkpoint(&mut self, id: LeaseId, remaining_ttl_secs: i64, now: MonoTime) -> bool {
        let Some(lease) = self.leases.get_mut(&id) else {
            return false;
        };
        lease.remaining_ttl_secs = remaining_ttl_secs;
        if self.primary {
            self.schedule_checkpoint_if_needed(id, now);
        }
        true
    }

    /// Attaches and detaches keys as MVCC changed them: a put attaches its
    /// key to the put's lease (detaching it from any previous one; a put
    /// without a lease only detaches), a delete detaches.
    pub fn apply_events(&mut self, events: &[Event]) {
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            let lease = match ev.r#type() {
                EventType::Put => LeaseId(kv.lease),
                EventType::Delete => LeaseId::NONE,
            };
            self.attach(&kv.key, lease);
        }
    }

    /// Attaches `key` to `lease` (NONE: detaches it). A lease that does not
    /// exist attaches nothing (MVCC refuses puts with unknown leases, so this
    /// only happens for keys recovered after their lease was lost).
    pub fn attach(&mut self, key: &[u8], lease: LeaseId) {
        if let Some(old) = self.key_leases.remove(key) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_vec());
            self.key_leases.insert(key.to_vec(), lease);
        }
    }

    // ---- member-local: expiry, keep-alive, leadership ----

    /// This member became leader and applied everything before its term:
    /// every lease expires its checkpointed remaining TTL (or its full TTL)
    /// plus `extend` from now, so none expires early because of the
    /// failover. As etcd, when there are many leases, those that would
    /// expire in the same second beyond 3/4 of the revoke rate are pushed
    /// later so they do not pile up.
    pub fn promote(&mut self, now: MonoTime, extend: Duration) {
        self.primary = true;
        let ids: Vec<LeaseId> = self.leases.keys().copied().collect();
        for id in &ids {
            self.refresh(*id, now, extend);
            self.schedule_checkpoint_if_needed(*id, now);
        }
        if ids.len() >= REVOKE_RATE_PER_SEC {
            self.spread_expiries(now, extend);
        }
    }

    fn spread_expiries(&mut self, now: MonoTime, extend: Duration) {
        let mut order: Vec<(MonoTime, LeaseId)> = self
            .leases
            .iter()
            .map(|(id, l)| (l.expiry.expect("primary leases have an expiry"), *id))
            .collect();
        order.sort();
        let target = (3 * REVOKE_RATE_PER_SEC / 4) as i128;
        let remaining = |t: MonoTime| nanos_until(t, now);
        let mut base = remaining(order[0].0);
        let mut next_window = base + NANOS_PER_SEC;
        let mut expires: i128 = 0;
        for (expiry, id) in order {
            let left = remaining(expiry);
            if left > next_window {
                base = left;
                next_window = base + NANOS_PER_SEC;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target {
                continue;
            }
            // Never earlier than the plain refresh: the delay only adds.
            let delay = (NANOS_PER_SEC * expires / target - (left - base)).max(0);
            next_window = base + delay;
            self.refresh(id, now, extend + Duration::from_nanos(delay as u64));
        }
    }

    /// Leadership lost: nothing expires here any more.
    pub fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            l.expiry = None;
            l.check_at = None;
            l.checkpoint_at = None;
        }
        self.expiry_queue.clear();
        self.checkpoint_queue.clear();
    }

    /// Whether a keep-alive must first clear a checkpointed remaining TTL
    /// through Raft (else a later leader would start from the stale,
    /// shorter remaining TTL).
    pub fn has_checkpoint(&self, id: LeaseId) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|l| l.remaining_ttl_secs > 0)
    }

    /// A keep-alive on the primary: the lease expires its full TTL from now.
    pub fn renew(&mut self, id: LeaseId, now: MonoTime) -> Result<RenewOutcome, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let lease = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        if lease.expiry.is_some_and(|e| e <= now) {
            return Ok(RenewOutcome::Expired);
        }
        let ttl_secs = lease.ttl_secs;
        let expiry = after(now, ttl_secs, Duration::ZERO);
        self.set_expiry(id, expiry);
        Ok(RenewOutcome::Renewed { ttl_secs })
    }

    /// The primary's expired leases, at most `limit`, in expiry order. A
    /// lease reported here is not reported again before
    /// `expired_retry_interval` has passed (its revoke is in flight).
    pub fn expired(&mut self, now: MonoTime, limit: usize) -> Vec<LeaseId> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < limit {
            let Some(&(at, id)) = self.expiry_queue.first() else {
                break;
            };
            if at > now {
                break;
            }
            let retry = now + self.config.expired_retry_interval;
            let lease = self
                .leases
                .get_mut(&id)
                .expect("the expiry queue mirrors the leases");
            self.expiry_queue.remove(&(at, id));
            lease.check_at = Some(retry);
            self.expiry_queue.insert((retry, id));
            if lease.expiry.is_some_and(|e| e <= now) {
                out.push(id);
            }
        }
        out
    }

    /// The primary's due checkpoints, at most `limit`: `(id, remaining TTL
    /// in whole seconds, rounded up)` of leases whose remaining TTL is below
    /// their TTL. Each is rescheduled an interval later (also when its
    /// proposal is lost; applying it reschedules again).
    pub fn due_checkpoints(&mut self, now: MonoTime, limit: usize) -> Vec<(LeaseId, i64)> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < limit {
            let Some(&(at, id)) = self.checkpoint_queue.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.checkpoint_queue.remove(&(at, id));
            let lease = self
                .leases
                .get_mut(&id)
                .expect("the checkpoint queue only holds leases");
            lease.checkpoint_at = None;
            let Some(expiry) = lease.expiry.filter(|e| *e > now) else {
                continue;
            };
            let left = nanos_until(expiry, now);
            let remaining = ((left + NANOS_PER_SEC - 1) / NANOS_PER_SEC) as i64;
            let ttl = lease.ttl_secs;
            if remaining > self.config.checkpoint_interval.as_secs() as i64 {
                self.set_checkpoint_at(id, now + self.config.checkpoint_interval);
            }
            if remaining < ttl {
                out.push((id, remaining));
            }
        }
        out
    }

    /// etcd's TimeToLive as the primary answers it.
    pub fn time_to_live(&self, id: LeaseId, now: MonoTime) -> Option<TimeToLive> {
        let lease = self.leases.get(&id)?;
        let remaining_secs = match lease.expiry {
            Some(e) => (nanos_until(e, now) / NANOS_PER_SEC) as i64,
            None => i64::MAX / NANOS_PER_SEC as i64,
        };
        Some(TimeToLive {
            granted_ttl_secs: lease.ttl_secs,
            remaining_secs,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// Every lease, soonest expiry first (etcd's Leases), ties by id.
    pub fn leases(&self) -> Vec<LeaseId> {
        let mut all: Vec<(Option<MonoTime>, LeaseId)> =
            self.leases.iter().map(|(id, l)| (l.expiry, *id)).collect();
        // `None` (forever) sorts last.
        all.sort_by_key(|(e, id)| (e.is_none(), *e, *id));
        all.into_iter().map(|(_, id)| id).collect()
    }

    // ---- helpers ----

    /// Expiry = now + (checkpointed remaining or full TTL) + extend.
    fn refresh(&mut self, id: LeaseId, now: MonoTime, extend: Duration) {
        let Some(lease) = self.leases.get(&id) else {
            return;
        };
        let expiry = after(now, lease.refresh_ttl_secs(), extend);
        self.set_expiry(id, expiry);
    }

    fn set_expiry(&mut self, id: LeaseId, expiry: MonoTime) {
        let lease = self.leases.get_mut(&id).expect("caller checked the lease");
        if let Some(at) = lease.check_at.take() {
            self.expiry_queue.remove(&(at, id));
        }
        lease.expiry = Some(expiry);
        lease.check_at = Some(expiry);
        self.expiry_queue.insert((expiry, id));
    }

    fn schedule_checkpoint_if_needed(&mut self, id: LeaseId, now: MonoTime) {
        let Some(lease) = self.leases.get(&id) else {
            return;
        };
        if lease.refresh_ttl_secs() > self.config.checkpoint_interval.as_secs() as i64 {
            self.set_checkpoint_at(id, now + self.config.checkpoint_interval);
        }
    }

    fn set_checkpoint_at(&mut self, id: LeaseId, at: MonoTime) {
        let lease = self.leases.get_mut(&id).expect("caller checked the lease");
        if let Some(old) = lease.checkpoint_at.replace(at) {
            self.checkpoint_queue.remove(&(old, id));
        }
        self.checkpoint_queue.insert((at, id));
    }

    /// Verifies the invariants of the module comment; panics with context.
    pub fn check_invariants(&self) {
        for (k, id) in &self.key_leases {
            let lease = self
                .leases
                .get(id)
                .unwrap_or_else(|| panic!("key {k:?} attached to missing lease {id}"));
            assert!(lease.keys.contains(k), "lease {id} lacks its key {k:?}");
        }
        let attached: usize = self.leases.values().map(|l| l.keys.len()).sum();
        assert_eq!(
            attached,
            self.key_leases.len(),
            "a key is attached to two leases or missing from the key map"
        );
        let mut expiry_entries = BTreeSet::new();
        let mut checkpoint_entries = BTreeSet::new();
        for (id, l) in &self.leases {
            assert!(
                l.ttl_secs >= self.config.min_ttl_secs,
                "lease {id} TTL below the minimum"
            );
            if self.primary {
                assert!(l.expiry.is_some(), "primary lease {id} without an expiry");
                let at = l.check_at.expect("primary lease has a check time");
                expiry_entries.insert((at, *id));
            } else {
                assert!(
                    l.expiry.is_none() && l.check_at.is_none() && l.checkpoint_at.is_none(),
                    "non-primary lease {id} has member-local timers"
                );
            }
            if let Some(at) = l.checkpoint_at {
                checkpoint_entries.insert((at, *id));
            }
        }
        assert_eq!(expiry_entries, self.expiry_queue, "expiry queue diverged");
        assert_eq!(
            checkpoint_entries, self.checkpoint_queue,
            "checkpoint queue diverged"
        );
    }
}
