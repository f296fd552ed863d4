//! Automatic compaction with the real binary, run on cairn and on etcd 3.4
//! with the same flags: the first compaction waits one retention, and then
//! history older than the retention goes while the window is kept.
#![cfg(not(madsim))]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The store's current revision, from a read's header.
fn current_revision(endpoint: &str) -> i64 {
    json_number(&ctl_ok(endpoint, &["get", "k", "-w", "json"]), "revision") as i64
}

#[test]
fn periodic_auto_compaction_waits_one_retention_then_drops_older_history_as_etcd() {
    for server in [Server::Cairn, Server::Etcd] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cp, pp) = (free_port(), free_port());
        let peer = format!("http://127.0.0.1:{pp}");
        let mut flags = founding_flags("a", &peer, &format!("a={peer}"));
        flags.extend([
            "--auto-compaction-mode=periodic".to_owned(),
            "--auto-compaction-retention=3s".to_owned(),
        ]);
        let p = spawn_member(server, "a", dir.path(), cp, pp, &flags, &[]);
        wait_healthy(&p);
        let ep = p.endpoint();
        let started = Instant::now();
        ctl_ok(&ep, &["put", "k", "first"]);
        let first = current_revision(&ep);
        let mut i = 0;
        let compacted_after = loop {
            i += 1;
            ctl_ok(&ep, &["put", "k", &i.to_string()]);
            let out = etcdctl(&ep, &["get", "k", &format!("--rev={first}")], None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                assert!(
                    stderr.contains("required revision has been compacted"),
                    "{}: {stderr}",
                    server.label()
                );
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}: revision {first} never compacted",
                server.label()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            compacted_after >= Duration::from_secs(2),
            "{}: compacted after {compacted_after:?}, before the 3 s retention",
            server.label()
        );
        // The recent history is kept: a revision written just now is readable.
        let now = current_revision(&ep);
        let recent = etcdctl(&ep, &["get", "k", &format!("--rev={}", now - 1)], None);
        assert!(
            recent.status.success(),
            "{}: {}",
            server.label(),
            String::from_utf8_lossy(&recent.stderr)
        );
        if server == Server::Cairn {
            assert!(p.log_text().contains("starting auto-compaction"));
        }
        eprintln!(
            "{}: revision {first} compacted after {compacted_after:?} (retention 3 s)",
            server.label()
        );
    }
}

/// etcd 3.4's revision mode: every 5 minutes the leader compacts to the
/// current revision minus the retention. Both servers run at once (the test
/// waits one interval), get the same writes, and must compact to the same
/// revision: it stays readable, the one below it does not.
#[test]
fn revision_auto_compaction_keeps_the_last_n_revisions_after_five_minutes_as_etcd() {
    const RETENTION: i64 = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let members: Vec<(Server, Proc)> = [Server::Cairn, Server::Etcd]
        .into_iter()
        .map(|server| {
            let (cp, pp) = (free_port(), free_port());
            let peer = format!("http://127.0.0.1:{pp}");
            let mut flags = founding_flags("a", &peer, &format!("a={peer}"));
            flags.extend([
                "--auto-compaction-mode=revision".to_owned(),
                format!("--auto-compaction-retention={RETENTION}"),
            ]);
            let sub = dir.path().join(server.label());
            std::fs::create_dir_all(&sub).expect("mkdir");
            (server, spawn_member(server, "a", &sub, cp, pp, &flags, &[]))
        })
        .collect();
    for (_, p) in &members {
        wait_healthy(p);
    }
    // The same 40 writes on both: revisions 2..=41.
    for (_, p) in &members {
        for i in 0..40 {
            ctl_ok(
                &p.endpoint(),
                &["put", &format!("k{}", i % 7), &i.to_string()],
            );
        }
    }
    let want = current_revision(&members[0].1.endpoint()) - RETENTION;
    assert_eq!(current_revision(&members[1].1.endpoint()) - RETENTION, want);
    let started = Instant::now();
    let mut seen = Vec::new();
    for (server, p) in &members {
        let ep = p.endpoint();
        // Poll the compacted edge; the first check comes 5 minutes after start.
        loop {
            let out = etcdctl(&ep, &["get", "k0", &format!("--rev={}", want - 1)], None);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains("required revision has been compacted"),
                    "{}: {stderr}",
                    server.label()
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(420),
                "{}: revision {} never compacted",
                server.label(),
                want - 1
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        // Compacted at `want`: that revision is still readable.
        let after = etcdctl(&ep, &["get", "k0", &format!("--rev={want}")], None);
        seen.push((
            server.label(),
            after.status.success(),
            String::from_utf8_lossy(&after.stderr)
                .lines()
                .filter(|l| l.starts_with("Error:"))
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    assert!(seen[0].1, "cairn compacted past the retention: {seen:?}");
    assert_eq!((seen[0].1, &seen[0].2), (seen[1].1, &seen[1].2), "{seen:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(200),
        "compacted after {:?}, before etcd's 5-minute interval",
        started.elapsed()
    );
}
