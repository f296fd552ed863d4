//! Backups in etcd's format with the real binaries, etcd 3.4 on the other
//! side: a cairn snapshot (`etcdctl snapshot save`) is read by etcdctl,
//! restored by etcdctl and served by etcd with every key, value, revision,
//! compaction and lease equal; an etcd snapshot restored by `cairnctl` into
//! three cairn members serves the same data; `cairnctl snapshot status`
//! prints what etcdctl prints; restore refuses what etcdctl refuses, with its
//! messages; a snapshot taken under writes equals the store at its revision;
//! auth comes over both ways (an etcd snapshot with users, roles and auth
//! enabled restored into cairn, a cairn one restored into etcd): every
//! `--user` request is allowed or refused on the copy as on the original.
#![cfg(not(madsim))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn cairnctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(args)
        .output()
        .expect("run cairnctl")
}

/// etcdctl without an endpoint (the offline snapshot commands).
fn etcdctl_offline(args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `Error:` line of a failed command, and its exit code.
fn failure(o: &Output) -> (Option<i32>, String) {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or("")
        .to_owned();
    (o.status.code(), line)
}

/// A history with everything a snapshot must carry: puts, overwrites,
/// deletions, a transaction, a compaction, leases with keys, a large value
/// (overflow pages) and thousands of keys (branch pages).
fn fill(endpoint: &str) -> i64 {
    use etcd_client::{Client, PutOptions, Txn, TxnOp};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = Client::connect([format!("http://{endpoint}")], None)
            .await
            .expect("connect");
        c.put("a", "1", None).await.expect("put");
        c.put("b", "2", None).await.expect("put");
        let lease = c.lease_grant(600, None).await.expect("grant").id();
        c.put("c", "3", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put with lease");
        c.delete("a", None).await.expect("delete");
        c.txn(Txn::new().and_then(vec![
            TxnOp::put("x", "tx", None),
            TxnOp::put("y", "ty", None),
        ]))
        .await
        .expect("txn");
        c.put("b", "2b", None).await.expect("overwrite");
        let compact_at = c
            .put("b", "2c", None)
            .await
            .expect("put")
            .header()
            .map_or(0, |h| h.revision())
            - 1;
        c.compact(compact_at, None).await.expect("compact");
        for round in 0..2 {
            for batch in 0..25 {
                let ops = (0..100)
                    .map(|i| {
                        let n = batch * 100 + i;
                        TxnOp::put(format!("k/{n:05}"), format!("v{round}-{n}"), None)
                    })
                    .collect::<Vec<_>>();
                c.txn(Txn::new().and_then(ops)).await.expect("txn of puts");
            }
        }
        for n in (0..2500).step_by(25) {
            c.delete(format!("k/{n:05}"), None).await.expect("delete");
        }
        let lease2 = c.lease_grant(900, None).await.expect("grant").id();
        c.put(
            "big",
            "B".repeat(200 * 1024),
            Some(PutOptions::new().with_lease(lease2)),
        )
        .await
        .expect("big put");
        c.lease_grant(1200, None)
            .await
            .expect("grant a lease with no keys");
        c.put("last", "z", None)
            .await
            .expect("put")
            .header()
            .map_or(0, |h| h.revision())
    })
}

/// What a client sees of the data, ids and terms masked: every live key, the
/// history after the compaction, the compaction itself, the leases and their keys.
fn dump(endpoint: &str, compact_probe: i64) -> String {
    let mut out = Vec::new();
    out.push(mask_json_ids(&ctl_ok(
        endpoint,
        &["get", "", "--prefix", "-w", "json"],
    )));
    for rev in [compact_probe + 1, compact_probe + 3, compact_probe + 60] {
        let r = rev.to_string();
        out.push(mask_json_ids(&ctl_ok(
            endpoint,
            &["get", "", "--prefix", "--rev", &r, "-w", "json"],
        )));
    }
    let old = etcdctl(
        endpoint,
        &["get", "b", "--rev", &compact_probe.to_string()],
        None,
    );
    out.push(failure(&old).1.replace("Error: ", "compacted read: "));
    let leases = ctl_ok(endpoint, &["lease", "list"]);
    let mut ids: Vec<&str> = leases.lines().skip(1).collect();
    ids.sort();
    for id in ids {
        let ttl = ctl_ok(endpoint, &["lease", "timetolive", id, "--keys"]);
        // The remaining TTL depends on when each server started.
        out.push(mask_digits_after(&ttl, "remaining("));
    }
    out.join("\n")
}

/// The compact revision `fill` leaves: the revision before the put of `b`=`2c`.
fn compact_revision(endpoint: &str) -> i64 {
    let text = ctl_ok(endpoint, &["get", "b", "-w", "json"]);
    json_number(&text, "mod_revision") as i64 - 1
}

/// Restores `snapshot` into a new single-member cluster `name` with the
/// tool of `server` (etcdctl for etcd, cairnctl for cairn) and starts
/// `server` on it.
fn restore_and_start(server: Server, snapshot: &Path, dir: &Path, name: &str) -> Proc {
    let (cp, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let data_dir = dir.join(format!("{name}.{}", server.label()));
    let args = [
        "snapshot".to_owned(),
        "restore".to_owned(),
        snapshot.display().to_string(),
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--initial-cluster={name}={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match server {
        Server::Etcd => etcdctl_offline(&args),
        Server::Cairn => cairnctl(&args),
    };
    assert!(
        out.status.success(),
        "{} snapshot restore: {out:?}",
        server.label()
    );
    let flags = founding_flags(name, &peer, &format!("{name}={peer}"));
    spawn_member(server, name, dir, cp, pp, &flags, &[])
}

fn assert_status_like_etcdctl(snapshot: &Path) {
    let file = snapshot.to_str().expect("utf-8 path");
    for format in ["simple", "table", "json", "fields"] {
        let etcd = etcdctl_offline(&["snapshot", "status", file, "-w", format]);
        let ours = cairnctl(&["snapshot", "status", file, "-w", format]);
        assert!(etcd.status.success(), "etcdctl status: {etcd:?}");
        assert_eq!(stdout(&ours), stdout(&etcd), "snapshot status -w {format}");
    }
}

#[test]
fn a_cairn_snapshot_is_read_restored_and_served_by_etcd_3_4_with_equal_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    fill(&ep);
    let compact = compact_revision(&ep);
    let snap = dir.path().join("cairn.db");
    let saved = etcdctl(
        &ep,
        &["snapshot", "save", snap.to_str().expect("path")],
        None,
    );
    assert!(
        saved.status.success(),
        "etcdctl snapshot save from cairn: {saved:?}"
    );
    assert!(stdout(&saved).contains("Snapshot saved at"));
    assert_status_like_etcdctl(&snap);

    let etcd = restore_and_start(Server::Etcd, &snap, dir.path(), "r");
    wait_healthy(&etcd);
    assert_eq!(dump(&etcd.endpoint(), compact), dump(&ep, compact));
}

#[test]
fn an_etcd_snapshot_restored_by_cairnctl_serves_equal_data_on_three_cairn_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let etcd = spawn_member(
        Server::Etcd,
        "e",
        dir.path(),
        cp,
        pp,
        &founding_flags("e", &peer, &format!("e={peer}")),
        &[],
    );
    wait_healthy(&etcd);
    fill(&etcd.endpoint());
    let compact = compact_revision(&etcd.endpoint());
    let snap = dir.path().join("etcd.db");
    ctl_ok(
        &etcd.endpoint(),
        &["snapshot", "save", snap.to_str().expect("path")],
    );
    assert_status_like_etcdctl(&snap);
    // cairnctl's own save of the same store is a valid snapshot too.
    let again = dir.path().join("etcd-by-cairnctl.db");
    let saved = cairnctl(&[
        "--endpoints",
        &etcd.endpoint(),
        "snapshot",
        "save",
        again.to_str().expect("path"),
    ]);
    assert!(
        saved.status.success(),
        "cairnctl snapshot save from etcd: {saved:?}"
    );
    assert_eq!(
        stdout(&saved),
        format!("Snapshot saved at {}\n", again.display())
    );

    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, pp))| format!("m{i}=http://127.0.0.1:{pp}"))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (cp, pp))| {
            let name = format!("m{i}");
            let peer = format!("http://127.0.0.1:{pp}");
            let data_dir = dir.path().join(format!("{name}.cairn"));
            let out = cairnctl(&[
                "snapshot",
                "restore",
                snap.to_str().expect("path"),
                "--name",
                &name,
                "--data-dir",
                data_dir.to_str().expect("path"),
                "--initial-cluster",
                &cluster,
                "--initial-cluster-token",
                "restored",
                "--initial-advertise-peer-urls",
                &peer,
            ]);
            assert!(out.status.success(), "cairnctl snapshot restore: {out:?}");
            let mut flags = founding_flags(&name, &peer, &cluster);
            flags.push("--initial-cluster-token=restored".into());
            spawn_member(Server::Cairn, &name, dir.path(), *cp, *pp, &flags, &[])
        })
        .collect();
    for m in &members {
        wait_healthy(m);
    }
    let want = dump(&etcd.endpoint(), compact);
    for m in &members {
        assert_eq!(dump(&m.endpoint(), compact), want, "member {}", m.name);
    }
    let eps: Vec<String> = members.iter().map(Proc::endpoint).collect();
    wait_equal_hash_kv(&eps, Duration::from_secs(10));
    ctl_ok(&eps[1], &["put", "after-restore", "yes"]);
    assert!(ctl_ok(&eps[2], &["get", "after-restore"]).contains("yes"));
    let list = member_list(&eps[0]).expect("member list");
    assert_eq!(
        list.len(),
        3,
        "the restored cluster has the new members only: {list:?}"
    );
}

#[test]
fn restore_refuses_what_etcdctl_refuses_with_its_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    ctl_ok(&cairn.endpoint(), &["put", "k", "v"]);
    let good = dir.path().join("good.db");
    ctl_ok(
        &cairn.endpoint(),
        &["snapshot", "save", good.to_str().expect("path")],
    );
    let bytes = std::fs::read(&good).expect("read snapshot");
    let write = |name: &str, b: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, b).expect("write");
        p
    };
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let flipped = write("flipped.db", &flipped);
    let no_hash = write("nohash.db", &bytes[..bytes.len() - 32]);
    let not_a_db = write("garbage.db", &vec![7u8; 4096 * 2 + 32]);
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).expect("mkdir");

    let cases: Vec<(&str, PathBuf, Vec<String>)> = vec![
        (
            "data dir exists",
            good.clone(),
            vec![format!("--data-dir={}", existing.display())],
        ),
        ("hash mismatch", flipped, vec![]),
        ("no hash", no_hash.clone(), vec![]),
    ];
    for (what, file, extra) in cases {
        let run = |tool: &str| {
            let target = dir
                .path()
                .join(format!("{tool}-{}", what.replace(' ', "-")));
            let mut args = vec![
                "snapshot".to_string(),
                "restore".into(),
                file.display().to_string(),
            ];
            if extra.is_empty() {
                args.push(format!("--data-dir={}", target.display()));
            }
            args.extend(extra.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = if tool == "etcdctl" {
                etcdctl_offline(&args)
            } else {
                cairnctl(&args)
            };
            (failure(&out), target)
        };
        let (etcd, _) = run("etcdctl");
        let (ours, target) = run("cairnctl");
        assert_ne!(etcd.0, Some(0), "{what}: etcdctl accepted it");
        assert_eq!(ours, etcd, "{what}");
        assert!(
            !target.exists(),
            "{what}: a failed restore left {}",
            target.display()
        );
    }
    // Without its hash, a snapshot restores when told to skip the check.
    let skipped = dir.path().join("skipped.cairn");
    let out = cairnctl(&[
        "snapshot",
        "restore",
        no_hash.to_str().expect("path"),
        "--skip-hash-check",
        "--data-dir",
        skipped.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{out:?}");
    // Not a database at all: refused, nothing left behind.
    let target = dir.path().join("out-garbage");
    let out = cairnctl(&[
        "snapshot",
        "restore",
        not_a_db.to_str().expect("path"),
        "--skip-hash-check",
        "--data-dir",
        target.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!target.exists());
    let status = cairnctl(&["snapshot", "status", not_a_db.to_str().expect("path")]);
    assert_eq!(status.status.code(), Some(1), "{status:?}");
}

#[test]
fn a_snapshot_taken_under_writes_equals_the_store_at_its_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    let writers = Writers::start(std::slice::from_ref(&ep), 4, "w/");
    writers.wait_progress(200, Duration::from_secs(30), "before the snapshot");
    let snap = dir.path().join("under-writes.db");
    let saved = cairnctl(&[
        "--endpoints",
        &ep,
        "snapshot",
        "save",
        snap.to_str().expect("path"),
    ]);
    assert!(saved.status.success(), "{saved:?}");
    writers.wait_progress(200, Duration::from_secs(30), "after the snapshot");
    let acked = writers.stop();
    assert!(!acked.is_empty());
    let status = stdout(&cairnctl(&[
        "snapshot",
        "status",
        snap.to_str().expect("path"),
        "-w",
        "json",
    ]));
    let revision = json_number(&status, "revision");

    let copy = restore_and_start(Server::Cairn, &snap, dir.path(), "copy");
    wait_healthy(&copy);
    let rev = revision.to_string();
    let hash = |endpoint: &str| {
        let text = ctl_ok(
            endpoint,
            &["endpoint", "hashkv", "--rev", &rev, "-w", "json"],
        );
        json_number(&text, "hash")
    };
    assert_eq!(
        hash(&copy.endpoint()),
        hash(&ep),
        "the restored copy's HashKV at the snapshot's revision {revision}"
    );
    let copy_rev = json_number(
        &ctl_ok(&copy.endpoint(), &["get", "x", "-w", "json"]),
        "revision",
    );
    assert_eq!(copy_rev, revision, "the copy's revision is the snapshot's");
}

// ---- auth carried by backups, both ways ----

/// What an auth-enabled store is given before its backup: root and its
/// role; `reader`
/// may read `/p/`; `writer` may read and write `/w/`; alice reads, bob
/// writes, svc reads without a password; some keys; auth on.
const AUTH_SETUP: &[&str] = &[
    "user add root:rootpw",
    "role add root",
    "user grant-role root root",
    "role add reader",
    "role grant-permission reader read /p/ --prefix",
    "role add writer",
    "role grant-permission writer readwrite /w/ --prefix",
    "user add alice:alicepw",
    "user grant-role alice reader",
    "user add bob:bobpw",
    "user grant-role bob writer",
    "user add svc --no-password",
    "user grant-role svc reader",
    "put /p/a pa",
    "put /w/a wa",
    "put k1 v1",
    "auth enable",
];

/// What is asked of the store and of its restored copy (after the backup):
/// allowed and refused reads and writes of each user, wrong passwords, no
/// user, the users and roles as root sees them, then `auth disable` as root.
const AUTH_PROBE: &[&str] = &[
    "--user=alice:alicepw get /p/a",
    "--user=alice:alicepw get /p/ --prefix",
    "--user=alice:alicepw get k1",
    "--user=alice:alicepw get /w/a",
    "--user=alice:alicepw put /p/a x",
    "--user=alice:wrong get /p/a",
    "--user=bob:bobpw put /w/b wb",
    "--user=bob:bobpw get /w/ --prefix",
    "--user=bob:bobpw get /p/a",
    "--user=svc:any get /p/a",
    "--user=nobody:pw get /p/a",
    "get /p/a",
    "--user=alice:alicepw user list",
    "--user=root:rootpw get k1",
    "--user=root:rootpw user list",
    "--user=root:rootpw role list",
    "--user=root:rootpw user get alice --detail",
    "--user=root:rootpw user get svc",
    "--user=root:rootpw role get reader",
    "--user=root:rootpw role get writer",
    "--user=root:rootpw auth disable",
    "get k1",
    "get /w/b",
];

/// etcdctl `cmd` (split on spaces) against `endpoint`: exit code, stdout
/// and stderr with etcdctl's own log lines dropped.
fn ctl_step(endpoint: &str, cmd: &str) -> String {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let out = etcdctl(endpoint, &args, None);
    let text: String = [&out.stdout, &out.stderr]
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| !l.starts_with("{\"level\":"))
                .map(|l| format!("{l}\n"))
                .collect::<Vec<_>>()
        })
        .collect();
    format!(
        "$ etcdctl {cmd}\n[exit {}]\n{text}",
        out.status.code().unwrap_or(-1)
    )
}

fn run_steps(endpoint: &str, steps: &[&str]) -> Vec<String> {
    steps.iter().map(|cmd| ctl_step(endpoint, cmd)).collect()
}

fn set_up_auth(endpoint: &str) {
    for step in run_steps(endpoint, AUTH_SETUP) {
        assert!(step.contains("[exit 0]"), "auth setup failed:\n{step}");
    }
}

/// Asserts the probe went as it does on etcd: the restored copy answers
/// every step as the original did, and the answers that show the
/// permissions came over are the expected ones.
fn assert_same_probe(original: &[String], restored: &[String], what: &str) {
    let diffs: Vec<String> = original
        .iter()
        .zip(restored)
        .filter(|(o, r)| o != r)
        .map(|(o, r)| format!("--- original\n{o}--- {what}\n{r}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n{}",
        diffs.len(),
        original.len(),
        diffs.join("\n")
    );
    let step = |cmd: &str| {
        let i = AUTH_PROBE
            .iter()
            .position(|c| *c == cmd)
            .expect("a probe step");
        restored[i].as_str()
    };
    assert!(step("--user=alice:alicepw get /p/a").contains("[exit 0]\n/p/a\npa\n"));
    for refused in [
        "--user=alice:alicepw get k1",
        "--user=alice:alicepw get /w/a",
        "--user=alice:alicepw put /p/a x",
        "--user=bob:bobpw get /p/a",
        "--user=alice:alicepw user list",
    ] {
        assert!(
            step(refused).contains("etcdserver: permission denied"),
            "{}",
            step(refused)
        );
    }
    assert!(step("--user=alice:wrong get /p/a").contains("authentication failed"));
    assert!(step("--user=bob:bobpw put /w/b wb").contains("[exit 0]\nOK\n"));
    assert!(step("--user=root:rootpw auth disable").contains("[exit 0]\nAuthentication Disabled"));
    assert!(step("get k1").contains("[exit 0]\nk1\nv1\n"));
}

#[test]
fn an_etcd_snapshot_with_auth_restored_by_cairnctl_keeps_its_users_and_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    set_up_auth(&etcd.endpoint());
    let snap = dir.path().join("etcd-auth.db");
    ctl_ok(
        &etcd.endpoint(),
        &[
            "--user=root:rootpw",
            "snapshot",
            "save",
            snap.to_str().expect("path"),
        ],
    );
    let want = run_steps(&etcd.endpoint(), AUTH_PROBE);
    drop(etcd);

    let cairn = restore_and_start(Server::Cairn, &snap, dir.path(), "r");
    wait_healthy(&cairn);
    let got = run_steps(&cairn.endpoint(), AUTH_PROBE);
    assert_same_probe(&want, &got, "cairn restored from etcd's snapshot");
}

#[test]
fn a_cairn_snapshot_with_auth_restored_by_etcdctl_keeps_its_users_and_permissions_on_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    set_up_auth(&cairn.endpoint());
    let snap = dir.path().join("cairn-auth.db");
    let path = snap.to_str().expect("path");
    let ep = cairn.endpoint();
    // With auth on, a backup is root's.
    let refused = cairnctl(&["--endpoints", &ep, "snapshot", "save", path]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let refused = cairnctl(&[
        "--endpoints",
        &ep,
        "--user=alice:alicepw",
        "snapshot",
        "save",
        path,
    ]);
    assert_eq!(
        failure(&refused),
        (Some(1), "Error: auth: permission denied".into())
    );
    let saved = cairnctl(&[
        "--endpoints",
        &ep,
        "--user=root",
        "--password=rootpw",
        "snapshot",
        "save",
        path,
    ]);
    assert!(
        saved.status.success(),
        "cairnctl snapshot save as root: {saved:?}"
    );
    assert_status_like_etcdctl(&snap);
    let want = run_steps(&ep, AUTH_PROBE);
    drop(cairn);

    let etcd = restore_and_start(Server::Etcd, &snap, dir.path(), "r");
    wait_healthy(&etcd);
    let got = run_steps(&etcd.endpoint(), AUTH_PROBE);
    assert_same_probe(&want, &got, "etcd restored from cairn's snapshot");
}
