//! Quickcheck: the lessor against a deliberately simple model — a map of
//! leases with millisecond expiries, recomputed from the rules directly —
//! over random sequences of grants, revokes, puts/deletes (attachment),
//! keep-alives, time passing, promotions, demotions, checkpoints, expiry
//! scans and restarts (rebuilding from the persisted records and the keys).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use cairn_runtime::MonoTime;
use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;

const MIN_TTL: i64 = 2;
const RETRY_MS: u64 = 3000;
const CHECKPOINT_SECS: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Grant { id: u8, ttl: i64 },
    Revoke { id: u8 },
    Put { key: u8, lease: u8 },
    Delete { key: u8 },
    Advance { ms: u16 },
    Renew { id: u8 },
    Promote { extend_ms: u16 },
    Demote,
    Checkpoint { id: u8, remaining: u8 },
    ApplyDueCheckpoints,
    Expire { limit: u8 },
    Restart,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let id = u8::arbitrary(g) % 6;
        let key = u8::arbitrary(g) % 8;
        match u8::arbitrary(g) % 24 {
            0..=3 => Op::Grant {
                id,
                ttl: *g
                    .choose(&[
                        -3,
                        0,
                        1,
                        2,
                        3,
                        5,
                        12,
                        30,
                        MAX_LEASE_TTL_SECS,
                        MAX_LEASE_TTL_SECS + 1,
                    ])
                    .expect("non-empty"),
            },
            4 => Op::Revoke { id },
            5..=7 => Op::Put { key, lease: id },
            8 => Op::Delete { key },
            9..=12 => Op::Advance {
                ms: u16::arbitrary(g) % 8000,
            },
            13..=14 => Op::Renew { id },
            15 => Op::Promote {
                extend_ms: u16::arbitrary(g) % 3000,
            },
            16 => Op::Demote,
            17 => Op::Checkpoint {
                id,
                remaining: u8::arbitrary(g) % 40,
            },
            18 => Op::ApplyDueCheckpoints,
            19..=21 => Op::Expire {
                limit: u8::arbitrary(g) % 4,
            },
            _ => Op::Restart,
        }
    }
}

#[derive(Debug, Clone)]
struct MLease {
    ttl: i64,
    remaining: i64,
    expiry_ms: Option<u64>,
    /// When an expiry scan last reported it (reset by a refresh).
    reported_ms: Option<u64>,
    keys: BTreeSet<u8>,
}

#[derive(Debug, Default)]
struct Model {
    leases: BTreeMap<i64, MLease>,
    keys: BTreeMap<u8, i64>,
    primary: bool,
    now_ms: u64,
}

impl Model {
    fn detach(&mut self, key: u8) {
        if let Some(old) = self.keys.remove(&key) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(&key);
            }
        }
    }

    fn refresh(&mut self, id: i64, extend_ms: u64) {
        let now = self.now_ms;
        let l = self.leases.get_mut(&id).expect("lease");
        let secs = if l.remaining > 0 { l.remaining } else { l.ttl };
        l.expiry_ms = Some(now + secs as u64 * 1000 + extend_ms);
        l.reported_ms = None;
    }

    fn check_at(l: &MLease) -> Option<u64> {
        let e = l.expiry_ms?;
        Some(l.reported_ms.map_or(e, |r| r + RETRY_MS))
    }
}

fn t(ms: u64) -> MonoTime {
    MonoTime(Duration::from_millis(ms))
}

fn config() -> LessorConfig {
    LessorConfig {
        min_ttl_secs: MIN_TTL,
        checkpoint_interval: Duration::from_secs(CHECKPOINT_SECS),
        expired_retry_interval: Duration::from_millis(RETRY_MS),
    }
}

fn event(key: u8, lease: i64, delete: bool) -> Event {
    Event {
        r#type: if delete {
            EventType::Delete
        } else {
            EventType::Put
        } as i32,
        kv: Some(KeyValue {
            key: vec![key],
            lease,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

/// Runs `op` on both; panics (with context) on any difference.
fn step(l: &mut Lessor, m: &mut Model, op: &Op) {
    let now = t(m.now_ms);
    match op {
        Op::Grant { id, ttl } => {
            let id = *id as i64;
            let expected = if id == 0 {
                Err(LeaseError::NotFound)
            } else if *ttl > MAX_LEASE_TTL_SECS {
                Err(LeaseError::TtlTooLarge)
            } else if m.leases.contains_key(&id) {
                Err(LeaseError::AlreadyExists)
            } else {
                Ok((*ttl).max(MIN_TTL))
            };
            assert_eq!(l.grant(LeaseId(id), *ttl, now), expected);
            if let Ok(ttl) = expected {
                m.leases.insert(
                    id,
                    MLease {
                        ttl,
                        remaining: 0,
                        expiry_ms: None,
                        reported_ms: None,
                        keys: BTreeSet::new(),
                    },
                );
                if m.primary {
                    m.refresh(id, 0);
                }
            }
        }
        Op::Revoke { id } => {
            let id = *id as i64;
            let expected = match m.leases.remove(&id) {
                None => Err(LeaseError::NotFound),
                Some(lease) => {
                    for k in &lease.keys {
                        m.keys.remove(k);
                    }
                    Ok(lease.keys.iter().map(|k| vec![*k]).collect::<Vec<_>>())
                }
            };
            assert_eq!(l.revoke(LeaseId(id)), expected);
        }
        Op::Put { key, lease } => {
            // MVCC refuses a put with an unknown lease before any event.
            let lease = *lease as i64;
            if lease != 0 && !m.leases.contains_key(&lease) {
                assert!(!l.contains(LeaseId(lease)));
                return;
            }
            l.apply_events(&[event(*key, lease, false)]);
            m.detach(*key);
            if lease != 0 {
                m.keys.insert(*key, lease);
                m.leases.get_mut(&lease).expect("checked").keys.insert(*key);
            }
        }
        Op::Delete { key } => {
            l.apply_events(&[event(*key, 0, true)]);
            m.detach(*key);
        }
        Op::Advance { ms } => m.now_ms += *ms as u64,
        Op::Renew { id } => {
            let id = *id as i64;
            let now_ms = m.now_ms;
            let expected = if !m.primary {
                Err(LeaseError::NotPrimary)
            } else {
                match m.leases.get_mut(&id) {
                    None => Err(LeaseError::NotFound),
                    Some(ml) if ml.expiry_ms.is_some_and(|e| e <= now_ms) => {
                        Ok(RenewOutcome::Expired)
                    }
                    Some(ml) => {
                        ml.expiry_ms = Some(now_ms + ml.ttl as u64 * 1000);
                        ml.reported_ms = None;
                        Ok(RenewOutcome::Renewed { ttl_secs: ml.ttl })
                    }
                }
            };
            assert_eq!(l.renew(LeaseId(id), now), expected);
        }
        Op::Promote { extend_ms } => {
            l.promote(now, Duration::from_millis(*extend_ms as u64));
            m.primary = true;
            let ids: Vec<i64> = m.leases.keys().copied().collect();
            for id in ids {
                m.refresh(id, *extend_ms as u64);
            }
        }
        Op::Demote => {
            l.demote();
            m.primary = false;
            for ml in m.leases.values_mut() {
                ml.expiry_ms = None;
                ml.reported_ms = None;
            }
        }
        Op::Checkpoint { id, remaining } => {
            let id = *id as i64;
            let exists = m.leases.contains_key(&id);
            assert_eq!(l.checkpoint(LeaseId(id), *remaining as i64, now), exists);
            if let Some(ml) = m.leases.get_mut(&id) {
                ml.remaining = *remaining as i64;
            }
        }
        Op::ApplyDueCheckpoints => {
            let due = l.due_checkpoints(now, MAX_CHECKPOINT_BATCH);
            let ids: BTreeSet<LeaseId> = due.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids.len(), due.len(), "a lease checkpointed twice at once");
            for (id, remaining) in due {
                assert!(m.primary, "checkpoints only on the primary");
                let ml = m.leases.get_mut(&id.0).expect("checkpoint of a live lease");
                let expiry = ml.expiry_ms.expect("primary lease has an expiry");
                assert!(expiry > m.now_ms);
                let left_ms = expiry - m.now_ms;
                assert_eq!(remaining as u64, left_ms.div_ceil(1000), "rounded up");
                assert!(remaining < ml.ttl, "only leases below their TTL");
                // The leader proposes it; applying it records it.
                assert!(l.checkpoint(id, remaining, now));
                ml.remaining = remaining;
            }
        }
        Op::Expire { limit } => {
            let now_ms = m.now_ms;
            let mut eligible: Vec<(u64, i64)> = if m.primary {
                m.leases
                    .iter()
                    .filter(|(_, ml)| ml.expiry_ms.is_some_and(|e| e <= now_ms))
                    .filter_map(|(id, ml)| {
                        Model::check_at(ml)
                            .filter(|c| *c <= now_ms)
                            .map(|c| (c, *id))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            eligible.sort();
            eligible.truncate(*limit as usize);
            let expected: Vec<LeaseId> = eligible.iter().map(|(_, id)| LeaseId(*id)).collect();
            assert_eq!(l.expired(now, *limit as usize), expected);
            for id in expected {
                m.leases.get_mut(&id.0).expect("lease").reported_ms = Some(now_ms);
            }
        }
        Op::Restart => {
            // Rebuild from what is persisted: the records and the live keys.
            let mut fresh = Lessor::new(config());
            for id in l.leases() {
                let (ttl, remaining) = l.record(id).expect("listed lease has a record");
                fresh.restore(id, ttl, remaining);
            }
            for (key, id) in &m.keys {
                fresh.attach(&[*key], LeaseId(*id));
            }
            *l = fresh;
            m.primary = false;
            for ml in m.leases.values_mut() {
                ml.expiry_ms = None;
                ml.reported_ms = None;
            }
        }
    }
}

/// Compares everything observable.
fn compare(l: &Lessor, m: &Model) {
    l.check_invariants();
    assert_eq!(l.is_primary(), m.primary);
    assert_eq!(l.len(), m.leases.len());
    let now = t(m.now_ms);
    for (id, ml) in &m.leases {
        let id = LeaseId(*id);
        assert_eq!(l.record(id), Some((ml.ttl, ml.remaining)), "record of {id}");
        let ttl = l.time_to_live(id, now).expect("lease exists");
        let remaining = match ml.expiry_ms {
            Some(e) => ((e as i128 - m.now_ms as i128) / 1000) as i64,
            None => 9_223_372_036,
        };
        assert_eq!(
            ttl,
            TimeToLive {
                granted_ttl_secs: ml.ttl,
                remaining_secs: remaining,
                keys: ml.keys.iter().map(|k| vec![*k]).collect(),
            },
            "time to live of {id}"
        );
    }
    for key in 0..8u8 {
        assert_eq!(
            l.lease_of(&[key]),
            m.keys.get(&key).map(|id| LeaseId(*id)),
            "lease of key {key}"
        );
    }
    let mut order: Vec<(bool, Option<u64>, i64)> = m
        .leases
        .iter()
        .map(|(id, ml)| (ml.expiry_ms.is_none(), ml.expiry_ms, *id))
        .collect();
    order.sort();
    let expected: Vec<LeaseId> = order.into_iter().map(|(_, _, id)| LeaseId(id)).collect();
    assert_eq!(l.leases(), expected, "lease list order");
}

fn run(ops: Vec<Op>) -> bool {
    let mut l = Lessor::new(config());
    let mut m = Model::default();
    for op in &ops {
        step(&mut l, &mut m, op);
        compare(&l, &m);
    }
    true
}

#[test]
fn lessor_matches_the_model() {
    QuickCheck::new()
        .tests(500)
        .rng(Gen::new(60))
        .quickcheck(run as fn(Vec<Op>) -> bool);
}

#[test]
fn lessor_matches_the_model_on_a_fixed_failover_story() {
    use Op::*;
    assert!(run(vec![
        Grant { id: 1, ttl: 30 },
        Put { key: 1, lease: 1 },
        Promote { extend_ms: 1000 },
        Advance { ms: 7000 },
        ApplyDueCheckpoints,
        Advance { ms: 5000 },
        ApplyDueCheckpoints,
        Demote,
        Advance { ms: 60000 },
        Promote { extend_ms: 1000 },
        Advance { ms: 7999 },
        Expire { limit: 3 },
        Renew { id: 1 },
        Advance { ms: 30000 },
        Expire { limit: 3 },
        Renew { id: 1 },
        Revoke { id: 1 },
        Restart,
    ]));
}
