//! The Lock and Election gRPC services (cairn-proto's generated clients over
//! real TCP) against the real `cairn` binary — and, where etcd 3.4 behaves
//! the same, against etcd 3.4 too, so its answers and errors are the oracle:
//! error codes and messages, key layout, revisions, reentrancy, cleanup of a
//! cancelled wait, and the leadership sequence Observe reports.
//! cairn-only: mutual exclusion with fencing under contention, a waiter's
//! lease revoked (etcd 3.4 would report success much later; 3.5 fails with
//! `mutex: session is expired`, which cairn reports at once).
#![cfg(not(madsim))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, RangeRequest, ResponseHeader,
};
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ResignRequest,
};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use common::*;
use tonic::transport::Channel;

/// How long a test's steps may take before it fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

async fn channel(p: &Proc) -> Channel {
    Channel::from_shared(p.client_url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

struct Clients {
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

async fn clients(p: &Proc) -> Clients {
    let ch = channel(p).await;
    Clients {
        lock: LockClient::new(ch.clone()),
        election: ElectionClient::new(ch.clone()),
        kv: KvClient::new(ch.clone()),
        lease: LeaseClient::new(ch),
    }
}

impl Clients {
    async fn grant(&mut self, ttl: i64) -> i64 {
        self.lease
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
            .expect("lease grant")
            .into_inner()
            .id
    }

    async fn revoke(&mut self, id: i64) {
        self.lease
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .expect("lease revoke");
    }

    /// The create revision of `key`, if it exists.
    async fn create_revision(&mut self, key: &[u8]) -> Option<i64> {
        self.kv
            .range(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner()
            .kvs
            .first()
            .map(|kv| kv.create_revision)
    }

    /// Keys under `prefix` with their create revisions.
    async fn keys(&mut self, prefix: &str) -> Vec<(String, i64)> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("non-empty prefix") += 1;
        self.kv
            .range(RangeRequest {
                key: prefix.into(),
                range_end: end,
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.create_revision,
                )
            })
            .collect()
    }
}

fn rev(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().expect("header").revision
}

fn lock_req(name: &str, lease: i64) -> LockRequest {
    LockRequest {
        name: name.into(),
        lease,
    }
}

fn campaign_req(name: &str, lease: i64, value: &str) -> CampaignRequest {
    CampaignRequest {
        name: name.into(),
        lease,
        value: value.into(),
    }
}

fn err_text(s: &tonic::Status) -> String {
    format!("error {:?} {:?}", s.code(), s.message())
}

/// Names lease ids in `text` by the order they were learnt.
#[derive(Default)]
struct Leases(Vec<i64>);

impl Leases {
    fn add(&mut self, id: i64) {
        if !self.0.contains(&id) {
            self.0.push(id);
        }
    }

    fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (i, id) in self.0.iter().enumerate() {
            out = out.replace(&format!("{id:x}"), &format!("<L{}>", i + 1));
            out = out.replace(&id.to_string(), &format!("<L{}>", i + 1));
        }
        out
    }
}

fn show_leader_key(l: &LeaderKey) -> String {
    format!(
        "name={} key={} rev={} lease={}",
        String::from_utf8_lossy(&l.name),
        String::from_utf8_lossy(&l.key),
        l.rev,
        l.lease
    )
}

fn show_leader(r: &LeaderResponse) -> String {
    let kv = r.kv.as_ref().expect("kv");
    format!(
        "rev={} key={} value={} create={} mod={} version={} lease={}",
        rev(&r.header),
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

/// Every Lock and Election answer and error a client can get without
/// waiting, one line each (lease ids masked).
async fn answers_session(p: &Proc) -> String {
    let mut c = clients(p).await;
    let mut leases = Leases::default();
    let mut out = Vec::new();
    let mut line = |s: String| out.push(s);

    let r = c.lock.lock(lock_req("l", 12345)).await;
    line(format!(
        "lock unknown lease: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));
    let r = c.lock.lock(lock_req("l", -1)).await;
    line(format!(
        "lock lease -1: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));

    let l1 = c.grant(30).await;
    leases.add(l1);
    let a = c
        .lock
        .lock(lock_req("l", l1))
        .await
        .expect("lock")
        .into_inner();
    line(format!(
        "lock l: key={} rev={}",
        String::from_utf8_lossy(&a.key),
        rev(&a.header)
    ));
    let again = c
        .lock
        .lock(lock_req("l", l1))
        .await
        .expect("relock")
        .into_inner();
    line(format!(
        "lock l again: key={} rev={}",
        String::from_utf8_lossy(&again.key),
        rev(&again.header)
    ));
    line(format!("keys: {:?}", c.keys("l/").await));
    let u = c
        .lock
        .unlock(UnlockRequest { key: a.key.clone() })
        .await
        .expect("unlock")
        .into_inner();
    line(format!("unlock: rev={}", rev(&u.header)));
    let u = c
        .lock
        .unlock(UnlockRequest {
            key: "missing".into(),
        })
        .await
        .expect("unlock missing")
        .into_inner();
    line(format!("unlock missing: rev={}", rev(&u.header)));
    let r = c.lock.unlock(UnlockRequest { key: vec![] }).await;
    line(format!(
        "unlock empty: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));

    let r = c.election.leader(LeaderRequest { name: "e".into() }).await;
    line(format!(
        "leader none: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));
    let r = c
        .election
        .proclaim(ProclaimRequest {
            leader: None,
            value: "x".into(),
        })
        .await;
    line(format!(
        "proclaim no key: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));
    let r = c.election.resign(ResignRequest { leader: None }).await;
    line(format!(
        "resign no key: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));
    let r = c.election.campaign(campaign_req("e", 999, "v")).await;
    line(format!(
        "campaign unknown lease: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));

    let won = c
        .election
        .campaign(campaign_req("e", l1, "v1"))
        .await
        .expect("campaign")
        .into_inner();
    let leader = won.leader.expect("leader key");
    line(format!(
        "campaign: rev={} {}",
        rev(&won.header),
        show_leader_key(&leader)
    ));
    let again = c
        .election
        .campaign(campaign_req("e", l1, "v1b"))
        .await
        .expect("campaign again")
        .into_inner();
    line(format!(
        "campaign again: rev={} {}",
        rev(&again.header),
        show_leader_key(again.leader.as_ref().expect("leader key"))
    ));
    let l = c
        .election
        .leader(LeaderRequest { name: "e".into() })
        .await
        .expect("leader")
        .into_inner();
    line(format!("leader: {}", show_leader(&l)));
    let p = c
        .election
        .proclaim(ProclaimRequest {
            leader: Some(leader.clone()),
            value: "v2".into(),
        })
        .await
        .expect("proclaim")
        .into_inner();
    line(format!("proclaim: rev={}", rev(&p.header)));
    let l = c
        .election
        .leader(LeaderRequest { name: "e".into() })
        .await
        .expect("leader")
        .into_inner();
    line(format!("leader: {}", show_leader(&l)));
    let stale = LeaderKey {
        rev: leader.rev - 1,
        ..leader.clone()
    };
    let r = c
        .election
        .proclaim(ProclaimRequest {
            leader: Some(stale.clone()),
            value: "v3".into(),
        })
        .await;
    line(format!(
        "proclaim stale: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));
    let r = c
        .election
        .proclaim(ProclaimRequest {
            leader: Some(LeaderKey {
                key: vec![],
                ..leader.clone()
            }),
            value: "v3".into(),
        })
        .await;
    line(format!(
        "proclaim empty key: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));
    let r = c
        .election
        .resign(ResignRequest {
            leader: Some(stale),
        })
        .await
        .expect("resign stale")
        .into_inner();
    line(format!("resign stale: rev={}", rev(&r.header)));
    let l = c
        .election
        .leader(LeaderRequest { name: "e".into() })
        .await
        .expect("leader")
        .into_inner();
    line(format!("leader: {}", show_leader(&l)));
    let r = c
        .election
        .resign(ResignRequest {
            leader: Some(leader),
        })
        .await
        .expect("resign")
        .into_inner();
    line(format!("resign: rev={}", rev(&r.header)));
    let r = c.election.leader(LeaderRequest { name: "e".into() }).await;
    line(format!(
        "leader after resign: {}",
        r.map(|_| "ok".into()).unwrap_or_else(|e| err_text(&e))
    ));

    // No lease: the server grants one of 60 s (a second lease appears).
    let won = c
        .election
        .campaign(campaign_req("e0", 0, "z"))
        .await
        .expect("campaign without lease")
        .into_inner();
    let leader = won.leader.expect("leader key");
    leases.add(leader.lease);
    line(format!(
        "campaign no lease: rev={} {}",
        rev(&won.header),
        show_leader_key(&leader)
    ));
    let held = c
        .lock
        .lock(lock_req("l0", 0))
        .await
        .expect("lock without lease")
        .into_inner();
    let key = String::from_utf8_lossy(&held.key).into_owned();
    let granted = i64::from_str_radix(key.trim_start_matches("l0/"), 16).expect("hex lease in key");
    leases.add(granted);
    line(format!(
        "lock no lease: key={key} rev={}",
        rev(&held.header)
    ));
    let mut all: Vec<i64> = c
        .lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect();
    all.sort_unstable();
    let mut expected = leases.0.clone();
    expected.sort_unstable();
    line(format!(
        "leases are exactly the granted ones: {}",
        all == expected
    ));
    let ttl = c
        .lease
        .lease_time_to_live(cairn_proto::etcdserverpb::LeaseTimeToLiveRequest {
            id: granted,
            keys: false,
        })
        .await
        .expect("ttl")
        .into_inner();
    line(format!("granted ttl: {}", ttl.granted_ttl));
    leases.mask(&out.join("\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_errors_and_key_layout_match_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let want = tokio::time::timeout(STEP, answers_session(&etcd))
        .await
        .expect("etcd session");
    let got = tokio::time::timeout(STEP, answers_session(&cairn))
        .await
        .expect("cairn session");
    assert_eq!(got, want, "cairn:\n{got}\netcd:\n{want}");
    // The session exercised what it claims (not two identical failures).
    assert!(want.contains("lock l: key=l/<L1> rev=2"), "{want}");
    assert!(
        want.contains("error Unknown \"election: not leader\""),
        "{want}"
    );
}

/// Holder A, waiter B (lease `lb`): B's Lock must still be pending.
async fn assert_pending<T: std::fmt::Debug>(h: &tokio::task::JoinHandle<T>, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.is_finished(), "{what} returned while the lock was held");
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_waiter_acquires_when_the_holders_lease_is_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = clients(&p).await;
    let (la, lb) = (c.grant(60).await, c.grant(60).await);
    let a = c
        .lock
        .lock(lock_req("m", la))
        .await
        .expect("lock a")
        .into_inner();
    let mut lock_b = c.lock.clone();
    let b = tokio::spawn(async move { lock_b.lock(lock_req("m", lb)).await });
    assert_pending(&b, "B's lock").await;
    let revoked = Instant::now();
    c.revoke(la).await;
    let b = tokio::time::timeout(STEP, b)
        .await
        .expect("B acquires")
        .expect("task")
        .expect("lock b")
        .into_inner();
    assert!(
        revoked.elapsed() < Duration::from_secs(2),
        "B waited {:?}",
        revoked.elapsed()
    );
    assert_eq!(b.key, format!("m/{lb:x}").into_bytes());
    let keys = c.keys("m/").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].1 > rev(&a.header),
        "fencing token must grow: {keys:?} after {}",
        rev(&a.header)
    );
    assert!(rev(&b.header) >= keys[0].1);
}

/// `LOCKERS` clients, each on its own lease and spread over `members`, take
/// one lock `ROUNDS` times each: never two holders at once, and each
/// holder's fencing token (its key's create revision) exceeds the last.
async fn contend(members: &[&Proc]) {
    const LOCKERS: usize = 6;
    const ROUNDS: usize = 3;
    let held = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(AtomicI64::new(0));
    let acquired = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..LOCKERS {
        let mut c = clients(members[i % members.len()]).await;
        let (held, last_token, acquired) = (held.clone(), last_token.clone(), acquired.clone());
        tasks.push(tokio::spawn(async move {
            let lease = c.grant(60).await;
            for _ in 0..ROUNDS {
                let resp = c
                    .lock
                    .lock(lock_req("mutex", lease))
                    .await
                    .expect("lock")
                    .into_inner();
                assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                let token = c.create_revision(&resp.key).await.expect("own key exists");
                let before = last_token.swap(token, Ordering::SeqCst);
                assert!(token > before, "fencing token {token} after {before}");
                assert!(rev(&resp.header) >= token);
                acquired.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                held.store(false, Ordering::SeqCst);
                c.lock
                    .unlock(UnlockRequest { key: resp.key })
                    .await
                    .expect("unlock");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(40), t)
            .await
            .expect("lockers finish")
            .expect("locker");
    }
    assert_eq!(acquired.load(Ordering::SeqCst), (LOCKERS * ROUNDS) as i64);
    let mut c = clients(members[0]).await;
    assert!(c.keys("mutex/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lockers_hold_one_at_a_time_with_growing_fencing_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    contend(&[&p]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lockers_on_leader_and_followers_of_three_members_exclude_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("n{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let extra = vec![
        format!("--initial-cluster={cluster}"),
        "--heartbeat-interval=50".to_owned(),
        "--election-timeout=500".to_owned(),
    ];
    let procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| spawn_cairn(&format!("n{i}"), dir.path(), *c, *p, &extra))
        .collect();
    for p in &procs {
        wait_healthy(p);
    }
    contend(&procs.iter().collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_waiter_whose_lease_is_revoked_fails_with_session_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = clients(&p).await;
    let (la, lb) = (c.grant(60).await, c.grant(60).await);
    c.lock.lock(lock_req("s", la)).await.expect("lock a");
    let mut lock_b = c.lock.clone();
    let b = tokio::spawn(async move { lock_b.lock(lock_req("s", lb)).await });
    assert_pending(&b, "B's lock").await;
    c.revoke(lb).await;
    let err = tokio::time::timeout(STEP, b)
        .await
        .expect("B fails promptly")
        .expect("task")
        .expect_err("B's key is gone");
    assert_eq!(
        err_text(&err),
        "error Unknown \"mutex: session is expired\""
    );
    assert_eq!(
        c.keys("s/")
            .await
            .iter()
            .map(|k| k.0.clone())
            .collect::<Vec<_>>(),
        vec![format!("s/{la:x}")]
    );
}

/// A Lock and a Campaign that wait, given up by their clients (a deadline;
/// a dropped call), leave no key behind; the holder keeps its own.
async fn cancelled_waits_session(p: &Proc) -> String {
    let mut c = clients(p).await;
    let (la, lb, lc) = (c.grant(60).await, c.grant(60).await, c.grant(60).await);
    c.lock.lock(lock_req("q", la)).await.expect("lock a");
    let mut deadline = tonic::Request::new(lock_req("q", lb));
    deadline.set_timeout(Duration::from_millis(300));
    let err = c.lock.lock(deadline).await.expect_err("B gives up");
    // The client's deadline, or the server's (tonic: `Cancelled "Timeout
    // expired"`; etcd: `Unknown "context deadline exceeded"`), whichever
    // fires first.
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) || err.message() == "context deadline exceeded",
        "{err:?}"
    );
    let mut lock_c = LockClient::new(channel(p).await);
    let waiting = tokio::spawn(async move { lock_c.lock(lock_req("q", lc)).await });
    assert_pending(&waiting, "C's lock").await;
    waiting.abort();

    c.election
        .campaign(campaign_req("ce", la, "a"))
        .await
        .expect("campaign a");
    let mut deadline = tonic::Request::new(campaign_req("ce", lb, "b"));
    deadline.set_timeout(Duration::from_millis(300));
    c.election
        .campaign(deadline)
        .await
        .expect_err("B's campaign gives up");

    // Cleanup is asynchronous on both servers: allow it a moment.
    let want = (vec![format!("q/{la:x}")], vec![format!("ce/{la:x}")]);
    let mut got = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let q: Vec<String> = c.keys("q/").await.into_iter().map(|k| k.0).collect();
        let ce: Vec<String> = c.keys("ce/").await.into_iter().map(|k| k.0).collect();
        got = (q, ce);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut leases = Leases::default();
    leases.add(la);
    leases.mask(&format!("{got:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_lock_and_campaign_waits_leave_no_key_as_in_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let want = tokio::time::timeout(Duration::from_secs(20), cancelled_waits_session(&etcd))
        .await
        .expect("etcd session");
    let got = tokio::time::timeout(Duration::from_secs(20), cancelled_waits_session(&cairn))
        .await
        .expect("cairn session");
    assert_eq!(want, "([\"q/<L1>\"], [\"ce/<L1>\"])");
    assert_eq!(got, want);
}

/// Observe's answers, read by a task until the stream ends.
fn observe(
    mut election: ElectionClient<Channel>,
    name: &str,
) -> tokio::sync::mpsc::Receiver<Result<LeaderResponse, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let name = name.as_bytes().to_vec();
    tokio::spawn(async move {
        match election.observe(LeaderRequest { name }).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Some(r) = stream.message().await.transpose() {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    rx
}

async fn next(
    observed: &mut tokio::sync::mpsc::Receiver<Result<LeaderResponse, tonic::Status>>,
) -> String {
    let r = tokio::time::timeout(STEP, observed.recv())
        .await
        .expect("observe answers")
        .expect("stream open")
        .expect("an answer, not an error");
    show_leader(&r)
}

/// Observe from before the first candidate; A wins, proclaims, B waits, A
/// resigns, B leads: what Observe reports, and what each call answered.
async fn leadership_session(p: &Proc) -> String {
    let mut c = clients(p).await;
    let (la, lb) = (c.grant(60).await, c.grant(60).await);
    let mut leases = Leases::default();
    leases.add(la);
    leases.add(lb);
    // etcd sends the stream's headers only with its first answer, so the
    // call is read in a task of its own; give it a moment to reach the
    // server before the first candidate.
    let mut observed = observe(c.election.clone(), "job");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    let a = c
        .election
        .campaign(campaign_req("job", la, "a1"))
        .await
        .expect("campaign a")
        .into_inner();
    let a_key = a.leader.expect("leader key");
    out.push(format!("A won: {}", show_leader_key(&a_key)));
    out.push(format!("observed {}", next(&mut observed).await));
    c.election
        .proclaim(ProclaimRequest {
            leader: Some(a_key.clone()),
            value: "a2".into(),
        })
        .await
        .expect("proclaim");
    out.push(format!("observed {}", next(&mut observed).await));
    let mut election_b = c.election.clone();
    let b = tokio::spawn(async move { election_b.campaign(campaign_req("job", lb, "b1")).await });
    assert_pending(&b, "B's campaign").await;
    c.election
        .resign(ResignRequest {
            leader: Some(a_key),
        })
        .await
        .expect("resign");
    let b = tokio::time::timeout(STEP, b)
        .await
        .expect("B wins")
        .expect("task")
        .expect("campaign b")
        .into_inner();
    out.push(format!(
        "B won: {}",
        show_leader_key(b.leader.as_ref().expect("leader key"))
    ));
    out.push(format!("observed {}", next(&mut observed).await));
    leases.mask(&out.join("\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn campaign_waits_for_resignation_and_observe_follows_leadership_as_in_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let want = tokio::time::timeout(Duration::from_secs(20), leadership_session(&etcd))
        .await
        .expect("etcd session");
    let got = tokio::time::timeout(Duration::from_secs(20), leadership_session(&cairn))
        .await
        .expect("cairn session");
    assert_eq!(got, want, "cairn:\n{got}\netcd:\n{want}");
    assert!(
        want.contains("value=a2") && want.contains("value=b1"),
        "{want}"
    );
}
