//! The lock workload: etcd's Lock service under faults, checked for fencing.
//!
//! Every client node runs a lock client that loops: grant a lease (TTL
//! 2–4 s) on a random member; `Lock(mutex/m, lease)` with a deadline while
//! keeping the lease alive; read its lock key's create revision — the
//! fencing token; make one to four guarded writes to the shared resource
//! `fenced/m` (a Txn: if the lock key's create revision still equals the
//! token, put `c<client>-t<token>-<n>`), keeping the lease alive between
//! them; then let go: `Unlock` (usually), revoke the lease, or abandon it
//! (stop keeping it alive, so another client gets the lock only when it
//! expires). A Lock call that times out is dropped; the server then deletes
//! the waiting key.
//!
//! The guard only says the writer's own key still exists; that no other
//! client held the lock meanwhile is the Lock service's promise, checked
//! against the committed history by `checker::fencing` (owner at every
//! write, no interleaving of holders, exact outcomes). And the lock works
//! again after healing: a fresh client acquires it and makes a guarded
//! write within 30 s (`final_lock`).
//! Tests: `tests/sim.rs` (scenario `lock3`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    compare, kv_client::KvClient, lease_client::LeaseClient, request_op, Compare,
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::leases::keep_alive_once;
use super::workload::Endpoints;
use crate::checker::fencing::{FencedWrite, Hold, WriteOutcome, FENCED_KEY, LOCK_NAME};

const DEADLINE: Duration = Duration::from_secs(2);
const LOCK_DEADLINE: Duration = Duration::from_secs(6);

#[derive(Default)]
pub struct LockLog {
    pub holds: Mutex<Vec<Hold>>,
    /// Lock calls that timed out or failed (they are retried).
    pub failed_locks: Mutex<u64>,
}

/// A lease kept alive by its holder while it waits or works.
struct Session {
    id: i64,
    ttl: Duration,
    last_renewal: tokio::time::Instant,
}

impl Session {
    async fn grant(url: &str, ttl_secs: i64) -> Option<Session> {
        let grant = async {
            let mut c = LeaseClient::connect(url.to_owned()).await.ok()?;
            c.lease_grant(LeaseGrantRequest {
                ttl: ttl_secs,
                id: 0,
            })
            .await
            .ok()
            .map(|r| r.into_inner())
        };
        let sent = tokio::time::Instant::now();
        let granted = tokio::time::timeout(DEADLINE, grant).await.ok().flatten()?;
        Some(Session {
            id: granted.id,
            ttl: Duration::from_secs(granted.ttl.max(1) as u64),
            last_renewal: sent,
        })
    }

    /// Renews the lease if a third of its TTL has passed since the last renewal.
    async fn keep_alive_if_due(&mut self, url: &str) {
        if self.last_renewal.elapsed() < self.ttl / 3 {
            return;
        }
        let sent = tokio::time::Instant::now();
        if let Some(ttl) = keep_alive_once(url, self.id, DEADLINE).await {
            if ttl > 0 {
                self.last_renewal = sent;
            }
        }
    }
}

/// `Lock` with a deadline, renewing the session's lease while it waits.
async fn lock(url: &str, session: &mut Session) -> Option<String> {
    let lease = session.id;
    let call = async move {
        let mut c = LockClient::connect(url.to_owned()).await.ok()?;
        c.lock(LockRequest {
            name: LOCK_NAME.as_bytes().to_vec(),
            lease,
        })
        .await
        .ok()
        .map(|r| String::from_utf8_lossy(&r.into_inner().key).into_owned())
    };
    let call = tokio::time::timeout(LOCK_DEADLINE, call);
    tokio::pin!(call);
    loop {
        // Biased: tokio's random branch order is not madsim's RNG.
        tokio::select! {
            biased;
            done = &mut call => return done.ok().flatten(),
            () = tokio::time::sleep(session.ttl / 4) => session.keep_alive_if_due(url).await,
        }
    }
}

/// The key's create revision (linearizable read); 0 if it does not exist.
async fn create_revision(url: &str, key: &str) -> Option<i64> {
    let read = async {
        let mut kv = KvClient::connect(url.to_owned()).await.ok()?;
        let r = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        Some(r.kvs.first().map_or(0, |kv| kv.create_revision))
    };
    tokio::time::timeout(DEADLINE, read).await.ok().flatten()
}

/// If `key` was created at `token`, put `value` into the fenced resource.
async fn guarded_write(url: &str, key: &str, token: i64, value: &str) -> WriteOutcome {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(token)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: FENCED_KEY.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    let call = async {
        let mut kv = KvClient::connect(url.to_owned()).await.ok()?;
        kv.txn(txn).await.ok().map(|r| r.into_inner().succeeded)
    };
    match tokio::time::timeout(DEADLINE, call).await {
        Ok(Some(true)) => WriteOutcome::Written,
        Ok(Some(false)) => WriteOutcome::GuardFailed,
        _ => WriteOutcome::Unknown,
    }
}

async fn unlock(url: &str, key: &str) {
    let call = async {
        let mut c = LockClient::connect(url.to_owned()).await.ok()?;
        c.unlock(UnlockRequest {
            key: key.as_bytes().to_vec(),
        })
        .await
        .ok()
    };
    let _ = tokio::time::timeout(DEADLINE, call).await;
}

async fn revoke(url: &str, id: i64) {
    let call = async {
        let mut c = LeaseClient::connect(url.to_owned()).await.ok()?;
        c.lease_revoke(LeaseRevokeRequest { id }).await.ok()
    };
    let _ = tokio::time::timeout(DEADLINE, call).await;
}

/// One lock, hold and release; `None` if the lease or the lock could not
/// be had.
async fn hold_once(
    client: u64,
    urls: &Endpoints,
    rng: &mut StdRng,
    start: tokio::time::Instant,
    log: &LockLog,
) -> Option<Hold> {
    let pick = |rng: &mut StdRng| urls.pick(rng);
    let mut session = Session::grant(&pick(rng), rng.random_range(2..=4)).await?;
    let url = pick(rng);
    let Some(key) = lock(&url, &mut session).await else {
        *log.failed_locks.lock().expect("lock log lock") += 1;
        // The waiting key goes with the lease (or the server deleted it).
        revoke(&pick(rng), session.id).await;
        return None;
    };
    let mut hold = Hold {
        client,
        key: key.clone(),
        token: 0,
        acquired_at: start.elapsed(),
        writes: Vec::new(),
        release: "",
    };
    hold.token = create_revision(&pick(rng), &key).await.unwrap_or(0);
    if hold.token > 0 {
        for n in 0..rng.random_range(1..=4) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
            let url = pick(rng);
            session.keep_alive_if_due(&url).await;
            let value = format!("c{client}-t{}-{n}", hold.token);
            let outcome = guarded_write(&url, &key, hold.token, &value).await;
            hold.writes.push(FencedWrite { value, outcome });
            if outcome == WriteOutcome::GuardFailed {
                break;
            }
        }
    }
    let url = pick(rng);
    hold.release = match rng.random_range(0..100) {
        0..70 => {
            unlock(&url, &key).await;
            revoke(&url, session.id).await;
            "unlock"
        }
        70..85 => {
            revoke(&url, session.id).await;
            "revoke"
        }
        _ => "abandon",
    };
    Some(hold)
}

pub async fn run_lock_client(
    client: u64,
    urls: Endpoints,
    seed: u64,
    start: tokio::time::Instant,
    log: Arc<LockLog>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        match hold_once(client, &urls, &mut rng, start, &log).await {
            Some(hold) => log.holds.lock().expect("lock log lock").push(hold),
            None => tokio::time::sleep(Duration::from_millis(300)).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    }
}

/// After healing: a fresh client gets the lock and a guarded write through
/// within 30 s. Its hold goes into the log (checked like the others).
pub async fn final_lock(
    client: u64,
    urls: Endpoints,
    seed: u64,
    start: tokio::time::Instant,
    log: Arc<LockLog>,
) -> bool {
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if let Some(hold) = hold_once(client, &urls, &mut rng, start, &log).await {
            let ok = hold
                .writes
                .iter()
                .any(|w| w.outcome == WriteOutcome::Written);
            log.holds.lock().expect("lock log lock").push(hold);
            if ok {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}
