//! RocksStorage durability across `kill -9`: a child process (this test binary,
//! re-executed) writes synced batches and prints each acknowledgement; the
//! parent kills it with SIGKILL mid-stream, reopens the directory and checks
//! that every acknowledged batch is there, whole — and so is every unsynced
//! write made before it (the WAL is flushed by hand: a sync must carry them).
//! The second test writes large batches, so that the child's WAL files are
//! closed and reused (`recycle_log_file_num`) before the kill: recovery must
//! read this life's records of a reused file and stop at the older ones.
#![cfg(not(madsim))]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cairn_runtime::{RocksStorage, Storage, WriteBatch};

const DIR_ENV: &str = "CAIRN_KILL9_CHILD_DIR";
const VALUE_ENV: &str = "CAIRN_KILL9_VALUE_BYTES";
const CFS: &[&str] = &["log", "state"];

/// The value of log entry `i` when entries are `len` bytes.
fn entry(i: u64, len: usize) -> Vec<u8> {
    vec![i as u8; len]
}

/// The child: runs only when re-executed by the parent test.
#[tokio::test]
async fn kill9_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let len = std::env::var(VALUE_ENV).map_or(1000, |v| v.parse().expect("value size"));
    let s = RocksStorage::open(std::path::Path::new(&dir), CFS).expect("open");
    for i in 0u64.. {
        // An unsynced write first, as the apply path makes them.
        let mut applied = WriteBatch::new();
        applied.put("state", b"applied".to_vec(), i.to_be_bytes().to_vec());
        s.write(applied).expect("unsynced write");
        let mut b = WriteBatch::new();
        b.put("log", i.to_be_bytes().to_vec(), entry(i, len));
        b.put("state", b"last".to_vec(), i.to_be_bytes().to_vec());
        s.write_sync(b).await.expect("synced write");
        println!("acked {i}");
    }
}

#[test]
fn rocks_synced_batches_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    kill9_and_check(dir.path(), 1000, 200);
}

#[test]
fn rocks_synced_batches_survive_kill_9_in_reused_wal_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2 000 entries of 64 KiB: 125 MiB, past the 96 MiB of WAL that forces
    // the families pinning the oldest file to flush, so the WAL moves to a
    // file it reuses (the storage's open already closed two for reuse).
    kill9_and_check(dir.path(), 64 << 10, 2000);
    // RocksDB's info log of the child's life (kept as LOG.old.* by the reopen).
    let reused = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("LOG"))
        })
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .map(|text| text.matches("to recycle list").count())
        .max()
        .unwrap_or(0);
    assert!(
        reused >= 3,
        "the child's WAL files were put up for reuse {reused} times (2 at open); the test needs 3"
    );
}

/// Runs the child writer with entries of `len` bytes until it has
/// acknowledged `acks` syncs, kills it with SIGKILL, reopens `dir` and checks
/// what survived.
fn kill9_and_check(dir: &std::path::Path, len: usize, acks: u64) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(VALUE_ENV, len.to_string())
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
            if n >= acks {
                break;
            }
        }
    }
    // SIGKILL: no destructors, no flush.
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let last_acked = last_acked.expect("the child acknowledged writes");

    let s = RocksStorage::open(dir, CFS).expect("reopen after kill -9");
    for i in 0..=last_acked {
        assert_eq!(
            s.get("log", &i.to_be_bytes()).expect("get"),
            Some(entry(i, len)),
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
