//! RocksStorage durability across `kill -9`: a child process (this test binary,
//! re-executed) writes synced batches and prints each acknowledgement; the
//! parent kills it with SIGKILL mid-stream, reopens the directory and checks
//! that every acknowledged batch is there, whole — and so is every unsynced
//! write made before it (the WAL is flushed by hand: a sync must carry them).
#![cfg(not(madsim))]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cairn_runtime::{RocksStorage, Storage, WriteBatch};

const DIR_ENV: &str = "CAIRN_KILL9_CHILD_DIR";
const CFS: &[&str] = &["log", "state"];

/// The child: runs only when re-executed by the parent test.
#[tokio::test]
async fn kill9_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let s = RocksStorage::open(std::path::Path::new(&dir), CFS).expect("open");
    for i in 0u64.. {
        // An unsynced write first, as the apply path makes them.
        let mut applied = WriteBatch::new();
        applied.put("state", b"applied".to_vec(), i.to_be_bytes().to_vec());
        s.write(applied).expect("unsynced write");
        let mut b = WriteBatch::new();
        b.put("log", i.to_be_bytes().to_vec(), vec![i as u8; 1000]);
        b.put("state", b"last".to_vec(), i.to_be_bytes().to_vec());
        s.write_sync(b).await.expect("synced write");
        println!("acked {i}");
    }
}

#[test]
fn rocks_synced_batches_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut last_acked = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u64 = n.trim().parse().expect("number");
            last_acked = Some(n);
            if n >= 200 {
                break;
            }
        }
    }
    // SIGKILL: no destructors, no flush.
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let last_acked = last_acked.expect("the child acknowledged writes");

    let s = RocksStorage::open(dir.path(), CFS).expect("reopen after kill -9");
    for i in 0..=last_acked {
        assert_eq!(
            s.get("log", &i.to_be_bytes()).expect("get"),
            Some(vec![i as u8; 1000]),
            "acked batch {i} lost"
        );
    }
    // Atomicity: `state/last` always names a batch whose log entry exists.
    let last = s
        .get("state", b"last")
        .expect("get")
        .expect("state written");
    let last = u64::from_be_bytes(last.try_into().expect("8 bytes"));
    assert!(last >= last_acked);
    assert!(s.get("log", &last.to_be_bytes()).expect("get").is_some());
    // The unsynced write before each acknowledged sync went out with it, and
    // what survives is a prefix: never an applied mark past the last log entry.
    let applied = s
        .get("state", b"applied")
        .expect("get")
        .expect("unsynced writes before a sync survive");
    let applied = u64::from_be_bytes(applied.try_into().expect("8 bytes"));
    assert!(
        applied >= last_acked,
        "applied {applied} < acked {last_acked}"
    );
    assert!(applied <= last + 1, "applied {applied} beyond log {last}");
}
