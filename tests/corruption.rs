//! Corruption checks with the real binary: one member's data is altered on
//! disk while it is down (a value byte flipped in its store, a record that
//! still decodes — silent corruption). Restarted, it refuses to start
//! (the initial check); started with that check off, the leader's periodic
//! check raises the CORRUPT alarm naming it, and the cluster refuses writes
//! while reads go on.
#![cfg(not(madsim))]

mod common;

use std::time::Duration;

use cairn_runtime::{client_port, Direction, WriteBatch};
use common::*;

/// Flips the first value byte of the newest record in the member's `kv`
/// family (layout: `src/mvcc/kv.rs`); returns the key it altered.
fn flip_newest_value(data_dir: &std::path::Path) -> String {
    let storage = client_port::open_storage(data_dir, &cairn::server::apply::all_column_families())
        .expect("open the stopped member's storage");
    let (k, mut v) = storage
        .scan(cairn::mvcc::CF_KV, &[], None, Direction::Reverse)
        .expect("scan")
        .next()
        .expect("a record")
        .expect("readable");
    let key_len = u32::from_be_bytes(v[1..5].try_into().expect("4 bytes")) as usize;
    let value_at = 1 + 4 + key_len + 4;
    let key = String::from_utf8_lossy(&v[5..5 + key_len]).into_owned();
    v[value_at] ^= 0x01;
    let mut batch = WriteBatch::new();
    batch.put(cairn::mvcc::CF_KV, k, v);
    storage.write(batch).expect("write");
    key
}

#[test]
fn a_member_with_altered_data_refuses_to_start_and_is_caught_by_the_leaders_periodic_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let names = ["a", "b", "c"];
    let initial: Vec<String> = names
        .iter()
        .zip(&ports)
        .map(|(n, (_, p))| format!("{n}=http://127.0.0.1:{p}"))
        .collect();
    let flags = |i: usize, extra: &[&str]| {
        let mut f = founding_flags(
            names[i],
            &format!("http://127.0.0.1:{}", ports[i].1),
            &initial.join(","),
        );
        f.push("--experimental-corrupt-check-time=1s".into());
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    };
    let start = |i: usize, extra: &[&str]| {
        spawn_member(
            Server::Cairn,
            names[i],
            dir.path(),
            ports[i].0,
            ports[i].1,
            &flags(i, extra),
            &[],
        )
    };
    let mut procs: Vec<Proc> = (0..3).map(|i| start(i, &[])).collect();
    for p in &procs {
        wait_healthy(p);
    }
    let endpoints: Vec<String> = procs.iter().map(|p| p.endpoint()).collect();
    for i in 0..20 {
        ctl_ok(
            &endpoints[0],
            &["put", &format!("k{i:02}"), &format!("v{i}")],
        );
    }
    wait_equal_hash_kv(&endpoints, Duration::from_secs(10));
    let c_id = u64::from_str_radix(
        &member_id_by_peer(&endpoints[0], &procs[2].peer_url).expect("c's id"),
        16,
    )
    .expect("hex id");

    // Alter c's data while it is down.
    procs[2].kill9();
    let altered = flip_newest_value(&procs[2].data_dir);
    // The last put's apply may not have reached c's WAL before the kill (an
    // unsynced write goes out with the next sync; c replays it from its Raft
    // log on restart): the newest value on disk is k19's or k18's.
    assert!(altered == "k19" || altered == "k18", "altered {altered}");

    // The initial check: c refuses to start, in etcd's words.
    let mut c = start(2, &[]);
    let status = c
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("c started on altered data; log:\n{}", c.log_text()));
    assert!(!status.success());
    assert!(
        c.log_text().contains("found data inconsistency with peers"),
        "{}",
        c.log_text()
    );

    // The periodic check: with the initial check off, c serves, and the
    // leader raises CORRUPT for it within a few check periods.
    procs[2] = start(2, &["--experimental-initial-corrupt-check=false"]);
    // Serving, not "healthy": with a 1 s check period the CORRUPT alarm may
    // already be up (and /health answer 503) by the time it is asked.
    let c_endpoint = procs[2].endpoint();
    poll_until(Duration::from_secs(30), "c serves /health", || {
        http_get(&c_endpoint, "/health").ok_or_else(|| "no answer yet".to_owned())
    });
    let listed = poll_until(Duration::from_secs(20), "a CORRUPT alarm", || {
        let out = ctl_ok(&endpoints[0], &["alarm", "list"]);
        if out.contains("alarm:CORRUPT") {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert_eq!(listed.trim(), format!("memberID:{c_id} alarm:CORRUPT"));
    // Writes are refused everywhere, with etcd's error; reads go on.
    for ep in &endpoints[..2] {
        let out = etcdctl(ep, &["put", "after", "x"], None);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("etcdserver: corrupt cluster"), "{stderr}");
        let got = ctl_ok(ep, &["get", "k00", "--print-value-only"]);
        assert_eq!(got.trim(), "v0");
    }
    let status = ctl_ok(&endpoints[0], &["endpoint", "status", "-w", "json"]);
    assert!(
        status.contains(&format!("memberID:{c_id} alarm:CORRUPT")),
        "{status}"
    );
}

/// Flips bytes in the data blocks (the first half) of every SST file of a
/// member's store: what a failing disk does, and what RocksDB's block
/// checksums catch.
fn flip_sst_bytes(data_dir: &std::path::Path) -> usize {
    let mut flipped = 0;
    for entry in std::fs::read_dir(data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sst") {
            let mut bytes = std::fs::read(&path).expect("read sst");
            let half = bytes.len() / 2;
            for at in (64..half).step_by(512) {
                bytes[at] ^= 0x5a;
            }
            std::fs::write(&path, bytes).expect("write sst");
            flipped += 1;
        }
    }
    flipped
}

#[test]
fn a_member_whose_disk_flips_bytes_stops_instead_of_serving_and_refuses_to_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = start_cairn(dir.path());
    let ep = p.endpoint();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use etcd_client::{Client, Txn, TxnOp};
        let mut c = Client::connect([format!("http://{ep}")], None)
            .await
            .expect("connect");
        for batch in 0..15 {
            let ops: Vec<TxnOp> = (0..100)
                .map(|i| TxnOp::put(format!("k{:05}", batch * 100 + i), "v".repeat(1024), None))
                .collect();
            c.txn(Txn::new().and_then(ops)).await.expect("txn of puts");
        }
    });
    // Defragment: the store is compacted into SST files.
    ctl_ok(&ep, &["defrag"]);
    assert!(flip_sst_bytes(&p.data_dir) > 0, "no SST file to corrupt");
    let (ok, text) = ctl_text(&ep, &["get", "k", "--prefix", "--keys-only"]);
    assert!(
        !ok,
        "a read over corrupt blocks succeeded: {}",
        &text[..text.len().min(200)]
    );
    let status = p
        .wait_exit(Duration::from_secs(20))
        .expect("the member stops after reading corrupt data");
    assert!(!status.success(), "it stops with an error status");
    let log = p.log_text();
    assert!(log.contains("storage is corrupt"), "log:\n{log}");

    // Restarted on the same data, it refuses to serve.
    let restarted = spawn_cairn("c1", dir.path(), free_port(), free_port(), &[]);
    let mut restarted = restarted;
    let status = restarted
        .wait_exit(Duration::from_secs(30))
        .expect("a member on corrupt data does not start");
    assert!(!status.success());
}
