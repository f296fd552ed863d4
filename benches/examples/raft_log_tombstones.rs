//! Reproducer for docs/benchmarks.md, finding 2: a single-voter `RawNode`
//! persists one-entry Readys on `RocksStorage` with `raft::storage::ready_batch`,
//! printing the time per Ready and the process RSS every 10 000. With
//! `--old-range-delete` every Ready deletes the log suffix from its first
//! entry on (what the server did before the fix: `ready_batch` with an
//! unknown last index); when the `raft_log` memtable fills (~190 000 Readys
//! here) RocksDB fragments all the nested range tombstones at once and memory
//! explodes, until a watchdog thread stops the run above `RSS_LIMIT_KB`.
//! Without it, the server's way now: a range deletion only on conflicts.
//!
//! Run: `cargo run --release --example raft_log_tombstones [-- --old-range-delete]`.

#[cfg(not(madsim))]
fn main() {
    use cairn::raft::storage::{
        last_index_after, ready_batch, COLUMN_FAMILIES, UNKNOWN_LAST_INDEX,
    };
    use cairn::raft::testkit::bootstrap_state;
    use cairn::raft::{Config, RawNode};
    use cairn_runtime::{RocksStorage, Storage};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::time::Instant;

    const READYS: u64 = 400_000;
    const RSS_LIMIT_KB: u64 = 2_000_000;

    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    // The blow-up happens inside one RocksDB write, so a watchdog thread
    // (not the loop) enforces the memory limit.
    std::thread::spawn(|| loop {
        let rss = rss_kb();
        if rss > RSS_LIMIT_KB {
            println!(
                "RSS {} MB is above {} MB — stopping",
                rss / 1024,
                RSS_LIMIT_KB / 1024
            );
            std::process::exit(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    let with_range_delete = std::env::args().any(|a| a == "--old-range-delete");
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = RocksStorage::open(dir.path(), &COLUMN_FAMILIES).expect("open rocksdb");
    let mut cfg = Config::new(1);
    cfg.applied = 1;
    let state = bootstrap_state(&[1], &[], 1);
    let mut node = RawNode::new(&cfg, state, StdRng::seed_from_u64(1)).expect("node");
    node.campaign();
    println!("range delete per Ready: {with_range_delete}");
    let mut t = Instant::now();
    let mut last = node.last_index();
    for i in 0..READYS {
        if i > 0 {
            node.propose(vec![b'e'; 256]).expect("leader accepts");
        }
        while node.has_ready() {
            let rd = node.ready();
            let known = if with_range_delete {
                UNKNOWN_LAST_INDEX
            } else {
                last
            };
            let batch = ready_batch(&rd, known);
            last = last_index_after(&rd, last);
            if !batch.is_empty() {
                storage.write(batch).expect("write");
            }
            node.advance(rd);
        }
        if i > 0 && i % 10_000 == 0 {
            let per = t.elapsed().as_secs_f64() * 1e6 / 10_000.0;
            println!(
                "{i:>7} Readys: {per:6.2} µs/Ready, RSS {} MB",
                rss_kb() / 1024
            );
            t = Instant::now();
        }
    }
}

#[cfg(madsim)]
fn main() {}
