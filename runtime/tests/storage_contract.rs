//! The Storage contract (runtime/src/storage.rs), checked against both
//! implementations: every `contract_*` function runs once on `SimStorage` and
//! once on `RocksStorage` (the latter not under madsim). SimStorage's crash and
//! fault semantics have their own tests at the end.

use std::sync::Arc;

use cairn_runtime::{Direction, SimDisk, SimStorage, Storage, StorageError, WriteBatch};

const CFS: &[&str] = &["a", "b"];

/// A storage implementation under test, able to close and reopen its data.
trait Backend {
    fn open(&mut self) -> Arc<dyn Storage>;
}

struct Sim(SimDisk);

impl Backend for Sim {
    fn open(&mut self) -> Arc<dyn Storage> {
        Arc::new(SimStorage::open(&self.0, CFS).expect("open sim storage"))
    }
}

#[cfg(not(madsim))]
struct Rocks(tempfile::TempDir);

#[cfg(not(madsim))]
impl Backend for Rocks {
    fn open(&mut self) -> Arc<dyn Storage> {
        Arc::new(cairn_runtime::RocksStorage::open(self.0.path(), CFS).expect("open rocks storage"))
    }
}

fn scan_all(
    s: &dyn Storage,
    cf: &str,
    start: &[u8],
    end: Option<&[u8]>,
    dir: Direction,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.scan(cf, start, end, dir)
        .expect("scan")
        .map(|r| r.expect("scan item"))
        .collect()
}

fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    pairs.iter().map(|(k, _)| k.clone()).collect()
}

/// Runs one contract check on every backend.
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sim_storage() {
                super::$name(&mut super::Sim(cairn_runtime::SimDisk::new())).await;
            }

            #[cfg(not(madsim))]
            #[tokio::test]
            async fn on_rocks_storage() {
                super::$name(&mut super::Rocks(tempfile::tempdir().expect("tempdir"))).await;
            }
        }
    };
}

contract!(batch_is_atomic_and_applied_in_order);
async fn batch_is_atomic_and_applied_in_order(b: &mut dyn Backend) {
    let s = b.open();
    let mut batch = WriteBatch::new();
    batch.put("a", b"k1".to_vec(), b"v1".to_vec());
    batch.put("a", b"k1".to_vec(), b"v2".to_vec());
    batch.put("a", b"k2".to_vec(), b"x".to_vec());
    batch.delete("a", b"k2".to_vec());
    batch.put("b", b"k1".to_vec(), b"other-family".to_vec());
    s.write_sync(batch).await.expect("write");
    assert_eq!(s.get("a", b"k1").expect("get"), Some(b"v2".to_vec()));
    assert_eq!(s.get("a", b"k2").expect("get"), None);
    assert_eq!(
        s.get("b", b"k1").expect("get"),
        Some(b"other-family".to_vec())
    );

    // A batch that names an unknown family is refused whole.
    let mut bad = WriteBatch::new();
    bad.put("a", b"k3".to_vec(), b"v".to_vec());
    bad.put("nope", b"k".to_vec(), b"v".to_vec());
    assert!(matches!(
        s.write(bad),
        Err(StorageError::UnknownColumnFamily(_))
    ));
    assert_eq!(s.get("a", b"k3").expect("get"), None);
}

contract!(unsynced_write_is_visible_at_once);
async fn unsynced_write_is_visible_at_once(b: &mut dyn Backend) {
    let s = b.open();
    let mut batch = WriteBatch::new();
    batch.put("a", b"k".to_vec(), b"v".to_vec());
    s.write(batch).expect("write");
    assert_eq!(s.get("a", b"k").expect("get"), Some(b"v".to_vec()));
}

contract!(scan_is_ordered_and_bounded_in_both_directions);
async fn scan_is_ordered_and_bounded_in_both_directions(b: &mut dyn Backend) {
    let s = b.open();
    let all: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        vec![0],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        vec![0xff],
        vec![0xff, 0],
    ];
    let mut batch = WriteBatch::new();
    for (i, k) in all.iter().rev().enumerate() {
        batch.put("a", k.clone(), vec![i as u8]);
    }
    batch.put("b", b"aa".to_vec(), b"not in a".to_vec());
    s.write_sync(batch).await.expect("write");

    assert_eq!(
        keys(&scan_all(&*s, "a", b"", None, Direction::Forward)),
        all
    );
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(
        keys(&scan_all(&*s, "a", b"", None, Direction::Reverse)),
        rev
    );
    // [a, b): start included, end excluded.
    assert_eq!(
        keys(&scan_all(&*s, "a", b"a", Some(b"b"), Direction::Forward)),
        vec![b"a".to_vec(), b"ab".to_vec()]
    );
    assert_eq!(
        keys(&scan_all(&*s, "a", b"a", Some(b"b"), Direction::Reverse)),
        vec![b"ab".to_vec(), b"a".to_vec()]
    );
    // Bounds between keys.
    assert_eq!(
        keys(&scan_all(&*s, "a", b"aa", Some(b"az"), Direction::Forward)),
        vec![b"ab".to_vec()]
    );
    // Empty and inverted ranges.
    assert!(scan_all(&*s, "a", b"b", Some(b"b"), Direction::Forward).is_empty());
    assert!(scan_all(&*s, "a", b"c", Some(b"a"), Direction::Reverse).is_empty());
    // Open end in reverse starts from the last key.
    assert_eq!(
        keys(&scan_all(&*s, "a", &[0xff], None, Direction::Reverse)),
        vec![vec![0xff, 0], vec![0xff]]
    );
    assert!(matches!(
        s.scan("zz", b"", None, Direction::Forward).map(|_| ()),
        Err(StorageError::UnknownColumnFamily(_))
    ));
}

contract!(delete_range_removes_exactly_the_range);
async fn delete_range_removes_exactly_the_range(b: &mut dyn Backend) {
    let s = b.open();
    let mut batch = WriteBatch::new();
    for k in ["a", "b", "ba", "c", "d"] {
        batch.put("a", k.as_bytes().to_vec(), b"v".to_vec());
    }
    s.write(batch).expect("write");
    let mut del = WriteBatch::new();
    del.delete_range("a", b"b".to_vec(), b"d".to_vec());
    s.write_sync(del).await.expect("delete range");
    assert_eq!(
        keys(&scan_all(&*s, "a", b"", None, Direction::Forward)),
        vec![b"a".to_vec(), b"d".to_vec()]
    );
}

contract!(snapshot_is_isolated_from_later_writes);
async fn snapshot_is_isolated_from_later_writes(b: &mut dyn Backend) {
    let s = b.open();
    let mut batch = WriteBatch::new();
    for i in 0..100u32 {
        batch.put("a", i.to_be_bytes().to_vec(), b"old".to_vec());
    }
    s.write_sync(batch).await.expect("write");
    let snap = s.snapshot();
    let mut iter = snap.scan("a", b"", None, Direction::Forward).expect("scan");
    let mut seen = 0;
    for i in 0..100u32 {
        // Writes continue while the snapshot is being iterated.
        let mut w = WriteBatch::new();
        w.put("a", i.to_be_bytes().to_vec(), b"new".to_vec());
        w.put("a", (1000 + i).to_be_bytes().to_vec(), b"added".to_vec());
        w.delete("a", ((i + 50) % 100).to_be_bytes().to_vec());
        s.write(w).expect("write");
        let (k, v) = iter.next().expect("snapshot has 100 keys").expect("item");
        assert_eq!(k, i.to_be_bytes().to_vec());
        assert_eq!(v, b"old".to_vec());
        seen += 1;
    }
    assert!(iter.next().is_none());
    assert_eq!(seen, 100);
    assert_eq!(
        snap.get("a", &5u32.to_be_bytes()).expect("get"),
        Some(b"old".to_vec())
    );
    assert_eq!(snap.get("a", &1005u32.to_be_bytes()).expect("get"), None);
    assert_eq!(
        s.get("a", &1005u32.to_be_bytes()).expect("get"),
        Some(b"added".to_vec())
    );
}

contract!(empty_and_huge_keys_and_values_round_trip);
async fn empty_and_huge_keys_and_values_round_trip(b: &mut dyn Backend) {
    let s = b.open();
    let huge_key = vec![0x5a; 64 << 10];
    let huge_value: Vec<u8> = (0..(8 << 20)).map(|i| (i % 251) as u8).collect();
    let mut batch = WriteBatch::new();
    batch.put("a", Vec::new(), Vec::new());
    batch.put("a", huge_key.clone(), huge_value.clone());
    batch.put("b", b"empty-value".to_vec(), Vec::new());
    s.write_sync(batch).await.expect("write");
    assert_eq!(s.get("a", b"").expect("get"), Some(Vec::new()));
    assert_eq!(
        s.get("a", &huge_key).expect("get"),
        Some(huge_value.clone())
    );
    assert_eq!(s.get("b", b"empty-value").expect("get"), Some(Vec::new()));
    drop(s);
    let s = b.open();
    assert_eq!(
        s.get("a", &huge_key).expect("get after reopen"),
        Some(huge_value)
    );
    // Sizes are per column family: "a" holds the huge value, "b" two tiny ones.
    let (a, b_size, all) = (
        s.approximate_size(&["a"]),
        s.approximate_size(&["b"]),
        s.approximate_size(&[]),
    );
    assert!(a > b_size, "a: {a}, b: {b_size}");
    assert!(all >= a + b_size, "all: {all}, a: {a}, b: {b_size}");
}

contract!(reopen_after_close_recovers_everything_synced);
async fn reopen_after_close_recovers_everything_synced(b: &mut dyn Backend) {
    {
        let s = b.open();
        for i in 0..50u32 {
            let mut batch = WriteBatch::new();
            batch.put("a", i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec());
            if i % 10 == 0 {
                batch.delete("a", (i / 2).to_be_bytes().to_vec());
            }
            s.write(batch).expect("write");
        }
        s.sync()
            .await
            .expect("sync covers the unsynced writes before it");
    }
    let s = b.open();
    // Batch i puts i, and every tenth batch deletes i/2: keys 0, 5, 10, 15, 20 end up deleted.
    let deleted = [0u32, 5, 10, 15, 20];
    for i in 0..50u32 {
        let got = s.get("a", &i.to_be_bytes()).expect("get");
        let expected = (!deleted.contains(&i)).then(|| i.to_le_bytes().to_vec());
        assert_eq!(got, expected, "key {i}");
    }
}

contract!(concurrent_synced_writers_all_complete);
async fn concurrent_synced_writers_all_complete(b: &mut dyn Backend) {
    let s = b.open();
    let futures: Vec<_> = (0..64u32)
        .map(|i| {
            let mut batch = WriteBatch::new();
            batch.put("b", i.to_be_bytes().to_vec(), b"v".to_vec());
            s.write_sync(batch)
        })
        .collect();
    for r in futures::future::join_all(futures).await {
        r.expect("synced write");
    }
    assert_eq!(scan_all(&*s, "b", b"", None, Direction::Forward).len(), 64);
}

// ---- SimStorage: crashes and faults -----------------------------------------

fn put(k: &str, v: &str) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put("a", k.as_bytes().to_vec(), v.as_bytes().to_vec());
    b
}

#[tokio::test]
async fn sim_crash_loses_unsynced_and_keeps_synced_writes() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    s.write_sync(put("synced", "1")).await.expect("sync");
    s.write(put("unsynced", "2")).expect("write");
    disk.crash();
    assert_eq!(
        s.write(put("x", "y")),
        Err(StorageError::Closed),
        "a crashed handle is dead"
    );
    let s = SimStorage::open(&disk, CFS).expect("reopen");
    assert_eq!(s.get("a", b"synced").expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.get("a", b"unsynced").expect("get"), None);
    assert_eq!(s.recovery_report().torn_records_discarded, 0);
}

#[tokio::test]
async fn sim_sync_makes_earlier_unsynced_writes_durable() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    s.write(put("first", "1")).expect("write");
    s.write_sync(put("second", "2")).await.expect("sync");
    disk.crash();
    let s = SimStorage::open(&disk, CFS).expect("reopen");
    assert_eq!(s.get("a", b"first").expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.get("a", b"second").expect("get"), Some(b"2".to_vec()));
}

#[tokio::test]
async fn sim_batch_is_never_partially_visible_after_crash() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    let mut batch = WriteBatch::new();
    batch.put("a", b"x".to_vec(), b"1".to_vec());
    batch.put("b", b"y".to_vec(), b"1".to_vec());
    s.write(batch).expect("write");
    disk.crash();
    let s = SimStorage::open(&disk, CFS).expect("reopen");
    assert_eq!(
        (
            s.get("a", b"x").expect("get"),
            s.get("b", b"y").expect("get")
        ),
        (None, None)
    );
}

#[tokio::test]
async fn sim_torn_batch_is_detected_and_discarded_on_recovery() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    s.write_sync(put("durable", "1")).await.expect("sync");
    let mut torn = WriteBatch::new();
    for i in 0..10u32 {
        torn.put("a", format!("torn-{i}").into_bytes(), vec![7; 100]);
    }
    s.write(torn).expect("write");
    disk.set_tear_on_crash(true);
    disk.crash();
    let s = SimStorage::open(&disk, CFS).expect("reopen");
    let report = s.recovery_report();
    assert_eq!(
        report.torn_records_discarded, 1,
        "the torn record must be detected: {report:?}"
    );
    assert_eq!(s.get("a", b"durable").expect("get"), Some(b"1".to_vec()));
    let torn_keys = scan_all(&s, "a", b"torn-", Some(b"torn."), Direction::Forward);
    assert!(
        torn_keys.is_empty(),
        "no part of a torn batch may be visible: {}",
        torn_keys.len()
    );
    // The log is healed: later writes and crashes behave normally.
    s.write_sync(put("after", "1")).await.expect("sync");
    disk.crash();
    let s = SimStorage::open(&disk, CFS).expect("reopen again");
    assert_eq!(s.get("a", b"after").expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.recovery_report().torn_records_discarded, 0);
}

#[tokio::test]
async fn sim_failed_sync_halts_the_storage() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    disk.fail_next_sync();
    assert!(matches!(
        s.write_sync(put("k", "v")).await,
        Err(StorageError::SyncFailed(_))
    ));
    assert_eq!(s.write(put("k2", "v")), Err(StorageError::Halted));
    assert_eq!(
        s.write_sync(put("k3", "v")).await,
        Err(StorageError::Halted)
    );
}

#[tokio::test]
async fn sim_no_space_rejects_writes_until_cleared() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    disk.set_no_space(true);
    assert_eq!(s.write(put("k", "v")), Err(StorageError::NoSpace));
    assert_eq!(s.get("a", b"k").expect("get"), None);
    disk.set_no_space(false);
    s.write_sync(put("k", "v")).await.expect("space again");
}

#[tokio::test(start_paused = true)]
async fn sim_sync_latency_delays_completion() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    disk.set_sync_latency(std::time::Duration::from_millis(30));
    let t0 = tokio::time::Instant::now();
    s.write_sync(put("k", "v")).await.expect("sync");
    assert!(t0.elapsed() >= std::time::Duration::from_millis(30));
}

#[tokio::test]
async fn sim_a_flipped_record_is_never_read_back_only_refused_as_corrupt() {
    let disk = SimDisk::new();
    let s = SimStorage::open(&disk, CFS).expect("open");
    for k in ["k1", "k2", "k3"] {
        s.write_sync(put(k, "v")).await.expect("sync");
    }
    let before = s.snapshot();
    let key = disk.flip_stored_record("a", 1).expect("a record to flip");
    assert_eq!(key, b"k2".to_vec());
    assert!(matches!(
        s.get("a", b"k2"),
        Err(StorageError::Corruption(_))
    ));
    assert_eq!(
        s.get("a", b"k1").expect("an intact record"),
        Some(b"v".to_vec())
    );
    // A scan reaching it fails there, after the intact records before it.
    let items: Vec<_> = s
        .scan("a", b"", None, Direction::Forward)
        .expect("scan")
        .collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(items[1], Err(StorageError::Corruption(_))));
    // A snapshot taken before the flip still reads; one taken after does not.
    assert!(before.get("a", b"k2").is_ok());
    assert!(s.snapshot().get("a", b"k2").is_err());
    // Across a crash and reopen it stays flipped.
    disk.crash();
    let s = SimStorage::open(&disk, CFS).expect("reopen");
    assert!(s.get("a", b"k2").is_err());
    // Written again, the record is whole; repair forgets every flip.
    s.write_sync(put("k2", "w")).await.expect("rewrite");
    assert_eq!(s.get("a", b"k2").expect("rewritten"), Some(b"w".to_vec()));
    let newest = disk.flip_stored_record("a", 0).expect("flip the newest");
    assert_eq!(newest, b"k3".to_vec());
    assert!(s.get("a", b"k3").is_err());
    disk.repair_flips();
    assert_eq!(s.get("a", b"k3").expect("repaired"), Some(b"v".to_vec()));
    assert_eq!(disk.flip_stored_record("none", 0), None);
}

/// A crash after the page cache wrote out part of the unsynced writes: a
/// prefix of them, in order, survives whole; the batch after it, torn,
/// is discarded with everything later.
#[tokio::test]
async fn sim_crash_keeps_a_prefix_of_the_unsynced_batches_in_order() {
    for (share, kept) in [(0.0, 0), (0.3, 1), (0.55, 2), (0.99, 3)] {
        let disk = SimDisk::new();
        let s = SimStorage::open(&disk, CFS).expect("open");
        s.write_sync(put("synced", "1")).await.expect("sync");
        for i in 0..3 {
            s.write(put(&format!("w{i}"), "1")).expect("write");
        }
        disk.set_tear_on_crash(true);
        assert_eq!(disk.crash_keeping(share), kept, "share {share}");
        let s = SimStorage::open(&disk, CFS).expect("reopen");
        let visible: Vec<bool> = (0..3)
            .map(|i| {
                s.get("a", format!("w{i}").as_bytes())
                    .expect("get")
                    .is_some()
            })
            .collect();
        let want: Vec<bool> = (0..3).map(|i| i < kept).collect();
        assert_eq!(visible, want, "share {share}");
        assert!(s.get("a", b"synced").expect("get").is_some());
        assert_eq!(
            s.recovery_report().torn_records_discarded,
            usize::from(kept < 3),
            "the batch after the prefix was torn"
        );
    }
}
