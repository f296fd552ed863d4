//! The lease workload: short TTLs under failover, clock drift and faults.
//!
//! Each client node runs a lease client: grant a lease (TTL 2–5 s) on a
//! random member, put two keys with it, keep it alive a random number of
//! times (every ~TTL/3, each keep-alive a fresh stream with a deadline),
//! then stop, wait past the TTL and ask its TimeToLive. The puts go into the
//! linearizable history like any put; the lease's eventual revoke (expiry)
//! enters it as an operation of unknown outcome that deletes both keys at
//! once, callable any time after the grant.
//!
//! Checked against the oracle's record of when each deletion was first
//! applied (simulated time):
//! - never early: a lease's keys are not deleted before the last
//!   successful keep-alive's send time + its TTL (nor grant + TTL), less a
//!   tolerance for the leader's clock drift (≤ 5 %) of 6 % of the TTL + 50 ms;
//! - one revision: all keys of a lease vanish at the same revision;
//! - never back: no keep-alive or TimeToLive sent after the deletion finds
//!   the lease alive;
//! - eventually: a lease is gone 10 s after it was due — due being its last
//!   renewal + TTL, or, as every new leader extends every lease (etcd's
//!   promote), the last leader change + TTL + the election timeout.
//! Tests: `tests/sim.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseTimeToLiveRequest, PutRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::workload::{Endpoints, Recorder};
use crate::checker::{Operation, Request, Response, Revision, Txn, TxnOp};

/// What one lease went through, times in simulated time since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseLife {
    pub client: u64,
    pub id: i64,
    pub ttl_secs: i64,
    pub grant_sent: Duration,
    /// Keys put with the lease (acknowledged or not).
    pub keys: Vec<String>,
    /// Those whose put was acknowledged.
    pub acked: Vec<String>,
    /// (send time, TTL answered) of every keep-alive that got an answer.
    pub renewals: Vec<(Duration, i64)>,
    /// (send time, TTL answered) of TimeToLive queries.
    pub ttl_queries: Vec<(Duration, i64)>,
}

#[derive(Default)]
pub struct LeaseLog {
    pub lives: Mutex<Vec<LeaseLife>>,
}

pub async fn run_lease_client(
    client: u64,
    urls: Endpoints,
    seed: u64,
    start: Instant,
    recorder: Arc<Recorder>,
    log: Arc<LeaseLog>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Duration::from_secs(2);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let url = urls.pick(&mut rng);
        let ttl = rng.random_range(2..=5);
        let grant_sent = start.elapsed();
        let grant = async {
            let mut c = LeaseClient::connect(url.clone()).await.ok()?;
            c.lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        let Ok(Some(granted)) = tokio::time::timeout(deadline, grant).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut life = LeaseLife {
            client,
            id: granted.id,
            ttl_secs: granted.ttl,
            grant_sent,
            keys: Vec::new(),
            acked: Vec::new(),
            renewals: Vec::new(),
            ttl_queries: Vec::new(),
        };
        // The revoke may happen any time from now on (or never).
        let revoke_call = recorder.tick();
        for part in ["a", "b"] {
            let key = format!("lease/{client}/{n}/{part}");
            let value = format!("lease-c{client}-{n}-{part}");
            if put_with_lease(&recorder, client, &url, &key, &value, granted.id).await {
                life.acked.push(key.clone());
            }
            life.keys.push(key);
        }
        let delete_keys = Txn {
            compares: Vec::new(),
            success: life
                .keys
                .iter()
                .map(|k| TxnOp::Delete { key: k.clone() })
                .collect(),
            failure: Vec::new(),
        };
        recorder.record_op(
            Operation::unknown(client, revoke_call, Request::Txn(delete_keys)),
            false,
        );
        let renewals = rng.random_range(0..6);
        for _ in 0..renewals {
            let pause = (granted.ttl as u64 * 1000) / 3;
            tokio::time::sleep(Duration::from_millis(
                rng.random_range(pause / 2..pause + 1),
            ))
            .await;
            let url = urls.pick(&mut rng);
            let sent = start.elapsed();
            if let Some(ttl) = keep_alive_once(&url, granted.id, deadline).await {
                life.renewals.push((sent, ttl));
                if ttl <= 0 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(granted.ttl as u64 + 2)).await;
        let url = urls.pick(&mut rng);
        let sent = start.elapsed();
        let q = async {
            let mut c = LeaseClient::connect(url).await.ok()?;
            c.lease_time_to_live(LeaseTimeToLiveRequest {
                id: granted.id,
                keys: false,
            })
            .await
            .ok()
            .map(|r| r.into_inner().ttl)
        };
        if let Ok(Some(ttl)) = tokio::time::timeout(deadline, q).await {
            life.ttl_queries.push((sent, ttl));
        }
        log.lives.lock().expect("lease log lock").push(life);
    }
}

async fn put_with_lease(
    recorder: &Recorder,
    client: u64,
    url: &str,
    key: &str,
    value: &str,
    lease: i64,
) -> bool {
    let call = recorder.tick();
    let put = async {
        let mut kv = KvClient::connect(url.to_owned())
            .await
            .map_err(|e| e.to_string())?;
        kv.put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_owned())
    };
    let result = tokio::time::timeout(Duration::from_secs(2), put).await;
    let ret = recorder.tick();
    let req = Request::put(key, value);
    let op = match result {
        Ok(Ok(r)) => Operation::ok(
            client,
            call,
            ret,
            req,
            Response::Put {
                header_revision: Revision(r.header.map_or(0, |h| h.revision) as u64),
            },
        ),
        // The lease is already gone: nothing was written.
        Ok(Err(msg)) if msg.contains("requested lease not found") => {
            Operation::failed(client, call, ret, req)
        }
        _ => Operation::unknown(client, call, req),
    };
    let acked = matches!(op.output, crate::checker::Outcome::Ok(_));
    recorder.record_op(op, false);
    acked
}

/// One keep-alive on a fresh stream; the TTL answered, if any.
pub(super) async fn keep_alive_once(url: &str, id: i64, deadline: Duration) -> Option<i64> {
    let once = async {
        let mut c = LeaseClient::connect(url.to_owned()).await.ok()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id }).await.ok()?;
        let mut stream = c
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .ok()?
            .into_inner();
        let resp = stream.message().await.ok()??;
        drop(tx);
        Some(resp.ttl)
    };
    tokio::time::timeout(deadline, once).await.ok().flatten()
}

/// The lease checks (module header); `deleted_at` maps a key to the
/// (revision, first apply time) of its deletions.
pub fn check_leases(
    lives: &[LeaseLife],
    deleted_at: &BTreeMap<String, Vec<(i64, Duration)>>,
    last_leader_change: Duration,
    election_timeout: Duration,
    end: Duration,
) -> Vec<String> {
    let mut failures = Vec::new();
    for l in lives {
        let who = format!(
            "lease {:x} (client {}, TTL {} s)",
            l.id, l.client, l.ttl_secs
        );
        let deletions: Vec<(i64, Duration)> = l
            .acked
            .iter()
            .filter_map(|k| deleted_at.get(k).and_then(|d| d.first().copied()))
            .collect();
        let revs: std::collections::BTreeSet<i64> = deletions.iter().map(|d| d.0).collect();
        if revs.len() > 1 {
            failures.push(format!(
                "{who}: its keys vanished at different revisions {revs:?}"
            ));
        }
        let ttl = Duration::from_secs(l.ttl_secs.max(0) as u64);
        let tolerance = ttl.mul_f64(0.06) + Duration::from_millis(50);
        let mut must_live_until = l.grant_sent + ttl;
        for (sent, answered) in &l.renewals {
            if *answered > 0 {
                must_live_until =
                    must_live_until.max(*sent + Duration::from_secs(*answered as u64));
            }
        }
        match deletions.iter().map(|d| d.1).min() {
            Some(gone) => {
                if gone + tolerance < must_live_until {
                    failures.push(format!(
                        "{who}: keys deleted at {:.3} s but the lease had to live until {:.3} s (last renewal or grant + TTL)",
                        gone.as_secs_f64(),
                        must_live_until.as_secs_f64()
                    ));
                }
                for (sent, answered) in l.renewals.iter().chain(&l.ttl_queries) {
                    if *sent > gone + Duration::from_millis(1) && *answered > 0 {
                        failures.push(format!(
                            "{who}: alive (TTL {answered}) when asked at {:.3} s, after its keys were deleted at {:.3} s",
                            sent.as_secs_f64(),
                            gone.as_secs_f64()
                        ));
                    }
                }
            }
            None => {
                let due = must_live_until.max(last_leader_change + ttl + election_timeout);
                if !l.acked.is_empty() && due + Duration::from_secs(10) < end {
                    failures.push(format!(
                        "{who}: its keys never vanished although it was not renewed after {:.3} s (run ended at {:.3} s)",
                        must_live_until.as_secs_f64(),
                        end.as_secs_f64()
                    ));
                }
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    failures.truncate(10);
    failures
}
