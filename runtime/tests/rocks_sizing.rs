//! RocksStorage's sizing (runtime/src/rocks_storage.rs, "sizing"): the
//! write-ahead logs on disk stay bounded while one column family takes all the
//! writes and another, written once, never fills its memtable.
//!
//! With RocksDB's defaults that small family pins every log file written since
//! its one write, so the logs grew with the data: a member loaded with 1 M keys
//! kept hundreds of MiB of them (docs/benchmarks.md, "Memory and disk").
//! And the WAL file written at open is reused: synced writes overwrite it in
//! place instead of growing a new file.
#![cfg(not(madsim))]

use cairn_runtime::{RocksStorage, Storage, WriteBatch};

/// The WAL files in `dir`, by name, with their sizes.
fn wal_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .expect("read data dir")
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            let len = e.metadata().expect("metadata").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect()
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    wal_files(dir).iter().map(|(_, len)| len).sum()
}

#[test]
fn write_ahead_logs_stay_bounded_while_a_small_family_pins_the_oldest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = RocksStorage::open(dir.path(), &["kv", "meta", "raft_log"]).expect("open");
    let mut once = WriteBatch::new();
    once.put("meta", b"written-once", b"1".to_vec());
    storage.write(once).expect("write meta");

    // 256 MiB into the large family, 1 MiB per batch, as the apply loop does.
    let value = vec![b'v'; 4096];
    let mut peak = 0;
    for batch_no in 0u32..256 {
        let mut batch = WriteBatch::new();
        for i in 0u32..256 {
            let key = format!("{batch_no:06}-{i:06}");
            batch.put("kv", key.as_bytes(), value.clone());
        }
        storage.write(batch).expect("write kv");
        peak = peak.max(wal_bytes(dir.path()));
    }
    // MAX_TOTAL_WAL_BYTES (96 MiB) plus the log being written when a flush
    // starts; before the sizing every log stayed: about 256 MiB.
    assert!(
        peak < 160 << 20,
        "write-ahead logs reached {} MiB for 256 MiB written",
        peak >> 20
    );
    // Nothing was lost to the flushes the limit forced.
    assert_eq!(
        storage.get("meta", b"written-once").expect("get"),
        Some(b"1".to_vec())
    );
    assert_eq!(
        storage.get("kv", b"000255-000255").expect("get"),
        Some(value)
    );
}

/// The WAL file being written (the highest-numbered `.log`) and its size.
fn current_wal(dir: &std::path::Path) -> (String, u64) {
    wal_files(dir).into_iter().max().expect("a WAL file")
}

#[tokio::test]
async fn synced_writes_after_open_overwrite_a_reused_wal_file_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = RocksStorage::open(dir.path(), &["kv", "meta", "raft_log"]).expect("open");
    let (file, len) = current_wal(dir.path());
    // The file written at open for reuse (PRECREATED_WAL_BYTES, 64 MiB).
    assert!(
        len >= 64 << 20,
        "the WAL after open is {file} of {len} bytes, not a reused 64 MiB file"
    );
    // A sync that stays inside the file's size flushes data only: the file
    // must neither grow nor be replaced while 4 MiB go through it.
    for i in 0u32..1024 {
        let mut batch = WriteBatch::new();
        batch.put("raft_log", &i.to_be_bytes(), vec![b'e'; 4096]);
        storage.write_sync(batch).await.expect("synced write");
    }
    assert_eq!(current_wal(dir.path()), (file, len));
    assert_eq!(
        storage
            .get("raft_log", &1023u32.to_be_bytes())
            .expect("get"),
        Some(vec![b'e'; 4096])
    );
}

#[tokio::test]
async fn a_tool_opening_a_data_dir_writes_no_wal_file_for_reuse() {
    // `cairnctl snapshot restore` fills a data dir and closes it; the member
    // that opens it later writes its own WAL file for reuse.
    let dir = tempfile::tempdir().expect("temp dir");
    let storage =
        RocksStorage::open_for_tool(dir.path(), &["kv", "meta", "raft_log"]).expect("open");
    let mut batch = WriteBatch::new();
    batch.put("kv", b"k".to_vec(), b"v".to_vec());
    storage.write_sync(batch).await.expect("synced write");
    assert!(
        wal_bytes(dir.path()) < 1 << 20,
        "a tool's open wrote {:?}",
        wal_files(dir.path())
    );
    drop(storage);
    // The member's open afterwards reads the tool's write and writes its file.
    let storage = RocksStorage::open(dir.path(), &["kv", "meta", "raft_log"]).expect("reopen");
    assert_eq!(storage.get("kv", b"k").expect("get"), Some(b"v".to_vec()));
    assert!(current_wal(dir.path()).1 >= 64 << 20);
}
