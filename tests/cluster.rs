//! A 3-member cluster of real `cairn` processes on loopback: kill -9 the
//! leader under write load; a new leader is elected, writes continue, no
//! acknowledged write is lost; the old leader restarts, catches up (by
//! snapshot: the log is compacted every 20 entries) and every member ends with
//! the same HashKV.
#![cfg(not(madsim))]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn status_fields(endpoint: &str) -> Option<Vec<String>> {
    let out = etcdctl(endpoint, &["endpoint", "status", "-w", "fields"], None);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

fn field(fields: &[String], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|l| l.starts_with(&format!("\"{name}\"")))
        .and_then(|l| l.split(" : ").nth(1))
        .map(|v| v.trim().to_owned())
}

/// (is this member the leader, its member id, the leader's id)
fn leader_of(endpoint: &str) -> Option<(String, String)> {
    let f = status_fields(endpoint)?;
    Some((field(&f, "MemberID")?, field(&f, "Leader")?))
}

fn hash_kv(endpoint: &str) -> Option<String> {
    let out = etcdctl(endpoint, &["endpoint", "hashkv", "-w", "fields"], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    out.status.success().then(|| {
        text.lines()
            .filter(|l| l.contains("\"Hash\"") || l.contains("\"Revision\""))
            .collect::<Vec<_>>()
            .join(",")
    })
}

#[test]
fn three_member_cluster_survives_kill_9_of_the_leader_and_converges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("n{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let extra = |_: usize| {
        vec![
            format!("--initial-cluster={cluster}"),
            "--initial-cluster-token=kill9-test".to_owned(),
            "--snapshot-count=20".to_owned(),
            "--heartbeat-interval=50".to_owned(),
            "--election-timeout=500".to_owned(),
        ]
    };
    let mut procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| spawn_cairn(&format!("n{i}"), dir.path(), *c, *p, &extra(i)))
        .collect();
    for p in &procs {
        wait_healthy(p);
    }
    let endpoints: Vec<String> = procs.iter().map(Proc::endpoint).collect();
    let all = endpoints.join(",");

    let mut acked = Vec::new();
    for i in 0..30 {
        ctl_ok(&all, &["put", &format!("k{i}"), &format!("v{i}")]);
        acked.push(i);
    }
    let leader_idx = (0..3)
        .find(|&i| leader_of(&endpoints[i]).is_some_and(|(me, leader)| me == leader))
        .expect("one member is the leader");

    // kill -9 the leader; keep writing through the survivors.
    procs[leader_idx].kill9();
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != leader_idx)
        .map(|i| endpoints[i].clone())
        .collect();
    let survivors_ep = survivors.join(",");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 30;
    while i < 100 {
        let out = etcdctl(
            &survivors_ep,
            &["put", &format!("k{i}"), &format!("v{i}")],
            None,
        );
        if out.status.success() {
            acked.push(i);
            i += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "writes did not resume after the leader died: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Every acknowledged write is readable (linearizable read) from the survivors.
    for k in &acked {
        assert_eq!(
            ctl_ok(
                &survivors_ep,
                &["get", &format!("k{k}"), "--print-value-only"]
            ),
            format!("v{k}\n"),
            "acked write k{k} lost"
        );
    }

    // Restart the old leader with the same data dir: it rejoins and catches up.
    let (c, p) = ports[leader_idx];
    procs[leader_idx] = spawn_cairn(
        &format!("n{leader_idx}"),
        dir.path(),
        c,
        p,
        &extra(leader_idx),
    );
    wait_healthy(&procs[leader_idx]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hashes: Vec<Option<String>> = endpoints.iter().map(|e| hash_kv(e)).collect();
        if hashes.iter().all(Option::is_some) && hashes.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge to one HashKV: {hashes:?}\n{}",
            procs[leader_idx].log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let restarted = &endpoints[leader_idx];
    assert_eq!(
        ctl_ok(
            restarted,
            &["get", "k99", "--print-value-only", "--consistency=s"]
        ),
        "v99\n"
    );
}
