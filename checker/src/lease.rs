//! The lease checker: what etcd promises about leases, checked on a history
//! of lease calls (`lease_op` lines, README.md) — grants, puts of keys
//! attached to a lease, keep-alives, TimeToLive, revokes and linearizable
//! gets of those keys.
//!
//! What etcd guarantees (and what it does not), and so what is checked:
//! - **Never expired early.** A lease is refreshed to `TTL` seconds from the
//!   moment its leader handles a grant or keep-alive, and that moment lies
//!   between the client's call and the answer; so a lease lives at least
//!   until *call + TTL* of its last successful grant or keep-alive (and until
//!   call + remaining of a TimeToLive answer). The leader expires leases by
//!   its monotonic clock, so this holds up to the leader's clock: a clock
//!   jump of J seconds (a `clock` fault line with `offset_s`) may shorten it
//!   by J. Another leader's overlap: a new leader refreshes every lease by
//!   TTL plus one election timeout, but an old leader may still answer for up
//!   to about one election timeout; `LeaseOptions::overlap_ns` (1 s, the
//!   harness's election timeout) is allowed for that. A lease has *no upper
//!   bound*: leader changes refresh every lease, a minority or a leaderless
//!   cluster expires nothing, so the check never demands an expiry.
//!   "Gone" is observed by a keep-alive answered with TTL 0, a TimeToLive of
//!   -1 without a granted TTL (etcd answers a lease past its expiry but not
//!   yet revoked with a negative TTL *and* its granted TTL: not gone, a new
//!   leader may still refresh it), a put or revoke refused with "lease not found", a successful revoke,
//!   or a linearizable get that no longer finds a key whose attaching put was
//!   acknowledged before the get began (the workload never deletes or
//!   rewrites those keys). An observation is only "early" if no revoke of
//!   that lease had been called before it returned.
//! - **Gone stays gone.** Revocation (by a client or by expiry) deletes the
//!   lease and all its keys in one Raft entry, so once a client has seen the
//!   lease gone, no linearizable get that begins afterwards finds a key with
//!   that lease, and no put attaching a key to it succeeds. Keep-alives and
//!   TimeToLive are answered by the leader without a Raft round (etcd 3.4's
//!   Renew confirms leadership, its TimeToLive only waits for its applied
//!   index), so an "alive" answer from them counts only when it began more
//!   than `overlap_ns` after the lease was seen gone.
//! - **TimeToLive answers are consistent.** The granted TTL is the TTL the
//!   grant returned; the remaining TTL is at most granted TTL plus
//!   `extend_s` (a new leader's extension: one election timeout, rounded up)
//!   plus any clock jump; the keys listed are keys some put attached to that
//!   lease (called before the answer) and include every key whose attaching
//!   put was acknowledged before the TimeToLive began.
//! - **Atomic revocation in the committed history** (with `change` lines):
//!   every acknowledged key of a lease seen gone is deleted after its put,
//!   and all of one lease's keys are deleted at the same revision.
//!
//! Tests: `tests` below; the binary's in `tests/cli.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::committed::CommittedHistory;

/// A lease call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseRequest {
    Grant {
        ttl: i64,
    },
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    KeepAlive {
        lease: i64,
    },
    TimeToLive {
        lease: i64,
    },
    Revoke {
        lease: i64,
    },
    Get {
        key: String,
    },
}

/// A key as a get returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedKv {
    pub value: String,
    pub lease: i64,
    pub mod_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseResponse {
    Grant {
        lease: i64,
        ttl: i64,
    },
    Put {
        revision: u64,
    },
    /// TTL 0: the lease was not found.
    KeepAlive {
        ttl: i64,
    },
    /// TTL -1: the lease was not found.
    TimeToLive {
        ttl: i64,
        granted_ttl: i64,
        #[serde(default)]
        keys: Vec<String>,
    },
    Revoke {
        revision: u64,
    },
    Get {
        revision: u64,
        kv: Option<LeasedKv>,
    },
    /// "etcdserver: requested lease not found" (a put or a revoke).
    LeaseNotFound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOutcome {
    Ok(LeaseResponse),
    Failed,
    Unknown,
}

/// `{"lease_op": …}`: one lease call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseOp {
    pub client: u64,
    pub call: u64,
    #[serde(default)]
    pub ret: Option<u64>,
    pub input: LeaseRequest,
    pub output: LeaseOutcome,
}

impl fmt::Display for LeaseOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |ns: u64| ns as f64 / 1e9;
        write!(f, "client {} [{:.3}s", self.client, secs(self.call))?;
        match self.ret {
            Some(r) => write!(f, ", {:.3}s] ", secs(r))?,
            None => write!(f, ", …] ")?,
        }
        let input = serde_json::to_string(&self.input).unwrap_or_default();
        let output = serde_json::to_string(&self.output).unwrap_or_default();
        write!(f, "{input} -> {output}")
    }
}

/// A clock fault: some member's clock was `offset_s` seconds off between
/// `start_ns` and `end_ns` (history time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockJump {
    pub start_ns: u64,
    pub end_ns: u64,
    pub offset_s: i64,
}

/// Tolerances (README.md, "lease").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long an old leader may still answer keep-alives and TimeToLive.
    pub overlap_ns: u64,
    /// A new leader's extension of every lease, in whole seconds.
    pub extend_s: i64,
    /// How late a member may notice a clock fault (libfaketime rereads its
    /// file at most once a second).
    pub clock_lag_ns: u64,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            overlap_ns: 1_000_000_000,
            extend_s: 1,
            clock_lag_ns: 2_000_000_000,
        }
    }
}

/// The lease lines and clock faults of a history's other records.
pub fn from_records(other: &[Json]) -> Result<(Vec<LeaseOp>, Vec<ClockJump>), String> {
    let mut ops = Vec::new();
    let mut jumps = Vec::new();
    for j in other {
        if let Some(body) = j.get("lease_op") {
            ops.push(
                serde_json::from_value::<LeaseOp>(body.clone())
                    .map_err(|e| format!("lease_op: {e}"))?,
            );
        } else if let Some(f) = j.get("fault") {
            if f.get("kind").and_then(Json::as_str) != Some("clock") {
                continue;
            }
            let num = |k: &str| f.get(k).and_then(Json::as_u64);
            if let (Some(start_ns), Some(end_ns), Some(offset_s)) = (
                num("start_ns"),
                num("end_ns"),
                f.get("offset_s").and_then(Json::as_i64),
            ) {
                jumps.push(ClockJump {
                    start_ns,
                    end_ns,
                    offset_s,
                });
            }
        }
    }
    Ok((ops, jumps))
}

/// The result: violations (each naming operations as `#<index>`) and a
/// one-line summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseReport {
    pub violations: Vec<String>,
    pub summary: String,
}

#[derive(Default)]
struct Lease {
    ttl: i64,
    grant_call: u64,
    /// (call + seconds, op) of every grant, keep-alive and TimeToLive answer
    /// that promises the lease lives that long.
    promises: Vec<(u64, usize)>,
    /// (ret, op) of every observation that the lease is gone.
    gone: Vec<(u64, usize)>,
    /// Earliest call of a revoke that was not certainly refused.
    revoke_from: Option<u64>,
    /// Key -> (call of its first attaching put, acked (ret, revision)).
    keys: BTreeMap<String, (u64, Option<(u64, u64)>)>,
    /// (call, op, linearizable) of every answer saying the lease is alive.
    alive: Vec<(u64, usize, bool)>,
    kept_alive: bool,
}

fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// Checks `ops` (in any order; `#n` names `ops[n]`).
pub fn check_leases(
    ops: &[LeaseOp],
    jumps: &[ClockJump],
    committed: Option<&CommittedHistory>,
    options: &LeaseOptions,
) -> LeaseReport {
    const S: u64 = 1_000_000_000;
    let mut leases: BTreeMap<i64, Lease> = BTreeMap::new();
    for op in ops {
        if let (LeaseRequest::Grant { .. }, LeaseOutcome::Ok(LeaseResponse::Grant { lease, ttl })) =
            (&op.input, &op.output)
        {
            let l = leases.entry(*lease).or_default();
            l.ttl = *ttl;
            l.grant_call = op.call;
        }
    }
    let mut violations = Vec::new();
    // Which lease each key was attached to (keys are unique per lease).
    let mut owner: BTreeMap<&str, i64> = BTreeMap::new();
    for op in ops {
        if let LeaseRequest::Put { key, lease, .. } = &op.input {
            owner.insert(key.as_str(), *lease);
        }
    }
    let clock_slack = |from: u64, to: u64| -> u64 {
        jumps
            .iter()
            .filter(|j| j.start_ns <= to && j.end_ns + options.clock_lag_ns >= from)
            .map(|j| j.offset_s.unsigned_abs() * S)
            .max()
            .unwrap_or(0)
    };
    let mut ttl_answers = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let ok = match &op.output {
            LeaseOutcome::Ok(r) => Some(r),
            _ => None,
        };
        let ret = op.ret.unwrap_or(u64::MAX);
        match (&op.input, ok) {
            (LeaseRequest::Grant { .. }, Some(LeaseResponse::Grant { lease, ttl })) => {
                if let Some(l) = leases.get_mut(lease) {
                    l.promises.push((op.call + *ttl as u64 * S, i));
                }
            }
            (LeaseRequest::Put { key, lease, .. }, ok) => {
                let Some(l) = leases.get_mut(lease) else {
                    continue;
                };
                match (ok, &op.output) {
                    (_, LeaseOutcome::Failed) => {}
                    (Some(LeaseResponse::LeaseNotFound), _) => l.gone.push((ret, i)),
                    (Some(LeaseResponse::Put { revision }), _) => {
                        let e = l.keys.entry(key.clone()).or_insert((op.call, None));
                        e.0 = e.0.min(op.call);
                        if e.1.is_none() {
                            e.1 = Some((ret, *revision));
                        }
                        l.alive.push((op.call, i, true));
                    }
                    _ => {
                        let e = l.keys.entry(key.clone()).or_insert((op.call, None));
                        e.0 = e.0.min(op.call);
                    }
                }
            }
            (LeaseRequest::KeepAlive { lease }, Some(LeaseResponse::KeepAlive { ttl })) => {
                let Some(l) = leases.get_mut(lease) else {
                    continue;
                };
                if *ttl > 0 {
                    l.promises.push((op.call + *ttl as u64 * S, i));
                    l.alive.push((op.call, i, false));
                    l.kept_alive = true;
                } else {
                    l.gone.push((ret, i));
                }
            }
            (
                LeaseRequest::TimeToLive { lease },
                Some(LeaseResponse::TimeToLive {
                    ttl, granted_ttl, ..
                }),
            ) => {
                let Some(l) = leases.get_mut(lease) else {
                    continue;
                };
                if *ttl >= 0 {
                    // An answer beyond the bound is reported below, and
                    // promises nothing.
                    let jump = clock_slack(l.grant_call, ret).div_ceil(S) as i64;
                    if *ttl <= l.ttl + options.extend_s + jump {
                        l.promises.push((op.call + *ttl as u64 * S, i));
                    }
                    l.alive.push((op.call, i, false));
                    ttl_answers.push(i);
                } else if *granted_ttl == 0 {
                    l.gone.push((ret, i));
                }
                // A negative TTL with the granted TTL: expired on the
                // answering leader, revocation pending — not gone yet (a new
                // leader refreshes it), and no promise.
            }
            (LeaseRequest::Revoke { lease }, _) => {
                let Some(l) = leases.get_mut(lease) else {
                    continue;
                };
                if op.output != LeaseOutcome::Failed {
                    l.revoke_from = Some(l.revoke_from.map_or(op.call, |r| r.min(op.call)));
                }
                if ok.is_some() {
                    l.gone.push((ret, i));
                }
            }
            (LeaseRequest::Get { key }, Some(LeaseResponse::Get { kv, .. })) => {
                let Some(lease) = owner.get(key.as_str()) else {
                    continue;
                };
                let Some(l) = leases.get_mut(lease) else {
                    continue;
                };
                match kv {
                    Some(kv) if kv.lease == *lease => l.alive.push((op.call, i, true)),
                    Some(kv) => violations.push(format!(
                        "#{i} found {key} attached to lease {:x}, but only lease {lease:x} attached it: {op}",
                        kv.lease
                    )),
                    None => {
                        let acked_before = l
                            .keys
                            .get(key)
                            .and_then(|k| k.1)
                            .is_some_and(|(r, _)| r < op.call);
                        if acked_before {
                            l.gone.push((ret, i));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    let mut margin: Option<(u64, i64, usize)> = None;
    let (mut revoked, mut expired) = (0, 0);
    for (id, l) in &leases {
        // Never gone before its promise.
        for (r, o) in &l.gone {
            if l.revoke_from.is_some_and(|rv| rv < *r) {
                continue;
            }
            let Some((until, p)) = l
                .promises
                .iter()
                .filter(|(_, p)| ops[*p].call < *r)
                .max()
                .copied()
            else {
                continue;
            };
            let slack = options.overlap_ns + clock_slack(l.grant_call, *r);
            if *r + slack < until {
                violations.push(format!(
                    "lease {id:x} expired early: #{o} saw it gone by {}, but #{p} promised it until {} (TTL {} s): {} / {}",
                    secs(*r),
                    secs(until),
                    l.ttl,
                    ops[*o],
                    ops[p]
                ));
            }
            let m = *r as i64 - until as i64;
            if margin.is_none_or(|(_, best, _)| m < best) {
                margin = Some((*id as u64, m, *o));
            }
        }
        // Gone stays gone.
        let Some(&(gone_at, g)) = l.gone.iter().min() else {
            continue;
        };
        if l.revoke_from.is_some_and(|rv| rv < gone_at) {
            revoked += 1;
        } else {
            expired += 1;
        }
        for (call, o, linearizable) in &l.alive {
            let after = if *linearizable {
                gone_at
            } else {
                gone_at + options.overlap_ns
            };
            if *call > after {
                violations.push(format!(
                    "lease {id:x} came back: #{g} saw it gone by {}, then #{o} (called {}) found it alive: {} / {}",
                    secs(gone_at),
                    secs(*call),
                    ops[g],
                    ops[*o]
                ));
            }
        }
        // The committed history: every acknowledged key deleted, all at once.
        if let Some(c) = committed {
            let mut deleted_at = BTreeSet::new();
            for (key, (_, acked)) in &l.keys {
                let Some((_, rev)) = acked else { continue };
                let del = c
                    .changes
                    .iter()
                    .find(|ch| ch.key == *key && ch.revision.0 > *rev && ch.value.is_none());
                match del {
                    Some(ch) => {
                        deleted_at.insert(ch.revision.0);
                    }
                    None if c.current_revision.0 > 0 => violations.push(format!(
                        "lease {id:x} is gone (#{g}) but its key {key} (put at revision {rev}) was never deleted in the committed history"
                    )),
                    None => {}
                }
            }
            if deleted_at.len() > 1 {
                violations.push(format!(
                    "lease {id:x}'s keys were deleted at different revisions {deleted_at:?}: a revocation is one atomic change"
                ));
            }
        }
    }
    // TimeToLive answers.
    for i in ttl_answers {
        let op = &ops[i];
        let (
            LeaseRequest::TimeToLive { lease },
            LeaseOutcome::Ok(LeaseResponse::TimeToLive {
                ttl,
                granted_ttl,
                keys,
            }),
        ) = (&op.input, &op.output)
        else {
            continue;
        };
        let Some(l) = leases.get(lease) else { continue };
        if *granted_ttl != l.ttl {
            violations.push(format!(
                "#{i} TimeToLive says lease {lease:x} was granted {granted_ttl} s, the grant said {} s: {op}",
                l.ttl
            ));
        }
        let jump = clock_slack(l.grant_call, op.ret.unwrap_or(u64::MAX)).div_ceil(S) as i64;
        if *ttl > l.ttl + options.extend_s + jump {
            violations.push(format!(
                "#{i} TimeToLive says lease {lease:x} has {ttl} s left of {} s: {op}",
                l.ttl
            ));
        }
        let ret = op.ret.unwrap_or(u64::MAX);
        let listed: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        for k in &listed {
            if !l.keys.get(*k).is_some_and(|(call, _)| *call < ret) {
                violations.push(format!(
                    "#{i} TimeToLive lists {k} under lease {lease:x}, which no put attached before: {op}"
                ));
            }
        }
        for (k, (_, acked)) in &l.keys {
            if acked.is_some_and(|(r, _)| r < op.call) && !listed.contains(k.as_str()) {
                violations.push(format!(
                    "#{i} TimeToLive of lease {lease:x} misses {k}, attached and acknowledged before it began: {op}"
                ));
            }
        }
    }
    let kept = leases.values().filter(|l| l.kept_alive).count();
    let mut summary = format!(
        "{} ops, {} leases: {kept} kept alive, {revoked} seen revoked, {expired} seen expired",
        ops.len(),
        leases.len()
    );
    if let Some((id, m, o)) = margin {
        summary.push_str(&format!(
            "; closest expiry: lease {id:x} seen gone {:+.3}s after its promise (#{o})",
            m as f64 / 1e9
        ));
    }
    LeaseReport {
        violations,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committed::CommittedChange;

    const S: u64 = 1_000_000_000;

    fn op(client: u64, call: u64, ret: u64, input: LeaseRequest, out: LeaseResponse) -> LeaseOp {
        LeaseOp {
            client,
            call,
            ret: Some(ret),
            input,
            output: LeaseOutcome::Ok(out),
        }
    }

    fn grant(call: u64, lease: i64, ttl: i64) -> LeaseOp {
        op(
            1,
            call,
            call + S / 100,
            LeaseRequest::Grant { ttl },
            LeaseResponse::Grant { lease, ttl },
        )
    }

    fn put(call: u64, key: &str, lease: i64, revision: u64) -> LeaseOp {
        op(
            1,
            call,
            call + S / 100,
            LeaseRequest::Put {
                key: key.into(),
                value: format!("v-{key}"),
                lease,
            },
            LeaseResponse::Put { revision },
        )
    }

    fn get(call: u64, key: &str, kv: Option<i64>) -> LeaseOp {
        op(
            2,
            call,
            call + S / 100,
            LeaseRequest::Get { key: key.into() },
            LeaseResponse::Get {
                revision: 9,
                kv: kv.map(|lease| LeasedKv {
                    value: format!("v-{key}"),
                    lease,
                    mod_revision: 2,
                }),
            },
        )
    }

    fn keep_alive(call: u64, lease: i64, ttl: i64) -> LeaseOp {
        op(
            1,
            call,
            call + S / 100,
            LeaseRequest::KeepAlive { lease },
            LeaseResponse::KeepAlive { ttl },
        )
    }

    fn time_to_live(call: u64, lease: i64, ttl: i64, keys: &[&str]) -> LeaseOp {
        op(
            3,
            call,
            call + S / 100,
            LeaseRequest::TimeToLive { lease },
            LeaseResponse::TimeToLive {
                ttl,
                granted_ttl: if ttl < 0 { 0 } else { 3 },
                keys: keys.iter().map(|k| k.to_string()).collect(),
            },
        )
    }

    fn check(ops: &[LeaseOp]) -> LeaseReport {
        check_leases(ops, &[], None, &LeaseOptions::default())
    }

    #[test]
    fn a_lease_kept_alive_then_expired_and_one_revoked_pass() {
        let ops = vec![
            grant(0, 7, 3),
            put(S / 10, "l/7/0", 7, 2),
            keep_alive(S, 7, 3),
            time_to_live(2 * S, 7, 2, &["l/7/0"]),
            get(3 * S, "l/7/0", Some(7)),
            // Expired 3 s after the keep-alive's call, seen 1.5 s later.
            get(5 * S + S / 2, "l/7/0", None),
            keep_alive(6 * S, 7, 0),
            time_to_live(6 * S, 7, -1, &[]),
            grant(0, 8, 5),
            put(S / 10, "l/8/0", 8, 3),
            op(
                1,
                S,
                S + S / 10,
                LeaseRequest::Revoke { lease: 8 },
                LeaseResponse::Revoke { revision: 4 },
            ),
            get(S + S / 5, "l/8/0", None),
        ];
        let r = check(&ops);
        assert!(r.violations.is_empty(), "{r:?}");
        assert!(r.summary.contains("2 leases"), "{}", r.summary);
        assert!(
            r.summary.contains("1 seen revoked, 1 seen expired"),
            "{}",
            r.summary
        );
        let changes = vec![
            CommittedChange::new(2, "l/7/0", Some("v-l/7/0")),
            CommittedChange::new(3, "l/8/0", Some("v-l/8/0")),
            CommittedChange::new(4, "l/8/0", None),
            CommittedChange::new(5, "l/7/0", None),
        ];
        let c = CommittedHistory::complete(changes);
        let r = check_leases(&ops, &[], Some(&c), &LeaseOptions::default());
        assert!(r.violations.is_empty(), "{r:?}");
    }

    #[test]
    fn an_early_expiry_is_caught_unless_a_clock_jump_or_a_revoke_explains_it() {
        // Kept alive at 1 s with TTL 3: alive until at least 4 s; gone at 2.5 s.
        let ops = vec![
            grant(0, 7, 3),
            put(S / 10, "l/7/0", 7, 2),
            keep_alive(S, 7, 3),
            get(2 * S + S / 2, "l/7/0", None),
        ];
        let r = check(&ops);
        assert_eq!(r.violations.len(), 1, "{r:?}");
        assert!(
            r.violations[0].contains("expired early: #3") && r.violations[0].contains("#2"),
            "{r:?}"
        );
        // Within the 1 s leader overlap: allowed.
        let mut ok = ops.clone();
        ok[3] = get(3 * S + S / 2, "l/7/0", None);
        assert!(check(&ok).violations.is_empty());
        // A member's clock jumped 30 s meanwhile: allowed.
        let jump = ClockJump {
            start_ns: S,
            end_ns: 2 * S,
            offset_s: 30,
        };
        let r = check_leases(&ops, &[jump], None, &LeaseOptions::default());
        assert!(r.violations.is_empty(), "{r:?}");
        // A revoke was called before: allowed.
        let mut revoked = ops.clone();
        revoked.push(LeaseOp {
            client: 4,
            call: 2 * S,
            ret: None,
            input: LeaseRequest::Revoke { lease: 7 },
            output: LeaseOutcome::Unknown,
        });
        assert!(check(&revoked).violations.is_empty());
    }

    #[test]
    fn a_key_that_outlives_its_revoked_lease_is_caught() {
        let revoke = op(
            1,
            S,
            S + S / 10,
            LeaseRequest::Revoke { lease: 8 },
            LeaseResponse::Revoke { revision: 4 },
        );
        let ops = vec![
            grant(0, 8, 5),
            put(S / 10, "l/8/0", 8, 3),
            revoke,
            get(2 * S, "l/8/0", Some(8)),
            put(2 * S, "l/8/1", 8, 5),
            keep_alive(3 * S, 8, 5),
        ];
        let r = check(&ops);
        let text = r.violations.join("\n");
        assert_eq!(r.violations.len(), 3, "{text}");
        for o in ["#3", "#4", "#5"] {
            assert!(text.contains(&format!("then {o}")), "{o} in {text}");
        }
        // A keep-alive just after the revoke may come from the old leader.
        let mut overlap = ops[..3].to_vec();
        overlap.push(keep_alive(S + S / 2, 8, 5));
        assert!(check(&overlap).violations.is_empty());
    }

    #[test]
    fn an_expired_lease_not_yet_revoked_is_not_gone() {
        // TimeToLive -1 with the granted TTL: past its expiry on that leader,
        // revocation pending; a new leader refreshed it and the key stayed.
        let mut pending = time_to_live(4 * S, 7, -1, &["l/7/0"]);
        if let LeaseOutcome::Ok(LeaseResponse::TimeToLive { granted_ttl, .. }) = &mut pending.output
        {
            *granted_ttl = 3;
        }
        let ops = vec![
            grant(0, 7, 3),
            put(S / 10, "l/7/0", 7, 2),
            pending,
            get(6 * S, "l/7/0", Some(7)),
        ];
        assert!(check(&ops).violations.is_empty(), "{:?}", check(&ops));
    }

    #[test]
    fn time_to_live_answers_must_agree_with_the_grant_and_the_puts() {
        let ops = vec![
            grant(0, 7, 3),
            put(S / 10, "l/7/0", 7, 2),
            // Misses l/7/0, lists a key never attached, and 9 s left of 3.
            time_to_live(S, 7, 9, &["l/7/9"]),
        ];
        let r = check(&ops);
        let text = r.violations.join("\n");
        assert_eq!(r.violations.len(), 3, "{text}");
        assert!(text.contains("9 s left of 3 s"), "{text}");
        assert!(text.contains("lists l/7/9"), "{text}");
        assert!(text.contains("misses l/7/0"), "{text}");
    }

    #[test]
    fn a_revocation_deletes_every_key_at_one_revision() {
        let ops = vec![
            grant(0, 8, 5),
            put(S / 10, "l/8/0", 8, 2),
            put(S / 5, "l/8/1", 8, 3),
            put(S / 4, "l/8/2", 8, 4),
            get(9 * S, "l/8/0", None),
        ];
        let c = CommittedHistory::complete(vec![
            CommittedChange::new(2, "l/8/0", Some("v-l/8/0")),
            CommittedChange::new(3, "l/8/1", Some("v-l/8/1")),
            CommittedChange::new(4, "l/8/2", Some("v-l/8/2")),
            CommittedChange::new(5, "l/8/0", None),
            CommittedChange::new(6, "l/8/1", None),
        ]);
        let r = check_leases(&ops, &[], Some(&c), &LeaseOptions::default());
        let text = r.violations.join("\n");
        assert_eq!(r.violations.len(), 2, "{text}");
        assert!(
            text.contains("l/8/2 (put at revision 4) was never deleted"),
            "{text}"
        );
        assert!(text.contains("different revisions {5, 6}"), "{text}");
    }

    #[test]
    fn lease_lines_and_clock_faults_parse() {
        let text = r#"{"lease_op":{"client":1,"call":5,"ret":9,"input":{"grant":{"ttl":3}},"output":{"ok":{"grant":{"lease":7,"ttl":3}}}}}
{"lease_op":{"client":1,"call":10,"input":{"keep_alive":{"lease":7}},"output":"unknown"}}
{"lease_op":{"client":1,"call":11,"ret":12,"input":{"revoke":{"lease":9}},"output":{"ok":"lease_not_found"}}}
{"lease_op":{"client":1,"call":13,"ret":14,"input":{"get":{"key":"l/7/0"}},"output":{"ok":{"get":{"revision":3,"kv":{"value":"x","lease":7,"mod_revision":2}}}}}}
{"fault":{"kind":"clock","start_ns":1,"end_ns":2,"offset_s":-30}}
{"fault":{"kind":"kill","start_ns":1,"end_ns":2}}"#;
        let h = crate::jsonl::History::parse(text).expect("parses");
        let (ops, jumps) = from_records(&h.other).expect("lease lines");
        assert_eq!(ops.len(), 4);
        assert_eq!(
            ops[2].output,
            LeaseOutcome::Ok(LeaseResponse::LeaseNotFound)
        );
        assert_eq!(
            jumps,
            vec![ClockJump {
                start_ns: 1,
                end_ns: 2,
                offset_s: -30
            }]
        );
    }
}
