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
