//! Unit tests of the lessor: etcd's rules one by one.

use std::time::Duration;

use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use cairn_runtime::MonoTime;

use super::*;

fn at(secs: f64) -> MonoTime {
    MonoTime(Duration::from_secs_f64(secs))
}

fn cfg() -> LessorConfig {
    LessorConfig {
        min_ttl_secs: 2,
        checkpoint_interval: Duration::from_secs(60),
        expired_retry_interval: Duration::from_secs(3),
    }
}

fn put(key: &str, lease: i64) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: key.into(),
            lease,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

fn del(key: &str) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.into(),
            ..Default::default()
        }),
        prev_kv: None,
    }
}

#[test]
fn min_ttl_follows_etcds_formula() {
    // etcd defaults: 10 ticks of 100 ms -> (3*10/2) * 100 ms = 1.5 s -> 2 s.
    assert_eq!(min_lease_ttl_secs(10, Duration::from_millis(100)), 2);
    // Integer division: 3*5/2 = 7 ticks of 100 ms = 0.7 s -> 1 s.
    assert_eq!(min_lease_ttl_secs(5, Duration::from_millis(100)), 1);
    // 50 ticks of 100 ms = 7.5 s -> 8 s; exact seconds are not rounded up.
    assert_eq!(min_lease_ttl_secs(50, Duration::from_millis(100)), 8);
    assert_eq!(min_lease_ttl_secs(10, Duration::from_millis(200)), 3);
    assert_eq!(min_lease_ttl_secs(20, Duration::from_millis(100)), 3);
}

#[test]
fn grant_raises_short_ttls_and_refuses_bad_ones_in_etcds_order() {
    let mut l = Lessor::new(cfg());
    assert_eq!(l.grant(LeaseId(1), 1, at(0.0)), Ok(2));
    assert_eq!(l.grant(LeaseId(2), -5, at(0.0)), Ok(2));
    assert_eq!(l.grant(LeaseId(3), 30, at(0.0)), Ok(30));
    assert_eq!(
        l.grant(LeaseId(4), MAX_LEASE_TTL_SECS, at(0.0)),
        Ok(MAX_LEASE_TTL_SECS)
    );
    assert_eq!(
        l.grant(LeaseId(5), MAX_LEASE_TTL_SECS + 1, at(0.0)),
        Err(LeaseError::TtlTooLarge)
    );
    assert_eq!(
        l.grant(LeaseId(3), 10, at(0.0)),
        Err(LeaseError::AlreadyExists)
    );
    // The TTL is checked before existence, as etcd.
    assert_eq!(
        l.grant(LeaseId(3), i64::MAX, at(0.0)),
        Err(LeaseError::TtlTooLarge)
    );
    assert_eq!(l.grant(LeaseId(0), 10, at(0.0)), Err(LeaseError::NotFound));
    l.check_invariants();
}

#[test]
fn follower_leases_never_expire_and_primary_ones_do() {
    let mut l = Lessor::new(cfg());
    l.grant(LeaseId(1), 5, at(0.0)).expect("grant");
    assert!(l.expired(at(1000.0), 100).is_empty());
    assert_eq!(l.renew(LeaseId(1), at(1.0)), Err(LeaseError::NotPrimary));

    l.promote(at(10.0), Duration::from_secs(1));
    l.check_invariants();
    // 10 + 5 + 1 = 16.
    assert!(l.expired(at(15.9), 100).is_empty());
    assert_eq!(l.expired(at(16.0), 100), vec![LeaseId(1)]);
    // Not reported again until the retry interval has passed.
    assert!(l.expired(at(18.0), 100).is_empty());
    assert_eq!(l.expired(at(19.0), 100), vec![LeaseId(1)]);
    l.check_invariants();
}

#[test]
fn grant_on_the_primary_expires_ttl_from_now() {
    let mut l = Lessor::new(cfg());
    l.promote(at(0.0), Duration::from_secs(1));
    l.grant(LeaseId(7), 10, at(5.0)).expect("grant");
    let ttl = l.time_to_live(LeaseId(7), at(6.5)).expect("ttl");
    assert_eq!(ttl.granted_ttl_secs, 10);
    assert_eq!(ttl.remaining_secs, 8); // 8.5 truncated
    assert!(l.expired(at(14.9), 10).is_empty());
    assert_eq!(l.expired(at(15.0), 10), vec![LeaseId(7)]);
}

#[test]
fn renew_restarts_the_full_ttl_but_not_for_an_expired_lease() {
    let mut l = Lessor::new(cfg());
    l.promote(at(0.0), Duration::ZERO);
    l.grant(LeaseId(1), 10, at(0.0)).expect("grant");
    assert_eq!(
        l.renew(LeaseId(1), at(8.0)),
        Ok(RenewOutcome::Renewed { ttl_secs: 10 })
    );
    assert!(l.expired(at(17.9), 10).is_empty());
    assert_eq!(l.renew(LeaseId(1), at(18.0)), Ok(RenewOutcome::Expired));
    assert_eq!(l.renew(LeaseId(9), at(1.0)), Err(LeaseError::NotFound));
    l.check_invariants();
}

#[test]
fn keys_attach_on_put_and_detach_on_overwrite_delete_and_revoke() {
    let mut l = Lessor::new(cfg());
    l.grant(LeaseId(1), 10, at(0.0)).expect("grant");
    l.grant(LeaseId(2), 10, at(0.0)).expect("grant");
    l.apply_events(&[put("a", 1), put("b", 1), put("c", 2)]);
    assert_eq!(l.keys(LeaseId(1)), Ok(vec![b"a".to_vec(), b"b".to_vec()]));
    // Overwrite with another lease moves the key; without a lease detaches it.
    l.apply_events(&[put("a", 2), put("b", 0)]);
    assert_eq!(l.keys(LeaseId(1)), Ok(vec![]));
    assert_eq!(l.keys(LeaseId(2)), Ok(vec![b"a".to_vec(), b"c".to_vec()]));
    l.apply_events(&[del("c")]);
    assert_eq!(l.lease_of(b"c"), None);
    assert_eq!(l.revoke(LeaseId(2)), Ok(vec![b"a".to_vec()]));
    assert_eq!(l.lease_of(b"a"), None);
    assert_eq!(l.revoke(LeaseId(2)), Err(LeaseError::NotFound));
    assert_eq!(l.keys(LeaseId(2)), Err(LeaseError::NotFound));
    l.check_invariants();
}

#[test]
fn promote_uses_the_checkpointed_remaining_ttl_plus_the_extension() {
    let mut l = Lessor::new(cfg());
    l.grant(LeaseId(1), 600, at(0.0)).expect("grant");
    l.grant(LeaseId(2), 600, at(0.0)).expect("grant");
    assert!(l.checkpoint(LeaseId(1), 100, at(0.0)));
    assert!(!l.checkpoint(LeaseId(3), 100, at(0.0)));
    l.promote(at(50.0), Duration::from_secs(2));
    // 50 + 100 + 2 = 152; the other gets its full TTL: 50 + 600 + 2.
    assert!(l.expired(at(151.9), 10).is_empty());
    assert_eq!(l.expired(at(152.0), 10), vec![LeaseId(1)]);
    assert!(l.expired(at(651.9), 10).iter().all(|id| *id != LeaseId(2)));
    assert!(l.expired(at(652.0), 10).contains(&LeaseId(2)));
    l.check_invariants();
}

#[test]
fn primary_checkpoints_long_leases_with_the_remaining_ttl_rounded_up() {
    let mut l = Lessor::new(cfg()); // checkpoint every 60 s
    l.promote(at(0.0), Duration::ZERO);
    l.grant(LeaseId(1), 600, at(0.0)).expect("grant");
    l.grant(LeaseId(2), 30, at(0.0)).expect("grant"); // not longer than the interval
    assert!(l.due_checkpoints(at(59.0), 10).is_empty());
    assert_eq!(
        l.due_checkpoints(at(60.5), 10),
        vec![(LeaseId(1), 540)] // 539.5 rounded up
    );
    // Applying it records the remaining TTL and reschedules.
    assert!(l.checkpoint(LeaseId(1), 540, at(60.5)));
    assert!(l.has_checkpoint(LeaseId(1)));
    assert!(l.due_checkpoints(at(100.0), 10).is_empty());
    assert_eq!(l.due_checkpoints(at(120.5), 10), vec![(LeaseId(1), 480)]);
    l.check_invariants();
    // A lease renewed just now is at its full TTL: nothing to checkpoint.
    l.renew(LeaseId(1), at(180.5)).expect("renew");
    assert!(l.due_checkpoints(at(180.5), 10).is_empty());
    assert_eq!(l.due_checkpoints(at(240.5), 10), vec![(LeaseId(1), 540)]);
    l.check_invariants();
}

#[test]
fn demote_forgets_expiries_and_schedules() {
    let mut l = Lessor::new(cfg());
    l.promote(at(0.0), Duration::ZERO);
    l.grant(LeaseId(1), 600, at(0.0)).expect("grant");
    l.demote();
    l.check_invariants();
    assert!(l.expired(at(10_000.0), 10).is_empty());
    assert!(l.due_checkpoints(at(10_000.0), 10).is_empty());
    let ttl = l.time_to_live(LeaseId(1), at(10_000.0)).expect("ttl");
    assert_eq!(ttl.remaining_secs, 9_223_372_036);
}

#[test]
fn expired_is_bounded_per_call_and_in_expiry_order() {
    let mut l = Lessor::new(cfg());
    l.promote(at(0.0), Duration::ZERO);
    for i in 1..=10 {
        l.grant(LeaseId(i), 20 - i, at(0.0)).expect("grant");
    }
    let first = l.expired(at(100.0), 4);
    assert_eq!(first, vec![LeaseId(10), LeaseId(9), LeaseId(8), LeaseId(7)]);
    let rest = l.expired(at(100.0), 100);
    assert_eq!(rest.len(), 6);
    l.check_invariants();
}

#[test]
fn leases_are_listed_soonest_expiry_first() {
    let mut l = Lessor::new(cfg());
    l.promote(at(0.0), Duration::ZERO);
    l.grant(LeaseId(1), 30, at(0.0)).expect("grant");
    l.grant(LeaseId(2), 10, at(0.0)).expect("grant");
    l.grant(LeaseId(3), 20, at(0.0)).expect("grant");
    assert_eq!(l.leases(), vec![LeaseId(2), LeaseId(3), LeaseId(1)]);
}

#[test]
fn many_leases_expiring_together_are_spread_but_never_earlier() {
    let mut l = Lessor::new(cfg());
    let n = REVOKE_RATE_PER_SEC as i64 + 500;
    for i in 1..=n {
        l.grant(LeaseId(i), 10, at(0.0)).expect("grant");
    }
    l.promote(at(0.0), Duration::ZERO);
    l.check_invariants();
    // Nothing expires before its TTL.
    assert!(l.expired(at(9.99), usize::MAX).is_empty());
    // No more than 3/4 of the revoke rate expire within the first second.
    let first_second = l.expired(at(10.99), usize::MAX).len();
    assert!(
        first_second <= 3 * REVOKE_RATE_PER_SEC / 4 + 1,
        "{first_second}"
    );
    // The rest within the next second or so (before the first ones are retried).
    let all = first_second + l.expired(at(12.5), usize::MAX).len();
    assert_eq!(all as i64, n);
}

#[test]
fn restore_raises_the_ttl_and_waits_for_promotion() {
    let mut l = Lessor::new(cfg());
    l.restore(LeaseId(4), 1, 0);
    assert_eq!(l.record(LeaseId(4)), Some((2, 0)));
    l.attach(b"k", LeaseId(4));
    l.attach(b"orphan", LeaseId(5)); // unknown lease: nothing attached
    assert_eq!(l.keys(LeaseId(4)), Ok(vec![b"k".to_vec()]));
    assert_eq!(l.lease_of(b"orphan"), None);
    l.check_invariants();
}

#[test]
fn generated_ids_are_positive_distinct_and_carry_the_member() {
    let g = IdGenerator::new(0xabcd_1234, 7);
    let ids: Vec<LeaseId> = (0..1000).map(|_| g.next()).collect();
    let set: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(set.len(), ids.len());
    assert!(ids.iter().all(|id| id.0 > 0));
    assert!(ids.iter().all(|id| (id.0 as u64) >> 48 == 0x1234));
    // Deterministic per seed.
    let again = IdGenerator::new(0xabcd_1234, 7);
    assert_eq!(again.next(), ids[0]);
}
