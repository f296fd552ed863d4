//! `cairnctl make-mirror`, the live migration path, in both directions
//! between etcd 3.4 and cairn, beside etcdctl 3.4's own make-mirror.
//!
//! Two sources (an etcd 3.4 and a cairn) are loaded with keys; then, at
//! once, cairnctl mirrors each whole source to a destination of the other
//! kind, each source's `/p/` keys under `/mirror/` there (`--dest-prefix`)
//! and, from cairn, to the root (`--no-dest-prefix`); etcdctl mirrors the
//! etcd source's `/p/` keys to cairn under `/etcdctl/`. Once the initial
//! copies are there, the sources take puts, overwrites, single and range
//! deletes and multi-key transactions; each destination must then hold
//! exactly the keys and values its mirrors imply. Both CLIs print the count
//! of keys synced after 30 seconds: cairnctl's `/p/` mirror of the etcd
//! source must print etcdctl's number. Bad arguments end both CLIs alike.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp};

type Kvs = BTreeMap<Vec<u8>, Vec<u8>>;

/// A make-mirror of `program` from `source` to `dest` with `flags`.
fn mirror(program: &str, source: &str, dest: &str, flags: &[&str]) -> Child {
    Command::new(program)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={source}"))
        .arg("make-mirror")
        .args(flags)
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn make-mirror")
}

async fn all(c: &mut Client) -> Kvs {
    let r = c
        .get(vec![0u8], Some(GetOptions::new().with_from_key()))
        .await
        .expect("get all");
    r.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect()
}

/// `kvs`' keys starting with `from`, that prefix replaced by `to`.
fn moved(kvs: &Kvs, from: &[u8], to: &[u8]) -> Kvs {
    kvs.iter()
        .filter(|(k, _)| k.starts_with(from))
        .map(|(k, v)| ([to, &k[from.len()..]].concat(), v.clone()))
        .collect()
}

fn show(kvs: &Kvs) -> String {
    kvs.iter()
        .map(|(k, v)| {
            format!(
                "{}={}\n",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect()
}

async fn load(c: &mut Client, tag: &str) {
    for i in 0..60 {
        c.put(format!("/p/k{i:02}"), format!("{tag}-v{i}"), None)
            .await
            .expect("put");
        c.put(format!("/q/k{i:02}"), format!("{tag}-q{i}"), None)
            .await
            .expect("put");
    }
    if tag == "etcd" {
        // The prefix itself (not on cairn: its `--no-dest-prefix` mirror
        // would put the empty key, which etcd refuses as etcdctl's does).
        c.put("/p/", "the prefix itself", None).await.expect("put");
    }
}

/// Changes after the initial copy: every kind of event, several in one
/// revision. Returns the number of events under `/p/`.
async fn churn(c: &mut Client, tag: &str) -> usize {
    let mut p_events = 0;
    for i in 0..30 {
        c.put(format!("/p/new{i}"), format!("{tag}-n{i}"), None)
            .await
            .expect("put");
        p_events += 1;
    }
    for i in 0..10 {
        c.put(format!("/p/k{i:02}"), format!("{tag}-again{i}"), None)
            .await
            .expect("overwrite");
        p_events += 1;
        c.delete(format!("/p/k{:02}", 50 + i), None)
            .await
            .expect("delete");
        p_events += 1;
    }
    // A range delete: one event per key.
    let r = c
        .delete("/p/new2", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("range delete");
    p_events += r.deleted() as usize;
    for i in 0..5 {
        c.txn(Txn::new().and_then(vec![
            TxnOp::put(format!("/p/t{i}a"), "one", None),
            TxnOp::put(format!("/p/t{i}b"), "two", None),
            TxnOp::delete(format!("/p/k{:02}", 20 + i), None),
            TxnOp::put(format!("/q/t{i}"), "three", None),
        ]))
        .await
        .expect("txn");
        p_events += 3;
    }
    c.delete("/q/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete /q/");
    c.put("/q/last", tag, None).await.expect("put");
    p_events
}

/// Waits until `dest` holds `want`, or fails with the difference.
async fn converge(dest: &mut Client, want: impl Fn() -> Kvs, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = all(dest).await;
        let w = want();
        if got == w {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: the destination differs\n--- want\n{}--- got\n{}",
                show(&w),
                show(&got)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn finish(mut child: Child) -> (String, String) {
    let _ = child.kill();
    let out = child.wait_with_output().expect("mirror output");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn make_mirror_both_ways_and_like_etcdctl() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let (e_src, c_src) = (start_etcd(dirs[0].path()), start_cairn(dirs[1].path()));
    let (e_dst, c_dst) = (start_etcd(dirs[2].path()), start_cairn(dirs[3].path()));
    let (es, cs, ed, cd) = (
        e_src.endpoint(),
        c_src.endpoint(),
        e_dst.endpoint(),
        c_dst.endpoint(),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let connect = |ep: &str| {
        rt.block_on(Client::connect([format!("http://{ep}")], None))
            .expect("connect")
    };
    let (mut esc, mut csc, mut edc, mut cdc) =
        (connect(&es), connect(&cs), connect(&ed), connect(&cd));
    rt.block_on(async {
        load(&mut esc, "etcd").await;
        load(&mut csc, "cairn").await;
    });

    let ctl = cairnctl_bin();
    let started = Instant::now();
    let mirrors = vec![
        // etcd -> cairn: everything, and /p/ under /mirror/.
        mirror(ctl, &es, &cd, &[]),
        mirror(ctl, &es, &cd, &["--prefix=/p/", "--dest-prefix=/mirror/"]),
        // cairn -> etcd: everything, /p/ under /mirror/, /p/ at the root.
        mirror(ctl, &cs, &ed, &[]),
        mirror(ctl, &cs, &ed, &["--prefix=/p/", "--dest-prefix=/mirror/"]),
        mirror(ctl, &cs, &ed, &["--prefix", "/p/", "--no-dest-prefix"]),
    ];
    let etcdctl_mirror = mirror(
        "etcdctl",
        &es,
        &cd,
        &["--prefix=/p/", "--dest-prefix=/etcdctl/"],
    );
    // What each destination must hold, from its source's keys.
    let from_etcd = |s: &Kvs| -> Kvs {
        let mut w = s.clone();
        w.extend(moved(s, b"/p/", b"/mirror/"));
        w.extend(moved(s, b"/p/", b"/etcdctl/"));
        w
    };
    let from_cairn = |s: &Kvs| -> Kvs {
        let mut w = s.clone();
        w.extend(moved(s, b"/p/", b"/mirror/"));
        w.extend(moved(s, b"/p/", b""));
        w
    };
    let p_count = rt.block_on(async {
        let (e0, c0) = (all(&mut esc).await, all(&mut csc).await);
        converge(&mut cdc, || from_etcd(&e0), "initial copy etcd -> cairn").await;
        converge(&mut edc, || from_cairn(&c0), "initial copy cairn -> etcd").await;
        let base = moved(&e0, b"/p/", b"/p/").len();
        let events = churn(&mut esc, "etcd").await;
        churn(&mut csc, "cairn").await;
        let (e1, c1) = (all(&mut esc).await, all(&mut csc).await);
        converge(&mut cdc, || from_etcd(&e1), "updates etcd -> cairn").await;
        converge(&mut edc, || from_cairn(&c1), "updates cairn -> etcd").await;
        base + events
    });

    // The count line comes 30 s after the start.
    let first_line = started + Duration::from_secs(32);
    std::thread::sleep(first_line.saturating_duration_since(Instant::now()));
    let (want_out, want_err) = finish(etcdctl_mirror);
    let mut outs: Vec<(String, String)> = mirrors.into_iter().map(finish).collect();
    let (got_out, got_err) = outs.remove(1);
    assert_eq!(
        want_out,
        format!("{p_count}\n"),
        "etcdctl's count (stderr: {want_err})"
    );
    assert_eq!(got_out, want_out, "cairnctl's count (stderr: {got_err})");
    assert_eq!(got_err, "");
    for (out, err) in outs {
        assert_eq!(out.lines().count(), 1, "one count line: {out:?} {err}");
        assert_eq!(err, "");
    }
}

/// Bad arguments: the same exit status, stdout and stderr as etcdctl.
#[test]
fn make_mirror_bad_arguments_as_etcdctl() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (e, c) = (start_etcd(d1.path()), start_cairn(d2.path()));
    let dest = c.endpoint();
    let cases: Vec<Vec<&str>> = vec![
        vec!["make-mirror"],
        vec!["make-mirror", &dest, "extra"],
        vec![
            "make-mirror",
            "--dest-prefix=/x/",
            "--no-dest-prefix",
            &dest,
        ],
        vec!["make-mirror", "--no-dest-prefix=maybe", &dest],
    ];
    for args in cases {
        let want = etcdctl(&e.endpoint(), &args, None);
        let got = with_ctl(cairnctl_bin(), || etcdctl(&e.endpoint(), &args, None));
        let text = |o: &std::process::Output| {
            format!(
                "[exit {:?}]\n{}--- stderr\n{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert_eq!(text(&got), text(&want), "make-mirror {args:?}");
    }
}
