//! The `etcd-client` crate (a client nobody here wrote, on tonic over real
//! TCP) against the real `cairn` binary: KV, Txn, compaction errors, Status,
//! HashKV and MemberList behave as etcd documents them.
#![cfg(not(madsim))]

mod common;

use common::*;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

async fn client(p: &Proc) -> Client {
    Client::connect([p.client_url.clone()], None)
        .await
        .expect("the client connects")
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_round_trip_with_revisions_prev_kv_and_prefix_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = client(&p).await;

    let r1 = c.put("/svc/a", "1", None).await.expect("put");
    let rev1 = r1.header().expect("header").revision();
    let r2 = c
        .put("/svc/a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put with prev_kv");
    assert_eq!(r2.header().expect("header").revision(), rev1 + 1);
    assert_eq!(r2.prev_key().expect("prev kv").value(), b"1");
    c.put("/svc/b", "3", None).await.expect("put");

    let all = c
        .get("/svc/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix get");
    let kvs: Vec<(&[u8], &[u8])> = all.kvs().iter().map(|kv| (kv.key(), kv.value())).collect();
    assert_eq!(
        kvs,
        vec![(&b"/svc/a"[..], &b"2"[..]), (&b"/svc/b"[..], &b"3"[..])]
    );
    assert_eq!(all.count(), 2);
    let a = &all.kvs()[0];
    assert_eq!(
        (a.version(), a.create_revision(), a.mod_revision()),
        (2, rev1, rev1 + 1)
    );

    let old = c
        .get("/svc/a", Some(GetOptions::new().with_revision(rev1)))
        .await
        .expect("get at a past revision");
    assert_eq!(old.kvs()[0].value(), b"1");

    let counted = c
        .get(
            "/svc/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count only");
    assert!(counted.kvs().is_empty());
    assert_eq!(counted.count(), 2);

    let del = c
        .delete(
            "/svc/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete prefix");
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs().len(), 2);
    let none = c.get("/svc/a", None).await.expect("get");
    assert!(none.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_compare_and_swap_takes_exactly_one_branch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = client(&p).await;
    c.put("lock", "free", None).await.expect("put");

    let take = Txn::new()
        .when([Compare::value("lock", CompareOp::Equal, "free")])
        .and_then([TxnOp::put("lock", "me", None)])
        .or_else([TxnOp::get("lock", None)]);
    let first = c.txn(take.clone()).await.expect("txn");
    assert!(first.succeeded(), "the lock was free");
    let second = c.txn(take).await.expect("txn");
    assert!(!second.succeeded(), "the lock is taken now");
    match &second.op_responses()[0] {
        etcd_client::TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"me"),
        other => panic!("expected the failure branch's get, got {other:?}"),
    }

    // A key that does not exist has version 0 and create revision 0.
    let absent = Txn::new()
        .when([Compare::version("nothing", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("nothing", "now", None)]);
    assert!(c.txn(absent).await.expect("txn").succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_and_future_revisions_fail_with_etcds_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = client(&p).await;
    for i in 0..5 {
        c.put("k", format!("v{i}"), None).await.expect("put");
    }
    let rev = c
        .get("k", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    c.compact(rev - 1, None).await.expect("compact");

    let err = c
        .get("k", Some(GetOptions::new().with_revision(rev - 2)))
        .await
        .expect_err("a compacted revision is refused");
    let text = err.to_string();
    assert!(
        text.contains("etcdserver: mvcc: required revision has been compacted"),
        "{text}"
    );
    let err = c
        .get("k", Some(GetOptions::new().with_revision(rev + 100)))
        .await
        .expect_err("a future revision is refused");
    assert!(
        err.to_string()
            .contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
    let err = c
        .compact(rev - 1, None)
        .await
        .expect_err("compacting twice is refused");
    assert!(
        err.to_string()
            .contains("required revision has been compacted"),
        "{err}"
    );
    // The server keeps serving after the errors.
    assert_eq!(c.get("k", None).await.expect("get").kvs()[0].value(), b"v4");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_hash_kv_and_member_list_describe_the_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = client(&p).await;
    c.put("a", "1", None).await.expect("put");

    let status = c.status().await.expect("status");
    let member = status.header().expect("header").member_id();
    assert_eq!(status.leader(), member, "a single member leads itself");
    assert!(status.raft_index() >= 2);
    assert!(status.version().starts_with("3.5"), "{}", status.version());

    let h1 = c.hash_kv(0).await.expect("hash_kv");
    let h2 = c.hash_kv(0).await.expect("hash_kv");
    assert_eq!(h1.hash(), h2.hash(), "nothing changed in between");
    c.put("a", "2", None).await.expect("put");
    assert_ne!(c.hash_kv(0).await.expect("hash_kv").hash(), h1.hash());

    let members = c.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 1);
    let m = &members.members()[0];
    assert_eq!(m.id(), member);
    assert_eq!(m.client_urls(), [p.client_url.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_keep_alive_stream_keeps_the_key_and_expiry_removes_it() {
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = client(&p).await;
    let lease = c.lease_grant(2, None).await.expect("grant");
    assert_eq!(lease.ttl(), 2);
    c.put(
        "/svc/x",
        "up",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .expect("put with lease");

    // Keep it alive for longer than its TTL over one stream.
    let (mut keeper, mut responses) = c.lease_keep_alive(lease.id()).await.expect("keep-alive");
    for _ in 0..6 {
        keeper.keep_alive().await.expect("send keep-alive");
        let r = responses
            .message()
            .await
            .expect("keep-alive answer")
            .expect("stream open");
        assert_eq!((r.id(), r.ttl()), (lease.id(), 2));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(c.get("/svc/x", None).await.expect("get").kvs().len(), 1);
    let ttl = c.lease_time_to_live(lease.id(), None).await.expect("ttl");
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 2, "{}", ttl.ttl());

    // Stop: the key is gone once the TTL passes (the leader checks on ticks).
    drop(keeper);
    drop(responses);
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while !c.get("/svc/x", None).await.expect("get").kvs().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = c.lease_time_to_live(lease.id(), None).await.expect("ttl");
    assert_eq!(gone.ttl(), -1, "an expired lease is not found");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_stream_replays_history_then_delivers_live_events_with_prev_kv() {
    use etcd_client::{EventType, WatchOptions};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_cairn(dir.path());
    let mut c = client(&p).await;
    let first = c.put("/cfg/a", "1", None).await.expect("put");
    let rev = first.header().expect("header").revision();
    c.put("/cfg/a", "2", None).await.expect("put");
    c.put("/other", "x", None)
        .await
        .expect("put outside the prefix");

    // From the first put's revision: history first, then live changes.
    let mut stream = c
        .watch(
            "/cfg/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev)
                    .with_prev_key(),
            ),
        )
        .await
        .expect("watch");
    c.delete("/cfg/a", None).await.expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("events within 5 s")
            .expect("watch stream")
            .expect("stream open");
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            seen.push((
                e.event_type(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
                e.prev_kv()
                    .map(|p| String::from_utf8_lossy(p.value()).into_owned()),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, "1".into(), rev, None),
            (EventType::Put, "2".into(), rev + 1, Some("1".into())),
            (EventType::Delete, String::new(), rev + 3, Some("2".into())),
        ]
    );
}

/// libfaketime moves a process's `CLOCK_MONOTONIC` (the jepsen `clock`
/// nemesis runs members under it); a real monotonic clock never steps back.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A member whose monotonic clock jumped 49 s ahead and came back (stepped
/// back 49 s, under libfaketime) still commits proposals and answers
/// linearizable reads and lease calls. tokio's timer wheel does not run
/// backwards, so for the next 49 s a timer set for "now + d" fired at once:
/// every request timed out before it started ("etcdserver: request timed
/// out" for every put; a CI jepsen run saw a member silent after its clock
/// came back). The client here sends no deadline of its own (tonic would
/// enforce a `grpc-timeout` on arrival in that window, out of cairn's reach).
#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_monotonic_clock_stepped_back_still_commits_and_reads() {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} missing: install Debian's libfaketime (scripts/test-all.sh does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let name = "c1";
    let peer_port = free_port();
    let peer = format!("http://127.0.0.1:{peer_port}");
    let env = [
        ("LD_PRELOAD".to_owned(), FAKETIME_LIB.to_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_owned(),
            offset.display().to_string(),
        ),
        // Rereads the offset file at most once a second.
        ("FAKETIME_CACHE_DURATION".to_owned(), "1".to_owned()),
    ];
    let p = spawn_member(
        Server::Cairn,
        name,
        dir.path(),
        free_port(),
        peer_port,
        &founding_flags(name, &peer, &format!("{name}={peer}")),
        &env,
    );
    wait_healthy(&p);
    let mut c = client(&p).await;
    c.put("before", "1", None)
        .await
        .expect("put before the jump");

    std::fs::write(&offset, "+49\n").expect("clock ahead");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    c.put("ahead", "1", None)
        .await
        .expect("put with the clock ahead");
    std::fs::write(&offset, "+0\n").expect("clock back");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // The member's clock now reads ~46 s behind the latest it read.
    for i in 0..5 {
        let key = format!("after/{i}");
        let r = c.put(key.as_str(), "v", None).await;
        assert!(r.is_ok(), "put {key} after the step back: {r:?}");
    }
    let got = c
        .get("after/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("linearizable get after the step back");
    assert_eq!(got.kvs().len(), 5);
    let lease = c.lease_grant(30, None).await.expect("lease grant");
    let (mut keeper, mut answers) = c.lease_keep_alive(lease.id()).await.expect("keep-alive");
    keeper.keep_alive().await.expect("keep-alive sent");
    let answer = answers.message().await.expect("keep-alive answer");
    assert!(answer.is_some_and(|a| a.ttl() > 0), "lease renewed");
}
